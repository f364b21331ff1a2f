"""Session 12: deflicker the deflickered output once more (defaults, table w15). Prints PSNR,
temporal error, (coarse, fine) PSNR of the error (15-pixel box split) and seconds.

    PYTHONPATH=src python benchmarks/explore/deflicker_twice.py carphone_pristine.mp4 48
"""
import sys, numpy as np, time
from flickerless import deflicker
from flickerless.demo import load_clip, registry_clip
from flickerless.synthetic import flickering_pair, psnr, temporal_error, _blur
name = sys.argv[1]; n = int(sys.argv[2]); width = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[3] != "0" else None
clip, _ = load_clip(registry_clip(name), n, width)
truth, flick = flickering_pair(clip)
def lowhigh(out):
    d = out.astype(np.float32) - truth.astype(np.float32)
    low = np.stack([_blur(x, 15) for x in d]); high = d - low
    return round(float(10*np.log10(255**2/np.mean(low**2))), 2), round(float(10*np.log10(255**2/np.mean(high**2))), 2)
t = time.time(); o1 = deflicker(clip, flick, mode="table", window=15, device="cpu"); t1 = time.time() - t
print("one", round(psnr(o1, truth), 2), round(temporal_error(o1, truth), 2), lowhigh(o1), round(t1, 1), flush=True)
t = time.time(); o2 = deflicker(clip, o1, mode="table", window=15, device="cpu"); t2 = time.time() - t
print("twice", round(psnr(o2, truth), 2), round(temporal_error(o2, truth), 2), lowhigh(o2), round(t2, 1), flush=True)
