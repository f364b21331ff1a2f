"""Session 35: where a table-mode run waits for the GPU (torch.cuda.set_sync_debug_mode("warn")), counted per
source line inside flickerless, over a run of 16 frames of 320x240 on a CUDA device, exposure on and off.

    PYTHONPATH=src python benchmarks/explore/sync_points.py"""
import collections
import traceback
import warnings

import torch

from flickerless import deflicker

g = torch.rand(16, 3, 240, 320, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
s = (g * 0.8 + 0.1).clamp(0, 1)
deflicker(g, s, device="cuda", cuts=False)
for on in (True, False):
    seen = collections.Counter()

    def show(message, category, filename, lineno, file=None, line=None):
        frames = [f for f in traceback.extract_stack() if "flickerless" in f.filename]
        where = frames[-1] if frames else None
        seen[f"{where.filename.split('src/')[-1]}:{where.lineno} {where.line}" if where else filename] += 1

    old = warnings.showwarning
    warnings.showwarning = show
    torch.cuda.set_sync_debug_mode("warn")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        deflicker(g, s, device="cuda", cuts=False, exposure=on)
    torch.cuda.set_sync_debug_mode(0)
    warnings.showwarning = old
    print(f"exposure {on}: {sum(seen.values())} waits")
    for k, v in seen.most_common(12):
        print(f"  {v:5d}  {k}")
