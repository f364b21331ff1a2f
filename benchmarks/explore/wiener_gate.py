"""Session 13 prototype: a noise-aware gate for detail restoration. The current gate restores the
fine band of d = style - blend with gain clamp(e_guide / e_style, 0, 1). Here, per frame, the
fine-flicker level n2 is estimated as a low quantile of the local energy e_style where the guide
says the remaps were exact (e_guide small), and the gain is the Wiener-like (e_style - n2) / e_style
(at least the guide gate). "norm": the style's fine band is first divided by the frame's global
per-channel gain against the blend (a least-squares ratio), so exposure flicker does not ride along.
Window blend (w) with the weighted default; remaps cached in /tmp/wg. Args: CLIP FRAMES WIDTH(0) W GRAIN.

    PYTHONPATH=src python benchmarks/explore/wiener_gate.py carphone_pristine.mp4 24 0 7 0
"""
import os
import sys

import torch
import torch.nn.functional as F

from flickerless.blend.detail import _gaussian, restore_detail
from flickerless.blend.patchmatch import PatchMatchOptions, final_vote, patchmatch
from flickerless.demo import load_clip, registry_clip
from flickerless.synthetic import add_grain, flickering_pair, psnr, temporal_error

torch.set_num_threads(2)
name, n = sys.argv[1], int(sys.argv[2])
width = int(sys.argv[3]) if sys.argv[3] != "0" else None
w, grain = int(sys.argv[4]), float(sys.argv[5])
texture = len(sys.argv) > 6 and sys.argv[6] == "texture"  # grain where the frame has texture only
clip, _ = load_clip(registry_clip(name), n, width)
truth, flick = flickering_pair(clip)
if grain:
    flick = add_grain(flick, grain, texture=texture)
T = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).float() / 255  # noqa: E731
U = lambda x: (x.clamp(0, 1).permute(0, 2, 3, 1) * 255).round().byte().numpy()  # noqa: E731
G, S = T(clip), T(flick)
cache = f"/tmp/wg/{name}_{n}_{width}_{w}_{grain}{texture}.pt"
os.makedirs("/tmp/wg", exist_ok=True)
if os.path.exists(cache):
    B, Gb = torch.load(cache)
else:
    opts = PatchMatchOptions()
    B, Gb = torch.empty_like(S), torch.empty_like(S)
    for i in range(n):
        js = [j for j in range(max(0, i - w), min(n, i + w + 1)) if j != i]
        nnf = patchmatch(G[i:i + 1].expand(len(js), -1, -1, -1), G[js], S[js], opts)
        v = final_vote(torch.cat([S[js], G[js]], 1), nnf, opts)
        err = F.avg_pool2d((v[:, 3:] - G[i]).square().mean(1, keepdim=True), 5, 1, 2, count_include_pad=False)
        wt = torch.exp(-err / 0.05**2)
        B[i] = (S[i] + (v[:, :3] * wt).sum(0)) / (1 + wt.sum(0))
        Gb[i] = (G[i] + (v[:, 3:] * wt).sum(0)) / (1 + wt.sum(0))
    torch.save((B, Gb), cache)
print(f"{name} {n} w{w} grain {grain}: input {psnr(flick, truth):.2f} dB, temporal {temporal_error(flick, truth):.1f}")


def ev(label, o):
    print(f"  {label:34s} {psnr(U(o), truth):.2f} dB, temporal {temporal_error(U(o), truth):.2f}", flush=True)


fine = lambda x: x - _gaussian(x, 2.0)  # noqa: E731
box = lambda x: F.avg_pool2d(x, 9, 1, 4, count_include_pad=False)  # noqa: E731
ev("blend", B)
ev("current gate", restore_detail(B, Gb, S, G))


def global_gain():
    """Each frame's per-channel gain against the blend (least squares ratio)."""
    return (S * B).sum((2, 3), keepdim=True) / (B * B).sum((2, 3), keepdim=True)


def gated(q, norm):
    Sx = S / global_gain() if norm else S
    ds, dg = fine(Sx - B), fine(G - Gb)
    es, eg = box(ds.square().mean(1, keepdim=True)), box(dg.square().mean(1, keepdim=True))
    out = torch.empty_like(B)
    for i in range(n):
        flat = eg[i] <= eg[i].flatten().quantile(0.25)  # where the guide says the remaps were exact
        n2 = es[i][flat].quantile(q)
        gain = ((es[i] - n2) / es[i].clamp_min(1e-10)).clamp(0, 1)
        gain = torch.maximum(gain, (eg[i] / es[i].clamp_min(1e-10)).clamp(0, 1))
        out[i] = B[i] + gain * ds[i]
    return out


for norm in (False, True):
    ev(f"ungated, norm {norm}", B + fine((S / global_gain() if norm else S) - B))
    for q in (0.5, 0.9):
        ev(f"wiener q{q} norm {norm}", gated(q, norm))
ev("current gate, style / global gain", restore_detail(B, Gb, S / global_gain(), G))
