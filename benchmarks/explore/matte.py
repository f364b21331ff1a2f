"""Session 21: a cut-out's alpha matte deflickered as a clip of its own (README: the same guide, the
alpha as grey frames for the style). The "true" matte: the clip's dark regions (luminance < 90),
softened; each frame's matte eroded or dilated by 1-5 px at random and its soft edge shaken by blurred
noise, as a per-frame segmentation's is. Defaults (table, window 15).

    PYTHONPATH=src python benchmarks/explore/matte.py carphone_pristine.mp4 32
"""
import sys

import cv2
import numpy as np

from flickerless import deflicker
from flickerless.demo import load_clip, registry_clip
from flickerless.synthetic import psnr, temporal_error

guide, _ = load_clip(registry_clip(sys.argv[1]), int(sys.argv[2]), None)
truth = np.stack([cv2.GaussianBlur(((f.mean(-1) < 90) * 255).astype(np.uint8), (9, 9), 3) for f in guide])
rng = np.random.default_rng(0)
shaken = []
for t in truth:
    k = int(rng.integers(1, 6))
    m = (cv2.erode if rng.random() < 0.5 else cv2.dilate)(t, np.ones((k, k), np.uint8)).astype(np.float32)
    m += cv2.GaussianBlur(rng.normal(0, 40, t.shape).astype(np.float32), (0, 0), 6) * ((m > 0) & (m < 255))
    shaken.append(np.clip(m, 0, 255).astype(np.uint8))
shaken = np.stack(shaken)
out = deflicker(guide, np.repeat(shaken[..., None], 3, -1), device="cpu")[..., :1]
for name, x in (("input", shaken[..., None]), ("deflickered", out)):
    print(f"{name}: PSNR {psnr(x, truth[..., None]):.2f} dB, temporal error {temporal_error(x, truth[..., None]):.1f}")
