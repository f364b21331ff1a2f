"""Prototype of guided detail restoration (session 12): window blend (w) with the weighted default,
the guide blended through the same remaps; the fine band of style - blend added back with the gain
clamp(alpha e_guide / e_style). Args: CLIP FRAMES WIDTH(0: native) W GRAIN_SD.

    PYTHONPATH=src python benchmarks/explore/detail_gate.py carphone_pristine.mp4 32 0 7 0
    PYTHONPATH=src python benchmarks/explore/detail_gate.py carphone_pristine.mp4 32 0 7 0.04
"""
import sys, numpy as np, torch, time, torch.nn.functional as F
from flickerless.blend.patchmatch import PatchMatchOptions, patchmatch, final_vote
from flickerless.blend.detail import _gaussian
from flickerless.demo import load_clip, registry_clip
from flickerless.synthetic import flickering_pair, psnr, temporal_error, _blur
torch.set_num_threads(2)
name = sys.argv[1]; n = int(sys.argv[2]); width = int(sys.argv[3]) if sys.argv[3] != "0" else None; w = int(sys.argv[4])
tex = float(sys.argv[5])
clip, _ = load_clip(registry_clip(name), n, width)
truth, flick = flickering_pair(clip)
if tex:
    rng = np.random.default_rng(1)
    fl = flick.astype(np.float32) / 255
    for i in range(len(fl)):
        z = rng.normal(0, 1, fl.shape[1:]).astype(np.float32)
        z = _blur(z, 3); z /= z.std()
        fl[i] += tex * z
    flick = np.clip(np.round(fl * 255), 0, 255).astype(np.uint8)
T = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).float() / 255
U = lambda x: (x.permute(0, 2, 3, 1) * 255).round().clamp(0, 255).byte().numpy()
gauss = _gaussian  # the gaussian blur the tool itself uses
G, S = T(clip), T(flick)
opts = PatchMatchOptions()
lps = [2.0, 4.0, 8.0]
LF = {s: gauss(S, s) for s in lps}
t0 = time.time()
rem = {}  # (i, j) -> (remapped S, {s: remapped LF}, err)
for i in range(n):
    js = [j for j in range(max(0, i - w), min(n, i + w + 1)) if j != i]
    tg = G[i:i+1].expand(len(js), -1, -1, -1); sg = G[js]; ss = S[js]
    nnf = patchmatch(tg, sg, ss, opts)
    src = torch.cat([ss, sg] + [LF[s][js] for s in lps], 1)
    v = final_vote(src, nnf, opts)
    err = (v[:, 3:6] - tg).square().mean(1, keepdim=True)
    err = F.avg_pool2d(err, 5, 1, 2, count_include_pad=False)
    rem[i] = (js, v[:, :3], v[:, 3:6], err)
print("remaps", round(time.time() - t0, 1), "s; input", round(psnr(flick, truth), 2), round(temporal_error(flick, truth), 1), flush=True)

def box(x, r):
    return F.avg_pool2d(x, 2 * r + 1, 1, r, count_include_pad=False)
B = torch.empty_like(S); Gt = torch.empty_like(S)
for i in range(n):
    js, v, vg, err = rem[i]
    wt = torch.exp(-err / 0.05**2)
    B[i] = (S[i] + (v * wt).sum(0)) / (1 + wt.sum(0))
    Gt[i] = (G[i] + (vg * wt).sum(0)) / (1 + wt.sum(0))
def ev(o):
    o = U(o.clamp(0, 1)); return "%.2f %.2f" % (psnr(o, truth), temporal_error(o, truth))
print("weighted blend", ev(B))
for lp in [None, 2.0, 4.0]:
    for r in [2, 4]:
        for alpha in [0.5, 1.0, 2.0]:
            ds, dg = S - B, G - Gt
            if lp:
                ds, dg = ds - gauss(ds, lp), dg - gauss(dg, lp)
            Rs = box(ds.square().mean(1, keepdim=True), r); Rg = box(dg.square().mean(1, keepdim=True), r)
            k = (alpha * Rg / Rs.clamp_min(1e-8)).clamp(0, 1)
            print(f"lp {lp} r {r} alpha {alpha}: {ev(B + k * ds)}  mean k {k.mean():.3f}", flush=True)
