"""Session 13 prototype: at the clip's ends, keep 2w+1 frames in the blend by shifting the window
inwards (frame 0 blends 0..2w) instead of truncating it (0..w). Window blend with the weighted
default and detail restoration, remaps computed once for every pair up to 2w apart.
Args: CLIP FRAMES WIDTH(0: native) W.

    PYTHONPATH=src python benchmarks/explore/shifted_window.py carphone_pristine.mp4 24 0 7
"""
import sys
import time

import torch
import torch.nn.functional as F

from flickerless.blend.detail import restore_detail
from flickerless.blend.patchmatch import PatchMatchOptions, final_vote, patchmatch
from flickerless.demo import load_clip, registry_clip
from flickerless.synthetic import flickering_pair, psnr, temporal_error

torch.set_num_threads(2)
name, n = sys.argv[1], int(sys.argv[2])
width = int(sys.argv[3]) if sys.argv[3] != "0" else None
w = int(sys.argv[4])
clip, _ = load_clip(registry_clip(name), n, width)
truth, flick = flickering_pair(clip)
T = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).float() / 255  # noqa: E731
U = lambda x: (x.clamp(0, 1).permute(0, 2, 3, 1) * 255).round().byte().numpy()  # noqa: E731
G, S = T(clip), T(flick)
opts = PatchMatchOptions()
t0 = time.time()
rem = {}
for i in range(n):
    js = [j for j in range(max(0, i - 2 * w), min(n, i + 2 * w + 1)) if j != i]
    nnf = patchmatch(G[i:i + 1].expand(len(js), -1, -1, -1), G[js], S[js], opts)
    v = final_vote(torch.cat([S[js], G[js]], 1), nnf, opts)
    err = F.avg_pool2d((v[:, 3:] - G[i]).square().mean(1, keepdim=True), 5, 1, 2, count_include_pad=False)
    for k, j in enumerate(js):
        rem[j, i] = (v[k, :3], v[k, 3:], torch.exp(-err[k] / 0.05**2))
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
