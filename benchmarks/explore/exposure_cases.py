"""The cases of exposure.py (session 35) as a module, for it, normalised_match.py and exposure_match.py: see
exposure.py's docstring. Session 36 adds, for exposure_match.py:
- ``paintfade``: 20 carphone frames fading out from frame 6 (black from 16), the style one stylised frame held
  still (it ignores the fade, as a painted keyframe does);
- ``slowfade:CLIP`` / ``autoexp:CLIP`` (carphone, or bikes at 320x136, its first 30 frames: the shot before its
  cut): the guide dimming steadily to half its level / a camera's gain drifting (a smooth random walk within
  +-15%), the truth the benchmark's stylisation of the lit guide, the benchmark's flicker on it;
  ``slowfadesmooth:CLIP`` / ``autoexpsmooth:CLIP``: the same with the stylisation not posterised (whose colours
  follow the level smoothly, as most do)."""

import numpy as np

from flickerless.demo import load_clip, registry_clip
from flickerless.synthetic import add_flicker, add_grain, flickering_pair, stylize
from flickerless.video import resize_frame


def small_fade():
    car = load_clip(registry_clip("carphone_pristine.mp4"), 16)[0]
    car = np.stack([resize_frame(f, (72, 88)) for f in car])
    fade = np.clip(1 - (np.arange(16) - 4) / 7.0, 0, 1)
    return np.round(car * fade[:, None, None, None]).astype(np.uint8)


def paintfade():
    fr = load_clip(registry_clip("carphone_pristine.mp4"), 20)[0]
    a = np.clip(1 - (np.arange(20) - 6) / 10.0, 0, 1)
    g = np.clip(np.round(fr * a[:, None, None, None]), 0, 255).astype(np.uint8)
    s = np.repeat(stylize(fr[0])[None], 20, 0)
    return g, s, s, {}, ()


def lit(kind, clip):
    fr = load_clip(registry_clip({"carphone": "carphone_pristine.mp4", "bikes": "bikes.mp4"}[clip]), 40)[0]
    if clip == "bikes":
        fr = np.stack([resize_frame(x, (136, 320)) for x in fr[:30]])
    if kind.startswith("slowfade"):
        a = np.linspace(1.0, 0.5, 40)[:len(fr)]
    else:
        a = np.exp(np.clip(np.cumsum(np.random.default_rng(1).normal(0, 0.03, len(fr))), -0.15, 0.15))
    g = np.clip(np.round(fr * a[:, None, None, None]), 0, 255).astype(np.uint8)
    gt = np.stack([stylize(f, 256 if kind.endswith("smooth") else 6) for f in g])
    return g, add_flicker(gt), gt, {}, ()


def case(name):
    """guide, style, truth, deflicker's keyword arguments, frames whose mean offsets are printed"""
    if name == "paintfade":
        return paintfade()
    if name.split(":")[0] in ("slowfade", "autoexp", "slowfadesmooth", "autoexpsmooth"):
        return lit(*name.split(":"))
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


