"""Experiment (session 33, not adopted): the error weight also penalises the local *signed* guide residual (a fade, a lighting
change: the remap matched darker/brighter content), sigma_b = K * error_sigma; K=0: as now.
PYTHONPATH=src python benchmarks/explore/guide_bias_weight.py K[,K2] CASES  (CASES: clip:flicker,... from /tmp/flicker_kinds/clips (made by flicker_kinds/makeclips.py), clip:grain (its guide with grain 0.03, the
benchmark's flicker), or bench:carphone / bench:bikes)"""
import sys, time, json, numpy as np, torch
import flickerless
import importlib; D = importlib.import_module("flickerless.blend.deflicker")
from flickerless.blend.patchmatch import final_vote
from flickerless.synthetic import psnr, temporal_error, flickering_pair, add_grain
import flickerless.video as V

K = 0.0
orig = D.Remapper._weight
def _weight(self, source_guide, target_guide, nnf, carried, raw):
    out = orig(self, source_guide, target_guide, nnf, carried, raw)
    if K:
        voted = final_vote(source_guide, nnf, self.options)
        r = (target_guide - voted).mean(1, keepdim=True)
        b = torch.nn.functional.avg_pool2d(r, 9, 1, 4, count_include_pad=False)
        out[:, -1:] *= torch.exp(-b.square() / (K * self.error_sigma) ** 2)
    return out
D.Remapper._weight = _weight

def case(name):
    c, f = name.split(":")
    if c == "bench":
        path = {"carphone": "carphone_pristine.mp4", "bikes": "bikes.mp4"}[f]
        from flickerless.demo import registry_clip
        fr = V.read(registry_clip(path))[0][:40]
        if f == "bikes":
            import cv2
            fr = np.stack([cv2.resize(x, (320, 136), interpolation=cv2.INTER_AREA) for x in fr])
        gt, st = flickering_pair(fr)
        return fr, st, gt
    if f == "grain":  # the guide grainy, the style flickering (benchmark flicker)
        d = np.load(f"/tmp/flicker_kinds/clips/{c}.npz"); g = add_grain(d["guide"], 0.03)
        gt, st = flickering_pair(d["guide"])
        return g, st, gt
    d = np.load(f"/tmp/flicker_kinds/clips/{c}.npz")
    return d["guide"], d[f], d["gt"]

Ks = [float(k) for k in sys.argv[1].split(",")]
for name in sys.argv[2].split(","):
    g, s, gt = case(name)
    row = {"case": name, "in": (round(psnr(s, gt), 2), round(temporal_error(s, gt), 1))}
    for k in Ks:
        K = k
        t = time.time()
        out = flickerless.deflicker(g, s, device="cpu")
        row[f"K{k}"] = (round(psnr(out, gt), 2), round(temporal_error(out, gt), 1), round(time.time() - t))
        if name.startswith("fade"):
            row[f"K{k}_means"] = [round(float(out[i].mean()), 1) for i in (20, 22, 23, 25, 31)]
            row["gt_means"] = [round(float(gt[i].mean()), 1) for i in (20, 22, 23, 25, 31)]
    print(json.dumps(row), flush=True)
