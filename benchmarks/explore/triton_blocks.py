"""The Triton kernels' launch shape: pixels per program (kernels.BLOCK) and warps per program
(kernels.NUM_WARPS), swept on one process's frames. Each lane's result does not depend on its program,
so every shape must give the same frames (the hash printed). deflicker() alone, defaults, frames already
on the GPU: bikes.mp4 at 1920x1080 (N frames) and the speed case's 640x480 (64 frames), or the cases
given as WxH:FRAMES.

    python benchmarks/explore/triton_blocks.py 48 128x4,64x2,256x4
    python benchmarks/explore/triton_blocks.py 0 128x4,32x1 1920x1080:32,3840x2160:8
"""
import hashlib
import sys
import time

import numpy as np
import torch

from flickerless import deflicker
from flickerless.blend import kernels
from flickerless.demo import load_clip, registry_clip
from flickerless.synthetic import flickering_pair
from flickerless.video import resize_frame

n = int(sys.argv[1])
shapes = [tuple(map(int, s.split("x"))) for s in sys.argv[2].split(",")]
dev = torch.device("cuda")
sizes = [((1920, 1080), n), ((640, 480), 64)]
if len(sys.argv) > 3:
    sizes = [(tuple(map(int, c.split(":")[0].split("x"))), int(c.split(":")[1])) for c in sys.argv[3].split(",")]
src, _ = load_clip(registry_clip("bikes.mp4"), max(c for _, c in sizes), None)
cases = {}
for (w, h), count in sizes:
    clip = np.stack([resize_frame(f, (h, w)) for f in src[:count]])
    _, flick = flickering_pair(clip)
    cases[f"{w}x{h}"] = (torch.from_numpy(clip).to(dev).permute(0, 3, 1, 2),
                         torch.from_numpy(flick).to(dev).permute(0, 3, 1, 2))
print("made the frames", flush=True)
for rounds in range(2):
    for block, warps in shapes:
        kernels.BLOCK, kernels.NUM_WARPS = block, warps
        row = []
        for name, (g, s) in cases.items():
            deflicker(g[:6], s[:6], device=dev)  # compiles this shape
            torch.cuda.synchronize()
            t = time.perf_counter()
            out = deflicker(g, s, device=dev)
            torch.cuda.synchronize()
            dt = (time.perf_counter() - t) / len(g)
            row.append(f"{name} {dt:.4f} s/frame {hashlib.sha256(out.cpu().numpy().tobytes()).hexdigest()[:10]}")
        print(f"round {rounds} BLOCK {block} warps {warps}: " + "; ".join(row), flush=True)
