"""Time one numba PatchMatch iteration (blend/cpu_kernels._iteration) on 4 pairs of bikes.mp4 at 640x360,
from an identity field (as at a fine level, near convergence) and from a random one; prints the best of
4 runs and a hash of the fields, so two trees can be compared (PYTHONPATH=TREE).

    PYTHONPATH=src python benchmarks/explore/cpu_iteration.py
"""
import hashlib
import time

import numpy as np

import flickerless.blend.patchmatch as pm
from flickerless.blend import cpu_kernels as ck
from flickerless.demo import load_clip, registry_clip
from flickerless.synthetic import flickering_pair
from flickerless.video import resize_frame

B, H, W = 4, 360, 640
clip, _ = load_clip(registry_clip("bikes.mp4"), B + 1, None)
clip = np.stack([resize_frame(f, (H, W)) for f in clip])
_, flick = flickering_pair(clip)
clip, flick = clip.astype(np.float32) / 255, flick.astype(np.float32) / 255
tg, sg = np.ascontiguousarray(clip[1:]), np.ascontiguousarray(clip[:-1])
te, ss = np.ascontiguousarray(flick[1:]), np.ascontiguousarray(flick[:-1])
packed = hasattr(ck, "_pack")
if packed:
    import torch

    def chw(a):
        return torch.from_numpy(a).permute(0, 3, 1, 2)

    tgt, src = ck._pack(chw(tg), chw(te), 3), ck._pack(chw(sg), chw(ss), 3)
keys = np.arange(B, dtype=np.int64) * 7919
offs = ck._offsets(pm.patch_offsets(13, 3))
yy, xx = np.mgrid[0:H, 0:W]
rng = np.random.default_rng(0)
starts = {"identity": np.broadcast_to(np.stack([yy, xx])[None], (B, 2, H, W)).astype(np.int64).copy(),
          "random": np.stack([rng.integers(0, H, (B, H, W)), rng.integers(0, W, (B, H, W))], 1).astype(np.int64)}
for name, nnf in starts.items():
    out, cost = np.empty_like(nnf), np.empty((B, H, W), np.float32)
    times = []
    for _ in range(5):  # the first also compiles or loads the kernel
        t = time.perf_counter()
        if packed:  # since session 23: guide and style packed side by side (cpu_kernels._pack)
            ck._iteration(tgt, src, 3, 3, nnf, out, cost, keys, offs, 10.0, 32, 3)
        else:
            ck._iteration(tg, te, sg, ss, nnf, out, cost, keys, offs, 10.0, 32, 3)
        times.append(time.perf_counter() - t)
    digest = hashlib.sha256(out.tobytes() + cost.tobytes()).hexdigest()[:12]
    print(f"{name} start: {min(times[1:]):.3f} s per iteration, fields {digest}")
