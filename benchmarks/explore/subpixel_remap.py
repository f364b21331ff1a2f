"""Session 12: one remap of the truth from the previous frame, four ways: the field as found, after a
local integer descent on the 5x5 guide cost, with a sub-pixel parabola fit and bilinear vote, and both.

    PYTHONPATH=src python benchmarks/explore/subpixel_remap.py carphone_pristine.mp4 16
    PYTHONPATH=src python benchmarks/explore/subpixel_remap.py bikes.mp4 12 320

With a 4th argument ``variants``: PatchMatch variants (samples, guide weight, iterations, the descent),
fields found with the truth or with the flickering style:

    PYTHONPATH=src python benchmarks/explore/subpixel_remap.py carphone_pristine.mp4 12 0 variants
    PYTHONPATH=src python benchmarks/explore/subpixel_remap.py bikes.mp4 10 320 variants
"""
import sys, numpy as np, torch, torch.nn.functional as F
from flickerless.blend.patchmatch import PatchMatchOptions, patchmatch, final_vote, describe, patch_cost, patch_offsets
from flickerless.demo import load_clip, registry_clip
from flickerless.synthetic import add_flicker, psnr, stylize
name, n = sys.argv[1], int(sys.argv[2]); width = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[3] != "0" else None
clip, _ = load_clip(registry_clip(name), n, width)
gt = np.stack([stylize(f) for f in clip])
t = lambda x: torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255
U = lambda x: (x.permute(0, 2, 3, 1) * 255).round().clamp(0, 255).byte().numpy()
opts = PatchMatchOptions()
offs = patch_offsets(5)
def costs(tg, sg, nnf):
    td, sd = describe(tg, offs), describe(sg, offs)
    hs, ws = sg.shape[-2:]
    out = {}
    for dy, dx in [(0,0),(-1,0),(1,0),(0,-1),(0,1)]:
        q = nnf.clone(); q[:,0] = (q[:,0]+dy).clamp(0,hs-1); q[:,1] = (q[:,1]+dx).clamp(0,ws-1)
        out[(dy,dx)] = patch_cost(td, sd, q, (hs, ws), len(offs))
    return out
def descend(tg, sg, nnf, rounds=3):
    hs, ws = sg.shape[-2:]
    for _ in range(rounds):
        c = costs(tg, sg, nnf)
        keys = list(c); stack = torch.stack([c[k] for k in keys], 1)
        best = stack.argmin(1)
        d = torch.tensor(keys)[best]  # B,H,W,2
        nnf = nnf + d.permute(0, 3, 1, 2)
        nnf[:,0].clamp_(0,hs-1); nnf[:,1].clamp_(0,ws-1)
    return nnf
def subpix(tg, sg, nnf):
    c = costs(tg, sg, nnf)
    def fit(m, z, p):
        den = m - 2*z + p
        f = torch.where(den > 1e-9, 0.5*(m - p)/den.clamp_min(1e-9), torch.zeros_like(z))
        return f.clamp(-0.5, 0.5)
    return torch.stack([fit(c[(-1,0)], c[(0,0)], c[(1,0)]), fit(c[(0,-1)], c[(0,0)], c[(0,1)])], 1)
def vote_bilinear(src, nnf, frac):
    b, C, hs, ws = src.shape; _, _, h, w = nnf.shape
    out = torch.zeros(b, C, h, w); cnt = torch.zeros(1,1,h,w)
    pos = nnf.float() + frac
    for dy, dx in offs:
        # patch centred at p-d covers p: sample src at pos(p-d)+d
        pp = F.pad(pos, (max(dx,0), max(-dx,0), max(dy,0), max(-dy,0)), value=float('nan'))
        pp = pp[:, :, max(-dy,0)+0: max(-dy,0)+h, max(-dx,0): max(-dx,0)+w] if False else None
        ys = torch.arange(h) - dy; xs = torch.arange(w) - dx
        valid = ((ys>=0)&(ys<h))[:,None] & ((xs>=0)&(xs<w))[None,:]
        q = pos.index_select(2, ys.clamp(0,h-1)).index_select(3, xs.clamp(0,w-1))
        qy = (q[:,0] + dy).clamp(0, hs-1); qx = (q[:,1] + dx).clamp(0, ws-1)
        grid = torch.stack([qx / (ws-1) * 2 - 1, qy / (hs-1) * 2 - 1], -1)
        val = F.grid_sample(src, grid, mode="bilinear", align_corners=True)
        v = valid.float()
        out += val * v; cnt += v
    return out / cnt
if len(sys.argv) > 4 and sys.argv[4] == "variants":
    fl = add_flicker(gt)
    variants = {"default": {}, "samples_full": {"samples": None}, "gw100": {"guide_weight": 100.0}, "iter10": {"iterations": 10}}
    res = {}
    for i in range(1, n):
        tg, sg = t(clip[i:i+1]), t(clip[i-1:i])
        for style_name, st in (("truth", gt), ("flick", fl)):
            ss = t(st[i-1:i])
            for k, o in variants.items():
                op = PatchMatchOptions(**o)
                nnf = patchmatch(tg, sg, ss, op)
                res.setdefault((style_name, k), []).append(psnr(U(final_vote(t(gt[i-1:i]), nnf, op)), gt[i:i+1]))
                if k == "default":
                    n2 = descend(tg, sg, nnf, 3)
                    res.setdefault((style_name, k + "+descend"), []).append(psnr(U(final_vote(t(gt[i-1:i]), n2, op)), gt[i:i+1]))
    for k, v in res.items():
        print(name, k, round(float(np.mean(v)), 2))
    sys.exit()
res = {k: [] for k in ["int", "desc", "sub", "sub_nodesc"]}
for i in range(1, n):
    tg, sg, ss = t(clip[i:i+1]), t(clip[i-1:i]), t(gt[i-1:i])
    nnf = patchmatch(tg, sg, ss, opts)
    res["int"].append(psnr(U(final_vote(ss, nnf, opts)), gt[i:i+1]))
    res["sub_nodesc"].append(psnr(U(vote_bilinear(ss, nnf, subpix(tg, sg, nnf))), gt[i:i+1]))
    n2 = descend(tg, sg, nnf)
    res["desc"].append(psnr(U(final_vote(ss, n2, opts)), gt[i:i+1]))
    res["sub"].append(psnr(U(vote_bilinear(ss, n2, subpix(tg, sg, n2))), gt[i:i+1]))
print(name, {k: round(float(np.mean(v)), 2) for k, v in res.items()})
