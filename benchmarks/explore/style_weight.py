"""Session 13 prototype: weight each remapped frame also by how well its remapped *style* agrees
with the target frame's own style in the fine band (what a gaussian of sigma 2 removes), where
smooth flicker (colour jumps, blotches) cancels but misplaced structure (a posterisation edge a pixel
off) does not. e_s = 5x5 mean of the squared fine-band difference; a noise floor (the per-pixel
minimum of e_s over the frame's remaps) is subtracted so per-frame grain lowers every remap alike.
Window blend (w), then the tool's detail restoration. Args: CLIP FRAMES WIDTH(0: native) W GRAIN_SD.

    PYTHONPATH=src python benchmarks/explore/style_weight.py bikes.mp4 24 320 7 0
"""
import sys
import time

import torch
import torch.nn.functional as F

from flickerless.blend.detail import _gaussian, restore_detail
from flickerless.synthetic import psnr, temporal_error
from probe import flickering_case, neighbours

name, n = sys.argv[1], int(sys.argv[2])
width = int(sys.argv[3]) if sys.argv[3] != "0" else None
w, grain = int(sys.argv[4]), float(sys.argv[5])
truth, flick, G, S = flickering_case(name, n, width, grain)
U = lambda x: (x.permute(0, 2, 3, 1) * 255).round().clamp(0, 255).byte().numpy()  # noqa: E731
fine = lambda x: x - _gaussian(x, 2.0)  # noqa: E731
box5 = lambda x: F.avg_pool2d(x, 5, 1, 2, count_include_pad=False)  # noqa: E731
t0 = time.time()
rem = {}
for i in range(n):
    js, v, vg, eg, _ = neighbours(G, S, i, w)
    es = box5((fine(v) - fine(S[i:i + 1])).square().mean(1, keepdim=True))
    rem[i] = (v, vg, eg, es)
print(f"remaps {time.time() - t0:.0f} s; input {psnr(flick, truth):.2f} dB, temporal {temporal_error(flick, truth):.1f}",
      flush=True)


def run(sig_s, floor):
    B, Gb = torch.empty_like(S), torch.empty_like(S)
    for i in range(n):
        v, vg, eg, es = rem[i]
        wt = torch.exp(-eg / 0.05**2)
        if sig_s:
            e = es - es.amin(0, keepdim=True) if floor else es
            wt = wt * torch.exp(-e / sig_s**2)
        B[i] = (S[i] + (v * wt).sum(0)) / (1 + wt.sum(0))
        Gb[i] = (G[i] + (vg * wt).sum(0)) / (1 + wt.sum(0))
    o = restore_detail(B, Gb, S, G)
    return f"blend {psnr(U(B.clamp(0, 1)), truth):.2f} {temporal_error(U(B.clamp(0, 1)), truth):.2f}; " \
           f"restored {psnr(U(o.clamp(0, 1)), truth):.2f} {temporal_error(U(o.clamp(0, 1)), truth):.2f}"


print("guide weight only:", run(0, False), flush=True)
for sig_s in (0.03, 0.05, 0.08):
    for floor in (True,):
        print(f"style sigma {sig_s} floor {floor}:", run(sig_s, floor), flush=True)
