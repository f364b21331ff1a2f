"""Experiment (session 33, promising, not adopted yet; PYTHONPATH=src, WEIGHTED=1 as measured): each remap's style is moved by the frame-wide weighted mean of the signed guide error per
channel (a fade, an exposure change: the remap brought content of another brightness). M=0: as now.
python benchmarks/explore/guide_shift.py M[,M2] CASES (as guide_bias_weight.py)"""
import sys, time, json, numpy as np, torch, importlib
import flickerless
D = importlib.import_module("flickerless.blend.deflicker")
from flickerless.blend.patchmatch import final_vote
from flickerless.synthetic import psnr, temporal_error, flickering_pair, add_grain
import flickerless.video as V
from flickerless.demo import registry_clip

M = 0.0
import os; WEIGHTED = os.environ.get("WEIGHTED", "1") == "1"
orig_w, orig_b = D.Remapper._weight, D.Remapper._run_batch
def _weight(self, source_guide, target_guide, nnf, carried, raw):
    out = orig_w(self, source_guide, target_guide, nnf, carried, raw)
    if M:
        voted = final_vote(source_guide, nnf, self.options)
        r = target_guide - voted
        w = torch.exp(-(r.square().mean(1, keepdim=True)) / self.error_sigma**2) if WEIGHTED else torch.ones_like(r[:, :1])
        self._offset = M * (r * w).sum((2, 3), keepdim=True) / w.sum((2, 3), keepdim=True).clamp_min(1e-6)
    return out
def _run_batch(self, pairs, images):
    self._offset = None
    out = orig_b(self, pairs, images)
    if M and self._offset is not None:
        out[:, :3] = (out[:, :3] + self._offset).clamp(0, 1)
    return out
D.Remapper._weight, D.Remapper._run_batch = _weight, _run_batch

def case(name):
    c, f = name.split(":")
    if c == "bench":
        fr = V.read(registry_clip({"carphone": "carphone_pristine.mp4", "bikes": "bikes.mp4"}[f]))[0][:40]
        if f == "bikes":
            import cv2
            fr = np.stack([cv2.resize(x, (320, 136), interpolation=cv2.INTER_AREA) for x in fr])
        gt, st = flickering_pair(fr)
        return fr, st, gt
    d = np.load(f"/tmp/flicker_kinds/clips/{c}.npz")
    if f == "grain":
        gt, st = flickering_pair(d["guide"])
        return add_grain(d["guide"], 0.03), st, gt
    return d["guide"], d[f], d["gt"]

Ms = [float(k) for k in sys.argv[1].split(",")]
for name in sys.argv[2].split(","):
    g, s, gt = case(name)
    row = {"case": name, "in": (round(psnr(s, gt), 2), round(temporal_error(s, gt), 1))}
    for m in Ms:
        M = m
        t = time.time()
        out = flickerless.deflicker(g, s, device="cpu")
        row[f"M{m}"] = (round(psnr(out, gt), 2), round(temporal_error(out, gt), 1), round(time.time() - t))
        if name.startswith("fade"):
            row[f"M{m}_means"] = [round(float(out[i].mean()), 1) for i in (20, 22, 23, 25, 31)]
    print(json.dumps(row), flush=True)
