"""The fused Triton kernels against the torch passes. Needs CUDA and Triton: skipped elsewhere (CI
has no GPU); run with `make test` or `pytest tests/test_kernels.py` on a GPU machine."""

import pytest
import torch

import flickerless.blend.patchmatch as pm

kernels = pytest.importorskip("flickerless.blend.kernels")
pytestmark = pytest.mark.skipif(not kernels.available(), reason="needs CUDA and Triton")


@pytest.fixture(scope="module")
def frames(small_clip):
    from flickerless.synthetic import flickering_pair

    _, flick = flickering_pair(small_clip)
    to = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).cuda().float() / 255  # noqa: E731
    g, s = to(small_clip), to(flick)
    return g[1:5], g[0:4], s[0:4]


def test_vote_matches_torch(frames):
    tgt, src, sty = frames
    keys = torch.arange(4, device="cuda") * 7 + 3
    nnf = pm.initialize(4, tgt.shape[-2:], src.shape[-2:], "random", keys, "cuda")
    for size, samples in ((13, 3), (5, None)):
        offs = pm.patch_offsets(size, samples)
        torch.testing.assert_close(kernels.vote(sty, nnf, offs), pm.vote(sty, nnf, offs), atol=1e-5, rtol=0)


def test_iteration_matches_torch(frames):
    tgt, src, sty = frames
    keys = torch.arange(4, device="cuda") * 7 + 3
    nnf0 = pm.initialize(4, tgt.shape[-2:], src.shape[-2:], "random", keys, "cuda")
    offs = pm.patch_offsets(13, 3)
    est = pm.vote(sty, nnf0, offs)
    gw = 10.0
    td = pm.describe(torch.cat((tgt * gw**0.5, est), 1), offs)
    sd = pm.describe(torch.cat((src * gw**0.5, sty), 1), offs)
    cost = pm.patch_cost(td, sd, nnf0, src.shape[-2:], len(offs))
    n1, c1 = pm.propagate(nnf0, cost, td, sd, src.shape[-2:], len(offs))
    n1, c1 = pm.random_search(n1, c1, td, sd, src.shape[-2:], len(offs), 16, keys, salt=5)
    n2, c2 = kernels.iteration(tgt, est, src, sty, nnf0, keys, offs, gw, 16, 5)
    # float sums in another order can flip an exact tie: allow a handful of pixels
    assert (n1 == n2).all(1).float().mean().item() > 0.999
    assert (c1 - c2).abs().max().item() < 1e-2


def test_remap_matches_torch(frames):
    tgt, src, sty = frames
    keys = torch.arange(4, device="cuda")
    a = pm.remap(sty, tgt, src, pm.PatchMatchOptions(backend="torch"), keys)
    b = pm.remap(sty, tgt, src, pm.PatchMatchOptions(backend="triton"), keys)
    assert (a - b).abs().mean().item() * 255 < 0.5
