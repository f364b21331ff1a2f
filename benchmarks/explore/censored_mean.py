"""Session 13: what clipping at 0/255 costs the ideal average of averaging_ceiling.py, and what a
censoring-aware estimate would win back there: the mean of the clipped draws; their median; the
mean but 0/255 where half the draws are clipped; a Tobit-style fixed point (the mean of a Gaussian
whose clipped mean matches the draws', sd the draws' sd). Prints each as PSNR gain over the input.

    PYTHONPATH=src python benchmarks/explore/censored_mean.py carphone_pristine.mp4 24 31
"""
import sys

import numpy as np
from scipy.stats import norm

from flickerless.demo import load_clip, registry_clip
from flickerless.synthetic import add_flicker, flickering_pair, psnr
name, n, draws = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
width = int(sys.argv[4]) if len(sys.argv) > 4 else None
clip, _ = load_clip(registry_clip(name), n, width)
truth, flick = flickering_pair(clip)
D = np.stack([add_flicker(np.repeat(t[None], draws, 0), seed=100 + i) for i, t in enumerate(truth)]).astype(np.float64)  # n,d,h,w,3
u8 = lambda x: np.clip(np.round(x), 0, 255).astype(np.uint8)
m = D.mean(1)
print("truth at 255:", (truth == 255).mean(), "at 0:", (truth == 0).mean())
print("mean", psnr(u8(m), truth) - psnr(flick, truth))
med = np.median(D, 1); print("median", psnr(u8(med), truth) - psnr(flick, truth))
hi = (D >= 255).mean(1); lo = (D <= 0).mean(1)
h = m.copy(); h[hi >= 0.5] = 255; h[lo >= 0.5] = 0
print("mean, but 255/0 where half clipped", psnr(u8(h), truth) - psnr(flick, truth))
# moment-based: sigma from unclipped samples' spread is biased; use overall sample sd as rough sigma
sd = D.std(1) + 1e-6
# Tobit-ish: censored mean, E[clip(X)] = g(mu, sigma); invert by fixed-point
mu = m.copy()
for _ in range(20):
    a = (255 - mu) / sd; b = (0 - mu) / sd
    # E[min(max(X,0),255)] for X~N(mu, sd)
    Ph, Pl = 1 - norm.cdf(a), norm.cdf(b)
    mid = mu * (norm.cdf(a) - norm.cdf(b)) + sd * (norm.pdf(b) - norm.pdf(a))
    e = mid + 255 * Ph
    mu = mu + (m - e)
print("tobit fixed point (sd = sample sd)", psnr(u8(mu), truth) - psnr(flick, truth))
