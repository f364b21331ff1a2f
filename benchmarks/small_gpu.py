"""Run a command as if the GPU were smaller: this process holds all but ``--free`` GiB of the GPU's
memory (as another job on a shared GPU would), runs the command, and gives the memory back. What the
command sees through ``torch.cuda.mem_get_info`` and what it can allocate are then those of a card with
``--free`` GiB (less the CUDA context's few hundred MiB): the way to check on an H100 that the tools fit
an 8-12 GiB consumer card and adapt their batches to it.

    python3 benchmarks/small_gpu.py --free 8 -- python3 benchmarks/pipeline.py --frames 16 --batch 32
"""

import argparse
import subprocess
import sys
import time

import torch

p = argparse.ArgumentParser()
p.add_argument("--free", type=float, required=True, help="GiB of GPU memory left to the command")
p.add_argument("--device", default="cuda:0")
p.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command")
a = p.parse_args()
cmd = a.command[1:] if a.command[:1] == ["--"] else a.command
if not cmd:
    p.error("give the command after --")
free, total = torch.cuda.mem_get_info(a.device)
hold = int(free - a.free * 2**30)
if hold <= 0:
    p.error(f"{free / 2**30:.1f} GiB free already, not more than --free {a.free}")
ballast = torch.empty(hold, dtype=torch.uint8, device=a.device)
left = torch.cuda.mem_get_info(a.device)[0]
print(f"small_gpu: holding {hold / 2**30:.1f} GiB of {total / 2**30:.1f}; {left / 2**30:.2f} GiB free for: "
      f"{' '.join(cmd)}", flush=True)
t0 = time.perf_counter()
rc = subprocess.call(cmd)
print(f"small_gpu: exit {rc} after {time.perf_counter() - t0:.1f} s", flush=True)
del ballast
sys.exit(rc)
