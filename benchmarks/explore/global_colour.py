"""Session 13: how much of the blend's remaining error is a per-frame global colour error, and can a
guide->style colour mapping smoothed over a long temporal window remove it?

Runs the default deflicker (table, window 15) once (cached in /tmp/gc), then prints PSNR / temporal
error of: the blend; an oracle per-frame per-channel affine fit to the truth (the most any global
correction could give); and the guided correction: per frame fit M_t: [guide rgb, 1] -> blend (per
channel least squares), smooth M over time with a Gaussian of sigma s frames, add M̄_t(G) - M_t(G).

    PYTHONPATH=src python benchmarks/explore/global_colour.py carphone_pristine.mp4 48
"""
import os
import sys

import numpy as np

from flickerless import deflicker
from flickerless.demo import load_clip, registry_clip
from flickerless.synthetic import flickering_pair, psnr, temporal_error

name, n = sys.argv[1], int(sys.argv[2])
width = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[3] != "-" else None
clip, _ = load_clip(registry_clip(name), n, width)
truth, flick = flickering_pair(clip)
cache = f"/tmp/gc/{name}_{n}_{width}.npy"
if os.path.exists(cache):
    out = np.load(cache)
else:
    out = deflicker(clip, flick, mode="table", window=15, device="cpu")
    np.save(cache, out)


def report(label, x):
    x = np.clip(np.round(x), 0, 255).astype(np.uint8)
    print(f"{label:40s} {psnr(x, truth) - psnr(flick, truth):+6.2f} dB  temporal "
          f"{temporal_error(flick, truth) / temporal_error(x, truth):6.1f}x", flush=True)


report("blend", out)
o = out.astype(np.float64)
tr = truth.astype(np.float64)
fixed = np.empty_like(o)
for t in range(n):
    for c in range(3):
        A = np.stack([o[t, ..., c].ravel(), np.ones(o[t, ..., c].size)], 1)
        coef = np.linalg.lstsq(A, tr[t, ..., c].ravel(), rcond=None)[0]
        fixed[t, ..., c] = (A @ coef).reshape(o.shape[1:3])
report("oracle per-frame affine", fixed)


def guided(src, sig, robust=False):
    g = clip.astype(np.float64) / 255
    X = np.concatenate([g.reshape(n, -1, 3), np.ones((n, g.shape[1] * g.shape[2], 1))], 2)
    M = np.stack([np.linalg.lstsq(X[t], src[t].reshape(-1, 3), rcond=None)[0] for t in range(n)])  # (n,4,3)
    ts = np.arange(n)
    w = np.exp(-0.5 * ((ts[:, None] - ts[None]) / sig) ** 2)
    Mb = np.einsum("ts,sij->tij", w / w.sum(1, keepdims=True), M)
    return np.stack([src[t] + (X[t] @ (Mb[t] - M[t])).reshape(src.shape[1:]) for t in range(n)])


for sig in (4, 8, 16, 32, 1e9):
    report(f"guided post-blend sigma {sig:g}", guided(o, sig))
for sig in (8, 32, 1e9):
    report(f"guided on input (no blend) sigma {sig:g}", guided(flick.astype(np.float64), sig))

for sig in (16, 1e9):
    t = guided(truth.astype(np.float64), sig)
    print(f"harm on the flicker-free truth, sigma {sig:g}: {psnr(np.clip(np.round(t), 0, 255).astype(np.uint8), truth):.2f} dB", flush=True)
pre = np.clip(np.round(guided(flick.astype(np.float64), 1e9)), 0, 255).astype(np.uint8)
cache2 = cache.replace(".npy", "_pre.npy")
if os.path.exists(cache2):
    out2 = np.load(cache2)
else:
    out2 = deflicker(clip, pre, mode="table", window=15, device="cpu")
    np.save(cache2, out2)
report("guided pre-blend (sigma inf), then blend", out2)
report("  ... and post-blend too", guided(out2.astype(np.float64), 1e9))
