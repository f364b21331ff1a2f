"""The cases of exposure.py (session 35) as a module, for it, normalised_match.py and exposure_match.py: see
exposure.py's docstring. Session 36 adds, for exposure_match.py:
- ``paintfade``: 20 carphone frames fading out from frame 6 (black from 16), the style one stylised frame held
  still (it ignores the fade, as a painted keyframe does);
- ``slowfade:CLIP`` / ``autoexp:CLIP`` (carphone, or bikes at 320x136, its first 30 frames: the shot before its
  cut): the guide dimming steadily to half its level / a camera's gain drifting (a smooth random walk within
  +-15%), the truth the benchmark's stylisation of the lit guide, the benchmark's flicker on it;
  ``slowfadesmooth:CLIP`` / ``autoexpsmooth:CLIP``: the same with the stylisation not posterised (whose colours
  follow the level smoothly, as most do).

Session 37 adds a tester's lighting cases (session 36), all on carphone at 88x72, 20 frames, the fade from
frame 4 to black at 16 unless said:
- ``keysfade:STYLE:KEYS``: keyframes mode, STYLE ``stylize`` or ``inverted`` (255 - the guide), KEYS ``0`` (the
  first frame only) or ``8`` (every 8th and the last); ``keysdim:KEYS``: the same, the light dimming to half from
  frame 4 to 12, stylised; ``keyspaint``: one painting (frame 0 stylised) held, keyframe 0 only;
- table mode, the benchmark's flicker on the stylised truth: ``localdark`` (the left 60% of the frame dims to
  0.35 from frame 4 to 14, the rest steady), ``panfade`` (bikes at 72 px panning 10 px a frame while it fades
  to 5%), ``noisyfade`` (at 0.4 of its level with grain of 6 levels, fading), ``lutfade`` (a false-colour
  style: hue by level), ``invfade`` (255 - stylised), ``whitefade`` (a fade to white from frame 6, white from
  16), ``flash`` (frames 9 and 10 at 2.5x and 2x, clipped), ``wbdrift`` (red up 35%, blue down 50% over
  frames 4-16);
- ``keys:CASE`` (every 8th frame of CASE's style and its last as keyframes) and ``key0:CASE`` (its first
  only), CASE any of the above."""

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


def _small(clip="carphone", n=20, size=(72, 88)):
    fr = load_clip(registry_clip({"carphone": "carphone_pristine.mp4", "bikes": "bikes.mp4"}[clip]), n)[0]
    return np.stack([resize_frame(f, size) for f in fr]).astype(np.float64)


def _u8(x):
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def lighting(name):
    """the session 37 cases (see the module's docstring)"""
    r = np.arange(20)
    fade = np.clip(1 - (r - 4) / 12.0, 0, 1)[:, None, None, None]
    kind, *rest = name.split(":")
    if kind.startswith("keys"):
        if kind == "keysfade":
            g = _u8(_small() * fade)
            gt = np.stack([stylize(f) for f in g]) if rest[0] == "stylize" else 255 - g
            every = rest[1] == "8"
        elif kind == "keysdim":
            g = _u8(_small() * np.clip(1 - 0.5 * (r - 4) / 8.0, 0.5, 1)[:, None, None, None])
            gt = np.stack([stylize(f) for f in g])
            every = rest[0] == "8"
        else:  # keyspaint
            g = _u8(_small() * fade)
            gt = np.repeat(stylize(_u8(_small()[0]))[None], 20, 0)
            every = False
        keys = {i: gt[i] for i in range(0, 20, 8)} | {19: gt[19]} if every else {0: gt[0]}
        return g, None, gt, {"mode": "keyframes", "keyframes": keys}, (4, 8, 12, 15)
    if kind == "localdark":
        m = np.ones((20, 72, 88, 1))
        m[:, :, :int(88 * 0.6), 0] = np.clip(1 - 0.65 * (r - 4) / 10.0, 0.35, 1)[:, None, None]
        g = _u8(_small() * m)
    elif kind == "panfade":
        b = _small("bikes", 20, (72, 380))
        g = _u8(np.stack([b[i, :, 10 * i:10 * i + 88] for i in range(20)]) * np.maximum(fade, 0.05))
    elif kind == "noisyfade":
        g = _u8(_small() * 0.4 * fade + np.random.default_rng(5).normal(0, 6, (20, 72, 88, 3)))
    elif kind in ("flash", "wbdrift"):
        a = np.ones((20, 1, 1, 3))
        if kind == "flash":
            a[9], a[10] = 2.5, 2.0
        else:
            k = np.clip((r - 4) / 12.0, 0, 1)
            a[:, 0, 0, 0], a[:, 0, 0, 2] = 1 + 0.35 * k, 1 - 0.5 * k
        g = _u8(_small() * a)
    elif kind == "whitefade":
        a = np.clip((r - 6) / 10.0, 0, 1)[:, None, None, None]
        g = _u8(_small() + (255 - _small()) * a)
    else:  # lutfade, invfade
        g = _u8(_small() * fade)
    if kind == "lutfade":
        y = g.astype(np.float64).mean(-1) / 255
        gt = _u8(np.stack([np.clip(3 * y - 1, 0, 1), np.clip(np.sin(np.pi * y) * 1.2, 0, 1),
                           np.clip(1 - 3 * y, 0, 1)], -1) * 255)
    else:
        gt = np.stack([stylize(f) for f in g])
        if kind == "invfade":
            gt = 255 - gt
    return g, add_flicker(gt), gt, {}, (8, 12, 16)


def case(name):
    """guide, style, truth, deflicker's keyword arguments, frames whose mean offsets are printed"""
    if name.split(":")[0] in ("keysfade", "keysdim", "keyspaint", "localdark", "panfade", "noisyfade", "lutfade",
                              "invfade", "whitefade", "flash", "wbdrift"):
        return lighting(name)
    if name == "paintfade":
        return paintfade()
    if name.split(":")[0] in ("slowfade", "autoexp", "slowfadesmooth", "autoexpsmooth"):
        return lit(*name.split(":"))
    if name in ("posterised", "inverted"):
        g = small_fade()
        s = np.stack([stylize(f) for f in g]) if name == "posterised" else 255 - g
        return g, s, s, {"window": 5}, (9, 10, 11) if name == "posterised" else (6, 8, 11, 13)
    if name.startswith(("keys:", "key0:")):
        g, s, gt, _, _ = case(name[5:])
        keys = {i: s[i] for i in range(0, len(g), 8)} | {len(g) - 1: s[-1]} if name[3] == "s" else {0: s[0]}
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


