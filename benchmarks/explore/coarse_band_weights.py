"""Session 12: would a looser weight for the coarse band help? The coarse band (gaussian SIGMA) of the
plain-mean or sigma-0.1 blend joined to the fine band of the default (weighted 0.05, restored); carphone,
48 frames, table, window 15.

    PYTHONPATH=src python benchmarks/explore/coarse_band_weights.py
"""
import torch
from flickerless import deflicker
from flickerless.blend.detail import _gaussian
from flickerless.demo import load_clip, registry_clip
from flickerless.synthetic import flickering_pair, psnr, temporal_error
clip, _ = load_clip(registry_clip("carphone_pristine.mp4"), 48)
truth, flick = flickering_pair(clip)
T = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).float()
U = lambda x: x.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
kw = dict(mode="table", window=15, device="cpu")
w = T(deflicker(clip, flick, **kw)); p = T(deflicker(clip, flick, error_sigma=None, **kw)); q = T(deflicker(clip, flick, error_sigma=0.1, **kw))
for name, o in [("weighted", w), ("plain", p), ("0.1", q)]:
    print(name, round(psnr(U(o), truth), 2), round(temporal_error(U(o), truth), 2))
for s in (4.0, 8.0):
    for name, c in [("plain", p), ("0.1", q)]:
        o = _gaussian(c, s) + (w - _gaussian(w, s))
        print("coarse", name, "fine weighted, sigma", s, round(psnr(U(o), truth), 2), round(temporal_error(U(o), truth), 2))
