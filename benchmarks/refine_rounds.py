"""The engine demo (CPU, tiny model, 32 frames of carphone) with the engine's warm deflicker passes
refining R rounds instead of the library default, to weigh rounds against Pixel-MSE and time:

    PYTHONPATH=src python benchmarks/refine_rounds.py 1
    PYTHONPATH=src python benchmarks/refine_rounds.py 2
"""

import sys
import time

import flickerless.diffusion.sampler as smp
from flickerless.cli import main

rounds = int(sys.argv[1])
remembering = smp.remembering_deflicker
# job.py imports remembering_deflicker from the module when it runs, so this reaches the demo's job
smp.remembering_deflicker = lambda **kw: remembering(**{**kw, "refine_iterations": rounds})
t = time.time()
main(["demo", "--engine", "--frames", "32", "--out", f"out/refine{rounds}", "--model", "tests/fixtures/tiny_sd"])
print("refine", rounds, "wall", round(time.time() - t, 1))
