"""How well can any warp-based deflicker do on the benchmark's ground truth? (issue 2)

For each frame i of a real clip, the consistent stylisation of frame i-1 (`synthetic.stylize`) is
brought onto frame i two ways, and compared with frame i's own stylisation:

- PatchMatch remap through the guides (what patch blending averages);
- dense optical flow (OpenCV DIS, medium preset) on the guides, bilinear warp.

Blending can only average such remaps, so their PSNR bounds what blending reaches. Run for the
posterised look of the benchmark (6 levels) and without posterising (256 levels).

    PYTHONPATH=src python benchmarks/remap_floor.py carphone_pristine.mp4 24
"""
import sys

import cv2
import numpy as np
import torch

from flickerless.blend.patchmatch import PatchMatchOptions, remap
from flickerless.demo import load_clip, registry_clip
from flickerless.synthetic import psnr, stylize

name, n = sys.argv[1], int(sys.argv[2])
clip, _ = load_clip(registry_clip(name), n)


def t(x):
    return torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255


for levels in (6, 256):
    gt = np.stack([stylize(f, levels) for f in clip])
    flow_db, pm_db, still_db = [], [], []
    for i in range(1, n):
        g0 = cv2.cvtColor(clip[i], cv2.COLOR_RGB2GRAY)
        g1 = cv2.cvtColor(clip[i - 1], cv2.COLOR_RGB2GRAY)
        flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(g0, g1, None)  # i -> i-1
        h, w = g0.shape
        gx, gy = np.meshgrid(np.arange(w), np.arange(h))
        warped = cv2.remap(gt[i - 1], (gx + flow[..., 0]).astype(np.float32), (gy + flow[..., 1]).astype(np.float32),
                           cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        flow_db.append(psnr(warped, gt[i]))
        r = remap(t(gt[i - 1 : i]), t(clip[i : i + 1]), t(clip[i - 1 : i]), PatchMatchOptions())
        pm_db.append(psnr((r[0].permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8), gt[i]))
        still_db.append(psnr(gt[i - 1], gt[i]))
    print(f"{name} {n} frames, {levels} levels: previous frame as is {np.mean(still_db):.2f} dB; "
          f"optical-flow warp {np.mean(flow_db):.2f} dB; PatchMatch remap {np.mean(pm_db):.2f} dB")
