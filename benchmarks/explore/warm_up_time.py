"""What warming a GPU up saves (deflicker.warm_up): in a fresh process, the first run of 12 frames of 1080p
against the second, cold or after warm_up; and the Triton kernel variants loaded after each step.

    python benchmarks/explore/warm_up_time.py cold|warm
"""
import sys, time
t0 = time.perf_counter()
import torch
from flickerless.blend import kernels
from flickerless.blend.deflicker import run_deflicker, warm_up
from flickerless.blend.frames import TensorFrames
t1 = time.perf_counter(); print(f"import {t1 - t0:.2f} s")
torch.zeros(1, device="cuda"); torch.cuda.synchronize(); t2 = time.perf_counter(); print(f"cuda init {t2 - t1:.2f} s")

def variants():
    return sum(len(c[0]) for fn in (kernels._iteration_kernel, kernels._vote_kernel) for c in fn.device_caches.values())

dev, size = torch.device("cuda"), (1080, 1920)
g = torch.Generator(device="cpu").manual_seed(1)
G, S = (torch.rand(12, 3, *size, generator=g).to(dev) for _ in range(2))
def real():
    t = time.perf_counter()
    run_deflicker(TensorFrames(G), TensorFrames(S), lambda i, img: None, device=dev, cuts=False)
    torch.cuda.synchronize(); return time.perf_counter() - t
if sys.argv[1] == "warm":
    for k in range(2):
        t = time.perf_counter(); warm_up(dev, size); print(f"warm_up {k}: {time.perf_counter() - t:.2f} s, variants {variants()}")
for k in range(2):
    print(f"12 frames {k}: {real():.2f} s, variants {variants()}")
