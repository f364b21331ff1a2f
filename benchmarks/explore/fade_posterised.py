"""Session 33: a fade to black of 16 carphone frames at 88x72 with the benchmark's posterised stylisation (no
flicker), deflickered (table, window 5): prints seconds, the output's mean less the truth's at frames 9, 10, 11, 13, 15.
Run with PYTHONPATH set to the tree to measure (BENCHMARKS.md, "Session 33")."""
import numpy as np, flickerless, time
from flickerless.synthetic import stylize
from flickerless.demo import load_clip, registry_clip
from flickerless.video import resize_frame
car = load_clip(registry_clip("carphone_pristine.mp4"), 16)[0]
car = np.stack([resize_frame(f, (72, 88)) for f in car])
fade = np.clip(1 - (np.arange(16) - 4) / 7.0, 0, 1)
guide = np.round(car * fade[:, None, None, None]).astype(np.uint8)
truth = np.stack([stylize(f) for f in guide])
t = time.time()
out = flickerless.deflicker(guide, truth, device="cpu", window=5)
print(time.time() - t, [round(float(out[i].mean() - truth[i].mean()), 2) for i in (9, 10, 11, 13, 15)], truth[11:].mean())
