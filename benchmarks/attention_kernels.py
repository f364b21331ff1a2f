"""Cross-frame attention kernels at the engine's shapes (issue 3): where the 0.37 s/frame goes.

The UNet's top-level self-attention at 512x960 has 64x120 = 7680 tokens, 8 heads of dim 40; with
the pattern [first, i-1, i, i+1] each query reads 4 x 7680 keys. This times, per call over ``B``
batch positions (frames x CFG branches), the pieces of :class:`CrossFrameAttnProcessor`: the K/V
gather, SDPA with torch's backend choice and with each backend forced, and SDPA with the head dim
zero-padded (same values: zero dims add nothing to q.k and give zero output columns). Then the
top CUDA kernels of one denoiser step of the SD1.5-shaped models (channels-last, as the engine).

    python benchmarks/attention_kernels.py --batch 128
"""

import argparse
import json
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

p = argparse.ArgumentParser()
p.add_argument("--batch", type=int, default=128, help="batch positions (frames x 2 CFG branches)")
p.add_argument("--repeat", type=int, default=5)
p.add_argument("--profile-frames", type=int, default=16, help="frames of the profiled denoiser step (0: skip)")
p.add_argument("--skip-kernels", action="store_true", help="only the profile of a denoiser step")
a = p.parse_args()
dev, dt = torch.device("cuda"), torch.float16
print(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                  "cudnn": torch.backends.cudnn.version()}), flush=True)


def timeit(fn):
    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(a.repeat):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / a.repeat


B, K = a.batch, 4
idx = torch.tensor([[0, max(0, i - 1), i, min(B - 1, i + 1)] for i in range(B)], device=dev)
for n, heads, d in [] if a.skip_kernels else [(7680, 8, 40), (1920, 8, 80), (480, 8, 160)]:
    x = torch.randn(B, n, heads * d, device=dev, dtype=dt)
    q = x.view(B, n, heads, d).transpose(1, 2)  # the processor's layout: (B, heads, n, d) view of (B, n, heads*d)
    kv = torch.randn(B, n, heads * d, device=dev, dtype=dt)
    kh = kv.view(B, n, heads, d).transpose(1, 2)

    def gather_bhsd():  # the processor now: (B, heads, K*n, d) contiguous
        g = kh[idx.reshape(-1)].view(B, K, heads, n, d)
        return g.transpose(1, 2).reshape(B, heads, K * n, d)

    def gather_bshd():  # one copy: (B, K*n, heads, d) contiguous, viewed as (B, heads, K*n, d)
        return kv.view(B, n, heads, d)[idx].reshape(B, K * n, heads, d).transpose(1, 2)

    k1 = gather_bhsd()
    k2 = gather_bshd()
    flops = 4 * B * heads * n * K * n * d
    rows = {"gather_bhsd": timeit(gather_bhsd), "gather_bshd": timeit(gather_bshd)}
    ref = F.scaled_dot_product_attention(q, k1, k1)
    for name, be in [("default", None), ("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION),
                     ("efficient", SDPBackend.EFFICIENT_ATTENTION)]:
        for lay, kk in [("bhsd", k1), ("bshd", k2)]:
            try:
                if be is None:
                    rows[f"sdpa_{name}_{lay}"] = timeit(lambda: F.scaled_dot_product_attention(q, kk, kk))
                else:
                    with sdpa_kernel([be]):
                        rows[f"sdpa_{name}_{lay}"] = timeit(lambda: F.scaled_dot_product_attention(q, kk, kk))
            except RuntimeError as e:
                rows[f"sdpa_{name}_{lay}"] = str(e).splitlines()[0][:80]
    for to in sorted({-(-d // 16) * 16, -(-d // 32) * 32, -(-d // 64) * 64} - {d}):
        qp, kp = F.pad(q, (0, to - d)), F.pad(k1, (0, to - d))
        out = F.scaled_dot_product_attention(qp, kp, kp, scale=d ** -0.5)[..., :d]
        rows[f"padded{to}_max_abs_diff"] = float((out - ref).abs().max())
        rows[f"sdpa_default_pad{to}"] = timeit(lambda: F.scaled_dot_product_attention(qp, kp, kp, scale=d ** -0.5))
        rows[f"pad_q_copy{to}"] = timeit(lambda: F.pad(q, (0, to - d)))
    self_k = kh
    rows["sdpa_default_self_only(K=1)"] = timeit(lambda: F.scaled_dot_product_attention(q, self_k, self_k))
    out = {"tokens": n, "heads": heads, "head_dim": d, "B": B,
           **{k: (round(v * 1e3, 3) if isinstance(v, float) and not k.startswith("padded") else v) for k, v in rows.items()}}
    out["default_TFLOPs"] = round(flops / rows["sdpa_default_bhsd"] / 1e12, 1) if isinstance(rows["sdpa_default_bhsd"], float) else None
    print(json.dumps(out), flush=True)
    del x, kv, k1, k2, ref

if a.profile_frames:
    from torch.profiler import ProfilerActivity, profile

    import sd15
    from flickerless.diffusion import ControlNetUnit, CrossFrameAttention, Denoiser, enable_cross_frame_attention, layout

    unet, cns, _ = sd15.models(dev, dt)
    if layout.available():  # as VideoPipeline
        for m in [unet, *cns]:
            layout.to_channels_last(m)
    state = CrossFrameAttention()
    for m in [unet, *cns]:
        enable_cross_frame_attention(m, state)
    sched = sd15.ddim()
    sched.set_timesteps(20)
    T = a.profile_frames
    video = torch.rand(T, 3, 512, 960)
    emb = torch.randn(1, 77, 768)
    den = Denoiser(unet, emb, torch.zeros_like(emb), 7.5, [ControlNetUnit(c, video, 1.0) for c in cns], T, state)
    lat = torch.randn(T, 4, 64, 120)
    den(lat, sched.timesteps[5], sched, 0.25)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=True) as pr:
        den(lat, sched.timesteps[5], sched, 0.25)
        torch.cuda.synchronize()
    print(pr.key_averages().table(sort_by="self_cuda_time_total", row_limit=30, max_name_column_width=50))
    print(pr.key_averages(group_by_input_shape=True).table(sort_by="self_cuda_time_total", row_limit=30,
                                                           max_name_column_width=30, max_shapes_column_width=90))
