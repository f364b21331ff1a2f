import numpy as np
import pytest
import torch

import flickerless.blend.patchmatch as pm
from flickerless.errors import InputError


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).float()[None] / 255


def _psnr(a, b):
    return float(10 * torch.log10(1 / ((a - b) ** 2).mean()))


@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_recovers_known_translation(carphone, backend):
    src = _t(carphone[0])
    dy, dx = 5, -9
    tgt = torch.roll(src, shifts=(dy, dx), dims=(2, 3))  # tgt[p] = src[p - d]
    nnf = pm.patchmatch(tgt, src, src, pm.PatchMatchOptions(backend=backend))
    h, w = src.shape[-2:]
    g = pm._grid(h, w, "cpu")
    expected = g - torch.tensor([dy, dx]).view(2, 1, 1)
    inner = (slice(16, h - 16), slice(16, w - 16))  # roll wraps at the border
    exact = (nnf[0] == expected).all(0)[inner].float().mean().item()
    assert exact > 0.9, exact
    out = pm.remap(src, tgt, src)
    assert _psnr(out[..., inner[0], inner[1]], tgt[..., inner[0], inner[1]]) > 40


def test_recovers_known_crop(carphone):
    src = _t(carphone[3])
    y0, x0 = 20, 30
    tgt = src[..., y0 : y0 + 96, x0 : x0 + 120].contiguous()
    nnf = pm.patchmatch(tgt, src, src)
    assert nnf.shape == (1, 2, 96, 120)
    g = pm._grid(96, 120, "cpu")
    expected = g + torch.tensor([y0, x0]).view(2, 1, 1)
    exact = (nnf[0] == expected).all(0).float().mean().item()
    assert exact > 0.9, exact
    assert _psnr(pm.remap(src, tgt, src), tgt) > 40


def test_remap_through_identity_returns_input(carphone):
    x = _t(carphone[0])
    nnf = pm.initialize(1, x.shape[-2:], x.shape[-2:], "identity")
    for size in (1, 5, 13):
        torch.testing.assert_close(pm.vote(x, nnf, pm.patch_offsets(size)), x, atol=1e-5, rtol=0)


def test_vote_averages_overlapping_patches():
    # a source whose every pixel is distinct; an NNF that points every target pixel at (0, 0)
    src = torch.arange(25, dtype=torch.float32).view(1, 1, 5, 5)
    nnf = torch.zeros(1, 2, 3, 3, dtype=torch.int64)
    out = pm.vote(src, nnf, pm.patch_offsets(3))
    # target pixel (1, 1) is covered by 9 patches; the one centred at p' votes src[clamp(0 + d)]
    votes = [src[0, 0, max(dy, 0), max(dx, 0)] for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    assert out[0, 0, 1, 1].item() == pytest.approx(float(sum(votes) / 9))


def test_patch_offsets():
    assert pm.patch_offsets(5) == [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)]
    assert sorted({d for d, _ in pm.patch_offsets(13, 3)}) == [-6, 0, 6]
    assert len(pm.patch_offsets(1)) == 1


def test_propagate_and_search_never_worsen_cost(carphone):
    a, b = _t(carphone[0]), _t(carphone[2])
    offs = pm.patch_offsets(5)
    td, sd = pm.describe(a, offs), pm.describe(b, offs)
    keys = torch.tensor([7])
    nnf = pm.initialize(1, a.shape[-2:], b.shape[-2:], "random", keys)
    cost = pm.patch_cost(td, sd, nnf, b.shape[-2:], len(offs))
    n2, c2 = pm.propagate(nnf, cost, td, sd, b.shape[-2:], len(offs))
    assert (c2 <= cost).all() and c2.mean() < cost.mean()
    torch.testing.assert_close(c2, pm.patch_cost(td, sd, n2, b.shape[-2:], len(offs)))
    n3, c3 = pm.random_search(n2, c2, td, sd, b.shape[-2:], len(offs), 32, keys, salt=1)
    assert (c3 <= c2).all() and c3.mean() < c2.mean()
    assert n3[:, 0].max() < b.shape[-2] and n3.min() >= 0


@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_seeded_deterministic_and_batch_independent(carphone, backend):
    f = torch.stack([_t(x)[0] for x in carphone[:4]])
    opts = pm.PatchMatchOptions(patch_sizes=(7, 5), iterations=2, init="random", backend=backend)
    keys = torch.tensor([11, 12, 13])
    batch = pm.patchmatch(f[1:4], f[0:3], f[0:3], opts, keys)
    again = pm.patchmatch(f[1:4], f[0:3], f[0:3], opts, keys)
    assert torch.equal(batch, again)
    alone = pm.patchmatch(f[2:3], f[1:2], f[1:2], opts, keys[1:2])
    assert torch.equal(batch[1:2], alone)
    other_seed = pm.patchmatch(f[1:4], f[0:3], f[0:3], pm.PatchMatchOptions(patch_sizes=(7, 5), iterations=2, init="random", seed=1, backend=backend), keys)
    assert not torch.equal(batch, other_seed)


