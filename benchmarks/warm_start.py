"""Warm-started PatchMatch between deflicker passes over one guide (the engine's in-loop passes):
quality and speed of a second pass that starts every pair from the first pass's fields
(`MatchCache`), against the same pass from scratch. CPU by default.

The first pass sees an earlier, blurrier estimate (the ground truth blurred, with its own flicker);
the second pass sees the sharp ground truth with another flicker, as x0-hat sharpens over the steps.
Table mode, whole video as the window (as in the engine).

    PYTHONPATH=src python benchmarks/warm_start.py carphone_pristine.mp4 32
    PYTHONPATH=src python benchmarks/warm_start.py bikes.mp4 48     # downscaled to 320x136
"""
import sys
import time

import cv2
import numpy as np

from flickerless import deflicker
from flickerless.blend.deflicker import MatchCache
from flickerless.demo import load_clip, registry_clip
from flickerless.synthetic import add_flicker, flickering_pair, psnr, temporal_error

name, n = sys.argv[1], int(sys.argv[2])
clip, _ = load_clip(registry_clip(name), n)
if clip.shape[2] > 400:
    clip = np.stack([cv2.resize(f, (320, 136), interpolation=cv2.INTER_AREA) for f in clip])
gt, f2 = flickering_pair(clip, seed=2)
f1 = add_flicker(np.stack([cv2.GaussianBlur(f, (7, 7), 2) for f in gt]), seed=1)  # an earlier, blurrier estimate


def run(style, cache, **kw):
    t = time.perf_counter()
    out = deflicker(clip, style, window=None, matches=cache, **kw)
    return out, time.perf_counter() - t



cold, tc = run(f2, None)
cache = MatchCache()
_, t1 = run(f1, cache)
warm, tw = run(f2, cache)
print(f"{name} {n}: input {psnr(f2, gt):.2f} dB; cold {psnr(cold, gt):.2f} dB temporal {temporal_error(cold, gt):.1f} {tc/n:.3f} s/frame; "
      f"pass 1 with cache {t1/n:.3f} s/frame; warm {psnr(warm, gt):.2f} dB temporal {temporal_error(warm, gt):.1f} {tw/n:.3f} s/frame; "
      f"cache {len(cache)} fields {cache.bytes/2**20:.1f} MiB hits {cache.hits} misses {cache.misses}")
for r in (1, 3):
    c2 = MatchCache(); run(f1, c2, refine_iterations=r); w2, t2 = run(f2, c2, refine_iterations=r)
    print(f"  refine_iterations {r}: {psnr(w2, gt):.2f} dB temporal {temporal_error(w2, gt):.1f} {t2/n:.3f} s/frame")
