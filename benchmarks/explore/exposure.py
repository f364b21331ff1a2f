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

import flickerless
from flickerless.synthetic import psnr, temporal_error

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from exposure_cases import case  # noqa: E402

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
