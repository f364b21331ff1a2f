"""Run a flickerless command in this process and print its time and the CUDA caching allocator's statistics
(retries, cudaMalloc/cudaFree calls, peaks): whether a run is held back by memory pressure.

    python benchmarks/explore/alloc_stats.py deflicker --guide g.mp4 --style s.mp4 -o out.mp4 --device cuda -q
    PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True python benchmarks/explore/alloc_stats.py deflicker ...
"""
import sys
import time

import torch

from flickerless.cli import main

t = time.perf_counter()
rc = main(sys.argv[1:])
dt = time.perf_counter() - t
if not torch.cuda.is_available():
    sys.exit(f"rc {rc}; {dt:.1f} s; no CUDA device: no allocator statistics")
s = torch.cuda.memory_stats()
print(f"rc {rc}; {dt:.1f} s; alloc retries {s.get('num_alloc_retries')}; cudaMalloc {s.get('num_device_alloc')}; "
      f"cudaFree {s.get('num_device_free')}; peak reserved {torch.cuda.max_memory_reserved() / 2**30:.1f} GiB; "
      f"peak allocated {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB", flush=True)
