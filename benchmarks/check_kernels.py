"""GPU check: the Triton kernels against the torch path on the same inputs (run on a CUDA machine).

Prints the fraction of NNF entries that agree and the max vote difference; exits 1 on disagreement.
"""

import sys

import numpy as np
import torch

from flickerless.blend import patchmatch as pm
from flickerless.blend import kernels
from flickerless.demo import load_clip, registry_clip
from flickerless.synthetic import flickering_pair

clip, _ = load_clip(registry_clip("bikes.mp4"), 8, 320)
_, flick = flickering_pair(clip)
dev = torch.device("cuda")
g = torch.from_numpy(clip).permute(0, 3, 1, 2).to(dev).float() / 255
s = torch.from_numpy(flick).permute(0, 3, 1, 2).to(dev).float() / 255
tgt, src, sty = g[1:5], g[0:4], s[0:4]
keys = torch.arange(4, device=dev) * 7 + 3
offs = pm.patch_offsets(13, 3)
nnf0 = pm.initialize(4, tgt.shape[-2:], src.shape[-2:], "random", keys, 0, dev)
# one iteration, both ways
est_t = pm.vote(sty, nnf0, offs)
est_k = kernels.vote(sty, nnf0, offs)
vote_diff = (est_t - est_k).abs().max().item()
td = pm.describe(torch.cat((tgt * 10**0.5, est_t), 1), offs)
sd = pm.describe(torch.cat((src * 10**0.5, sty), 1), offs)
cost = pm.patch_cost(td, sd, nnf0, src.shape[-2:], len(offs))
n1, c1 = pm.propagate(nnf0, cost, td, sd, src.shape[-2:], len(offs))
n1, c1 = pm.random_search(n1, c1, td, sd, src.shape[-2:], len(offs), 16, keys, salt=5)
n2, c2 = kernels.iteration(tgt, est_t, src, sty, nnf0, keys, offs, 10.0, 16, 5)
agree = (n1 == n2).all(1).float().mean().item()
cdiff = (c1 - c2).abs().max().item()
full_t = pm.remap(sty, tgt, src, pm.PatchMatchOptions(backend="torch"), keys)
full_k = pm.remap(sty, tgt, src, pm.PatchMatchOptions(backend="triton"), keys)
full_diff = (full_t - full_k).abs().mean().item() * 255
print(f"vote max diff {vote_diff:.2e}; one iteration: NNF agree {agree:.5f}, cost max diff {cdiff:.2e}; "
      f"full remap mean |diff| {full_diff:.3f} (0-255)")
sys.exit(0 if vote_diff < 1e-5 and agree > 0.999 and full_diff < 1.0 else 1)
