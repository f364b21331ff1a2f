"""The engine demo (CPU, tiny model, 32 frames of carphone) with options given to the engine's
deflicker passes (``remembering_deflicker``), to weigh them against Pixel-MSE and time:

    PYTHONPATH=src python benchmarks/engine_deflicker_options.py '{"refine_iterations": 2}'
    PYTHONPATH=src python benchmarks/engine_deflicker_options.py '{"error_sigma": 0.05}'
"""

import json
import sys
import time

import flickerless.diffusion.sampler as smp
from flickerless.cli import main

options = json.loads(sys.argv[1])
remembering = smp.remembering_deflicker
# job.py imports remembering_deflicker from the module when it runs, so this reaches the demo's job
smp.remembering_deflicker = lambda **kw: remembering(**{**kw, **options})
name = "_".join(f"{k}{v}" for k, v in options.items()) or "defaults"
t = time.time()
main(["demo", "--engine", "--frames", "32", "--out", f"out/engine_{name}", "--model", "tests/fixtures/tiny_sd"])
print(json.dumps(options), "wall", round(time.time() - t, 1))
