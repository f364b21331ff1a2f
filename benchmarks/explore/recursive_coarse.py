"""Session 20: the coarse band from a recursive whole-shot blend. A forward and a backward running
blend, each frame's carried blend remapped one frame on and decayed by LAM (1: the whole shot),
weighted and carrying the guide blend as the tool's entries do; 2 remaps a frame. The default
output (table, window 15) then takes the coarse band (box blur K) of that blend, optionally gated
by how well the guide survives the same blend in that band (TAU; 0: no gate).

    PYTHONPATH=src python benchmarks/explore/recursive_coarse.py CLIP FRAMES WIDTH|0 LAM K TAU [FADE] [GRAIN]
"""
import sys, time
import numpy as np
import torch
from flickerless import deflicker
from flickerless.blend.deflicker import Remapper
from flickerless.blend.frames import as_source
from flickerless.blend.patchmatch import PatchMatchOptions
from coarse_case import make_case
from flickerless.synthetic import psnr, temporal_error, _blur

name, n, width = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) or None
lams = [float(x) for x in sys.argv[4].split(",")]
ks = [int(x) for x in sys.argv[5].split(",")]
taus = [float(x) for x in sys.argv[6].split(",")]
fade = float(sys.argv[7]) if len(sys.argv) > 7 else 1.0
grain = float(sys.argv[8]) if len(sys.argv) > 8 else 0.0
clip, truth, flick = make_case(name, n, width, fade, grain)
n = len(clip)
print(name, clip.shape, "fade", fade, "grain", grain, "input", round(psnr(flick, truth), 2),
      round(temporal_error(flick, truth), 2), flush=True)
t = time.time(); a = deflicker(clip, flick, mode="table", window=15, device="cpu"); ta = time.time() - t
print("window 15", round(psnr(a, truth), 2), round(temporal_error(a, truth), 2), round(ta, 1), flush=True)
g, s = as_source(clip), as_source(flick)


def running(order, lam):
    rm = Remapper(g, PatchMatchOptions(), "cpu", 1, error_sigma=0.05, carry_guide=True)
    sums, prev = {}, None
    with torch.inference_mode():
        for k, i in enumerate(order):
            own = rm.entries(s, [i])[0]
            tot, w = own[:-1].clone(), own[-1:].clone()
            if prev is not None:
                got = []
                rm.run([(order[k - 1], i)], lambda j: prev, lambda j, img: got.append(img))
                img = got[0]
                tot += lam * img[:-1] * img[-1:]
                w += lam * img[-1:]
            sums[i] = (tot, w)
            prev = torch.cat([tot / w, w])
    return sums


for lam in lams:
    t = time.time()
    fw, bw = running(list(range(n)), lam), running(list(range(n - 1, -1, -1)), lam)
    blend, gblend = [], []
    for i in range(n):
        own = as_source(flick).load([i], "cpu")[0]
        ownc = torch.cat([own, g.load([i], "cpu")[0]])
        tot = fw[i][0] + bw[i][0] - ownc
        w = fw[i][1] + bw[i][1] - 1
        r = (tot / w).permute(1, 2, 0).numpy() * 255
        blend.append(r[..., :3]); gblend.append(r[..., 3:])
    tr = time.time() - t
    rb = np.clip(np.round(np.stack(blend)), 0, 255).astype(np.uint8)
    print(f"recursive lam {lam}: blend alone", round(psnr(rb, truth), 2), round(temporal_error(rb, truth), 2),
          round(tr, 1), flush=True)
    af = a.astype(np.float32)
    gf = clip.astype(np.float32)
    for k in ks:
        d = np.stack([_blur(b - x, k) for b, x in zip(blend, af)])
        dg = np.stack([_blur(b - x, k) for b, x in zip(gblend, gf)])
        for tau in taus:
            if tau:
                gate = np.exp(-(dg ** 2).mean(-1, keepdims=True) / (255 * tau) ** 2)
            else:
                gate = 1.0
            out = np.clip(np.round(af + gate * d), 0, 255).astype(np.uint8)
            print(f"  + coarse, k {k}, tau {tau}", round(psnr(out, truth), 2), round(temporal_error(out, truth), 2),
                  "gate mean", round(float(np.mean(gate)), 3), flush=True)
