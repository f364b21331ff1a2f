"""Experiment for issue 2's quality gap: weight each remapped frame, per pixel, by how well the guide
survives the same remap, w = exp(-e / sigma^2), e = 5x5 box mean of the squared guide error, in a
plain window blend (every pair within +-w remapped directly), against the unweighted blend.
Not yet in `flickerless.deflicker`; see BENCHMARKS.md for the figures and what is open.

    PYTHONPATH=src python benchmarks/weighted_blend.py carphone_pristine.mp4 40 7
    PYTHONPATH=src python benchmarks/weighted_blend.py bikes.mp4 40 7      # downscaled to 320x136
    PYTHONPATH=src python benchmarks/weighted_blend.py carphone_pristine.mp4 40 7 0.03   # with film grain (std 0.03)

sigma is absolute (None rows), or a multiple of the median error of the target frame's pairs
("target") or of each pair ("pair").
"""
import sys, time, numpy as np, torch, cv2, torch.nn.functional as F
from flickerless.blend import patchmatch as pm
from flickerless.blend import cpu_kernels as ck
from flickerless.demo import load_clip, registry_clip
from flickerless.synthetic import flickering_pair, psnr, temporal_error
name, n, win = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
clip, _ = load_clip(registry_clip(name), n)
if clip.shape[2] > 400: clip = np.stack([cv2.resize(f, (320, 136), interpolation=cv2.INTER_AREA) for f in clip])
grain = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
if grain:
    rng = np.random.default_rng(7)
    clip = np.clip(clip + rng.normal(0, grain * 255, clip.shape), 0, 255).round().astype(np.uint8)
gt, fl = flickering_pair(clip, seed=2)
T = lambda x: torch.from_numpy(x).permute(0,3,1,2).float()/255
G, S = T(clip), T(fl)
opts = pm.PatchMatchOptions()
offs = pm.patch_offsets(opts.patch_sizes[-1])
pairs = [(j, i) for i in range(n) for j in range(max(0, i-win), min(n, i+win+1)) if j != i]
RS, RG = {}, {}
t0 = time.time()
for a in range(0, len(pairs), 16):
    ch = pairs[a:a+16]
    src = torch.stack([S[j] for j, _ in ch]); tg = torch.stack([G[i] for _, i in ch]); sg = torch.stack([G[j] for j, _ in ch])
    keys = torch.tensor([j*(n+1)+i for j, i in ch])
    img, nnf = pm.remap(src, tg, sg, opts, keys, return_nnf=True)
    gimg = ck.vote(sg, nnf, offs)
    for k, p in enumerate(ch): RS[p], RG[p] = img[k], gimg[k]
print("remaps", len(pairs), f"{time.time()-t0:.0f}s")
def run(sigma, norm=None):
    out = []
    for i in range(n):
        js = [j for j in range(max(0, i-win), min(n, i+win+1)) if j != i]
        es = {}
        for j in js:
            e = ((RG[(j,i)] - G[i])**2).mean(0, keepdim=True)
            es[j] = F.avg_pool2d(e[None], 5, 1, 2, count_include_pad=False)[0]
        if norm == "target":
            scale = torch.stack([es[j] for j in js]).median()
        acc, wsum = S[i].clone(), torch.ones(1, *S.shape[-2:])
        for j in js:
            if sigma is None: w = torch.ones(1, *S.shape[-2:])
            elif norm == "pair": w = torch.exp(-es[j] / (sigma * es[j].median() + 1e-8))
            elif norm == "target": w = torch.exp(-es[j] / (sigma * scale + 1e-8))
            else: w = torch.exp(-es[j] / sigma**2)
            acc += w * RS[(j,i)]; wsum += w
        out.append(acc / wsum)
    o = (torch.stack(out).clamp(0,1).permute(0,2,3,1).numpy()*255).round().astype(np.uint8)
    return psnr(o, gt), temporal_error(o, gt)
print(f"{name} {n} w{win} grain {grain}: input {psnr(fl,gt):.2f} temporal {temporal_error(fl,gt):.1f}")
for norm, sigmas in [(None, [None, 0.05, 0.03]), ("target", [0.5, 1, 2, 4]), ("pair", [1, 2, 4])]:
    for sg_ in sigmas:
        p, te = run(sg_, norm); print(f"  {norm} sigma {sg_}: {p:.2f} dB temporal {te:.1f}", flush=True)
