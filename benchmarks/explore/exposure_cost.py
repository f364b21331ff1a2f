"""Session 35: what exposure following costs, on and off alternately in one process (so that a machine's
drift between processes does not read as cost): the benchmark's speed case (bikes at 640x480, 64 frames,
table, window 15, frames on the device) and carphone (176x144, 120 frames), median seconds per frame of
REPS runs each after a warm-up; then the time inside exposure_shift from the profiler. Session 36: KEY
``exposure_match`` times exposure matching instead (the other on, as by default), and the time inside
``Remapper.level_gains``.

    PYTHONPATH=src python benchmarks/explore/exposure_cost.py [DEVICE] [REPS] [KEY] [MATCH_BYTES]"""
import importlib
import statistics
import sys
import time

import torch

from flickerless import deflicker
from flickerless.demo import load_clip, registry_clip
from flickerless.synthetic import flickering_pair
from flickerless.video import resize_frame

D = importlib.import_module("flickerless.blend.deflicker")
dev = torch.device(sys.argv[1] if len(sys.argv) > 1 else ("cuda" if torch.cuda.is_available() else "cpu"))
reps = int(sys.argv[2]) if len(sys.argv) > 2 else 5
key = sys.argv[3] if len(sys.argv) > 3 else "exposure"
owner, fname = (D.Remapper, "level_gains") if key == "exposure_match" else (D, "exposure_shift")
if len(sys.argv) > 4:  # MATCH_BYTES (session 36: 16 pairs at a time at 640x480 against all of a batch)
    D.MATCH_BYTES = int(sys.argv[4])


def sync():
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def tensors(name, n, size=None):
    clip = load_clip(registry_clip(name), n)[0]
    if size:
        import numpy as np
        clip = np.stack([resize_frame(f, size) for f in clip])
    _, flick = flickering_pair(clip, seed=0)
    to = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).to(dev).float().div_(255)  # noqa: E731
    return to(clip), to(flick)


for name, n, size in (("bikes.mp4", 64, (480, 640)), ("carphone_pristine.mp4", 120, None)):
    g, s = tensors(name, n, size)
    deflicker(g[:8], s[:8], device=dev)
    times = {True: [], False: []}
    for _ in range(reps):
        for on in (True, False):
            sync()
            t = time.perf_counter()
            deflicker(g, s, device=dev, **{key: on})
            sync()
            times[on].append((time.perf_counter() - t) / n)
    med = {k: statistics.median(v) for k, v in times.items()}
    inside = [0.0, 0]
    real = getattr(owner, fname)

    def timed(*a, **k):
        sync()
        t = time.perf_counter()
        out = real(*a, **k)
        sync()
        inside[0] += time.perf_counter() - t
        inside[1] += 1
        return out

    setattr(owner, fname, timed)
    deflicker(g, s, device=dev, **{key: True})
    setattr(owner, fname, real)
    print(f"{key}: {name} {tuple(g.shape)} on {dev}: s/frame on {med[True]:.4f} off {med[False]:.4f} "
          f"(+{100 * (med[True] / med[False] - 1):.1f}%; runs on {[round(x, 4) for x in times[True]]}, "
          f"off {[round(x, 4) for x in times[False]]}); {fname} {inside[0] / n:.5f} s/frame synchronised, "
          f"{inside[1]} calls", flush=True)
