"""Profile the engine's VAE decode / encode and one in-loop deflicker pass on the GPU (issue 3):
the top CUDA kernels by time, to see where the non-denoiser time of benchmarks/pipeline.py goes.

    python benchmarks/profile_engine.py --frames 64
"""

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from flickerless.diffusion import VAECodec, default_deflicker
import sd15

p = argparse.ArgumentParser()
p.add_argument("--frames", type=int, default=64)
p.add_argument("--height", type=int, default=512)
p.add_argument("--width", type=int, default=960)
p.add_argument("--vae-batch", type=int, default=8)
p.add_argument("--rows", type=int, default=14)
a = p.parse_args()
dev, dt = torch.device("cuda"), torch.float16
torch.manual_seed(0)
vae = sd15.vae(dev, dt)
codec = VAECodec(vae, a.vae_batch)
T, h, w = a.frames, a.height, a.width
lat = torch.randn(a.vae_batch, 4, h // 8, w // 8)
img = torch.rand(a.vae_batch, 3, h, w)


def prof(name, fn):
    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as pr:
        fn()
        torch.cuda.synchronize()
    print(f"== {name}: {time.perf_counter() - t0:.3f} s (profiled)")
    print(pr.key_averages().table(sort_by="cuda_time_total", row_limit=a.rows, max_name_column_width=60))


prof(f"VAE decode {a.vae_batch} frames", lambda: codec.decode(lat, out_device="cpu"))
prof(f"VAE encode {a.vae_batch} frames", lambda: codec.encode(img, out_device="cpu"))
# an in-loop pass: frames and guide on the host, the whole video as the window
g = torch.rand(T, 3, h, w)
s = (g + 0.05 * torch.randn_like(g)).clamp(0, 1)
for kw in [{}, {"iterations": 3}]:
    default_deflicker(s[:8], g[:8], None, **kw)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    default_deflicker(s, g, None, **kw)
    torch.cuda.synchronize()
    print(f"== deflicker pass {T} frames {kw}: {(time.perf_counter() - t0) / T:.4f} s/frame")
prof(f"deflicker pass {T} frames", lambda: default_deflicker(s, g, None))
