"""Session 35: the tool's ``exposure`` (remapped frames follow the guide's change of level,
``flickerless.blend.deflicker.follow_exposure``) off and on, on CPU, table mode window 15 unless the case says.
Session 34's ``fade_fixes.py gain`` was the same idea as a patch over the Remapper; this measures the tool.

    PYTHONPATH=src .venv/bin/python benchmarks/explore/exposure.py CASES     (DEVICE=cuda: on the GPU)

CASES (comma-separated):
- ``clip:flicker`` from /tmp/flicker_kinds/clips (made by flicker_kinds/makeclips.py), e.g. fade:none, fade:hsg;
  ``clip:grain``: its guide with grain 0.03 and the benchmark's flicker;
- ``bench:carphone`` / ``bench:bikes``: 40 frames with the benchmark's flicker (bikes at 320);
- ``posterised`` / ``inverted``: 16 carphone frames at 88x72 fading to black with the benchmark's stylisation
  (no flicker) / ``255 - guide`` as the style, window 5; prints the output's mean less the truth's on frames
  9, 10, 11 / 6, 8, 11, 13;
- ``keys:clip:flicker``: keyframes mode with every 8th frame of the flickering style as keyframes.
Prints one JSON row per case: PSNR and temporal error against the truth, and seconds, for off and on."""
import json
import os
import sys
import time

import numpy as np

import flickerless
from flickerless.demo import load_clip, registry_clip
from flickerless.synthetic import add_grain, flickering_pair, psnr, stylize, temporal_error
from flickerless.video import resize_frame


def small_fade():
    car = load_clip(registry_clip("carphone_pristine.mp4"), 16)[0]
    car = np.stack([resize_frame(f, (72, 88)) for f in car])
    fade = np.clip(1 - (np.arange(16) - 4) / 7.0, 0, 1)
    return np.round(car * fade[:, None, None, None]).astype(np.uint8)


def case(name):
    """guide, style, truth, deflicker's keyword arguments, frames whose mean offsets are printed"""
    if name in ("posterised", "inverted"):
        g = small_fade()
        s = np.stack([stylize(f) for f in g]) if name == "posterised" else 255 - g
        return g, s, s, {"window": 5}, (9, 10, 11) if name == "posterised" else (6, 8, 11, 13)
    if name.startswith("keys:"):
        g, s, gt, _, _ = case(name[5:])
        keys = {i: s[i] for i in range(0, len(g), 8)} | {len(g) - 1: s[-1]}
        return g, None, gt, {"mode": "keyframes", "keyframes": keys}, ()
    c, f = name.split(":")
    if c == "bench":
        fr = load_clip(registry_clip({"carphone": "carphone_pristine.mp4", "bikes": "bikes.mp4"}[f]), 40)[0]
        if f == "bikes":
            fr = np.stack([resize_frame(x, (136, 320)) for x in fr])
        gt, st = flickering_pair(fr)
        return fr, st, gt, {}, ()
    d = np.load(f"/tmp/flicker_kinds/clips/{c}.npz")
    if f == "grain":
        gt, st = flickering_pair(d["guide"])
        return add_grain(d["guide"], 0.03), st, gt, {}, ()
    return d["guide"], d[f], d["gt"], {}, ()


for name in sys.argv[1].split(","):
    g, s, gt, kw, shown = case(name)
    row = {"case": name}
    if s is not None:
        row["in"] = (round(psnr(s, gt), 2), round(temporal_error(s, gt), 1))
    for on in (False, True):
        t = time.time()
        out = flickerless.deflicker(g, s, device=os.environ.get("DEVICE", "cpu"), exposure=on, **kw)
        key = "on" if on else "off"
        row[key] = (round(psnr(out, gt), 2), round(temporal_error(out, gt), 1), round(time.time() - t, 1))
        if shown:
            row[key + " mean less truth"] = [round(float(out[i].mean()) - float(gt[i].mean()), 2) for i in shown]
    print(json.dumps(row), flush=True)
