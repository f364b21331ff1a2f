"""Seconds per frame of the defaults in window (w 7) and table (w 15) modes on 24 carphone frames, CPU,
after a warm-up call, for the package tree given (before/after comparisons: the older tree unpacked
with `git archive REV src | tar -x -C build/prev`).

    for t in build/prev/src src build/prev/src src; do .venv/bin/python benchmarks/explore/remap_time.py $t; done
"""
import sys, time
sys.path.insert(0, sys.argv[1])
from flickerless import deflicker
from flickerless.demo import load_clip, registry_clip
from flickerless.synthetic import flickering_pair
clip, _ = load_clip(registry_clip("carphone_pristine.mp4"), 24)
_, flick = flickering_pair(clip)
deflicker(clip[:4], flick[:4], mode="window", window=2, device="cpu")  # warm the kernels
for mode, w in (("window", 7), ("table", 15)):
    t = time.perf_counter(); deflicker(clip, flick, mode=mode, window=w, device="cpu")
    print(sys.argv[1], mode, round((time.perf_counter() - t) / len(clip), 3), "s/frame", flush=True)
