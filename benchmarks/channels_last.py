"""Channels-last models with the Triton GroupNorm (flickerless.diffusion.layout) against the default
NCHW layout (issue 3), in one process: VAE decode/encode and one denoiser step of the engine's
SD1.5-shaped models, plus the GroupNorm kernel's error against nn.GroupNorm.

Variants: ``nchw`` (the engine before), ``cl-torch`` (channels-last with PyTorch's GroupNorm, which
copies back to NCHW), ``cl-triton`` (channels-last with ChannelsLastGroupNorm).

    python benchmarks/channels_last.py --frames 64 --batch 64 --vae-batch 16
"""

import argparse
import copy
import json
import time

import torch

import sd15
from flickerless.diffusion import ControlNetUnit, CrossFrameAttention, Denoiser, VAECodec, enable_cross_frame_attention
from flickerless.diffusion.layout import ChannelsLastGroupNorm, to_channels_last

p = argparse.ArgumentParser()
p.add_argument("--frames", type=int, default=64)
p.add_argument("--batch", type=int, default=64)
p.add_argument("--vae-batch", type=int, default=16)
p.add_argument("--repeat", type=int, default=2)
a = p.parse_args()
dev, dt = torch.device("cuda"), torch.float16
print(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__}), flush=True)


def timeit(fn, repeat=a.repeat):
    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeat):
        r = fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeat, r


# the kernel alone: error and time against nn.GroupNorm on the shapes the models meet
for (n, c, h, w, g) in [(16, 128, 512, 960, 32), (16, 512, 64, 120, 32), (128, 320, 64, 120, 32),
                        (128, 1280, 8, 15, 32), (3, 96, 17, 23, 3), (2, 64, 5, 7, 32)]:
    gn = torch.nn.GroupNorm(g, c).to(dev, dt)
    with torch.no_grad():
        gn.weight.normal_(1, 0.2), gn.bias.normal_(0, 0.2)
    x = (torch.randn(n, c, h, w, device=dev) * 3 + 5).to(dt).contiguous(memory_format=torch.channels_last)
    cl = ChannelsLastGroupNorm.from_module(gn)
    with torch.no_grad():
        ref = torch.nn.functional.group_norm(x.contiguous().float(), g, gn.weight.float(), gn.bias.float(), gn.eps)
        t_ref, y_ref = timeit(lambda: torch.nn.GroupNorm.forward(gn, x))
        t_cl, y = timeit(lambda: cl(x))
    print(json.dumps({"groupnorm": [n, c, h, w, g], "torch_ms": round(t_ref * 1e3, 3), "triton_ms": round(t_cl * 1e3, 3),
                      "triton_max_err_vs_fp32": float((y.float() - ref).abs().max()),
                      "torch_fp16_max_err_vs_fp32": float((y_ref.float() - ref).abs().max()),
                      "out_channels_last": y.is_contiguous(memory_format=torch.channels_last)}), flush=True)

unet0, cns0, vae0 = sd15.models(dev, dt)
T = a.frames
video = torch.rand(T, 3, 512, 960)
lat = torch.randn(T, 4, 64, 120)
emb = torch.randn(1, 77, 768)
sched = sd15.ddim()
sched.set_timesteps(20)
# accuracy against fp32 (8 frames): the fp16 layouts should be equally far from it
small = {"lat": lat[:8], "video": video[:8]}


def small_pred(unet, cns):
    st = CrossFrameAttention()
    for m in [unet, *cns]:
        enable_cross_frame_attention(m, st)
    dd = next(unet.parameters()).dtype
    d = Denoiser(unet, emb.to(dd), torch.zeros_like(emb).to(dd), 7.5,
                 [ControlNetUnit(c, small["video"], 1.0) for c in cns], 8, st)
    return d(small["lat"], sched.timesteps[5], sched, 0.25)


fp32 = small_pred(copy.deepcopy(unet0).float(), [copy.deepcopy(c).float() for c in cns0])
torch.cuda.empty_cache()
ref_out = {}
for variant in ["nchw", "cl-torch", "cl-triton"]:
    unet, cns, vae = (copy.deepcopy(m) for m in (unet0, cns0, vae0)) if variant != "nchw" else (unet0, cns0, vae0)
    for m in [unet, *cns, vae]:
        if variant == "cl-torch":
            m.to(memory_format=torch.channels_last)
        elif variant == "cl-triton":
            to_channels_last(m)
    codec = VAECodec(vae, a.vae_batch)
    n = a.vae_batch * 2
    td, dec = timeit(lambda: codec.decode(lat[:n], out_device="cpu"))
    te, enc = timeit(lambda: codec.encode(video[:n], out_device="cpu"))
    state = CrossFrameAttention()
    for m in [unet, *cns]:
        enable_cross_frame_attention(m, state)
    den = Denoiser(unet, emb, torch.zeros_like(emb), 7.5, [ControlNetUnit(c, video, 1.0) for c in cns], a.batch, state)
    ts, pred = timeit(lambda: den(lat, sched.timesteps[5], sched, 0.25))
    err32 = float((small_pred(unet, cns) - fp32).abs().max())
    row = {"variant": variant, "vae_decode_s_per_frame": round(td / n, 4), "vae_encode_s_per_frame": round(te / n, 4),
           "denoiser_s_per_frame_20_steps": round(ts * 20 / T, 4), "peak_GiB": round(torch.cuda.max_memory_allocated() / 2**30, 2),
           "pred_max_err_vs_fp32_8_frames": err32, "fp32_abs_mean": float(fp32.abs().mean())}
    if variant == "nchw":
        ref_out = {"dec": dec, "enc": enc, "pred": pred}
    else:
        row.update({"decode_max_diff": float((dec - ref_out["dec"]).abs().max()),
                    "encode_max_diff": float((enc - ref_out["enc"]).abs().max()),
                    "pred_max_diff": float((pred - ref_out["pred"]).abs().max()),
                    "pred_ref_abs_mean": float(ref_out["pred"].abs().mean())})
    print(json.dumps(row), flush=True)
    torch.cuda.reset_peak_memory_stats()
    if variant != "nchw":
        del unet, cns, vae
    torch.cuda.empty_cache()
