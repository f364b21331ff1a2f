"""Session 20: the coarse band (box blur K) of the default output (table, window 15) replaced by
that of a table blend over window W (inf: the whole shot), gated per pixel by how well the guide,
blended through the same remaps, keeps its own coarse band: gate = exp(-|coarse(guide blend -
guide)|^2 / TAU^2) (TAU 0: no gate). FADE darkens the clip linearly to FADE over its frames (a
lighting change); GRAIN adds texture-localised grain to the flickering style.

    PYTHONPATH=src python benchmarks/explore/coarse_gate.py CLIP FRAMES WIDTH|0 W K,.. TAU,.. [FADE] [GRAIN] [QUALITY]

QUALITY: the effort preset of the long blend (default full).
"""
import sys, time
import numpy as np
import importlib
D = importlib.import_module("flickerless.blend.deflicker")
from flickerless import deflicker
from coarse_case import make_case
from flickerless.synthetic import psnr, temporal_error, _blur

name, n, width, w = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) or None, sys.argv[4]
ks = [int(x) for x in sys.argv[5].split(",")]
taus = [float(x) for x in sys.argv[6].split(",")]
fade = float(sys.argv[7]) if len(sys.argv) > 7 else 1.0
grain = float(sys.argv[8]) if len(sys.argv) > 8 else 0.0
quality = sys.argv[9] if len(sys.argv) > 9 else "full"
clip, truth, flick = make_case(name, n, width, fade, grain)
print(name, clip.shape, "fade", fade, "grain", grain, "input", round(psnr(flick, truth), 2),
      round(temporal_error(flick, truth), 2), flush=True)
t = time.time(); a = deflicker(clip, flick, mode="table", window=15, device="cpu"); ta = time.time() - t
print("window 15", round(psnr(a, truth), 2), round(temporal_error(a, truth), 2), round(ta, 1), flush=True)
captured, orig = [], D.restore_detail


def capture(blend, guide_blend, style, guide, **kw):
    captured.append(guide_blend.permute(1, 2, 0).numpy() * 255)
    return orig(blend, guide_blend, style, guide, **kw)


D.restore_detail = capture
t = time.time()
b = deflicker(clip, flick, mode="table", window=None if w == "inf" else int(w), device="cpu", quality=quality)
D.restore_detail = orig
print("window", w, quality, round(psnr(b, truth), 2), round(temporal_error(b, truth), 2), round(time.time() - t, 1), flush=True)
af, bf, gf = a.astype(np.float32), b.astype(np.float32), clip.astype(np.float32)
for k in ks:
    d = np.stack([_blur(y - x, k) for x, y in zip(af, bf)])
    dg = np.stack([_blur(y - x, k) for x, y in zip(gf, captured)])
    for tau in taus:
        gate = np.exp(-(dg ** 2).mean(-1, keepdims=True) / (255 * tau) ** 2) if tau else 1.0
        out = np.clip(np.round(af + gate * d), 0, 255).astype(np.uint8)
        print(f"  + coarse, k {k}, tau {tau}", round(psnr(out, truth), 2), round(temporal_error(out, truth), 2),
              "gate mean", round(float(np.mean(gate)), 3), flush=True)
