"""The cases of exposure.py (session 35) as a module, for it and normalised_match.py: see exposure.py's docstring."""

import numpy as np

from flickerless.demo import load_clip, registry_clip
from flickerless.synthetic import add_grain, flickering_pair, stylize
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


