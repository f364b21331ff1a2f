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
from flickerless.synthetic import psnr, temporal_error
from probe import flickering_case, neighbours, to_uint8 as U

name, n = sys.argv[1], int(sys.argv[2])
width = int(sys.argv[3]) if sys.argv[3] != "0" else None
w, grain = int(sys.argv[4]), float(sys.argv[5])
texture = len(sys.argv) > 6 and sys.argv[6] == "texture"  # grain where the frame has texture only
truth, flick, G, S = flickering_case(name, n, width, grain, texture)
cache = f"/tmp/wg/{name}_{n}_{width}_{w}_{grain}{texture}.pt"
os.makedirs("/tmp/wg", exist_ok=True)
if os.path.exists(cache):
    B, Gb = torch.load(cache)
else:
    B, Gb = torch.empty_like(S), torch.empty_like(S)
    for i in range(n):
        _, v, vg, _, wt = neighbours(G, S, i, w)
        B[i] = (S[i] + (v * wt).sum(0)) / (1 + wt.sum(0))
        Gb[i] = (G[i] + (vg * wt).sum(0)) / (1 + wt.sum(0))
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
