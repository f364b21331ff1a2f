"""Session 20: the coarse band from a longer window. The default blend (table, window 15) with its
coarse band (box blur K) replaced by that of a blend over a longer window W (inf: the whole clip).

    PYTHONPATH=src python benchmarks/explore/coarse_long.py CLIP FRAMES WIDTH|0 W K [K ...]
"""
import sys, time
import numpy as np
from flickerless import deflicker
from flickerless.demo import load_clip, registry_clip
from flickerless.synthetic import flickering_pair, psnr, temporal_error, _blur

name, n, width, w = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) or None, sys.argv[4]
ks = [int(k) for k in sys.argv[5:]] or [15]
clip, _ = load_clip(registry_clip(name), n, width)
truth, flick = flickering_pair(clip)
print("input", round(psnr(flick, truth), 2), round(temporal_error(flick, truth), 2), flush=True)
t = time.time(); a = deflicker(clip, flick, mode="table", window=15, device="cpu"); ta = time.time() - t
print("window 15", round(psnr(a, truth), 2), round(temporal_error(a, truth), 2), round(ta, 1), flush=True)
t = time.time(); b = deflicker(clip, flick, mode="table", window=None if w == "inf" else int(w), device="cpu")
print("window", w, round(psnr(b, truth), 2), round(temporal_error(b, truth), 2), round(time.time() - t, 1), flush=True)
for k in ks:
    af, bf = a.astype(np.float32), b.astype(np.float32)
    out = np.stack([x - _blur(x, k) + _blur(y, k) for x, y in zip(af, bf)])
    out = np.clip(np.round(out), 0, 255).astype(np.uint8)
    print("fine 15 + coarse", w, "k", k, round(psnr(out, truth), 2), round(temporal_error(out, truth), 2), flush=True)
