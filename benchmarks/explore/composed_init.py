"""Can a remap over d frames start from the fields of the steps between, instead of a full pyramid?

For frames i and i+d of a real clip, the consistent stylisation (``synthetic.stylize``) of frame i is
remapped onto frame i+d, and compared with frame i+d's own:

- full: PatchMatch over the pyramid (what the remapping table runs for every pair today);
- composed + r: the fields of the single steps i -> i+1 -> ... -> i+d chained (each target pixel
  follows the step fields back), then ``r`` refine iterations at full resolution (a warm start).

    PYTHONPATH=src python benchmarks/explore/composed_init.py carphone_pristine.mp4 40 [WIDTH]
"""
import sys
import time

import numpy as np
import torch

from flickerless.blend.patchmatch import PatchMatchOptions, final_vote, patchmatch
from flickerless.demo import load_clip, registry_clip
from flickerless.synthetic import psnr, stylize
from flickerless.video import resize_frame

name, n = sys.argv[1], int(sys.argv[2])
width = int(sys.argv[3]) if len(sys.argv) > 3 else None
clip, _ = load_clip(registry_clip(name), n)
if width:
    h = round(clip.shape[1] * width / clip.shape[2] / 2) * 2
    clip = np.stack([resize_frame(f, (h, width)) for f in clip])
gt = np.stack([stylize(f) for f in clip])
t = lambda x: torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float() / 255  # noqa: E731
G, S = t(clip), t(gt)
opts = PatchMatchOptions()
u8 = lambda r: (r[0].permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8)  # noqa: E731


def compose(near, far):
    """far: target -> positions in the middle frame; near: middle -> positions in the source."""
    y, x = far[:, 0], far[:, 1]
    w = near.shape[-1]
    flat = near.flatten(2)
    idx = (y * w + x).flatten(1)
    return torch.stack([flat[:, 0].gather(1, idx), flat[:, 1].gather(1, idx)], 1).view_as(far)


# the fields of single steps, src i -> dst i+1
tt = time.perf_counter()
step = [patchmatch(G[i + 1:i + 2], G[i:i + 1], S[i:i + 1], opts) for i in range(n - 1)]
full_time = (time.perf_counter() - tt) / (n - 1)
print(f"{name} {n} frames {clip.shape[2]}x{clip.shape[1]}: a full PatchMatch {full_time:.3f} s")
for d in (1, 2, 4, 8, 15):
    rows = {"full": [], **{f"composed+{r}": [] for r in (0, 1, 2, 3)}}
    times = {k: 0.0 for k in rows}
    for i in range(0, n - d, max(1, (n - d) // 12)):
        j = i + d
        tt = time.perf_counter()
        nnf = patchmatch(G[j:j + 1], G[i:i + 1], S[i:i + 1], opts)
        times["full"] += time.perf_counter() - tt
        rows["full"].append(psnr(u8(final_vote(S[i:i + 1], nnf, opts)), gt[j]))
        chain = step[i]
        tt = time.perf_counter()
        for k in range(i + 1, j):
            chain = compose(chain, step[k])
        base = time.perf_counter() - tt
        for r in (0, 1, 2, 3):
            tt = time.perf_counter()
            f = chain if r == 0 else patchmatch(G[j:j + 1], G[i:i + 1], S[i:i + 1],
                                                PatchMatchOptions(refine_iterations=r), init_nnf=chain)
            times[f"composed+{r}"] += base + time.perf_counter() - tt
            rows[f"composed+{r}"].append(psnr(u8(final_vote(S[i:i + 1], f, opts)), gt[j]))
    m = len(rows["full"])
    print(f"d={d:2d}: " + "; ".join(f"{k} {np.mean(v):.2f} dB {times[k] / m:.3f} s" for k, v in rows.items()), flush=True)
