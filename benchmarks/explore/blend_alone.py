"""Time deflicker() alone on frames already on the GPU: W x H, N frames of bikes.mp4 resized, its flickering
stylisation as the style; prints s/frame and a hash of the output (to check a speed change left the frames).

    python benchmarks/explore/blend_alone.py 1920 1080 96
"""
import hashlib, sys, time
import numpy as np, torch
from flickerless import deflicker
from flickerless.demo import load_clip, registry_clip
from flickerless.synthetic import flickering_pair
from flickerless.video import resize_frame
w, h, n = map(int, sys.argv[1:4])
clip, _ = load_clip(registry_clip("bikes.mp4"), n, None)
clip = np.stack([resize_frame(f, (h, w)) for f in clip])
_, flick = flickering_pair(clip)
dev = torch.device("cuda")
g = torch.from_numpy(clip).to(dev).permute(0, 3, 1, 2)
s = torch.from_numpy(flick).to(dev).permute(0, 3, 1, 2)
deflicker(g[:6], s[:6], device=dev)
torch.cuda.synchronize()
t = time.perf_counter()
out = deflicker(g, s, device=dev)
torch.cuda.synchronize()
dt = time.perf_counter() - t
print(f"{w}x{h} {n} frames: {dt / n:.4f} s/frame, output sha256 {hashlib.sha256(out.cpu().numpy().tobytes()).hexdigest()[:16]}")
