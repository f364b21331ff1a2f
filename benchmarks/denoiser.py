"""Where the engine's denoiser and VAE time goes (issue 3), variant by variant, in one process.

One denoiser step over T frames (SD1.5-shaped UNet + 2 ControlNets, random weights, fp16, CFG in
one call, the frame batches of the engine) under:

- ``none``: no cross-frame attention (the issue's 0.475 s/frame reference setting);
- ``hidden``: cross-frame attention that gathers the pattern frames' hidden states and projects
  keys/values of all of them (the engine before 2026-11-22, session 10);
- ``kv``: cross-frame attention that projects keys/values once per frame and gathers those
  (the engine now), with torch's SDPA backend choice and with each backend forced;
- ``kv+cudnn.benchmark``; ``kv+compile`` (torch.compile of UNet and ControlNets, compile time
  reported apart).

and VAE decode/encode of a batch with and without ``cudnn.benchmark``. Prints one JSON line per
variant: seconds per frame for 20 steps (the step time x 20 / T).

    python benchmarks/denoiser.py --frames 64 --batch 32
"""

import argparse
import json
import time

import torch
from diffusers.models.attention_processor import AttnProcessor2_0
from torch.nn.attention import SDPBackend, sdpa_kernel

from flickerless.diffusion import ControlNetUnit, CrossFrameAttention, Denoiser, VAECodec
from flickerless.diffusion.attention import CrossFrameAttnProcessor
from former_attention import HiddenGather
import sd15

p = argparse.ArgumentParser()
p.add_argument("--frames", type=int, default=64)
p.add_argument("--height", type=int, default=512)
p.add_argument("--width", type=int, default=960)
p.add_argument("--batch", type=int, default=32)
p.add_argument("--vae-batch", type=int, default=8)
p.add_argument("--repeat", type=int, default=2)
p.add_argument("--compile", action="store_true")
a = p.parse_args()
dev, dt = torch.device("cuda"), torch.float16
unet, cns, vae = sd15.models(dev, dt)
sched = sd15.ddim()
sched.set_timesteps(20)
t = sched.timesteps[5]
T, h, w = a.frames, a.height, a.width
video = torch.rand(T, 3, h, w)
latents = torch.randn(T, 4, h // 8, w // 8)
emb = torch.randn(1, 77, 768)
units = [ControlNetUnit(c, video, 1.0) for c in cns]
state = CrossFrameAttention()


def set_procs(kind):
    for m in [unet, *cns]:
        procs = {}
        for name in m.attn_processors:
            self_attn = name.endswith("attn1.processor")
            if kind == "none" or not self_attn:
                procs[name] = AttnProcessor2_0()
            else:
                procs[name] = HiddenGather(state) if kind == "hidden" else CrossFrameAttnProcessor(state)
        m.set_attn_processor(procs)


def timeit(fn, repeat):
    fn()  # warm-up
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeat


def report(name, sec, extra=None):
    print(json.dumps({"variant": name, "s_per_frame_20_steps": round(sec * 20 / T, 4), "step_s": round(sec, 3),
                      "peak_GiB": round(torch.cuda.max_memory_allocated() / 2**30, 2), **(extra or {})}), flush=True)
    torch.cuda.reset_peak_memory_stats()


def step(den):
    return lambda: den(latents, t, sched, 0.25)


backends = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
            "cudnn": SDPBackend.CUDNN_ATTENTION}
print(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "frames": T, "batch": a.batch,
                  "size": f"{w}x{h}"}), flush=True)
for kind in ["none", "hidden", "kv"]:
    set_procs(kind)
    den = Denoiser(unet, emb, torch.zeros_like(emb), 7.5, units, a.batch, None if kind == "none" else state)
    report(kind, timeit(step(den), a.repeat))
if T > a.batch:  # the whole video in one batch: no context frames to carry
    report(f"kv batch={T}", timeit(step(Denoiser(unet, emb, torch.zeros_like(emb), 7.5, units, T, state)), a.repeat))
den = Denoiser(unet, emb, torch.zeros_like(emb), 7.5, units, a.batch, state)
for name, be in backends.items():
    try:
        with sdpa_kernel([be]):
            report(f"kv+{name}", timeit(step(den), a.repeat))
    except RuntimeError as e:
        print(json.dumps({"variant": f"kv+{name}", "error": str(e).splitlines()[0][:200]}), flush=True)
torch.backends.cudnn.benchmark = True
report("kv+cudnn.benchmark", timeit(step(den), a.repeat))
torch.backends.cudnn.benchmark = False

codec = VAECodec(vae, a.vae_batch)
frames = video[: a.vae_batch * 2]
lat = latents[: a.vae_batch * 2]
n = frames.shape[0]
for bench in [False, True]:
    torch.backends.cudnn.benchmark = bench
    d = timeit(lambda: codec.decode(lat), a.repeat) / n
    e = timeit(lambda: codec.encode(frames), a.repeat) / n
    print(json.dumps({"variant": f"vae cudnn.benchmark={bench}", "decode_s_per_frame": round(d, 4),
                      "encode_s_per_frame": round(e, 4)}), flush=True)
for name, be in backends.items():
    try:
        with sdpa_kernel([be, SDPBackend.MATH]):
            d = timeit(lambda: codec.decode(lat), a.repeat) / n
        print(json.dumps({"variant": f"vae decode sdpa {name}", "decode_s_per_frame": round(d, 4)}), flush=True)
    except RuntimeError as e:
        print(json.dumps({"variant": f"vae {name}", "error": str(e).splitlines()[0][:200]}), flush=True)

if a.compile:
    torch.backends.cudnn.benchmark = False
    t0 = time.perf_counter()
    cu = torch.compile(unet)
    cc = [torch.compile(c) for c in cns]
    den = Denoiser(cu, emb, torch.zeros_like(emb), 7.5, [ControlNetUnit(c, video, 1.0) for c in cc], a.batch, state)
    step(den)()
    torch.cuda.synchronize()
    report("kv+compile", timeit(step(den), a.repeat), {"compile_and_first_step_s": round(time.perf_counter() - t0, 1)})
