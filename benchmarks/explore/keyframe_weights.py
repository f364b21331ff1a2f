"""Session 17: keyframes mode with per-pixel error weights (the remap's guide error, as in window and
table modes) against distance weights alone. Keyframes every K frames are the ground-truth
stylisation (flickerless.synthetic.stylize); every other frame is rendered from its two keyframes, and
the result is compared with the truth: PSNR and temporal error over the in-between frames.

    PYTHONPATH=src .venv/bin/python benchmarks/explore/keyframe_weights.py CLIP[@START] FRAMES K [WIDTH|-] [SIGMAS] [DEVICE] [nocuts]
    e.g. ... carphone_pristine.mp4 41 10 - 0,0.05,0.1     ... bikes.mp4@31 41 10 320 0,0.05,0.1
(bikes.mp4@31: frames 31-71, inside one shot; from frame 0 the clip crosses its cut at frame 30.)
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
sigmas = [float(x) for x in sys.argv[5].split(",")] if len(sys.argv) > 5 else [0.0, 0.05]
dev = sys.argv[6] if len(sys.argv) > 6 else "cpu"
cuts = not (len(sys.argv) > 7 and sys.argv[7] == "nocuts")  # nocuts: across hard cuts too (before session 17)
clip, _ = load_clip(registry_clip(clip_name), start + n, width)
clip = np.ascontiguousarray(clip[start:])
truth = np.stack([stylize(f) for f in clip])
keys = list(range(0, len(clip), k))
between = [i for i in range(len(clip)) if i not in keys]
for sigma in sigmas:
    t0 = time.perf_counter()
    out = deflicker(clip, keyframes={i: truth[i] for i in keys}, mode="keyframes", device=dev,
                    error_sigma=sigma or None, cuts=cuts)
    dt = time.perf_counter() - t0
    print(f"{sys.argv[1]} {clip.shape[2]}x{clip.shape[1]} {len(clip)} frames, keyframes every {k}, "
          f"sigma {sigma or 'off'}{'' if cuts else ', no cuts'}: in-between PSNR {psnr(out[between], truth[between]):.2f} dB, "
          f"temporal {temporal_error(out, truth):.2f}, worst frame {min(psnr(out[i], truth[i]) for i in between):.2f} dB, "
          f"{dt / len(between):.2f} s/frame", flush=True)
