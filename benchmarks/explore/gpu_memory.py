"""Where a deflicker run's GPU memory goes: runs ``flickerless.deflicker`` on the first N frames of two
clips with CUDA's allocation history recorded and, at the peak or at an out-of-memory error, prints the
live GPU memory grouped by the line of flickerless that allocated it (largest first).

    python3 benchmarks/explore/gpu_memory.py GUIDE STYLE N [JSON options for deflicker()]

Run it under ``benchmarks/small_gpu.py --free 8 --`` to see what fills an 8 GiB card.
"""

import collections
import json
import sys

import torch

import flickerless
from flickerless.video import iter_frames

guide_path, style_path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
opts = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
g = __import__("numpy").stack([f for _, f in zip(range(n), iter_frames(guide_path))])
s = __import__("numpy").stack([f for _, f in zip(range(n), iter_frames(style_path))])
print(f"{n} frames of {g.shape[2]}x{g.shape[1]}; free {torch.cuda.mem_get_info()[0] / 2**30:.2f} GiB; options {opts}")


def summary(snap, title):
    live = collections.Counter()
    total = 0
    for seg in snap["segments"]:
        for b in seg["blocks"]:
            if b["state"] != "active_allocated":
                continue
            total += b["size"]
            frames = b.get("frames") or []
            where = next((f"{f['filename'].split('src/')[-1]}:{f['line']} {f['name']}" for f in frames
                          if "flickerless" in f["filename"]), "(outside flickerless)")
            live[where] += b["size"]
    reserved = sum(seg["total_size"] for seg in snap["segments"])
    print(f"--- {title}: {total / 2**30:.2f} GiB live, {reserved / 2**30:.2f} GiB reserved")
    for where, size in live.most_common(14):
        print(f"{size / 2**20:9.1f} MiB  {where}")


def on_oom(device, alloc, device_allocated, device_free):
    summary(torch.cuda.memory._snapshot(), f"out of memory asking for {alloc / 2**20:.0f} MiB")


torch.cuda.memory._record_memory_history(max_entries=200000, stacks="python")
torch._C._cuda_attach_out_of_memory_observer(on_oom)
try:
    out = flickerless.deflicker(g, s, device="cuda", **opts)
    print("done; peak allocated", round(torch.cuda.max_memory_allocated() / 2**30, 2), "GiB")
except Exception as e:  # noqa: BLE001
    print("failed:", type(e).__name__, str(e)[:200])
