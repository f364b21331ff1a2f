"""Engine benchmark (issue 3): the text-guided stylisation settings of DiffSynth's Table 2 on random
weights (weights do not change the time): SD1.5-shaped UNet + 2 ControlNets, fp16, 512x960, 20 DDIM
steps, CFG 7.5, cross-frame attention [first, i-1, i, i+1], deflicker every 5 steps over the whole
video plus a final pass (the paper uses window 121 after the last step), T frames.

Reports s/frame, the split between denoiser / VAE / deflicker, and peak GPU memory.

    python benchmarks/pipeline.py --frames 64
"""

import argparse
import json
import time

import numpy as np
import torch

from flickerless.demo import load_clip, registry_clip
from flickerless.diffusion import (ControlNetUnit, CrossFrameAttention, DeflickerSchedule, Denoiser, VAECodec,
                                   default_deflicker, enable_cross_frame_attention, fixed_noise, sample)
from flickerless.diffusion.sampler import remembering_deflicker
from flickerless.video import resize_frame
import sd15

p = argparse.ArgumentParser()
p.add_argument("--frames", type=int, default=64)
p.add_argument("--height", type=int, default=512)
p.add_argument("--width", type=int, default=960)
p.add_argument("--steps", type=int, default=20)
p.add_argument("--batch", type=int, default=8, help="frames per UNet call")
p.add_argument("--vae-batch", type=int, default=4)
p.add_argument("--final-window", type=int, default=121)
p.add_argument("--layout", choices=["auto", "nchw", "cl-torch"], default="auto",
               help="auto: as VideoPipeline (channels-last with the Triton GroupNorm of diffusion.layout when "
                    "that exists in the tree); nchw: PyTorch's default layout; cl-torch: channels-last with "
                    "PyTorch's GroupNorm")
p.add_argument("--attn", choices=["kv", "hidden"], default="kv",
               help="cross-frame attention: kv = the engine's; hidden = the former processor (benchmarks/former_attention.py)")
p.add_argument("--refine", type=int, default=None,
               help="refine_iterations of the deflicker passes after the first (default: the library's)")
p.add_argument("--cudnn-benchmark", action="store_true", help="torch.backends.cudnn.benchmark = True")
p.add_argument("--cold-deflicker", action="store_true",
               help="every deflicker pass searches from scratch (the engine before it kept PatchMatch fields across passes)")
a = p.parse_args()
torch.backends.cudnn.benchmark = a.cudnn_benchmark
dev, dt = torch.device("cuda"), torch.float16
unet, cns, vae = sd15.models(dev, dt)
for m in [unet, *cns, vae]:
    if a.layout == "cl-torch":
        m.to(memory_format=torch.channels_last)
    elif a.layout == "auto":
        try:
            from flickerless.diffusion import layout
        except ImportError:  # a tree from before diffusion.layout
            layout = None
        if layout is not None and layout.available():
            layout.to_channels_last(m)
state = CrossFrameAttention()
for m in [unet, *cns]:
    enable_cross_frame_attention(m, state)
if a.attn == "hidden":
    from former_attention import use_former

    use_former([unet, *cns], state)
sched = sd15.ddim()
clip, _ = load_clip(registry_clip("bikes.mp4"), a.frames)
clip = np.stack([resize_frame(clip[i % len(clip)], (a.height, a.width)) for i in range(a.frames)])
video = torch.from_numpy(clip).permute(0, 3, 1, 2).float() / 255  # host
emb = torch.randn(1, 77, 768)
units = [ControlNetUnit(c, video, 1.0) for c in cns]

timers = {"denoiser": 0.0, "vae": 0.0, "deflicker": 0.0}


def timed(key, fn):
    def run(*args, **kw):
        torch.cuda.synchronize()
        t = time.perf_counter()
        r = fn(*args, **kw)
        torch.cuda.synchronize()
        timers[key] += time.perf_counter() - t
        return r
    return run


den = Denoiser(unet, emb, torch.zeros_like(emb), 7.5, units, a.batch, state)
codec = VAECodec(vae, a.vae_batch)
codec.encode, codec.decode = timed("vae", codec.encode), timed("vae", codec.decode)
refine = {} if a.refine is None else {"refine_iterations": a.refine}
defl = timed("deflicker", default_deflicker if a.cold_deflicker else remembering_deflicker(**refine))  # as VideoPipeline
sched.set_timesteps(a.steps)
latents = fixed_noise(a.frames, (4, a.height // 8, a.width // 8), 0)
torch.cuda.reset_peak_memory_stats()
t0 = time.perf_counter()
latents = sample(timed("denoiser", den), sched, codec, latents, sched.timesteps, DeflickerSchedule(5, None, None), defl, video)
frames = codec.decode(latents, out_device="cpu")
frames = defl(frames, video, a.final_window)
torch.cuda.synchronize()
total = time.perf_counter() - t0
res = {"frames": a.frames, "size": f"{a.width}x{a.height}", "steps": a.steps, "batch": a.batch,
       "vae_batch": a.vae_batch, "layout": a.layout, "attn": a.attn,
       "cudnn_benchmark": a.cudnn_benchmark, "cold_deflicker": a.cold_deflicker, "refine": a.refine,
       "s_per_frame": round(total / a.frames, 3), **{k + "_s_per_frame": round(v / a.frames, 3) for k, v in timers.items()},
       "peak_gpu_GiB": round(torch.cuda.max_memory_allocated() / 2**30, 2), "device": torch.cuda.get_device_name()}
print(json.dumps(res))
