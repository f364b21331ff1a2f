"""Session 17: keyframes mode, then the keyframe-mode output blended again in table mode (the guide
guiding both): does a second, temporal blend calm what the independent per-frame remaps leave?
Keyframes every K frames are the ground-truth stylisation, as in keyframe_weights.py.

    PYTHONPATH=src .venv/bin/python benchmarks/explore/keyframes_then_blend.py CLIP[@START] FRAMES K [WIDTH|-] [WINDOWS]
"""
import sys
import time

import numpy as np

from flickerless import deflicker
from flickerless.demo import load_clip, registry_clip
from flickerless.synthetic import psnr, stylize, temporal_error

clip_name, _, start = sys.argv[1].partition("@")
start = int(start or 0)
n, k = int(sys.argv[2]), int(sys.argv[3])
width = int(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[4] != "-" else None
windows = [int(x) for x in sys.argv[5].split(",")] if len(sys.argv) > 5 else [3, 7, 15]
clip, _ = load_clip(registry_clip(clip_name), start + n, width)
clip = np.ascontiguousarray(clip[start:])
truth = np.stack([stylize(f) for f in clip])
keys = list(range(0, len(clip), k))
between = [i for i in range(len(clip)) if i not in keys]
out = deflicker(clip, keyframes={i: truth[i] for i in keys}, mode="keyframes", device="cpu")


def report(name, x):
    print(f"{sys.argv[1]} {clip.shape[2]}x{clip.shape[1]} {len(clip)} frames, keyframes every {k}, {name}: "
          f"in-between PSNR {psnr(x[between], truth[between]):.2f} dB, keyframes {psnr(x[keys], truth[keys]):.2f} dB, "
          f"temporal {temporal_error(x, truth):.2f}", flush=True)


report("keyframes mode", out)
for w in windows:
    t0 = time.perf_counter()
    again = deflicker(clip, out, mode="table", window=w, device="cpu")
    report(f"then table w{w} ({(time.perf_counter() - t0) / len(clip):.2f} s/frame)", again)
    kept = again.copy()
    kept[keys] = out[keys]
    report(f"then table w{w}, keyframes put back", kept)