def test_options_validate():
    with pytest.raises(ValueError, match="patch_sizes"):
        pm.PatchMatchOptions(patch_sizes=(4,))
    with pytest.raises(TypeError, match="unknown PatchMatch option 'patch_size' .*valid: .*patch_sizes"):
        pm.PatchMatchOptions.from_kwargs(patch_size=5)
    with pytest.raises(ValueError, match="backend"):
        pm.PatchMatchOptions(backend="cupy")
    # a patch larger than any frame voted for minutes (its area per pixel); a seed past int64 failed deep inside
    with pytest.raises(ValueError, match="at most 63"):
        pm.PatchMatchOptions(patch_sizes=(1001, 5))
    with pytest.raises(ValueError, match="seed"):
        pm.PatchMatchOptions(seed=2**64)
    with pytest.raises(ValueError, match="seed"):
        pm.PatchMatchOptions(seed=1.5)
    assert pm.PatchMatchOptions(patch_sizes=(pm.MAX_PATCH_SIZE,), seed=-7).seed == -7
    # numpy's integers were refused as not "odd integers"; sizes smallest first were taken, their largest voting
    assert pm.PatchMatchOptions(patch_sizes=np.array([7, 5])).patch_sizes == (7, 5)
    with pytest.raises(InputError, match=r"patch_sizes go largest first .*e.g. \(13, 5\), got \(5, 13\)"):
        pm.PatchMatchOptions(patch_sizes=(5, 13))
    for bad in (float("nan"), float("inf"), -1.0):  # NaN and inf matched on the style alone, as 0 does
        with pytest.raises(ValueError, match="guide_weight must be a finite number >= 0"):
            pm.PatchMatchOptions(guide_weight=bad)


def test_remap_takes_options_and_keys_as_run_deflicker_does(carphone):
    """options as a dict (run_deflicker takes one) failed on .seed, keys as a list on .to, and keys of
    another count than the pairs were taken without a word."""
    t = torch.from_numpy(carphone[:2, :32, :32]).permute(0, 3, 1, 2).float() / 255
    a, b = t[:1], t[1:]
    want = pm.remap(b, a, b, pm.PatchMatchOptions(iterations=2, seed=3), keys=torch.tensor([5]))
    assert torch.equal(pm.remap(b, a, b, {"iterations": 2, "seed": 3}, keys=[5]), want)
    for keys in (torch.tensor([1, 2, 3]), [1.5], [[5]]):
        with pytest.raises(InputError, match=r"keys must be one integer per pair \(1\)"):
            pm.remap(b, a, b, keys=keys)
    with pytest.raises(InputError, match="options must be a PatchMatchOptions or a dict of its fields"):
        pm.remap(b, a, b, options=[2])
    with pytest.raises(TypeError, match="did you mean 'iterations'"):
        pm.remap(b, a, b, options={"iteration": 2})


def test_templates_check_patch_sizes_against_the_same_limit():
    from flickerless.pipelines import templates

    assert templates._MAX_PATCH == pm.MAX_PATCH_SIZE


def test_quality_presets_set_the_search_effort_and_yield_to_explicit_options(carphone):
    full = pm.PatchMatchOptions.from_kwargs(quality="full")
    assert full == pm.PatchMatchOptions()
    draft = pm.PatchMatchOptions.from_kwargs(quality="draft")
    assert (draft.iterations, draft.patch_sizes) == (1, (5,))
    mixed = pm.PatchMatchOptions.from_kwargs(quality="fast", iterations=4)
    assert (mixed.iterations, mixed.patch_sizes) == (4, (7, 5))
    with pytest.raises(ValueError, match="draft, fast, balanced, full"):
        pm.PatchMatchOptions.from_kwargs(quality="best")
    # less search: a worse match of a real shifted frame, not a different algorithm
    g = torch.from_numpy(carphone[:2]).permute(0, 3, 1, 2).float() / 255
    costs = []
    for q in ("draft", "full"):
        out = pm.remap(g[1:], g[:1], g[1:], pm.PatchMatchOptions.from_kwargs(quality=q, backend="torch"))
        costs.append(float((out - g[:1]).abs().mean()))
    assert costs[1] < costs[0]


