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
import torch.nn.functional as F

from flickerless.blend.detail import restore_detail
from flickerless.blend.patchmatch import PatchMatchOptions, final_vote, patchmatch
from flickerless.demo import load_clip, registry_clip
from flickerless.synthetic import add_grain, flickering_pair, psnr, temporal_error

torch.set_num_threads(2)
name, n = sys.argv[1], int(sys.argv[2])
width = int(sys.argv[3]) if sys.argv[3] != "0" else None
w = int(sys.argv[4])
grain = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
clip, _ = load_clip(registry_clip(name), n, width)
truth, flick = flickering_pair(clip)
if grain:
    flick = add_grain(flick, grain)
T = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).float() / 255  # noqa: E731
U = lambda x: (x.clamp(0, 1).permute(0, 2, 3, 1) * 255).round().byte().numpy()  # noqa: E731
G, S = T(clip), T(flick)
opts = PatchMatchOptions()
t0 = time.time()
rem = {}
for i in range(n):
    js = [j for j in range(max(0, i - w), min(n, i + w + 1)) if j != i]
    nnf = patchmatch(G[i:i + 1].expand(len(js), -1, -1, -1), G[js], S[js], opts)
    v = final_vote(torch.cat([S[js], G[js]], 1), nnf, opts)
    err = F.avg_pool2d((v[:, 3:] - G[i]).square().mean(1, keepdim=True), 5, 1, 2, count_include_pad=False)
    for k, j in enumerate(js):
        rem[j, i] = (v[k, :3], v[k, 3:], torch.exp(-err[k] / 0.05**2))
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
