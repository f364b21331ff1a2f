"""Session 13 prototype: at the clip's ends, keep 2w+1 frames in the blend by shifting the window
inwards (frame 0 blends 0..2w) instead of truncating it (0..w). Window blend with the weighted
default and detail restoration, remaps computed once for every pair up to 2w apart.
Args: CLIP FRAMES WIDTH(0: native) W.

    PYTHONPATH=src python benchmarks/explore/shifted_window.py carphone_pristine.mp4 24 0 7
"""
import sys
import time

import torch

from flickerless.blend.detail import restore_detail
from flickerless.synthetic import psnr, temporal_error
from probe import flickering_case, neighbours, to_uint8 as U

name, n = sys.argv[1], int(sys.argv[2])
width = int(sys.argv[3]) if sys.argv[3] != "0" else None
w = int(sys.argv[4])
truth, flick, G, S = flickering_case(name, n, width)
t0 = time.time()
rem = {}
for i in range(n):
    js, v, vg, _, wt = neighbours(G, S, i, 2 * w)
    for k, j in enumerate(js):
        rem[j, i] = (v[k], vg[k], wt[k])
print(f"remaps {time.time() - t0:.0f} s; input {psnr(flick, truth):.2f} dB, temporal {temporal_error(flick, truth):.1f}",
      flush=True)


def run(shift):
    B, Gb = torch.empty_like(S), torch.empty_like(S)
    for i in range(n):
        lo, hi = max(0, i - w), min(n - 1, i + w)
        if shift:
            lo, hi = max(0, min(lo, hi - 2 * w)), min(n - 1, max(hi, lo + 2 * w))
        acc, accg, tot = S[i].clone(), G[i].clone(), torch.ones_like(S[i][:1])
        for j in range(lo, hi + 1):
            if j != i:
                v, vg, wt = rem[j, i]
                acc += v * wt
                accg += vg * wt
                tot += wt
        B[i], Gb[i] = acc / tot, accg / tot
    o = restore_detail(B, Gb, S, G)
    ends = list(range(w)) + list(range(n - w, n))
    return (f"all {psnr(U(o), truth):.2f} dB, temporal {temporal_error(U(o), truth):.2f}; "
            f"end frames {psnr(U(o[ends]), truth[ends]):.2f} dB")


print("truncated:", run(False), flush=True)
print("shifted:  ", run(True), flush=True)
