"""Session 13: the blending floor with the defaults. The style is the ground truth itself (no flicker
to remove), so whatever error is left is what remapping and blending cost; reported against the
flickering input the benchmark uses, it is the most PSNR gain and temporal reduction the default
table blend (window 15) could show on that clip. Also the flickering style, for comparison.

    PYTHONPATH=src python benchmarks/explore/floor.py carphone_pristine.mp4 48 [WIDTH] [DEVICE]
"""
import sys
import time

from flickerless import deflicker
from flickerless.demo import load_clip, registry_clip
from flickerless.synthetic import flickering_pair, psnr, temporal_error

name, n = sys.argv[1], int(sys.argv[2])
width = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[3] != "-" else None
device = sys.argv[4] if len(sys.argv) > 4 else "cpu"
clip, _ = load_clip(registry_clip(name), n, width)
truth, flick = flickering_pair(clip)
p_in, t_in = psnr(flick, truth), temporal_error(flick, truth)
print(f"{name} {n} frames {clip.shape[2]}x{clip.shape[1]}: input {p_in:.2f} dB, temporal {t_in:.1f}", flush=True)
for label, style in (("truth as the style (floor)", truth), ("flickering style", flick)):
    t0 = time.time()
    out = deflicker(clip, style, mode="table", window=15, device=device)
    p, t = psnr(out, truth), temporal_error(out, truth)
    print(f"{label:28s} {p:.2f} dB ({p - p_in:+.2f}), temporal {t:.2f} ({t_in / t:.1f}x), {time.time() - t0:.0f} s",
          flush=True)