@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_warm_start_refines_a_nearby_field(carphone, backend):
    """A warm start (the engine's later deflicker passes) skips the pyramid: from a field that is
    wrong at 30% of the pixels, scattered, refine_iterations rounds at full resolution repair it."""
    src = _t(carphone[0])
    dy, dx = 5, -9
    tgt = torch.roll(src, shifts=(dy, dx), dims=(2, 3))
    h, w = src.shape[-2:]
    expected = pm._grid(h, w, "cpu") - torch.tensor([dy, dx]).view(2, 1, 1)
    inner = (slice(16, h - 16), slice(16, w - 16))
    g = torch.Generator().manual_seed(0)
    wrong = torch.rand(h, w, generator=g) < 0.3
    rand = torch.stack((torch.randint(0, h, (h, w), generator=g), torch.randint(0, w, (h, w), generator=g)))
    off = torch.where(wrong, rand, expected)[None]
    opts = pm.PatchMatchOptions(backend=backend, refine_iterations=2)

    def exact(nnf):
        return (nnf[0] == expected).all(0)[inner].float().mean().item()

    assert exact(off) < 0.75
    nnf, cost = pm.patchmatch(tgt, src, src, opts, init_nnf=off, return_cost=True)
    assert exact(nnf) > 0.9, exact(nnf)
    # from the right field it stays right, and remap hands the field back
    out, again = pm.remap(src, tgt, src, opts, init_nnf=expected[None], return_nnf=True)
    assert exact(again) > 0.99 and _psnr(out[..., inner[0], inner[1]], tgt[..., inner[0], inner[1]]) > 40
    with pytest.raises(ValueError, match="init_nnf"):
        pm.patchmatch(tgt, src, src, opts, init_nnf=off[..., :-1])
    with pytest.raises(ValueError, match="refine_iterations"):
        pm.PatchMatchOptions(refine_iterations=0)



@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_guide_levels_made_before_give_the_same_field(carphone, backend):
    """The guides' coarser pyramid levels, resized once per frame by the caller (the deflicker's
    Remapper), give exactly the field patchmatch gets resizing them itself; a wrong count is refused."""
    frames = torch.from_numpy(carphone[:4]).permute(0, 3, 1, 2).float() / 255
    tg, sg, ss = frames[[1, 2]], frames[[0, 3]], frames[[0, 3]].flip(1)
    opts = pm.PatchMatchOptions(backend=backend, iterations=2, patch_sizes=(7, 5))
    sizes = pm.pyramid_sizes(tuple(tg.shape[-2:]), opts)
    assert len(sizes) >= 2 and sizes[0][0] < sizes[-1][0] < tg.shape[-2]
    levels = list(zip(pm.resize_levels(tg, sizes), pm.resize_levels(sg, sizes)))
    keys = torch.tensor([5, 9])
    assert torch.equal(pm.patchmatch(tg, sg, ss, opts, keys), pm.patchmatch(tg, sg, ss, opts, keys, guide_levels=levels))
    # and they are the ones used: other levels lead the coarse search elsewhere
    shifted = [(t.roll(3, -1), s) for t, s in levels]
    assert not torch.equal(pm.patchmatch(tg, sg, ss, opts, keys), pm.patchmatch(tg, sg, ss, opts, keys,
                                                                                guide_levels=shifted))
    with pytest.raises(ValueError, match="coarser levels expected"):
        pm.patchmatch(tg, sg, ss, opts, keys, guide_levels=levels[1:])


def test_the_deflicker_resizes_each_guide_frame_once(carphone, monkeypatch):
    """A guide frame is met in many pairs (table mode: each frame in a dozen remaps or more): its pyramid
    levels are made once, not once a pair (the resizing was 25-40% of the GPU time at 1080p and 4K)."""
    import sys

    from flickerless import deflicker

    mod = sys.modules["flickerless.blend.deflicker"]
    resized = []
    real = mod.resize_levels
    monkeypatch.setattr(mod, "resize_levels", lambda frames, sizes: resized.append(len(frames)) or real(frames, sizes))
    clip = np.ascontiguousarray(carphone[:12, :64, :80])
    out = deflicker(clip, clip[::-1].copy(), device="cpu", patch_sizes=(5,), iterations=1, cuts=False)
    assert out.shape == clip.shape
    assert sum(resized) == len(clip)  # every frame once, though the run makes many more remaps


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU"))])
def test_pyramid_levels_by_whole_factors_are_the_area_resize_exactly(device):
    """The levels whose size divides the frame's are made by block means (pooling), the rest by area
    interpolation: the values are area interpolation's, bit for bit, so the fields are as before."""
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.rand(3, 7, 1080, 1920, generator=g).to(device)
    opts = pm.PatchMatchOptions()
    sizes = pm.pyramid_sizes((1080, 1920), opts)
    pooled = [s for s in sizes if 1080 % s[0] == 0 and 1920 % s[1] == 0]
    assert len(pooled) >= 2 and len(pooled) < len(sizes)  # both ways are met at 1080p
    for s, got in zip(sizes, pm.resize_levels(x, sizes)):
        assert torch.equal(got, torch.nn.functional.interpolate(x, size=s, mode="area")), s
    odd = torch.rand(2, 3, 90, 135, generator=g).to(device)  # and a size whose width 67 does not divide
    assert torch.equal(pm._resize(odd, (45, 67)), torch.nn.functional.interpolate(odd, size=(45, 67), mode="area"))
