"""Session 35: PatchMatch on guides normalised for level while the error weights and everything else keep the
raw guides: does it mend a style that ignores a fade (matched to the darkest pixels of brighter frames), and
what does it cost elsewhere? A patch over ``flickerless.blend.deflicker.remap``, not in the tool. KIND:
``frame``: each guide frame scaled to a mean of 0.5 (a black frame left as it is); ``pair``: the source's
guide scaled to the target's mean (a steady clip's pairs are left almost as they are).

    PYTHONPATH=src .venv/bin/python benchmarks/explore/normalised_match.py KIND CASES
CASES as in exposure_cases.py (``paintfade``: 20 carphone frames fading out from frame 6, black from 16, the
style one stylised frame held still: it ignores the fade)."""
import importlib
import json
import os
import sys

import flickerless
from flickerless.synthetic import psnr, temporal_error

D = importlib.import_module("flickerless.blend.deflicker")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
exposure = importlib.import_module("exposure_cases")  # (exposure.py's cases, without running them)
orig = D.remap
ON = [False]


def norm(x):
    m = x.mean((1, 2, 3), keepdim=True)
    return (x * (0.5 / m.clamp_min(1e-3))).clamp(0, 1) * (m > 1e-3)


KIND = sys.argv[1]


def to_target(t, s):
    mt, ms = t.mean((1, 2, 3), keepdim=True), s.mean((1, 2, 3), keepdim=True)
    return (s * (mt / ms.clamp_min(1e-3))).clamp(0, 1)


def remap(style, tg, sg, opts, keys, guide_levels=None, **kw):
    if ON[0]:
        if KIND == "frame":
            tg, sg = norm(tg), norm(sg)
            if guide_levels is not None:
                guide_levels = [(norm(t), norm(s)) for t, s in guide_levels]
        else:
            sg = to_target(tg, sg)
            if guide_levels is not None:
                guide_levels = [(t, to_target(t, s)) for t, s in guide_levels]
    return orig(style, tg, sg, opts, keys, guide_levels=guide_levels, **kw)


D.remap = remap


for name in sys.argv[2].split(","):
    g, s, gt, kw = exposure.case(name)[:4]
    row = {"case": name}
    for on in (False, True):
        ON[0] = on
        out = flickerless.deflicker(g, s, device="cpu", **kw)
        row["normalised" if on else "raw"] = (round(psnr(out, gt), 2), round(temporal_error(out, gt), 1))
    print(json.dumps(row), flush=True)
