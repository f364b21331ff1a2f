"""Session 14 probe: weight each remapped neighbour also by its temporal distance d = |i - j| (a
taper) instead of the box of the window blend: consecutive frames' blends then differ by small
weights at the window's edges, not by whole frames, and far remaps (worse) count less. Window
blend with the weighted default and detail restoration; remaps computed once. Args: CLIP FRAMES
WIDTH(0: native) W [GRAIN].

    PYTHONPATH=src python benchmarks/explore/taper.py carphone_pristine.mp4 32 0 7
"""
import math
import sys
import time

import torch

from flickerless.blend.detail import restore_detail
from flickerless.synthetic import psnr, temporal_error
from probe import flickering_case, neighbours, to_uint8 as U

name, n = sys.argv[1], int(sys.argv[2])
width = int(sys.argv[3]) if sys.argv[3] != "0" else None
w = int(sys.argv[4])
grain = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
truth, flick, G, S = flickering_case(name, n, width, grain)
t0 = time.time()
rem = {}
for i in range(n):
    js, v, vg, _, wt = neighbours(G, S, i, w)
    for k, j in enumerate(js):
        rem[j, i] = (v[k], vg[k], wt[k])
print(f"remaps {time.time() - t0:.0f} s; input {psnr(flick, truth):.2f} dB, temporal {temporal_error(flick, truth):.1f}",
      flush=True)

TAPERS = {
    "box": lambda d: 1.0,
    "triangle": lambda d: 1 - d / (w + 1),
    "hann": lambda d: math.cos(math.pi * d / (2 * (w + 1))) ** 2,
    "gauss w/2": lambda d: math.exp(-0.5 * (d / (w / 2)) ** 2),
    "flat-top (last third ramps)": lambda d: min(1.0, (w + 1 - d) / (w / 3 + 1)),
}


def run(taper):
    B, Gb = torch.empty_like(S), torch.empty_like(S)
    for i in range(n):
        acc, accg, tot = S[i].clone(), G[i].clone(), torch.ones_like(S[i][:1])
        for j in range(max(0, i - w), min(n, i + w + 1)):
            if j != i:
                v, vg, wt = rem[j, i]
                wt = wt * taper(abs(i - j))
                acc += v * wt
                accg += vg * wt
                tot += wt
        B[i], Gb[i] = acc / tot, accg / tot
    o = restore_detail(B, Gb, S, G)
    return f"{psnr(U(o), truth):.2f} dB, temporal {temporal_error(U(o), truth):.2f}"


for k, f in TAPERS.items():
    print(f"{k:28s}", run(f), flush=True)
