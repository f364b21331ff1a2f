"""Session 28: a per-frame colour equalisation solved over the whole shot before blending.

Each frame's style is taken as g_t * X + c_t (per channel), X the flicker-free style. Between a
frame t and its neighbours s (|t - s| <= K) the style of s is remapped onto t through the guides'
field; where the guide survives the remap (weight exp(-e / sigma^2), clipped pixels left out) the
two styles show the same content, so the moments of the pair give g_t / g_s and c_t - (g_t/g_s) c_s.
All pairs of a shot are solved together by least squares with the gauge mean(log g) = 0, mean(c) = 0
over the shot (the flicker is taken to average out over the whole shot, not over one window), each
style frame is corrected to (style - c_t) / g_t, and then the default deflicker runs on it.

    PYTHONPATH=src python benchmarks/explore/global_gauge.py CLIP FRAMES [WIDTH|-] [K] [MODE] [FADE]

MODE: flicker (the benchmark), truth (the truth itself as the style: what the correction costs
where there is nothing to correct). FADE: the clip darkens linearly to FADE of its brightness.
"""
import os
import sys
import time

import numpy as np
import torch

from flickerless import deflicker
from flickerless.blend.deflicker import detect_cuts
from flickerless.blend.frames import as_source
from flickerless.blend.patchmatch import PatchMatchOptions, remap
from flickerless.demo import load_clip, registry_clip
from flickerless.synthetic import add_flicker, psnr, stylize, temporal_error

name, n = sys.argv[1], int(sys.argv[2])
width = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[3] != "-" else None
K = int(sys.argv[4]) if len(sys.argv) > 4 else 2
what = sys.argv[5] if len(sys.argv) > 5 else "flicker"
fade = float(sys.argv[6]) if len(sys.argv) > 6 else 1.0
clip, _ = load_clip(registry_clip(name), n, width)
if fade != 1.0:
    f = np.linspace(1.0, fade, n, dtype=np.float32)[:, None, None, None]
    clip = np.clip(np.round(clip * f), 0, 255).astype(np.uint8)
truth = np.stack([stylize(x) for x in clip])
flick = add_flicker(truth) if what == "flicker" else truth.copy()


def estimate(guide_u8, style_u8, k, sigma=0.05, scale=1):
    """Per-frame per-channel (gain, offset) of each style frame, solved over each shot."""
    g = torch.from_numpy(guide_u8).permute(0, 3, 1, 2).float() / 255
    s = torch.from_numpy(style_u8).permute(0, 3, 1, 2).float() / 255
    if scale > 1:
        g = torch.nn.functional.avg_pool2d(g, scale)
        s = torch.nn.functional.avg_pool2d(s, scale)
    t_n = len(g)
    cuts = detect_cuts(as_source(guide_u8))
    shot = np.zeros(t_n, int)
    for c in cuts:
        shot[c:] += 1
    pairs = [(t, u) for t in range(t_n) for u in range(t + 1, min(t_n, t + k + 1)) if shot[t] == shot[u]]
    opts = PatchMatchOptions()
    rows = []
    for i in range(0, len(pairs), 16):
        chunk = pairs[i:i + 16]
        tt = [p[0] for p in chunk]
        uu = [p[1] for p in chunk]
        src = torch.cat([s[uu], g[uu]], 1)
        out = remap(src, g[tt], g[uu], opts)
        rs, rg = out[:, :3], out[:, 3:]
        err = (rg - g[tt]).square().mean(1, keepdim=True)
        err = torch.nn.functional.avg_pool2d(err, 5, 1, 2, count_include_pad=False)
        w = torch.exp(-err / sigma**2)
        st = s[tt]
        for j, (t, u) in enumerate(chunk):
            row = []
            for c in range(3):
                x, y = rs[j, c], st[j, c]
                ok = ((x > 1 / 255) & (x < 254 / 255) & (y > 1 / 255) & (y < 254 / 255)).float()
                ww = (w[j, 0] * ok).flatten().double()
                x, y = x.flatten().double(), y.flatten().double()
                sw = ww.sum().clamp_min(1e-9)
                mx, my = (ww * x).sum() / sw, (ww * y).sum() / sw
                vx, vy = (ww * (x - mx) ** 2).sum() / sw, (ww * (y - my) ** 2).sum() / sw
                a = torch.sqrt(vy / vx.clamp_min(1e-12))
                row.append((float(a), float(my - a * mx), float(sw)))
            rows.append((t, u, row))
    gains = np.ones((t_n, 3))
    offs = np.zeros((t_n, 3))
    for sh in np.unique(shot):
        idx = np.flatnonzero(shot == sh)
        pos = {t: i for i, t in enumerate(idx)}
        m = len(idx)
        sub = [r for r in rows if r[0] in pos]
        for c in range(3):
            # log g_t - log g_u = log a ; then c_t - a c_u = b
            A = np.zeros((len(sub) + 1, m))
            y = np.zeros(len(sub) + 1)
            wts = np.ones(len(sub) + 1)
            for i, (t, u, row) in enumerate(sub):
                A[i, pos[t]], A[i, pos[u]] = 1, -1
                y[i] = np.log(row[c][0])
                wts[i] = np.sqrt(row[c][2])
            A[-1] = 1.0 / m
            wts[-1] = wts[:-1].max() * 10 if len(sub) else 1
            lg = np.linalg.lstsq(A * wts[:, None], y * wts, rcond=None)[0]
            B = np.zeros_like(A)
            yb = np.zeros_like(y)
            for i, (t, u, row) in enumerate(sub):
                B[i, pos[t]], B[i, pos[u]] = 1, -row[c][0]
                yb[i] = row[c][1]
            B[-1] = 1.0 / m
            cb = np.linalg.lstsq(B * wts[:, None], yb * wts, rcond=None)[0]
            gains[idx, c] = np.exp(lg)
            offs[idx, c] = cb
    return gains, offs


