"""Session 12: the ceiling of any blend with window 15 on the benchmark's flicker. Each frame's truth
is flickered 31 times independently (as if 31 perfectly aligned neighbours, no motion, no remap
loss) and averaged. Clipping at 0/255 biases the mean, so even this stops short of the 1/31 noise
reduction. Prints PSNR and temporal error of that ideal average against the truth, and the input's.

    PYTHONPATH=src python benchmarks/explore/averaging_ceiling.py carphone_pristine.mp4 48 31
"""
import sys

import numpy as np

from flickerless.demo import load_clip, registry_clip
from flickerless.synthetic import add_flicker, flickering_pair, psnr, temporal_error

name, n, draws = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
width = int(sys.argv[4]) if len(sys.argv) > 4 else None
clip, _ = load_clip(registry_clip(name), n, width)
truth, flick = flickering_pair(clip)
ideal = np.stack([add_flicker(np.repeat(t[None], draws, 0), seed=100 + i).astype(np.float64).mean(0)
                  for i, t in enumerate(truth)])
ideal = np.clip(np.round(ideal), 0, 255).astype(np.uint8)
clipped = ((flick == 255) & (truth < 255)) | ((flick == 0) & (truth > 0))
print(f"{name} {n} frames: input {psnr(flick, truth):.2f} dB, temporal {temporal_error(flick, truth):.1f}; "
      f"mean of {draws} aligned draws {psnr(ideal, truth):.2f} dB, temporal {temporal_error(ideal, truth):.2f}; "
      f"clipped pixels {clipped.mean():.3f}")
