"""Session 21: deflicker() time and peak GPU memory against the batch of frame pairs, at several frame
sizes (bikes.mp4 resized, its flickering style, table mode, window 15, full quality, no cut
detection), the frames already on the GPU: what the default batch should be on the fused (Triton)
kernels, whose memory per pair is far below the torch passes' that the default was sized for.

    python benchmarks/explore/batch_sizes.py 640x480:64:0,8,16,32,64 1920x1080:24:0,8,16,32 3840x2160:12:0,4,8,16

Each argument is WIDTHxHEIGHT:FRAMES:BATCHES (0: the default batch).
"""
import sys
import time

import numpy as np
import torch

from flickerless import deflicker
from flickerless.demo import load_clip, registry_clip
from flickerless.synthetic import flickering_pair
from flickerless.video import resize_frame

D = sys.modules["flickerless.blend.deflicker"]
dev = torch.device("cuda")
clip0, _ = load_clip(registry_clip("bikes.mp4"), 64, None)
for arg in sys.argv[1:]:
    size, n, batches = arg.split(":")
    w, h = (int(x) for x in size.split("x"))
    n = int(n)
    clip = np.stack([resize_frame(f, (h, w)) for f in clip0[:n]])
    _, flick = flickering_pair(clip)
    g = torch.from_numpy(clip).permute(0, 3, 1, 2).to(dev).float() / 255
    s = torch.from_numpy(flick).permute(0, 3, 1, 2).to(dev).float() / 255
    deflicker(g[:4], s[:4], device=dev, cuts=False)  # warm-up
    print(f"{w}x{h}, {n} frames: default batch {D._default_batch(dev, (h, w))}", flush=True)
    for b in (int(x) for x in batches.split(",")):
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        t0 = time.perf_counter()
        deflicker(g, s, device=dev, batch=b or None, cuts=False)
        torch.cuda.synchronize(dev)
        dt = (time.perf_counter() - t0) / n
        print(f"  batch {b or 'default'}: {dt:.4f} s/frame, peak {torch.cuda.max_memory_allocated(dev) / 2**30:.1f} GiB",
              flush=True)
