"""The Triton kernels' launch shape: pixels per program (kernels.BLOCK) and warps per program
(kernels.NUM_WARPS), swept on one process's frames. Each lane's result does not depend on its program,
so every shape must give the same frames (the hash printed). deflicker() alone, defaults, frames already
on the GPU (blend_alone.py's cases): bikes.mp4 at 1920x1080 (N frames) and the speed case's 640x480 (64
frames), or the cases given as WxH:FRAMES.

    python benchmarks/explore/triton_blocks.py 48 128x4,64x2,256x4
    python benchmarks/explore/triton_blocks.py 0 128x4,32x1 1920x1080:32,3840x2160:8
"""
import sys

import torch

from blend_alone import make_cases, time_blend
from flickerless.blend import kernels

n = int(sys.argv[1])
shapes = [tuple(map(int, s.split("x"))) for s in sys.argv[2].split(",")]
dev = torch.device("cuda")
sizes = [((1920, 1080), n), ((640, 480), 64)]
if len(sys.argv) > 3:
    sizes = [(tuple(map(int, c.split(":")[0].split("x"))), int(c.split(":")[1])) for c in sys.argv[3].split(",")]
cases = make_cases(sizes, dev)
print("made the frames", flush=True)
for rounds in range(2):
    for block, warps in shapes:
        kernels.BLOCK, kernels.NUM_WARPS = block, warps  # the 6-frame warm-up of time_blend compiles it
        row = [f"{name} {dt:.4f} s/frame {digest[:10]}" for name, (dt, digest) in
               ((name, time_blend(g, s, dev)) for name, (g, s) in cases.items())]
        print(f"round {rounds} BLOCK {block} warps {warps}: " + "; ".join(row), flush=True)
