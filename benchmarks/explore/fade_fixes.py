"""Session 33, two fixes for a fade measured (BENCHMARKS.md, "Session 33"), neither adopted:
- ``bias K``: a remap counts less by exp(-b^2 / (K sigma)^2), b the 9x9 mean of the signed guide error;
- ``shift M``: each remap's style moved by M x the per-channel mean of the signed guide error, weighted by
  the error weight (WEIGHTED=0: a plain mean).
- ``gain M`` (session 34): as ``shift``, times a gain fitted per remap and channel, the slope of the remapped
  style on the remapped guide over the frame (weighted least squares, clamped to [-2, 2]): a style whose levels
  follow the guide's moves with it, an inverted one against it, a fixed palette not at all.
A value of 0 is the tool as it is.

    PYTHONPATH=src python benchmarks/explore/fade_fixes.py bias|shift V[,V2] CASES

CASES: clip:flicker,... from /tmp/flicker_kinds/clips (made by flicker_kinds/makeclips.py); clip:grain (its
guide with grain 0.03, the benchmark's flicker); bench:carphone / bench:bikes (40 frames, the benchmark's
flicker; bikes at 320)."""
import importlib
import json
import os
import sys
import time

import numpy as np
import torch

import flickerless
import flickerless.video as V
from flickerless.blend.patchmatch import final_vote
from flickerless.demo import registry_clip
from flickerless.synthetic import add_grain, flickering_pair, psnr, temporal_error

D = importlib.import_module("flickerless.blend.deflicker")
KIND, VALUE = sys.argv[1], 0.0
WEIGHTED = os.environ.get("WEIGHTED", "1") == "1"
orig_w, orig_b = D.Remapper._weight, D.Remapper._run_batch


def _weight(self, source_guide, target_guide, nnf, carried, raw, *rest):
    out = orig_w(self, source_guide, target_guide, nnf, carried, raw, *rest)  # (weighted channels, ...)
    self._offset = self._fit = None
    if VALUE:
        r = target_guide - final_vote(source_guide, nnf, self.options)
        if KIND == "bias":
            b = torch.nn.functional.avg_pool2d(r.mean(1, keepdim=True), 9, 1, 4, count_include_pad=False)
            out[0][:, -1:] *= torch.exp(-b.square() / (VALUE * self.error_sigma) ** 2)
        else:
            w = (torch.exp(-r.square().mean(1, keepdim=True) / self.error_sigma**2) if WEIGHTED
                 else torch.ones_like(r[:, :1]))
            self._offset = VALUE * (r * w).sum((2, 3), keepdim=True) / w.sum((2, 3), keepdim=True).clamp_min(1e-6)
            if KIND == "gain":
                self._fit = (final_vote(source_guide, nnf, self.options), w)
    return out


def _run_batch(self, pairs, images):
    self._offset = None
    self._fit = None
    out = orig_b(self, pairs, images)
    if self._offset is not None:
        offset = self._offset
        if self._fit is not None:  # the style's slope on the guide, over the remapped frame
            g, w = self._fit
            st = out[:, :3]
            ws = w.sum((2, 3), keepdim=True).clamp_min(1e-6)
            gm, sm = (g * w).sum((2, 3), keepdim=True) / ws, (st * w).sum((2, 3), keepdim=True) / ws
            cov = ((g - gm) * (st - sm) * w).sum((2, 3), keepdim=True)
            var = ((g - gm).square() * w).sum((2, 3), keepdim=True).clamp_min(1e-6)
            offset = offset * (cov / var).clamp(-2, 2)
        out[:, :3] = (out[:, :3] + offset).clamp(0, 1)
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


for name in sys.argv[3].split(","):
    g, s, gt = case(name)
    row = {"case": name, "in": (round(psnr(s, gt), 2), round(temporal_error(s, gt), 1))}
    for v in [float(x) for x in sys.argv[2].split(",")]:
        VALUE = v
        t = time.time()
        out = flickerless.deflicker(g, s, device="cpu")
        row[f"{KIND} {v}"] = (round(psnr(out, gt), 2), round(temporal_error(out, gt), 1), round(time.time() - t))
        if name.startswith("fade"):  # the mean level of frames 20, 22 (fading), 23, 25, 31 (black)
            row[f"{KIND} {v} means"] = [round(float(out[i].mean()), 1) for i in (20, 22, 23, 25, 31)]
            row["truth means"] = [round(float(gt[i].mean()), 1) for i in (20, 22, 23, 25, 31)]
    print(json.dumps(row), flush=True)
