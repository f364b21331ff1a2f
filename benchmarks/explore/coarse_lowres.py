"""Session 20: the coarse band from a longer-window blend made at reduced resolution. The default
blend (table, window 15) with its coarse band (box blur K at full size) replaced by that of a table
blend over window W at 1/F of the size (area down, bilinear up). FADE: the clip darkens linearly to
FADE of its brightness over the frames (a lighting change the coarse band must keep).

    PYTHONPATH=src python benchmarks/explore/coarse_lowres.py CLIP FRAMES WIDTH|0 W F K [FADE] [GRAIN]
"""
import sys, time
import cv2
import numpy as np
from flickerless import deflicker
from coarse_case import make_case
from flickerless.synthetic import psnr, temporal_error, _blur

name, n, width, w = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) or None, sys.argv[4]
f, k = int(sys.argv[5]), int(sys.argv[6])
fade = float(sys.argv[7]) if len(sys.argv) > 7 else 1.0
grain = float(sys.argv[8]) if len(sys.argv) > 8 else 0.0
clip, truth, flick = make_case(name, n, width, fade, grain)
T, H, W, _ = clip.shape
print(name, clip.shape, "input", round(psnr(flick, truth), 2), round(temporal_error(flick, truth), 2), flush=True)
t = time.time(); a = deflicker(clip, flick, mode="table", window=15, device="cpu"); ta = time.time() - t
print("window 15", round(psnr(a, truth), 2), round(temporal_error(a, truth), 2), round(ta, 1), flush=True)
down = lambda v: np.stack([cv2.resize(x, (W // f, H // f), interpolation=cv2.INTER_AREA) for x in v])  # noqa: E731
t = time.time()
b = deflicker(down(clip), down(flick), mode="table", window=None if w == "inf" else int(w), device="cpu")
b = np.stack([cv2.resize(x.astype(np.float32), (W, H), interpolation=cv2.INTER_LINEAR) for x in b])
tb = time.time() - t
af = a.astype(np.float32)
out = np.stack([x - _blur(x, k) + _blur(y, k) for x, y in zip(af, b)])
out = np.clip(np.round(out), 0, 255).astype(np.uint8)
print(f"+ coarse of window {w} at 1/{f}, k {k}", round(psnr(out, truth), 2), round(temporal_error(out, truth), 2),
      round(tb, 1), flush=True)
