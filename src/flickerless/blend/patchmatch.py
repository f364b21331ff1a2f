"""PatchMatch nearest-neighbour fields between batches of frame pairs, in pure torch.

Same code on CPU and CUDA. The algorithm is Barnes et al. 2009, made parallel over pixels and over a
batch of independent (target, source) pairs, and extended the way patch-based video stylisation uses
it: a patch's error is

    guide_weight * SSD(target guide patch, source guide patch)
                 + SSD(current estimate of the target's style patch, source style patch)

so that the field both follows the guide video and keeps the remapped style coherent.

Shapes (every function here is batched; B pairs, C channels):

- guides:  ``(B, C, H, W)`` float in [0, 1]; target and source may differ in size.
- styles:  ``(B, C', Hs, Ws)`` float in [0, 1].
- NNF:     ``(B, 2, H, W)`` int64, for every target pixel the ``(y, x)`` of the centre of its best
  source patch, always inside the source image.

The passes (:func:`initialize`, :func:`patch_cost`, :func:`propagate`, :func:`random_search`,
:func:`vote`) are separate functions so each can be tested alone; :func:`patchmatch` runs them over a
coarse-to-fine pyramid.

Patch SSD is evaluated on a grid of ``samples x samples`` offsets spread over the patch (exact when
``patch_size <= samples``; the default 3 samples a 13-pixel patch at offsets -6, 0, 6 and a 5-pixel
one at -2, 0, 2). That keeps the cost of a candidate independent of the patch size and was measured
2.7x faster than 5x5 for 0.1-0.2 dB less PSNR after deflicker (BENCHMARKS.md); ``samples=None``
evaluates every pixel of the patch. The final vote of :func:`remap` always uses every pixel.

Random numbers come from a counter-based hash of (seed, pair key, pass, pixel), not from a generator,
so a pair's result does not depend on which other pairs share its batch, nor on the device.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass, fields
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError, unknown_options

__all__ = [
    "PatchMatchOptions",
    "patch_offsets",
    "initialize",
    "describe",
    "patch_cost",
    "propagate",
    "random_search",
    "vote",
    "upsample_nnf",
    "pyramid_sizes",
    "resize_levels",
    "patchmatch",
    "remap",
]


# the largest patch: the vote costs its area per pixel (1001 took minutes on 12 frames of 64x48). Kept
# in step with the templates' check (pipelines/templates.py), which does not import torch.
MAX_PATCH_SIZE = 63


@dataclass(frozen=True)
class PatchMatchOptions:
    """Settings of :func:`patchmatch`.

    patch_sizes: odd patch sizes used over the iterations of each pyramid level, largest first
        (iteration ``t`` of ``iterations`` uses ``patch_sizes[t * len(patch_sizes) // iterations]``).
        The last one is also the patch size of the final vote (remap).
    iterations: propagation + random-search rounds per pyramid level.
    guide_weight: weight of the guide SSD against the style-coherence SSD.
    samples: patch offsets per axis at which SSD is evaluated (``None``: every pixel of the patch).
    min_size: the coarsest pyramid level's shorter side is at least this many pixels.
    levels: number of pyramid levels (``None``: as many as ``min_size`` allows).
    search_radius: random-search radius (pixels) on the finer levels; the coarsest level searches
        the whole source image. Radii halve down to 1 within a round.
    init: ``"identity"`` (every pixel starts at the same place in the source) or ``"random"``.
    seed: seed of the counter-based random numbers.
    backend: ``"torch"`` (any device), ``"triton"`` (fused kernels, CUDA), ``"numba"`` (fused
        kernels, CPU) or ``"auto"`` (Triton on CUDA, numba on the CPU, when importable; else torch).
        All run the same passes with the same random numbers.
    refine_iterations: iterations run on a warm start (:func:`patchmatch` given ``init_nnf``, a
        field found before for the same pair): full resolution only, the smallest patch sizes. 1 by
        default: a second round was measured to change nothing that matters (within 0.03 dB and the
        same temporal error on carphone and bikes, a lower Pixel-MSE in the engine demo) at ~1.8x the
        time (BENCHMARKS.md, "Deflicker passes that share their PatchMatch fields").
    """

    patch_sizes: tuple[int, ...] = (13, 11, 9, 7, 5)
    iterations: int = 5
    guide_weight: float = 10.0
    samples: int | None = 3
    min_size: int = 16
    levels: int | None = None
    search_radius: int = 16
    init: str = "identity"
    seed: int = 0
    backend: str = "auto"
    refine_iterations: int = 1

    def __post_init__(self) -> None:
        given = self.patch_sizes
        given = (given,) if _is_int(given) else given.tolist() if isinstance(given, np.ndarray) else given
        if isinstance(given, (str, bytes)) or not isinstance(given, Sequence) or not all(_is_int(p) for p in given):
            raise InputError(f"patch_sizes must be odd integers, largest first, e.g. (13, 11, 9, 7, 5), got "
                             f"{self.patch_sizes!r}")
        ps = tuple(int(p) for p in given)
        object.__setattr__(self, "patch_sizes", ps)
        for name in ("iterations", "refine_iterations", "min_size", "search_radius", "samples", "levels"):
            v = getattr(self, name)
            if not (_is_int(v) or (v is None and name in ("samples", "levels"))):
                raise InputError(f"{name} must be an integer, got {v!r}")
        if not isinstance(self.guide_weight, (int, float, np.integer, np.floating)) or isinstance(self.guide_weight, bool):
            raise InputError(f"guide_weight must be a number, got {self.guide_weight!r}")
        if not ps or any(p < 1 or p % 2 == 0 for p in ps):
            raise InputError(f"patch_sizes must be odd positive integers, got {self.patch_sizes!r}")
        if list(ps) != sorted(ps, reverse=True):  # smallest first, the largest (blurriest) patch cast the final vote
            raise InputError(f"patch_sizes go largest first (the last is the one that votes), e.g. "
                             f"{tuple(sorted(ps, reverse=True))}, got {ps}")
        if max(ps) > MAX_PATCH_SIZE:
            raise InputError(f"patch_sizes must be at most {MAX_PATCH_SIZE}, got {max(ps)}: the vote costs the "
                             "patch's area per pixel (the paper uses 5 to 13)")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or not (
                -(2**63) <= self.seed < 2**63):
            raise InputError(f"seed must be an integer from -2**63 to 2**63 - 1, got {self.seed!r}")
        if self.iterations < 1:
            raise InputError(f"iterations must be >= 1, got {self.iterations}")
        if self.refine_iterations < 1:
            raise InputError(f"refine_iterations must be >= 1, got {self.refine_iterations}")
        if not (0 <= self.guide_weight < math.inf):  # NaN passed a "< 0" test and then matched on the style alone
            raise InputError(f"guide_weight must be a finite number >= 0, got {self.guide_weight}")
        if self.samples is not None and self.samples < 1:
            raise InputError(f"samples must be >= 1 or None, got {self.samples}")
        if self.min_size < 1:
            raise InputError(f"min_size must be >= 1, got {self.min_size}")
        if self.levels is not None and self.levels < 1:
            raise InputError(f"levels must be >= 1 or None, got {self.levels}")
        if self.search_radius < 0:
            raise InputError(f"search_radius must be >= 0, got {self.search_radius}")
        if self.backend not in ("auto", "torch", "triton", "numba"):
            raise InputError(f"backend must be 'auto', 'torch', 'triton' or 'numba', got {self.backend!r}")
        if self.init not in ("identity", "random"):
            raise InputError(f"init must be 'identity' or 'random', got {self.init!r}")

    @classmethod
    def from_kwargs(cls, quality: str | None = None, _also: Iterable[str] = (), **kwargs) -> "PatchMatchOptions":
        """Build from keyword arguments, naming the valid keys when one is unknown
        (:class:`~flickerless.errors.UnknownOptionError`, also a TypeError; ``_also``: the caller's own
        parameters, listed with them). ``quality``: one of :data:`QUALITY` (search effort for speed);
        options given beside it win."""
        unknown_options(kwargs, {f.name for f in fields(cls)} | {"quality"} | set(_also),
                        "argument" if _also else "PatchMatch option")
        if quality is not None:
            if quality not in QUALITY:
                raise InputError(f"quality must be one of {', '.join(QUALITY)}, got {quality!r}")
            kwargs = {**QUALITY[quality], **kwargs}
        return cls(**kwargs)

    def patch_size_at(self, iteration: int) -> int:
        return self.patch_sizes[iteration * len(self.patch_sizes) // self.iterations]


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


# Search effort against speed, measured in the benchmark (carphone and bikes at 320, 48 frames,
# table, window 15, 2 CPU cores; BENCHMARKS.md "Quality presets"): against "full", "balanced" costs
# 0.05-0.1 dB at ~1.6x the speed, "fast" 0.2-0.3 dB at ~2.4x, "draft" 0.85-1.1 dB at ~4.5x.
QUALITY: dict[str, dict] = {
    "draft": {"iterations": 1, "patch_sizes": (5,)},
    "fast": {"iterations": 2, "patch_sizes": (7, 5)},
    "balanced": {"iterations": 3, "patch_sizes": (9, 7, 5)},
    "full": {"iterations": 5, "patch_sizes": (13, 11, 9, 7, 5)},
}


# --------------------------------------------------------------------------------------------
# small helpers


def patch_offsets(patch_size: int, samples: int | None = None) -> list[tuple[int, int]]:
    """Offsets ``(dy, dx)`` at which a patch of ``patch_size`` is sampled, symmetric about 0."""
    r = patch_size // 2
    n = patch_size if samples is None else max(1, min(patch_size, samples))
    if n == 1:
        ticks = [0]
    else:
        ticks = sorted({int(round(-r + 2 * r * i / (n - 1))) for i in range(n)})
    return [(dy, dx) for dy in ticks for dx in ticks]


# the counter-based hash; the fused kernels (kernels.py, cpu_kernels.py) use the same constants
_MASK = 0x7FFFFFFF
_MUL = 0x45D9F3B
_GOLD = 0x9E3779B


def _mix(z: torch.Tensor) -> torch.Tensor:
    """Integer hash on int64 tensors holding 31-bit values; no overflow, same on every device."""
    z = z & _MASK
    z = ((z ^ (z >> 16)) * _MUL) & _MASK
    z = ((z ^ (z >> 16)) * _MUL) & _MASK
    return z ^ (z >> 16)


def _hash_ints(keys: torch.Tensor, salt: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Per-pair pseudo-random 31-bit integers of ``(B, *shape)``, a pure function of its inputs."""
    n = math.prod(shape)
    counter = torch.arange(n, device=keys.device, dtype=torch.int64)
    base = _mix(_mix(keys.to(torch.int64)) + (salt * _GOLD) & _MASK)
    return _mix(base[:, None] + counter[None, :]).reshape(keys.shape[0], *shape)


def _grid(h: int, w: int, device) -> torch.Tensor:
    ys = torch.arange(h, device=device, dtype=torch.int64)
    xs = torch.arange(w, device=device, dtype=torch.int64)
    return torch.stack(torch.meshgrid(ys, xs, indexing="ij"))  # (2, H, W)


def _clamp_nnf(nnf: torch.Tensor, hs: int, ws: int) -> torch.Tensor:
    return torch.stack((nnf[:, 0].clamp(0, hs - 1), nnf[:, 1].clamp(0, ws - 1)), 1)


def _shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``out[..., y, x] = x[..., clamp(y + dy), clamp(x + dx)]`` for any dtype."""
    h, w = x.shape[-2:]
    if dy:
        ys = (torch.arange(h, device=x.device) + dy).clamp(0, h - 1)
        x = x.index_select(-2, ys)
    if dx:
        xs = (torch.arange(w, device=x.device) + dx).clamp(0, w - 1)
        x = x.index_select(-1, xs)
    return x


# --------------------------------------------------------------------------------------------
# the passes


def initialize(
    batch: int,
    size: tuple[int, int],
    source_size: tuple[int, int],
    mode: str = "identity",
    keys: torch.Tensor | None = None,
    device=None,
) -> torch.Tensor:
    """A starting NNF ``(B, 2, H, W)`` int64.

    identity: each target pixel points at the same relative place in the source (the same pixel
    when sizes match). random: uniform over the source, from the counter-based hash of ``keys``
    (one int64 per pair; :func:`patchmatch` folds the seed into them).
    """
    h, w = size
    hs, ws = source_size
    if mode == "identity":
        g = _grid(h, w, device)
        nnf = torch.stack(((g[0] * hs) // h, (g[1] * ws) // w))
        return nnf.unsqueeze(0).expand(batch, -1, -1, -1).contiguous()
    if mode == "random":
        keys = _default_keys(batch, device) if keys is None else keys
        r = _hash_ints(keys, 1, (2, h, w))
        return torch.stack((r[:, 0] % hs, r[:, 1] % ws), 1)
    raise InputError(f"init must be 'identity' or 'random', got {mode!r}")


def _default_keys(batch: int, device) -> torch.Tensor:
    return torch.arange(batch, device=device, dtype=torch.int64)


def _as_options(options) -> "PatchMatchOptions":
    """Options as :func:`run_deflicker` takes them: a :class:`PatchMatchOptions`, a dict of its fields or
    None (a dict failed on ``.seed`` deep inside)."""
    if options is None:
        return PatchMatchOptions()
    if isinstance(options, dict):
        return PatchMatchOptions.from_kwargs(**options)
    if not isinstance(options, PatchMatchOptions):
        raise InputError(f"options must be a PatchMatchOptions or a dict of its fields, got {type(options).__name__}")
    return options


def _pair_keys(keys, batch: int, device) -> torch.Tensor:
    """One integer key per pair, as a tensor or a list (a list failed on ``.to``; keys of another count
    were taken, broadcast or not, without a word)."""
    if keys is None:
        return _default_keys(batch, device)
    t = keys if isinstance(keys, torch.Tensor) else torch.as_tensor(np.asarray(keys))
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool or tuple(t.shape) != (batch,):
        raise InputError(f"keys must be one integer per pair ({batch}), got {t.dtype} of shape {tuple(t.shape)}")
    return t.to(device, torch.int64)


def describe(x: torch.Tensor, offsets: Sequence[tuple[int, int]]) -> torch.Tensor:
    """Patch descriptors ``(B, H*W, S*C)``: ``x`` sampled at every offset around every pixel.

    Samples outside the image take the nearest border pixel, so a descriptor exists for every
    pixel. Channel-last, so that looking up the descriptor of a pixel is a contiguous row read.
    """
    b, c, h, w = x.shape
    r = max(max(abs(dy), abs(dx)) for dy, dx in offsets)
    xp = F.pad(x, (r, r, r, r), mode="replicate") if r else x
    parts = [xp[:, :, r + dy : r + dy + h, r + dx : r + dx + w] for dy, dx in offsets]
    d = torch.stack(parts, 1).reshape(b, len(offsets) * c, h * w)
    return d.transpose(1, 2).contiguous()


def patch_cost(
    target_desc: torch.Tensor,
    source_desc: torch.Tensor,
    nnf: torch.Tensor,
    source_size: tuple[int, int],
    samples_per_patch: int,
) -> torch.Tensor:
    """Patch distance ``(B, H, W)`` of every target pixel to the source patch its NNF points at.

    target_desc: ``(B, H*W, D)`` and source_desc: ``(B, Hs*Ws, D)`` from :func:`describe`.
    The distance is the sum over channels, mean over patch samples, of squared differences.
    """
    b, _, h, w = nnf.shape
    hs, ws = source_size
    d = source_desc.shape[-1]
    idx = nnf[:, 0] * ws + nnf[:, 1]
    idx = (idx + torch.arange(b, device=idx.device)[:, None, None] * (hs * ws)).reshape(-1)
    got = source_desc.reshape(-1, d).index_select(0, idx).reshape(b, h * w, d)
    return (target_desc - got).square_().sum(-1).reshape(b, h, w) / samples_per_patch


def _improve(nnf, cost, cand, target_desc, source_desc, source_size, spp):
    c = patch_cost(target_desc, source_desc, cand, source_size, spp)
    better = c < cost
    return torch.where(better[:, None], cand, nnf), torch.where(better, c, cost)


_DIRECTIONS = ((0, 1), (0, -1), (1, 0), (-1, 0))


def propagate(
    nnf: torch.Tensor,
    cost: torch.Tensor,
    target_desc: torch.Tensor,
    source_desc: torch.Tensor,
    source_size: tuple[int, int],
    samples_per_patch: int,
    step: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Try, for every pixel, the match of each of its 4 neighbours at distance ``step``, shifted
    back by that distance (a coherent region carries its offset along). Keeps the better one.
    Neighbours are read from the field as passed in (parallel, Jacobi-style update)."""
    hs, ws = source_size
    start = nnf  # all candidates come from the field as it was (Jacobi), as on the GPU kernel
    for ey, ex in _DIRECTIONS:
        neighbour = _shift(start, ey * step, ex * step)
        cand = neighbour - torch.tensor((ey * step, ex * step), device=nnf.device).view(1, 2, 1, 1)
        cand = _clamp_nnf(cand, hs, ws)
        nnf, cost = _improve(nnf, cost, cand, target_desc, source_desc, source_size, samples_per_patch)
    return nnf, cost


def random_search(
    nnf: torch.Tensor,
    cost: torch.Tensor,
    target_desc: torch.Tensor,
    source_desc: torch.Tensor,
    source_size: tuple[int, int],
    samples_per_patch: int,
    radius: int,
    keys: torch.Tensor,
    salt: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Try a random candidate around the current match within ``radius``, then ``radius/2``, ...
    down to 1, keeping any improvement. Deterministic for given ``keys`` and ``salt``."""
    b, _, h, w = nnf.shape
    hs, ws = source_size
    r, i = int(radius), 0
    while r >= 1:
        rnd = _hash_ints(keys, salt * 64 + i, (2, h, w))
        cand = _clamp_nnf(nnf + (rnd % (2 * r + 1)) - r, hs, ws)
        nnf, cost = _improve(nnf, cost, cand, target_desc, source_desc, source_size, samples_per_patch)
        r //= 2
        i += 1
    return nnf, cost


def vote(source: torch.Tensor, nnf: torch.Tensor, offsets: Sequence[tuple[int, int]]) -> torch.Tensor:
    """Remap ``source`` ``(B, C, Hs, Ws)`` through ``nnf`` by patch voting: ``(B, C, H, W)``.

    Every target patch (centre p', matched to source centre q') votes ``source[q' + d]`` for the
    target pixel ``p' + d``; each pixel is the mean of the votes of the patches that cover it
    (patches centred outside the image do not vote; source samples clamp at the border).
    """
    if not source.is_floating_point():
        raise InputError(f"vote takes float images (the mean of the votes), got {source.dtype}: "
                         "pass source.float() / 255 for uint8")
    if not len(offsets):
        raise InputError("vote needs at least one patch offset (patch_offsets(patch_size))")
    b, c, hs, ws = source.shape
    _, _, h, w = nnf.shape
    dev = nnf.device
    flat = source.reshape(b, c, hs * ws)
    out = torch.zeros(b, c, h, w, device=dev, dtype=source.dtype)
    count = torch.zeros(1, 1, h, w, device=dev, dtype=source.dtype)
    ys, xs = torch.arange(h, device=dev), torch.arange(w, device=dev)
    for dy, dx in offsets:
        # the patch centred at p - d covers p
        py, px = ys - dy, xs - dx
        valid = ((py >= 0) & (py < h))[:, None] & ((px >= 0) & (px < w))[None, :]
        q = nnf.index_select(2, py.clamp(0, h - 1)).index_select(3, px.clamp(0, w - 1))
        qy = (q[:, 0] + dy).clamp(0, hs - 1)
        qx = (q[:, 1] + dx).clamp(0, ws - 1)
        idx = (qy * ws + qx).reshape(b, 1, h * w).expand(b, c, h * w)
        val = torch.gather(flat, 2, idx).reshape(b, c, h, w)
        vmask = valid.to(source.dtype)
        out += val * vmask
        count += vmask
    return out / count


def upsample_nnf(
    nnf: torch.Tensor, size: tuple[int, int], source_size: tuple[int, int], old_source_size: tuple[int, int]
) -> torch.Tensor:
    """Carry an NNF from a coarse level to a finer one: each fine pixel takes its parent's match,
    scaled to the finer source, plus its own position inside the parent."""
    _, _, h, w = nnf.shape
    H, W = size
    hs, ws = source_size
    ohs, ows = old_source_size
    dev = nnf.device
    py = torch.arange(H, device=dev)
    px = torch.arange(W, device=dev)
    pary = (py * h // H).clamp(max=h - 1)
    parx = (px * w // W).clamp(max=w - 1)
    parent = nnf.index_select(2, pary).index_select(3, parx).to(torch.float64)
    fy = (py - pary * (H / h)).to(torch.float64)[:, None]
    fx = (px - parx * (W / w)).to(torch.float64)[None, :]
    qy = torch.round(parent[:, 0] * (hs / ohs) + fy).to(torch.int64)
    qx = torch.round(parent[:, 1] * (ws / ows) + fx).to(torch.int64)
    return _clamp_nnf(torch.stack((qy, qx), 1), hs, ws)


# --------------------------------------------------------------------------------------------
# the whole algorithm


def _level_sizes(size, source_size, opts: PatchMatchOptions):
    h, w = size
    hs, ws = source_size
    shortest = min(h, w, hs, ws)
    if opts.levels is not None:
        n = opts.levels
    else:
        n = max(1, int(math.floor(math.log2(max(shortest, 1) / opts.min_size))) + 1)
    n = max(1, min(n, int(math.floor(math.log2(max(shortest, 1)))) + 1))
    out = []
    for lv in range(n - 1, -1, -1):  # coarsest first
        f = 2**lv
        out.append(((max(1, round(h / f)), max(1, round(w / f))), (max(1, round(hs / f)), max(1, round(ws / f)))))
    return out


def pyramid_sizes(size: tuple[int, int], options: PatchMatchOptions) -> list[tuple[int, int]]:
    """The sizes of the coarser pyramid levels (coarsest first, all but the finest) that
    :func:`patchmatch` resizes frames of ``size`` to, when target and source are of one size."""
    return [s for s, _ in _level_sizes(tuple(size), tuple(size), options)][:-1]


def resize_levels(frames: torch.Tensor, sizes: Sequence[tuple[int, int]]) -> list[torch.Tensor]:
    """``frames`` ``(B, C, H, W)`` at each of ``sizes``, as :func:`patchmatch` resizes them."""
    return [_resize(frames.to(torch.float32), s) for s in sizes]


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    h, w = x.shape[-2:]
    if (h, w) == tuple(size):
        return x
    if h % size[0] == 0 and w % size[1] == 0:
        # a whole factor (1080p's levels down to 135x240): the mean of each block, as "area" gives it
        # (the same values, tested), without adaptive pooling's cost, 9% of a 1080p blend's GPU time
        return F.avg_pool2d(x, (h // size[0], w // size[1]))
    return F.interpolate(x, size=size, mode="area")


def _kernels(backend: str, device: torch.device):
    """The fused-kernel module for this backend and device, or None for the torch passes.

    auto: Triton on CUDA, numba on the CPU, when importable; torch otherwise (and on other devices).
    """
    if backend == "torch":
        return None
    want = backend if backend != "auto" else {"cuda": "triton", "cpu": "numba"}.get(device.type)
    if want is None:
        return None
    needs = {"triton": "cuda", "numba": "cpu"}[want]
    if device.type != needs:
        raise InputError(f"backend={want!r} runs on {needs} tensors, these are on {device}; use backend='auto'")
    try:
        if want == "triton":
            from . import kernels as mod
        else:
            from . import cpu_kernels as mod
    except ImportError:
        if backend != "auto":
            raise
        return None
    if mod.available():
        return mod
    if backend != "auto":
        raise InputError(f"backend={want!r} is not available here (is {want} installed?)")
    if want == "numba":
        _say_without_numba()
    return None


@functools.cache
def _say_without_numba() -> None:
    """numba is a requirement, so its absence is an install made without it (``--no-deps``): the CPU runs
    the torch passes, 2.5-3x slower, which nothing said. Once a process."""
    logging.getLogger("flickerless").info('numba is not installed: PatchMatch runs on the CPU 2.5-3x slower '
                                          'without its kernels; pip install "numba>=0.59" brings them')


def _check_pairs(target_guide, source_guide, source_style) -> None:
    """The shapes :func:`patchmatch` takes, refused in one line otherwise: the fused CPU kernels index
    by them unchecked, and batches that disagree crashed the interpreter (a heap corruption)."""
    named = (("target_guide", target_guide), ("source_guide", source_guide), ("source_style", source_style))
    for name, t in named:
        if not isinstance(t, torch.Tensor) or t.ndim != 4 or not t.is_floating_point():
            what = f"{t.dtype} tensor of shape {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__
            raise InputError(f"{name} must be a (B, C, H, W) float tensor in [0, 1], got a {what}")
    tg, sg, ss = target_guide, source_guide, source_style
    if not tg.shape[0] == sg.shape[0] == ss.shape[0]:
        raise InputError(f"target_guide, source_guide and source_style hold {tg.shape[0]}, {sg.shape[0]} and "
                         f"{ss.shape[0]} images: one of each per pair")
    if tg.shape[1] != sg.shape[1]:
        raise InputError(f"target_guide has {tg.shape[1]} channels, source_guide {sg.shape[1]}: the guides are "
                         "compared channel for channel")
    if ss.shape[-2:] != sg.shape[-2:]:
        raise InputError(f"source_style is {ss.shape[-1]}x{ss.shape[-2]}, source_guide {sg.shape[-1]}x{sg.shape[-2]}: "
                         "a source's style and guide are the same frame's")
    if len({tg.device, sg.device, ss.device}) > 1:
        raise InputError(f"the images are on {tg.device}, {sg.device} and {ss.device}: put them on one device")


def patchmatch(
    target_guide: torch.Tensor,
    source_guide: torch.Tensor,
    source_style: torch.Tensor,
    options: PatchMatchOptions | None = None,
    keys: torch.Tensor | None = None,
    return_cost: bool = False,
    init_nnf: torch.Tensor | None = None,
    guide_levels: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
):
    """NNF from each target pixel to a source patch, coarse to fine.

    target_guide: ``(B, C, H, W)``, source_guide: ``(B, C, Hs, Ws)``, source_style:
    ``(B, C', Hs, Ws)``, all float in [0, 1] on one device. keys: ``(B,)`` int64 identifying each
    pair for the random numbers (default ``0..B-1``). Returns ``nnf (B, 2, H, W)`` int64, and the
    final patch cost ``(B, H, W)`` if ``return_cost``.

    init_nnf: ``(B, 2, H, W)``, a field found before for the same pairs (a warm start: the engine's
    next deflicker pass over the same guide). The pyramid is skipped; ``refine_iterations`` rounds
    of propagation and search run at full resolution with the last patch sizes, against the new
    style.

    guide_levels: the guides already at the sizes of the pyramid's coarser levels (coarsest first, every
    level but the finest; :func:`pyramid_sizes`): a guide frame met in many pairs is resized once, not
    once per pair (the resizing was 25-40% of the GPU time). The same values as resizing here.
    """
    _check_pairs(target_guide, source_guide, source_style)
    opts = _as_options(options)
    b = target_guide.shape[0]
    dev = target_guide.device
    keys = _pair_keys(keys, b, dev)
    keys = keys * 1_000_003 + opts.seed
    sw = math.sqrt(opts.guide_weight)
    dtype = torch.float32
    tg0, sg0, ss0 = (t.to(dtype) for t in (target_guide, source_guide, source_style))
    kernels = _kernels(opts.backend, dev)

    def level(tg, sg, ss):
        """A level's images as ``iterate`` takes them: the fused kernels lay them out once per level."""
        return kernels.Level(tg, sg, ss) if kernels is not None else (tg, sg, ss)

    def iterate(imgs, nnf, patch_size, radius, salt):
        offs = patch_offsets(patch_size, opts.samples)
        if kernels is not None:
            return imgs.iteration(nnf, keys, offs, opts.guide_weight, radius, salt)
        tg, sg, ss = imgs
        spp = len(offs)
        estimate = vote(ss, nnf, offs)
        tdesc = describe(torch.cat((tg * sw, estimate), 1), offs)
        sdesc = describe(torch.cat((sg * sw, ss), 1), offs)
        src_size = tuple(sg.shape[-2:])
        cost = patch_cost(tdesc, sdesc, nnf, src_size, spp)
        nnf, cost = propagate(nnf, cost, tdesc, sdesc, src_size, spp)
        return random_search(nnf, cost, tdesc, sdesc, src_size, spp, radius, keys, salt=salt)

    cost = None
    if init_nnf is not None:
        if tuple(init_nnf.shape) != (b, 2, *tg0.shape[-2:]):
            raise InputError(f"init_nnf must be {(b, 2, *tg0.shape[-2:])}, got {tuple(init_nnf.shape)}")
        nnf = _clamp_nnf(init_nnf.to(dev, torch.int64), *sg0.shape[-2:])
        n = opts.refine_iterations
        sizes = opts.patch_sizes[-n:] if n <= len(opts.patch_sizes) else opts.patch_sizes
        imgs = level(tg0, sg0, ss0)
        for it in range(n):
            size = sizes[it * len(sizes) // n]
            nnf, cost = iterate(imgs, nnf, size, opts.search_radius, salt=2 * (10_007 + it) + 1)
        return (nnf, cost) if return_cost else nnf

    nnf = None
    prev_src = None
    levels = _level_sizes(tuple(tg0.shape[-2:]), tuple(sg0.shape[-2:]), opts)
    if guide_levels is not None and len(guide_levels) != len(levels) - 1:
        raise InputError(f"guide_levels: {len(levels) - 1} coarser levels expected, got {len(guide_levels)}")
    for li, (size, src_size) in enumerate(levels):
        if guide_levels is not None and li < len(levels) - 1:
            ltg, lsg = (t.to(dtype) for t in guide_levels[li])
        else:
            ltg, lsg = _resize(tg0, size), _resize(sg0, src_size)
        imgs = level(ltg, lsg, _resize(ss0, src_size))
        if nnf is None:
            nnf = initialize(b, size, src_size, opts.init, keys, dev)
        else:
            nnf = upsample_nnf(nnf, size, src_size, prev_src)
        prev_src = src_size
        radius = max(src_size) if li == 0 else opts.search_radius
        for it in range(opts.iterations):
            nnf, cost = iterate(imgs, nnf, opts.patch_size_at(it), radius, salt=(li * 97 + it) * 2 + 1)
    return (nnf, cost) if return_cost else nnf


def remap(
    source_style: torch.Tensor,
    target_guide: torch.Tensor,
    source_guide: torch.Tensor,
    options: PatchMatchOptions | None = None,
    keys: torch.Tensor | None = None,
    init_nnf: torch.Tensor | None = None,
    return_nnf: bool = False,
    guide_levels: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
):
    """Remap ``source_style`` onto the target frames: PatchMatch between the guides, then a vote
    by every pixel of the last patch size. Returns ``(B, C', H, W)`` in the dtype of ``source_style``
    (and the NNF if ``return_nnf``). ``init_nnf``: a warm start, ``guide_levels``: the guides' coarser
    pyramid levels, made before; see :func:`patchmatch`. ``options``: a :class:`PatchMatchOptions` or a
    dict of its fields."""
    opts = _as_options(options)
    nnf = patchmatch(target_guide, source_guide, source_style, opts, keys, init_nnf=init_nnf,
                     guide_levels=guide_levels)
    out = final_vote(source_style, nnf, opts)
    return (out, nnf) if return_nnf else out


def final_vote(source: torch.Tensor, nnf: torch.Tensor, options: PatchMatchOptions) -> torch.Tensor:
    """Remap ``source`` through a finished field: every pixel of the last patch size votes, on the
    options' backend. In the dtype of ``source``."""
    offs = patch_offsets(options.patch_sizes[-1])
    kernels = _kernels(options.backend, nnf.device)
    vote_fn = kernels.vote if kernels is not None else vote
    return vote_fn(source.to(torch.float32), nnf, offs).to(source.dtype)
