"""Session 12: where the error is: the defaults with the truth itself as the style (the remap floor)
and with the flickering style; PSNR, temporal error, (coarse, fine) PSNR of the error, seconds.
Measured before detail restoration existed, so it runs with detail=False.

    PYTHONPATH=src python benchmarks/explore/error_bands.py carphone_pristine.mp4 48
"""
import sys, numpy as np, time
from flickerless import deflicker
from flickerless.demo import load_clip, registry_clip
from flickerless.synthetic import flickering_pair, psnr, temporal_error, _blur
name = sys.argv[1]; n = int(sys.argv[2]); width = int(sys.argv[3]) if len(sys.argv) > 3 else None
clip, _ = load_clip(registry_clip(name), n, width)
truth, flick = flickering_pair(clip)
def run(style, **kw):
    t=time.time(); out = deflicker(clip, style, mode="table", window=15, device="cpu", detail=False, **kw); return out, time.time()-t
def lowhigh(out):
    d = out.astype(np.float32) - truth.astype(np.float32)
    low = np.stack([_blur(x, 15) for x in d]); high = d - low
    return 10*np.log10(255**2/np.mean(low**2)), 10*np.log10(255**2/np.mean(high**2))
print("input", psnr(flick, truth), temporal_error(flick, truth), "low/high", lowhigh(flick))
o, dt = run(truth); print("truth-as-style", psnr(o, truth), temporal_error(o, truth), lowhigh(o), dt)
o, dt = run(flick); print("flick", psnr(o, truth), temporal_error(o, truth), lowhigh(o), dt)
