"""Session 20: what a lighting change costs the default blend (table, window 15) when the style is not
posterised: the clip darkened linearly to half its brightness over 48 frames, the truth stylised with 256
levels (smooth); the truth itself as the style (the floor), the flickering style, and the truth with the
plain mean.

    PYTHONPATH=src python benchmarks/explore/fade_floor.py carphone_pristine.mp4 0
"""
import sys, numpy as np
from flickerless import deflicker
from flickerless.demo import load_clip, registry_clip
from flickerless.synthetic import stylize, add_flicker, psnr, temporal_error
clip, _ = load_clip(registry_clip(sys.argv[1]), 48, int(sys.argv[2]) or None)
for fade in (1.0, 0.5):
    c = np.clip(np.round(clip * np.linspace(1.0, fade, len(clip))[:, None, None, None]), 0, 255).astype(np.uint8)
    truth = np.stack([stylize(f, levels=256) for f in c]); flick = add_flicker(truth)
    for name, st, kw in (("truth", truth, {}), ("flick", flick, {}), ("truth plain", truth, {"error_sigma": 0})):
        o = deflicker(c, st, device="cpu", **kw)
        print(fade, name, round(psnr(o, truth), 2), round(temporal_error(o, truth), 2), flush=True)
