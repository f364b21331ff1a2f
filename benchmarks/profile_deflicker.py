"""Profile one deflicker call with torch.profiler: where the GPU (or CPU) time goes.

    python benchmarks/profile_deflicker.py --device cuda --frames 16 --width 640 --height 480
"""

import argparse

import numpy as np
import torch

from flickerless import deflicker
from flickerless.demo import load_clip, registry_clip
from flickerless.synthetic import flickering_pair
from flickerless.video import resize_frame

p = argparse.ArgumentParser()
p.add_argument("--device", default="cuda")
p.add_argument("--frames", type=int, default=16)
p.add_argument("--width", type=int, default=640)
p.add_argument("--height", type=int, default=480)
p.add_argument("--batch", type=int, default=None)
a = p.parse_args()
clip, _ = load_clip(registry_clip("bikes.mp4"), a.frames, a.width)
clip = np.stack([resize_frame(f, (a.height, a.width)) for f in clip])
_, flick = flickering_pair(clip)
dev = torch.device(a.device)
g = torch.from_numpy(clip).permute(0, 3, 1, 2).to(dev).float() / 255
s = torch.from_numpy(flick).permute(0, 3, 1, 2).to(dev).float() / 255
deflicker(g[:4], s[:4], device=dev, batch=a.batch)  # warm-up
acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if dev.type == "cuda" else [])
with torch.profiler.profile(activities=acts) as prof:
    deflicker(g, s, device=dev, batch=a.batch)
    if dev.type == "cuda":
        torch.cuda.synchronize()
key = "self_cuda_time_total" if dev.type == "cuda" else "self_cpu_time_total"
print(prof.key_averages().table(sort_by=key, row_limit=25))
