"""Session 33 (a tester's scripts, kept to reproduce BENCHMARKS.md "Session 33"): python run.py CLIP FLICKER MODE[,MODE] [--tag T] [--opts JSON] [--gtkey gt] [--keys clean|flick] [--every 8]
Runs flickerless.deflicker (Python API, device cpu) and appends metrics to /tmp/flicker_kinds/results.jsonl;
the output frames go to /tmp/flicker_kinds/out/<clip>_<flicker>_<mode>_<tag>.npy"""
import argparse, json, time, numpy as np, cv2
import flickerless
from flickerless.synthetic import psnr, temporal_error
cv2.setNumThreads(1)

def sharp(v):
    return float(np.mean([cv2.Laplacian(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var() for f in v]))

def metrics(x, gt):
    cm = x.reshape(len(x), -1, 3).mean(1) - gt.reshape(len(gt), -1, 3).mean(1)
    return dict(psnr=round(psnr(x, gt), 2), terr=round(temporal_error(x, gt), 1),
                sharp=round(sharp(x) / sharp(gt), 3), drift=round(float(np.abs(cm).max()), 2))

p = argparse.ArgumentParser()
p.add_argument("clip"); p.add_argument("flicker"); p.add_argument("modes")
p.add_argument("--tag", default="def"); p.add_argument("--opts", default="{}")
p.add_argument("--gtkey", default=None); p.add_argument("--keys", default="flick"); p.add_argument("--every", type=int, default=8)
a = p.parse_args()
d = np.load(f"/tmp/flicker_kinds/clips/{a.clip}.npz")
opts = json.loads(a.opts)
for flicker, mode in [(f, m) for f in a.flicker.split(",") for m in a.modes.split(",")]:
    g, s = d["guide"], d[flicker]
    gt = d[a.gtkey or ("gt_cv" if flicker == "cvparam" else "gt")]
    kw = dict(opts)
    if mode == "keyframes":
        src = gt if a.keys == "clean" else s
        ks = sorted(set(range(0, len(g), a.every)) | {len(g) - 1})
        kw["keyframes"] = {i: src[i] for i in ks}
        style = None
    else:
        style = s
    t0 = time.time()
    out = flickerless.deflicker(g, style, mode=mode, device="cpu", **kw)
    dt = time.time() - t0
    np.save(f"/tmp/flicker_kinds/out/{a.clip}_{flicker}_{mode}_{a.tag}.npy", out)
    r = dict(clip=a.clip, flicker=flicker, mode=mode, tag=a.tag, opts=opts, keys=a.keys if mode == "keyframes" else None,
             inp=metrics(s, gt), out=metrics(out, gt), s=round(dt, 1))
    print(json.dumps(r), flush=True)
    with open("/tmp/flicker_kinds/results.jsonl", "a") as f:
        f.write(json.dumps(r) + "\n")
