"""Session 13: global colour error of the blend, followed along the motion and smoothed over a long
window. For each t: remap the blend B_t onto frame t+1 (PatchMatch on the guides), fit a per-channel
affine B_{t+1} ~ a R(B_t) + c weighted by how well the guide survives the remap, chain these into
each frame's colour map from frame 0, smooth the chained maps with a Gaussian of sigma s frames, and
move each frame's colours from its own map to the smoothed one. Needs the cache of global_colour.py.

    PYTHONPATH=src python benchmarks/explore/global_chain.py carphone_pristine.mp4 48
"""
import sys

import numpy as np
import torch

from flickerless.blend.patchmatch import PatchMatchOptions, remap
from flickerless.demo import load_clip, registry_clip
from flickerless.synthetic import flickering_pair, psnr, temporal_error

name, n = sys.argv[1], int(sys.argv[2])
width = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[3] != "-" else None
clip, _ = load_clip(registry_clip(name), n, width)
truth, flick = flickering_pair(clip)
MODEL = next((a for a in sys.argv if a in ("affine", "offset", "gain")), "affine")
out = truth if "--truth" in sys.argv else np.load(f"/tmp/gc/{name}_{n}_{width}.npy")


def report(label, x):
    x = np.clip(np.round(x), 0, 255).astype(np.uint8)
    print(f"{label:40s} {psnr(x, truth) - psnr(flick, truth):+6.2f} dB  temporal "
          f"{temporal_error(flick, truth) / max(temporal_error(x, truth), 1e-9):6.1f}x", flush=True)


def t_(a):
    return torch.from_numpy(a).permute(0, 3, 1, 2).float().div(255)


g, b = t_(clip), t_(out)
opts = PatchMatchOptions()
rels = []
for s in range(0, n - 1, 8):
    e = min(n - 1, s + 8)
    src = torch.cat([b[s:e], g[s:e]], 1)
    r = remap(src, g[s + 1:e + 1], g[s:e], opts)
    for k in range(e - s):
        rb, rg = r[k, :3], r[k, 3:]
        err = torch.nn.functional.avg_pool2d((rg - g[s + 1 + k]).square().mean(0, keepdim=True)[None], 5, 1, 2,
                                             count_include_pad=False)[0, 0]
        w = torch.exp(-err / 0.05**2).flatten().double().numpy()
        ab = []
        for c in range(3):
            x = rb[c].flatten().double().numpy()
            y = b[s + 1 + k, c].flatten().double().numpy()
            if MODEL == "affine":
                A = np.stack([x, np.ones_like(x)], 1) * np.sqrt(w)[:, None]
                ab.append(np.linalg.lstsq(A, y * np.sqrt(w), rcond=None)[0])
            elif MODEL == "offset":
                ab.append([1.0, np.sum(w * (y - x)) / np.sum(w)])
            else:  # gain: ratio of weighted means
                ab.append([np.sum(w * y) / np.sum(w * x), 0.0])
        rels.append(np.array(ab))  # (3, 2): a, c
A = np.ones((n, 3))
C = np.zeros((n, 3))
for t, rc in enumerate(rels):
    A[t + 1] = rc[:, 0] * A[t]
    C[t + 1] = rc[:, 0] * C[t] + rc[:, 1]
print("chained gain range", A.min(0), A.max(0))
report("blend", out)
o = out.astype(np.float64) / 255
ts = np.arange(n)
for sig in (8, 16, 32, 64, 1e9):
    w = np.exp(-0.5 * ((ts[:, None] - ts[None]) / sig) ** 2)
    w /= w.sum(1, keepdims=True)
    Ab, Cb = w @ A, w @ C
    y = Ab[:, None, None] * (o - C[:, None, None]) / A[:, None, None] + Cb[:, None, None]
    report(f"chain-smoothed sigma {sig:g}", y * 255)
