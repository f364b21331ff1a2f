"""Time deflicker() alone on frames already on the GPU: W x H, N frames of bikes.mp4 resized, its flickering
stylisation as the style; prints s/frame and a hash of the output (to check a speed change left the frames).

    python benchmarks/explore/blend_alone.py 1920 1080 96
    python benchmarks/explore/blend_alone.py 640 360 12 cpu
"""
import hashlib
import sys
import time

import numpy as np
import torch

from flickerless import deflicker
from flickerless.demo import load_clip, registry_clip
from flickerless.synthetic import flickering_pair
from flickerless.video import resize_frame


def make_cases(sizes, dev):
    """{"WxH": (guide, style)} for each ``((W, H), frames)`` of ``sizes``: (T, 3, H, W) uint8 on ``dev``."""
    src, _ = load_clip(registry_clip("bikes.mp4"), max(n for _, n in sizes), None)
    cases = {}
    for (w, h), n in sizes:
        clip = np.stack([resize_frame(f, (h, w)) for f in src[:n]])
        _, flick = flickering_pair(clip)
        cases[f"{w}x{h}"] = tuple(torch.from_numpy(x).to(dev).permute(0, 3, 1, 2) for x in (clip, flick))
    return cases


def time_blend(g, s, dev):
    """(s/frame, output hash) of deflicker() at the defaults, after a warm-up run on 6 frames."""
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda d: None)
    deflicker(g[:6], s[:6], device=dev)
    sync(dev)
    t = time.perf_counter()
    out = deflicker(g, s, device=dev)
    sync(dev)
    return (time.perf_counter() - t) / len(g), hashlib.sha256(out.cpu().numpy().tobytes()).hexdigest()[:16]


if __name__ == "__main__":
    w, h, n = map(int, sys.argv[1:4])
    dev = torch.device(sys.argv[4] if len(sys.argv) > 4 else "cuda")
    (g, s), = make_cases([((w, h), n)], dev).values()
    dt, digest = time_blend(g, s, dev)
    print(f"{w}x{h} {n} frames: {dt:.4f} s/frame, output sha256 {digest}")