def correct(style_u8, gains, offs):
    x = style_u8.astype(np.float64) / 255
    y = (x - offs[:, None, None, :]) / gains[:, None, None, :]
    return np.clip(np.round(y * 255), 0, 255).astype(np.uint8)


def report(label, x, secs=None):
    extra = f"  ({secs:.1f} s)" if secs is not None else ""
    print(f"{label:44s} {psnr(x, truth):6.2f} dB (in {psnr(flick, truth):.2f})  temporal {temporal_error(x, truth):7.2f} "
          f"(in {temporal_error(flick, truth):.1f}){extra}", flush=True)


os.makedirs("/tmp/gg", exist_ok=True)
cache = f"/tmp/gg/{name}_{n}_{width}_{what}_{fade}.npy"
t0 = time.time()
if os.path.exists(cache):
    base = np.load(cache)
    tb = None
else:
    base = deflicker(clip, flick, mode="table", window=15, device="cpu")
    tb = time.time() - t0
    np.save(cache, base)
report("default blend", base, tb)
for k, scale in [(K, 1), (K, 2)]:
    t0 = time.time()
    gains, offs = estimate(clip, flick, k, scale=scale)
    te = time.time() - t0
    corr = correct(flick, gains, offs)
    report(f"equalised only, K {k}, scale {scale}", corr, te)
    t0 = time.time()
    out = deflicker(clip, corr, mode="table", window=15, device="cpu")
    report(f"equalised, then blend, K {k}, scale {scale}", out, time.time() - t0)
    print("  gain sd", gains.std(0).round(4), "offset sd", offs.std(0).round(4), flush=True)

if what == "flicker" and len(sys.argv) > 7:
    # the generator's own gains and offsets (add_flicker's draws, seed 0), gauge as the estimate's
    rng = np.random.default_rng(0)
    h, w_ = clip.shape[1:3]
    sc = max(4, min(h, w_) // 6)
    tg, tb_ = [], []
    for i in range(n):
        tg.append(1.0 + rng.normal(0, 0.08, 3))
        tb_.append(rng.normal(0, 0.04, 3))
        rng.normal(0, 1, (h // sc + 2, w_ // sc + 2, 3))
    tg, tb_ = np.array(tg), np.array(tb_)
    gm = np.exp(np.log(tg).mean(0))
    print("true gain/geo-mean vs estimate, sd of diff:", (tg / gm - gains).std(0).round(4))
    oracle = correct(flick, tg / gm, tb_ - tb_.mean(0))
    report("oracle equalised only", oracle)
    report("oracle equalised, then blend", deflicker(clip, oracle, mode="table", window=15, device="cpu"))
