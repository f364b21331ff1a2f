"""Session 21: what carrying an alpha matte costs, and that the colour is unchanged by it. The speed
case (bikes at 640x480, 64 frames, table, window 15, full quality) with its flickering style as RGB
and as RGBA (a matte of the clip's dark regions, each frame's eroded or dilated by 1-3 px), timed
interleaved after a warm-up; the RGB frames of the two runs compared, and the matte's temporal error.

    PYTHONPATH=src python benchmarks/explore/alpha_cost.py cuda
"""
import sys
import time

import cv2
import numpy as np
import torch

from flickerless import deflicker
from flickerless.demo import load_clip, registry_clip
from flickerless.synthetic import flickering_pair, temporal_error
from flickerless.video import resize_frame

dev = torch.device(sys.argv[1] if len(sys.argv) > 1 else "cuda")
clip, _ = load_clip(registry_clip("bikes.mp4"), 64, 640)
clip = np.stack([resize_frame(f, (480, 640)) for f in clip])
truth, flick = flickering_pair(clip, seed=0)
matte = np.stack([cv2.GaussianBlur(((f.mean(-1) < 90) * 255).astype(np.uint8), (5, 5), 2) for f in clip])
rng = np.random.default_rng(0)
shaken = np.stack([(cv2.erode if rng.random() < 0.5 else cv2.dilate)(t, np.ones((k, k), np.uint8))
                   for t, k in zip(matte, rng.integers(2, 4, len(matte)))])
g = torch.from_numpy(clip).permute(0, 3, 1, 2).to(dev).float().div_(255)
rgb = torch.from_numpy(flick).permute(0, 3, 1, 2).to(dev).float().div_(255)
rgba = torch.cat([rgb, torch.from_numpy(shaken).to(dev).float().div_(255)[:, None]], 1)


def timed(style):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    out = deflicker(g, style, device=dev)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return out, (time.perf_counter() - t0) / len(clip)


deflicker(g[:8], rgba[:8], device=dev)  # warm-up (kernels compiled)
deflicker(g[:8], rgb[:8], device=dev)
for rep in range(2):
    a, ta = timed(rgb)
    b, tb = timed(rgba)
    print(f"RGB {ta:.4f} s/frame, RGBA {tb:.4f} s/frame ({tb / ta:.2f}x); colour identical: "
          f"{torch.equal(a, b[:, :3])}, max diff {float((a - b[:, :3]).abs().max()):.2e}", flush=True)
alpha = b[:, 3:].mul(255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
print(f"matte temporal error: {temporal_error(shaken[..., None], matte[..., None]):.1f} -> "
      f"{temporal_error(alpha, matte[..., None]):.1f}")
