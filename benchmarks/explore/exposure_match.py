"""Session 36: the tool's exposure matching (``exposure_match``: PatchMatch compares each pair's guides brought
to the level their content agrees on, ``flickerless.blend.deflicker.level_gains``) off and on, table mode window
15 unless the case says, exposure following on (the default) both times.

    PYTHONPATH=src .venv/bin/python benchmarks/explore/exposure_match.py CASES     (DEVICE=cuda: on the GPU)

CASES (comma-separated) as in exposure_cases.py (run flicker_kinds/makeclips.py first for the clip:flicker
ones). SIZE=a,b sets MATCH_SIZE (the gains used not at all up to |log gain| a, in full from b); ONLY=1 runs
it on only. Prints one JSON row per case: PSNR and temporal error against the truth, and seconds."""
import importlib
import json
import os
import sys
import time

import flickerless
from flickerless.synthetic import psnr, temporal_error

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from exposure_cases import case  # noqa: E402

D = importlib.import_module("flickerless.blend.deflicker")
if os.environ.get("SIZE"):
    D.MATCH_SIZE = tuple(float(v) for v in os.environ["SIZE"].split(","))
for name in sys.argv[1].split(","):
    g, s, gt, kw, _ = case(name)
    row = {"case": name}
    for on in (True,) if os.environ.get("ONLY") else (False, True):
        t = time.time()
        out = flickerless.deflicker(g, s, device=os.environ.get("DEVICE", "cpu"), exposure_match=on, **kw)
        row["on" if on else "off"] = (round(psnr(out, gt), 2), round(temporal_error(out, gt), 1), round(time.time() - t, 1))
    print(json.dumps(row), flush=True)
