"""The deflicker operator: blend every frame of a stylised video with its neighbours, remapped.

``deflicker(guide, style)`` is the function F of DiffSynth eq 4 and the ``flickerless deflicker``
command. Modes (all produce one frame per input frame, same kind as the input):

- ``table`` (default): the remapping table, O(n log n) PatchMatch runs for any window, the whole
  video included (``window=None``): blend of frames ``[i - w, i + w]`` at ``i``.
- ``window``: each frame blended with every frame within ``+-w``, each remapped directly. O(n w).
- ``keyframes``: only some frames are stylised; every frame is rendered from its two bracketing
  keyframes of its own shot, remapped and blended with weights falling linearly with distance.
- ``all_pairs``: reference, one pair at a time, no batching; for tests.

In window, table and keyframes modes each remapped frame is weighted per pixel by how well the guide
survives the same remap (``error_sigma``). In window and table modes the guide is also blended
alongside the style so that the fine detail blending lost can be given back from each frame's own
style image (``detail``, :mod:`flickerless.blend.detail`). Where remaps are weighted, each remapped frame
also follows the guide's change of level between its two frames (``exposure``: fades, lights), and
on request (``exposure_match``) PatchMatch compares the two guides brought to the level their content
agrees on, so that a fading frame is matched to the same content, not to pixels of its brightness.

Frames flow through the GPU in batches of pairs; intermediate images live in a
:class:`~flickerless.blend.frames.FrameStore` (device, then host RAM, then disk), so a long clip
needs bounded memory. Output frames are handed to a sink in order as soon as they are final.
"""

from __future__ import annotations

import bisect
import inspect
import logging
import math
import numbers
import os
from collections import OrderedDict
from collections.abc import Iterable
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from ..errors import DeviceError, InputError, check_has_values, halve_batch, out_of_memory
from .frames import (FrameSource, FrameStore, SubFrames, TensorFrames, _pixel_scale, as_source, check_finite,
                     index_tensor, refuse_path, to_hwc_uint8)
from .detail import resolve_detail, restore_detail
from .patchmatch import PatchMatchOptions, final_vote, patchmatch, pyramid_sizes, remap, resize_levels
from .schedule import (count_table_remaps, table_levels, table_needed, table_query, table_segments, window_pairs,
                       window_sources)

log = logging.getLogger("flickerless")

__all__ = ["deflicker", "run_deflicker", "resolve_device", "warm_up", "MatchCache", "MODES"]

MODES = ("table", "window", "keyframes", "all_pairs")
PIN_BYTES = 1 << 30  # a host-tensor result of a GPU run is pinned up to this size
# what a run's store keeps in host RAM before it goes to disk (run_deflicker's host_budget), and the
# share of a GPU's free memory it keeps there first (device_budget)
HOST_BUDGET = 2 << 30
DEVICE_SHARE = 0.25
# blend weight exp(-guide error / sigma^2) of a remapped frame (resolve_error_sigma): helped on every clip
# measured, clean, grainy, compressed and animated, in window and table modes, and on every clip measured
# in keyframes mode (BENCHMARKS.md)
DEFAULT_ERROR_SIGMA = 0.05
# keyframes mode, weighted: what a remap counts (times its distance weight) where the guide says it
# failed, so that where both keyframes fail the distance weights still decide
KEYFRAME_WEIGHT_FLOOR = 1e-3
Sink = Callable[[int, torch.Tensor], None]
# what the modes hand on: (index, blend, the frame's own entry or None); see _blend_sink
ModeSink = Callable[[int, torch.Tensor, "torch.Tensor | None"], None]


_SAID = {"no_gpu": False}


def resolve_device(device=None, like: torch.Tensor | None = None) -> torch.device:
    """``None``: the tensor's device if given one on a GPU, else CUDA if present, else CPU (said once)."""
    if device is None:
        if like is not None and like.device.type != "cpu":
            return like.device
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if not _SAID["no_gpu"]:  # a job resolves its device at every deflicker step: said the first time
            log.info("no GPU found: running on the CPU")
            _SAID["no_gpu"] = True
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise DeviceError(f"unknown device {device!r}: use 'cpu', 'cuda', 'cuda:N' or 'mps' (a Mac's GPU)") from e
    if dev.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"device {device!r}: the deflicker runs on 'cpu', 'cuda', 'cuda:N' or 'mps' (a Mac's GPU)")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {device!r} asked for, but no CUDA GPU is available here: use device 'cpu' "
                              "(--device cpu)")
        n = torch.cuda.device_count()
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        elif dev.index >= n:
            have = "one GPU, cuda:0" if n == 1 else f"GPUs cuda:0..cuda:{n - 1}"
            raise DeviceError(f"device {device!r} does not exist: this machine has {have}")
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise DeviceError(f"device {device!r} asked for, but MPS is not available: use device 'cpu' (--device cpu)")
    return dev


def normalize_window(window) -> int | None:
    """``None``, ``inf``, ``"inf"``/``"none"``/``"all"`` -> ``None`` (whole video); else an int >= 0."""
    if isinstance(window, (float, np.floating)) and math.isinf(window) and window < 0:
        raise InputError(f"window must be >= 0 or inf, got {window}")
    if window is None or (isinstance(window, (float, np.floating)) and math.isinf(window)):
        return None
    if isinstance(window, str) and window.lower() in ("inf", "none", "all"):
        return None
    try:
        w = int(window)
        if isinstance(window, bool) or w != window and not isinstance(window, str):  # True, 2.5: not a count
            raise ValueError
    except (TypeError, ValueError):
        raise InputError(f"window must be an integer >= 0 or 'inf', got {window!r}") from None
    if w < 0:
        raise InputError(f"window must be >= 0 or inf, got {window}")
    return w


class MatchCache:
    """Nearest-neighbour fields of frame pairs, kept from one deflicker pass to the next over the
    same guide video (the engine's in-loop passes: the guide is the input video at every step).

    A pair found here is not searched from scratch: PatchMatch starts from its last field and runs
    ``refine_iterations`` rounds at full resolution against the new style (see
    :func:`~flickerless.blend.patchmatch.patchmatch`). Fields are kept as int16 in host memory up
    to ``budget`` bytes (4 bytes per pixel per pair: 2 MB for 960x512); pairs past the budget are
    searched from scratch every pass. One cache belongs to one guide video: a pass over a guide of
    another length or size empties it first.
    """

    def __init__(self, budget: int = 1 << 30):
        self.budget = int(budget)
        self._fields: dict[tuple[int, int], torch.Tensor] = {}
        self._guide: tuple | None = None
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.version = 0  # bumped on every change (a job saves the cache when it moved)

    def __len__(self) -> int:
        return len(self._fields)

    def bind(self, num_frames: int, size: tuple[int, int]) -> None:
        """Declare the guide of the pass about to run; a different guide empties the cache."""
        guide = (int(num_frames), tuple(size))
        if guide != self._guide:
            self.clear()
            self._guide = guide

    def clear(self) -> None:
        self._fields.clear()
        self.bytes = 0
        self.version += 1

    def state_dict(self) -> dict:
        """Everything needed to continue with the same fields (a resumed job must match an
        uninterrupted one frame for frame)."""
        pairs = sorted(self._fields)
        return {"guide": None if self._guide is None else [self._guide[0], *self._guide[1]],
                "pairs": torch.tensor(pairs, dtype=torch.int64).reshape(-1, 2),
                "fields": torch.stack([self._fields[p] for p in pairs]) if pairs else torch.zeros(0, 2, 0, 0, dtype=torch.int16)}

    def load_state_dict(self, state: dict) -> None:
        self.clear()
        g = state["guide"]
        self._guide = None if g is None else (int(g[0]), (int(g[1]), int(g[2])))
        for (a, b), f in zip(state["pairs"].tolist(), state["fields"]):
            self._fields[(a, b)] = f.clone()
            self.bytes += f.numel() * 2

    def get(self, pairs: Sequence[tuple[int, int]]) -> list[torch.Tensor | None]:
        found = [self._fields.get(p) for p in pairs]
        hits = sum(f is not None for f in found)
        self.hits += hits
        self.misses += len(found) - hits
        return found

    def put(self, pairs: Sequence[tuple[int, int]], nnf: torch.Tensor) -> None:
        """Keep the fields ``nnf (B, 2, H, W)`` of ``pairs``, as far as the budget allows."""
        per = nnf[0].numel() * 2
        room = max(0, (self.budget - self.bytes) // per)
        old = [k for k, p in enumerate(pairs) if p in self._fields]
        new = [k for k, p in enumerate(pairs) if p not in self._fields][:room]
        if not old and not new:
            return
        keep = nnf.to(torch.int16).cpu()  # one transfer per batch
        for k in old:
            self._fields[pairs[k]] = keep[k].clone()
        for k in new:
            self._fields[pairs[k]] = keep[k].clone()
            self.bytes += per
        self.version += 1


def resolve_error_sigma(error_sigma, mode: str) -> float | None:
    """The blend weighting a run uses: ``"auto"`` is :data:`DEFAULT_ERROR_SIGMA` in window, table and
    keyframes modes and a plain mean in all_pairs (the reference); ``None`` or 0 is a plain mean; a
    number > 0 is used as given (not in all_pairs)."""
    if isinstance(error_sigma, str):
        if error_sigma != "auto":
            raise InputError(f"error_sigma must be a number, None or 'auto', got {error_sigma!r}")
        return DEFAULT_ERROR_SIGMA if mode in ("window", "table", "keyframes") else None
    if error_sigma is None or error_sigma == 0:
        return None
    if mode not in ("window", "table", "keyframes"):
        raise InputError(f"error-weighted blending (error_sigma) works in window, table and keyframes modes, "
                         f"not {mode!r}")
    if not error_sigma > 0:
        raise InputError(f"error_sigma must be > 0 (or 0 for a plain mean), got {error_sigma}")
    return float(error_sigma)


def resolve_exposure(exposure, mode: str, error_sigma: float | None, name: str = "exposure") -> bool:
    """Whether remapped frames follow the guide's changes of level (:func:`follow_exposure`), or, with
    ``name="exposure_match"``, whether PatchMatch matches across them (:func:`level_gains`): ``"auto"``
    is on where the remaps are weighted (``error_sigma``, resolved), off for a plain mean (the reference
    all_pairs, and the engine's in-loop passes); ``True``/``False`` as given (not in all_pairs)."""
    if isinstance(exposure, str):
        if exposure != "auto":
            raise InputError(f"{name} must be True, False or 'auto', got {exposure!r}")
        return error_sigma is not None
    if exposure and mode == "all_pairs":
        what = "exposure following" if name == "exposure" else "exposure matching"
        raise InputError(f"{what} works in window, table and keyframes modes, not 'all_pairs' (the "
                         "reference blends the remaps as they are)")
    return bool(exposure)


# exposure_shift's fit: each shift within +-EXPOSURE_GAIN times the guide's largest change (a style whose
# levels run against the guide's at twice its contrast, or with it); a ridge regression, EXPOSURE_RIDGE of the
# guide's mean variance added to each channel's (the guide's channels move together in most footage: along the
# directions where they rarely differ, colour against brightness, the fit would take noise for gain; measured
# against 0.01 and 0.1 in BENCHMARKS.md), and EXPOSURE_QUANT, (2 levels of 0-255)^2, so that a frame whose
# levels vary by less than that (black with a little noise) gives no fit at all
EXPOSURE_GAIN = 2.0
EXPOSURE_RIDGE = 0.3
EXPOSURE_QUANT = (2 / 255) ** 2
# the frame statistics of exposure_shift are taken on about this many pixels: one at random in each k x k cell
# of the frame (a grid's regular step would alias with a pattern at that step), the same ones for every pair
EXPOSURE_SAMPLES = 16384
# with exposure matching, an image's black is taken over this share of the sampled pixels, the guide's darkest
EXPOSURE_DARK = 0.05
_exposure_samples_cache: dict = {}


def follow_exposure(images: torch.Tensor, voted_guide: torch.Tensor, target_guide: torch.Tensor,
                    error_sigma: float | None, blocks: Sequence[int] | None = None,
                    level: torch.Tensor | None = None) -> torch.Tensor:
    """Remapped ``images`` (``(B, C, H, W)``) moved, in place, by the change of level between the remap's
    two guide frames (:func:`exposure_shift`; ``level``: the pair's gain less 1 per pixel, where it holds,
    from :func:`level_change`), so that a remapped frame does not carry its own frame's exposure into a fade, a
    light going on or a camera's gain change: the blocks of 3 channels that start at ``blocks`` (default all
    of them; the style's colour, and the guide blend carried with it), kept in [0, 1]. Returns ``images``."""
    blocks = range(0, images.shape[1], 3) if blocks is None else blocks
    shift = exposure_shift(images, voted_guide, target_guide, error_sigma, blocks, level)
    for k, a in enumerate(blocks):
        images[:, a:a + 3].add_(shift[:, 3 * k:3 * k + 3]).clamp_(0, 1)
    return images


def _exposure_samples(h: int, w: int, device) -> torch.Tensor:
    """Flat indices of the pixels exposure_shift reads in an ``h`` x ``w`` frame: every pixel of a small
    frame, else one in each k x k cell at a place drawn once per size (seeded by it), made on ``device``
    once (a copy to the GPU per remap would be a wait for it)."""
    key = (h, w, str(device))
    idx = _exposure_samples_cache.get(key)
    if idx is None:
        k = max(1, math.isqrt(h * w // EXPOSURE_SAMPLES))
        gen = torch.Generator().manual_seed(h * 100_003 + w)
        rows, cols = torch.arange(0, h, k), torch.arange(0, w, k)
        y = (rows[:, None] + torch.randint(0, k, (len(rows), len(cols)), generator=gen)).clamp_(max=h - 1)
        x = (cols[None, :] + torch.randint(0, k, (len(rows), len(cols)), generator=gen)).clamp_(max=w - 1)
        idx = (y * w + x).flatten().to(device)
        if len(_exposure_samples_cache) > 64:
            _exposure_samples_cache.clear()
        _exposure_samples_cache[key] = idx
    return idx


def level_change(voted_guide: torch.Tensor, target_guide: torch.Tensor, gain: torch.Tensor,
                 unchanged: torch.Tensor | None = None) -> torch.Tensor:
    """How far the pair's gain (``(B,)``, from :func:`level_gains`: the target's level over the source's)
    explains the guide's change between a remap's two frames, per pixel ``(B, 1, H, W)``: gain - 1 where the
    target's guide is nearer the source's remapped guide (``voted_guide``) times the gain than the remapped
    guide as it is, 0 where it is nearer that (over 5x5 pixels, softly: the share r1 / (r1 + rg) of the two
    squared errors), so that light that changed in part of the frame only (a lamp, a shadow) moves that part
    only. The guide's change it explains is this times ``voted_guide``. 0 with a gain of 1. ``unchanged``:
    the 5x5 squared error with no change (:func:`guide_error`), where the caller has it already."""
    g = gain[:, None, None, None] - 1
    r1 = guide_error(voted_guide - target_guide) if unchanged is None else unchanged
    rg = guide_error(voted_guide * (1 + g) - target_guide)
    return g * (r1 / (r1 + rg).clamp_min(1e-12))


def guide_error(difference: torch.Tensor) -> torch.Tensor:
    """The squared ``difference`` of two guide frames ``(B, 3, H, W)``, the mean of the channels', averaged
    over 5x5 pixels (fewer at the edges): ``(B, 1, H, W)``, what a remap's weight and :func:`level_change`
    read."""
    err = difference.square().mean(1, keepdim=True)
    return torch.nn.functional.avg_pool2d(err, 5, 1, 2, count_include_pad=False)


def exposure_shift(images: torch.Tensor, voted_guide: torch.Tensor, target_guide: torch.Tensor,
                   error_sigma: float | None, blocks: Sequence[int] | None = None,
                   level: torch.Tensor | None = None) -> torch.Tensor:
    """What :func:`follow_exposure` adds to the blocks of 3 channels of ``images`` that start at
    ``blocks`` (default all of them), each against the guide's 3 channels: ``(B, 3 len(blocks), 1, 1)``, or
    ``(B, 3 len(blocks), H, W)`` with ``level``.

    Per pair: the guide's change is the mean of ``target_guide - voted_guide`` (the target's guide less
    the source's guide remapped through the same field) per channel, weighted per pixel by exp(-e /
    sigma^2), e the squared guide error there less the least of it (the content the remap found best; 1
    without ``error_sigma``). How each of the image's channels follows the guide's is fitted over the
    frame, every pixel alike (the remapped image and the remapped guide come from the same frame through
    the same field, wherever the remap went): a 3x3 matrix of gains, the least-squares regression of the
    image's channels on the guide's (ridge: :data:`EXPOSURE_RIDGE`, :data:`EXPOSURE_QUANT`). The shift is
    that matrix times the change, within +-:data:`EXPOSURE_GAIN` times the change's largest channel. A
    style whose levels follow the guide's moves with it, an inverted one against it, a greyscale one by
    the change of the guide's brightness alone (a change of colour temperature does not tint it), a
    channel-swapped one by the swapped channel's change, and a posterised or flat palette hardly at all;
    the guide blend, a blend of the guide itself, by the guide's change. The fit is over the frame, not
    over time: a style that ignores the lighting but resembles the guide is moved too (``exposure=False``
    for it). Measured in BENCHMARKS.md, "Session 35".

    With ``level`` (exposure matching: the pair's gain less 1 per pixel, where it explains the guide's
    change, from :func:`level_change`), each pixel of the image moves towards the image's black (its
    value where the guide is black) by that factor, ``level`` x (image - black), a fade darkening the
    remapped image as it darkens the guide, bright pixels more than dark ones; what the gain leaves of the
    guide's change is followed as above (its weighted mean, the weights taken on it). The image's black is
    its mean over the darkest 5% of the sampled pixels of the guide (:data:`EXPOSURE_DARK`), less the fit
    (without the ridge) times the guide's level there: the value of a style linear in the guide at the
    guide's black, or a posterised style's own black where it has one (a fit's intercept is not: a
    stylised frame fitted linearly has intercepts up to 0.09 where the style itself goes to 0). Measured in
    BENCHMARKS.md, "Session 37"."""
    b, c, h, wd = images.shape
    blocks = range(0, c, 3) if blocks is None else blocks
    idx = _exposure_samples(h, wd, images.device)
    pick = lambda t: t.flatten(-2).index_select(-1, idx)  # noqa: E731  (channel slices: no copy to the device)
    x = torch.stack([pick(images[:, a:a + 3]) for a in blocks], 1)  # (B, blocks, 3, N)
    guide = pick(voted_guide)  # (B, 3, N)
    r = pick(target_guide) - guide * (1 if level is None else 1 + pick(level))
    if error_sigma:
        e = r.square().mean(1, keepdim=True)
        w = torch.exp(-(e - e.amin(-1, keepdim=True)) / error_sigma**2)  # (relative: no underflow at a big jump)
    else:
        w = torch.ones_like(r[:, :1])
    change = (r * w).sum(-1) / w.sum(-1)  # (B, 3)
    n = guide.shape[-1]
    g = guide - guide.mean(-1, keepdim=True)
    cov = g @ g.transpose(1, 2) / n  # (B, 3, 3): the guide's channels against each other
    cross = x @ g.unsqueeze(1).transpose(2, 3) / n  # (B, blocks, 3, 3): each image channel against the guide's
    spread = cov.diagonal(dim1=1, dim2=2).mean(-1)[:, None, None]
    eye = torch.eye(3, device=cov.device, dtype=cov.dtype)
    inverse = torch.linalg.inv_ex(cov + eye * (EXPOSURE_RIDGE * spread + EXPOSURE_QUANT))[0]  # (no wait on a GPU)
    shift = cross @ inverse.unsqueeze(1) @ change[:, None, :, None]  # (B, blocks, 3, 1)
    if level is None:
        most = EXPOSURE_GAIN * change.abs().amax(-1)[:, None, None, None]
        return torch.minimum(torch.maximum(shift, -most), most).reshape(b, -1, 1, 1)
    bare = cross @ torch.linalg.inv_ex(cov + eye * EXPOSURE_QUANT)[0].unsqueeze(1)  # (B, blocks, 3, 3)
    lum = guide.mean(1)  # (B, N)
    dark = (lum <= lum.kthvalue(max(1, int(EXPOSURE_DARK * n)), -1, keepdim=True).values).to(lum.dtype)
    dark = dark / dark.sum(-1, keepdim=True)  # (B, N): the mean over the darkest pixels (ties included)
    black = (x @ dark[:, None, :, None]) - bare @ (guide @ dark[..., None])[:, None]  # (B, blocks, 3, 1)
    full = torch.stack([images[:, a:a + 3] for a in blocks], 1)  # (B, blocks, 3, H, W)
    shift = level[:, None] * (full - black[..., None]) + shift[..., None]
    most = EXPOSURE_GAIN * (level * voted_guide + change[:, :, None, None]).abs().amax(1)[:, None, None]
    return torch.minimum(torch.maximum(shift, -most), most).reshape(b, -1, h, wd)


# exposure matching (level_gains): thumbnails about MATCH_SIDE px on their longer side, compared in patches
# of MATCH_PATCH^2 by normalised correlation (blind to a gain); a match counts where the correlation is above
# MATCH_CORR and both patches vary by more than MATCH_FLAT (2 levels of 0-255); with matches for fewer than
# MATCH_FEW of the target's patches, the frames' mean levels are compared instead where the darker of the two
# has next to no texture (fewer than MATCH_FEW of its patches: black), and the gain is 1 elsewhere.
# The gain is used in full where |log gain| >= MATCH_SIZE[1] and the matches' spread (median absolute
# deviation of their log ratios) <= MATCH_SPREAD[0], not at all where |log gain| <= MATCH_SIZE[0] or the spread
# >= MATCH_SPREAD[1] (frames with no content in common: a pan past its width), linearly between; within
# 1/MATCH_MOST..MATCH_MOST. Up to 10% (a camera's exposure drifting; content moving in steady light gives a few
# percent) PatchMatch on the guides as they are finds the content, and its pull towards pixels of the target's
# brightness suits styles whose colours depend on the level; a fast fade's larger changes are where it matched
# the wrong content (measured in BENCHMARKS.md, "Session 36").
MATCH_SIDE = 40
MATCH_PATCH = 5
MATCH_CORR = 0.8
MATCH_FLAT = 2 / 255
MATCH_FEW = 0.05
MATCH_SIZE = (0.1, 0.3)
MATCH_SPREAD = (0.05, 0.1)
MATCH_MOST = 16.0
MATCH_BYTES = 1 << 28  # the most the pairs' (P, P) patch similarities take at once (Remapper.level_gains)


def level_features(frames: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """What :func:`level_gains` compares of guide frames ``(B, 3, H, W)`` in [0, 1]: the patches of their
    thumbnails (about MATCH_SIDE px on the longer side, at most 1.2 times it, and at least MATCH_PATCH on the
    shorter where the frame has them) normalised to zero mean and unit variance ``(B, P, MATCH_PATCH^2)``, the
    patches' means and standard deviations ``(B, P)``, and each frame's mean level ``(B,)``."""
    y = frames.mean(1, keepdim=True)
    h, w = y.shape[-2:]
    longer = max(h, w)
    k = max(round(longer / MATCH_SIDE), -(-longer * 5 // (6 * MATCH_SIDE)))  # (about MATCH_SIDE, at most 1.2x)
    k = max(1, min(k, min(h, w) // MATCH_PATCH))  # (a thin frame keeps MATCH_PATCH rows)
    if k > 1:
        y = torch.nn.functional.avg_pool2d(y, k, k, ceil_mode=True)
    p = min(MATCH_PATCH, *y.shape[-2:])
    u = torch.nn.functional.unfold(y, p).transpose(1, 2)  # (B, P, p*p)
    mean = u.mean(-1, keepdim=True)
    z = u - mean
    sd = z.square().mean(-1, keepdim=True).sqrt()
    return z / sd.clamp_min(1e-6), mean[..., 0], sd[..., 0], frames.mean((1, 2, 3))


def level_gains(target: tuple[torch.Tensor, ...], source: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The gain ``(B,)`` that brings each source guide frame to its target's level, as far as the two
    frames agree on one (:func:`level_features` of each; the pairs side by side): each target patch of
    the thumbnails is matched to the source patch it correlates with best, and the gain is the median
    ratio of the matched patches' means, so content that moved keeps its own level and content that
    came or went is outvoted. 1 where the change is within what steady light gives or the matches
    disagree (see :data:`MATCH_SIZE`, :data:`MATCH_SPREAD`). No value is read back to the host."""
    dt, mt, st, ft = target
    ds, ms, ss, fs = source
    sim = dt @ ds.transpose(1, 2)  # (B, P, P): correlation times the patch's size
    best, j = sim.max(-1)
    ok = (best > MATCH_CORR * dt.shape[-1]) & (st > MATCH_FLAT) & (ss.gather(1, j) > MATCH_FLAT)
    ratio = torch.log((mt + 1e-3) / (ms.gather(1, j) + 1e-3)).masked_fill(~ok, float("nan"))
    med = ratio.nanmedian(-1).values
    spread = (ratio - med[:, None]).abs().nanmedian(-1).values
    agreed = ok.float().mean(-1) > MATCH_FEW
    # the darker frame of the two with next to no texture (black): the frames' mean levels; a flat frame that
    # is the brighter (white: a fade to white is no gain, and a gain up from a textured frame to a clipped white
    # one darkened the remap's darker half, the image's black being taken on a flat guide), or two frames with
    # texture but no content in common: nothing
    flat_t, flat_s = ((x > MATCH_FLAT).float().mean(-1) <= MATCH_FEW for x in (st, ss))
    flat = (flat_t & (ft < fs)) | (flat_s & (fs < ft))
    means = torch.log((ft + 1e-4) / (fs + 1e-4))
    lg = torch.where(agreed, med, torch.where(flat, means, torch.zeros_like(means))).nan_to_num(0.0)
    size = ((lg.abs() - MATCH_SIZE[0]) / (MATCH_SIZE[1] - MATCH_SIZE[0])).clamp(0, 1)
    trust = ((MATCH_SPREAD[1] - spread) / (MATCH_SPREAD[1] - MATCH_SPREAD[0])).clamp(0, 1).nan_to_num(0.0)
    trust = torch.where(agreed, trust, torch.ones_like(trust))
    most = math.log(MATCH_MOST)
    return (lg * size * trust).clamp(-most, most).exp()


def _default_batch(device: torch.device, size: tuple[int, int]) -> int:
    if device.type != "cuda":
        return 4
    # descriptors of target and source, a gathered copy and temporaries: ~ 4 x H x W x 150 x 4 B (the torch
    # passes; the fused kernels hold far less, but larger batches made the command line slower at 1080p:
    # BENCHMARKS.md, session 21)
    per_pair = size[0] * size[1] * 150 * 4 * 5
    free, _ = torch.cuda.mem_get_info(device)
    return int(max(1, min(64, (free * 0.5) // per_pair)))


class Remapper:
    """Runs remap jobs ``(src, tgt)`` in batches of pairs on one device.

    ``fetch(j)`` gives job j's image (``(3, H, W)`` float on the device) when its batch is formed;
    ``consume(j, image)`` receives the remapped image. A CUDA out-of-memory error halves the batch
    and retries; at batch 1 it frees what the GPU holds besides the pair, a step at a time (the
    guide caches, then each of ``relief``: callables returning the bytes they freed, such as
    :meth:`FrameStore.leave_device`), and retries; with nothing left to free it becomes a
    :class:`DeviceError` that says what to change.
    """

    def __init__(self, guide: FrameSource, options: PatchMatchOptions, device, batch: int, progress=None,
                 matches: MatchCache | None = None, error_sigma: float | None = None, carry_guide: bool = False,
                 exposure: bool = False, exposure_match: bool = False, level_weights: bool = False):
        self.guide = guide
        self.matches = matches
        # an image in flight ("entry") is its colour (3 channels) and alpha (1, a style with transparency:
        # ``channels`` 4), then, with ``carry_guide``, the guide blended the same way (3, for detail
        # restoration), then, with ``error_sigma``, its weight map (1)
        self.channels = 3
        self.error_sigma = error_sigma
        self.carry_guide = carry_guide
        self.exposure = exposure  # remapped colour follows the guide's change of level (follow_exposure)
        self.exposure_match = exposure_match  # PatchMatch sees the guides brought to one level (level_gains)
        # with exposure_match: the weights are taken on the guide error left after the gain (_weight)
        self.level_weights = level_weights and exposure_match
        self.offset = 0  # clip index of the guide's frame 0 (shots), the frame numbers of ``matches``
        self.first_frame = 0  # index of the clip's frame 0 in a longer video (a range of it): seeds
        self.options = options
        self.device = torch.device(device)
        self.batch = max(1, int(batch))
        self.progress = progress
        self.n = len(guide)
        self._guide_cache: OrderedDict[int, torch.Tensor] = OrderedDict()
        # each cached guide's coarser PatchMatch levels, made once for all the pairs it is met in
        self._pyramids: OrderedDict[int, list[torch.Tensor]] = OrderedDict()
        self._levels: OrderedDict[int, list[torch.Tensor]] = OrderedDict()  # level_features per frame
        self._cache_size = 4 * self.batch + 8
        self.runs = 0
        self.relief: list[Callable[[], int]] = []
        self._relieved = 0  # steps of _relieve taken

    def reset(self, guide: FrameSource, offset: int = 0) -> None:
        """Work on another guide (the next shot, starting at clip frame ``offset``): frame numbers
        restart at 0."""
        self.guide = guide
        self.offset = offset
        self.n = len(guide)
        self._guide_cache.clear()
        self._pyramids.clear()
        self._levels.clear()

    @property
    def weighted(self) -> bool:
        return self.error_sigma is not None

    def pair_keys(self, pairs) -> torch.Tensor:
        """PatchMatch's seeds, one per pair (src, tgt): from the frames' numbers in the whole video, so
        a pair is searched the same way in every shot, range or clip length it is met in."""
        base = self.first_frame + self.offset
        return index_tensor([((base + s) << 20) + base + t for s, t in pairs], self.device)

    def entries(self, style: FrameSource, idx: Sequence[int], raw: bool = False) -> torch.Tensor:
        """Frames ``idx`` of ``style`` as entries: colour, [own guide], [weight 1]. ``raw``: without
        the guide, for remapping only: a remap votes the source's guide anyway, and gives it back as
        the guide blend of a raw frame (one vote of it, not two)."""
        img = style.load(list(idx), self.device)
        carry = self.carry_guide and not raw
        if not (carry or self.weighted):
            return img
        parts = [img]
        if carry:
            parts.append(self._guides(list(idx)))
        if self.weighted:
            parts.append(torch.ones_like(img[:, :1]))
        return torch.cat(parts, 1)

    def _guides(self, idx: Sequence[int]) -> torch.Tensor:
        missing = [i for i in dict.fromkeys(idx) if i not in self._guide_cache]
        if missing:
            loaded = self.guide.load(missing, self.device)
            for i, t in zip(missing, loaded):
                self._guide_cache[i] = t
        for i in idx:
            self._guide_cache.move_to_end(i)
        while len(self._guide_cache) > self._cache_size:
            self._guide_cache.popitem(last=False)
        return torch.stack([self._guide_cache[i] for i in idx])

    def _per_frame(self, cache: OrderedDict, idx: Sequence[int], make: Callable) -> list[torch.Tensor]:
        """Tensors made from guide frames ``idx`` (``make(frames)``: a sequence of stacked tensors), each
        frame's made once, when first met, and kept in ``cache`` while it holds the last ``_cache_size``
        frames met; stacked over ``idx``, one per tensor of ``make``."""
        missing = [i for i in dict.fromkeys(idx) if i not in cache]
        if missing:
            made = make(self._guides(missing))
            for k, i in enumerate(missing):
                cache[i] = [t[k].clone() for t in made]
        for i in idx:
            cache.move_to_end(i)
        out = [torch.stack([cache[i][f] for i in idx]) for f in range(len(cache[idx[0]]))]
        while len(cache) > self._cache_size:
            cache.popitem(last=False)
        return out

    def _guide_levels(self, idx: Sequence[int], sizes) -> list[torch.Tensor]:
        """Frames ``idx`` of the guide at each of PatchMatch's coarser level ``sizes``, stacked per level:
        each frame is resized once, when first met, not once for every pair it is in."""
        return self._per_frame(self._pyramids, idx, lambda frames: resize_levels(frames, sizes))

    def _level_features(self, idx: Sequence[int]) -> tuple[torch.Tensor, ...]:
        """:func:`level_features` of guide frames ``idx``, stacked: each frame's made once, when first met."""
        return tuple(self._per_frame(self._levels, idx, level_features))

    def level_gains(self, pairs) -> torch.Tensor:
        """Each pair's ``(src, tgt)`` :func:`level_gains` ``(B,)``, as many pairs at a time as keep the
        comparison of every patch of one thumbnail with every patch of the other within :data:`MATCH_BYTES`
        (all of a batch at 640x480: few kernel launches)."""
        patches = self._level_features([pairs[0][1]])[0].shape[1]
        step = max(1, MATCH_BYTES // (4 * patches**2))
        out = []
        for a in range(0, len(pairs), step):
            part = pairs[a:a + step]
            out.append(level_gains(self._level_features([t for _, t in part]),
                                   self._level_features([s for s, _ in part])))
        return torch.cat(out)

    def run(self, jobs: Sequence[tuple[int, int]], fetch: Callable[[int], torch.Tensor], consume) -> None:
        start = 0
        while start < len(jobs):
            chunk = list(range(start, min(len(jobs), start + self.batch)))
            try:
                out = self._run_batch([jobs[j] for j in chunk], [fetch(j) for j in chunk])
            except Exception as e:  # noqa: BLE001 - only running out of memory is handled
                if not out_of_memory(e):
                    raise
                if self.batch == 1:
                    if self._relieve():
                        continue
                    h, w = self.guide.size
                    raise DeviceError(  # (a CPU's allocator fails as well: told as host memory there)
                        f"out of GPU memory on {self.device} remapping one {w}x{h} frame pair: "
                        "free GPU memory, use a smaller frame size, or --device cpu" if self._memory() == "GPU" else
                        f"out of host memory remapping one {w}x{h} frame pair: free memory (or raise this "
                        "process's limit, ulimit -v), or use a smaller frame size"
                    ) from e
                self.batch = halve_batch(self.batch, "frame pair", "--batch {}")
                continue
            for j, img in zip(chunk, out):
                consume(j, img)
            if self.progress is not None:
                self.progress.update(len(chunk))
            start += len(chunk)

    def _memory(self) -> str:
        """Whose memory ran out: "GPU", or "host" on the CPU."""
        return "host" if torch.device(self.device).type == "cpu" else "GPU"

    def _relieve(self) -> bool:
        """One pair does not fit the GPU: free the next thing it holds besides the pair (a 4K pair on
        an 8 GiB card: the guide caches, about 1.5 GiB, then the table entries kept there, a quarter
        of the memory that was free). False when nothing is left to free."""
        steps = [self._drop_guide_caches, *self.relief]
        while self._relieved < len(steps):
            step = steps[self._relieved]
            self._relieved += 1
            freed = step()
            if freed:
                if torch.cuda.is_initialized():
                    torch.cuda.empty_cache()
                h, w = self.guide.size
                where = self._memory()
                log.warning("out of %s memory at one %dx%d frame pair: %.2f GiB the %s held for later pairs "
                            "freed (slower from here)", where, w, h, freed / 2**30,
                            "GPU" if where == "GPU" else "process")
                return True
        return False

    def _drop_guide_caches(self) -> int:
        """Empty the guide frames and pyramids kept for the pairs to come, and keep no more than two
        batches' worth from now on. Returns the bytes freed."""
        freed = sum(t.numel() * t.element_size() for t in self._guide_cache.values())
        freed += sum(t.numel() * t.element_size() for lv in self._pyramids.values() for t in lv)
        freed += sum(t.numel() * t.element_size() for lv in self._levels.values() for t in lv)
        self._guide_cache.clear()
        self._pyramids.clear()
        self._levels.clear()
        self._cache_size = 2 * self.batch + 2
        return freed

    def _run_batch(self, pairs, images) -> torch.Tensor:
        src = [s for s, _ in pairs]
        tgt = [t for _, t in pairs]
        keys = self.pair_keys(pairs)
        style = torch.stack(images).to(self.device, torch.float32)
        # a raw frame (Remapper.entries(raw=True)): its guide blend is its own guide, voted below
        raw = self.carry_guide and style.shape[1] == self.channels + self.weighted
        carried = None
        if style.shape[1] > 3:  # match and vote the colour; vote alpha, guide blend and weight alongside
            style, carried = style[:, :3].contiguous(), style[:, 3:].contiguous()
        self.runs += len(pairs)
        tg, sg = self._guides(tgt), self._guides(src)
        sizes = pyramid_sizes(tuple(tg.shape[-2:]), self.options)
        # what PatchMatch sees: with exposure matching, the brighter guide of each pair scaled down to the
        # other's level (down, so that no highlight clips); everything else uses the guides as they are
        mt, ms = tg, sg
        if self.exposure_match:
            gain = self.level_gains(pairs)  # (B,)
            at_t, at_s = ((1 / gain).clamp(max=1)[:, None, None, None], gain.clamp(max=1)[:, None, None, None])
            mt, ms = tg * at_t, sg * at_s

        def levels(rows=None):  # the guides' coarser levels (a warm start needs none)
            t, s = (tgt, src) if rows is None else ([tgt[k] for k in rows], [src[k] for k in rows])
            out = list(zip(self._guide_levels(t, sizes), self._guide_levels(s, sizes)))
            if self.exposure_match:
                sel = None if rows is None else index_tensor(rows, self.device)
                a, b = (at_t, at_s) if sel is None else (at_t[sel], at_s[sel])
                out = [(lt * a, ls * b) for lt, ls in out]
            return out

        if self.matches is None:
            out, nnf = remap(style, mt, ms, self.options, keys, return_nnf=True, guide_levels=levels())
        else:
            ids = [(self.offset + s, self.offset + t) for s, t in pairs]
            found = self.matches.get(ids)
            out = torch.empty_like(style)
            nnf = torch.empty(len(pairs), 2, *tg.shape[-2:], dtype=torch.int64, device=self.device)
            for warm in (True, False):
                rows = [k for k, f in enumerate(found) if (f is not None) == warm]
                if not rows:
                    continue
                sel = index_tensor(rows, self.device)
                init = torch.stack([found[k] for k in rows]).to(self.device) if warm else None
                cold = None if warm else levels(rows)
                out[sel], nnf[sel] = remap(style[sel], mt[sel], ms[sel], self.options, keys[sel], init_nnf=init,
                                           return_nnf=True, guide_levels=cold)
                self.matches.put([ids[k] for k in rows], nnf[sel])
        voted = level = None  # the source's guide remapped; the pair's gain less 1 where it holds (level_change)
        if self.weighted:
            extra, voted, level = self._weight(sg, tg, nnf, carried, raw, gain if self.exposure_match
                                               and (self.exposure or self.level_weights) else None)
            out = torch.cat([out, extra], 1)
        elif raw:  # the alpha, then the source's guide remapped: the guide blend of a raw frame
            out = torch.cat([out, final_vote(sg if carried is None else torch.cat([carried, sg], 1), nnf,
                                             self.options)], 1)
            voted = out[:, -3:]
        elif carried is not None:
            out = torch.cat([out, final_vote(carried, nnf, self.options)], 1)
        if self.exposure:  # the colour, and the guide blend after the alpha (if any) with it
            if voted is None:
                voted = final_vote(sg, nnf, self.options)
            if level is None and self.exposure_match:
                level = level_change(voted, tg, gain)
            follow_exposure(out, voted, tg, self.error_sigma, [0, self.channels][:1 + self.carry_guide], level)
        return out

    def _weight(self, source_guide, target_guide, nnf, carried, raw: bool,
                gain: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The carried channels remapped (a raw frame's guide blend: its remapped guide), the last
        one (the weight map) multiplied by this remap's per-pixel weight exp(-e / sigma^2), e the 5x5
        mean of the squared error between the target guide and the source guide remapped through
        the same field. Where the remap could not find the content (occlusion, content that left
        the frame, a fast pan), the remapped image counts less; a table entry's weight is the
        product over the remaps that brought it. Also returns the remapped source guide and, with the
        pair's ``gain``, the part of the guide's change it explains (:func:`level_change`); with
        ``level_weights``, e is taken on the error left after that part (keyframes mode: a keyframe
        matched at another level counts as much as one at the same level where the gain explains the
        change, and a black one, which cannot be brought to the target's level, little; with exposure
        following off as well, the style is taken to ignore the lighting, and such a keyframe counts
        as it is)."""
        voted = final_vote(torch.cat([source_guide, carried], 1), nnf, self.options)
        left = voted[:, :3] - target_guide
        err = guide_error(left)
        level = None if gain is None else level_change(voted[:, :3], target_guide, gain, err)
        if self.level_weights:  # (it is taken after the gain: the weights, not the share, which compares both)
            err = guide_error(left + level * voted[:, :3])
        weight = torch.exp(-err / self.error_sigma**2)
        a = self.channels  # after the source guide (3): the alpha, if any, ends here
        return (torch.cat([voted[:, 3:a], voted[:, :3] if raw else voted[:, a:-1], weight * voted[:, -1:]], 1),
                voted[:, :3], level)


# --------------------------------------------------------------------------------------------
# modes


def _run_window(style: FrameSource, remapper: Remapper, sink: ModeSink, window: int | None, chunk_targets: int):
    n = len(style)
    weighted = remapper.weighted
    cache_size = 4 * remapper.batch + 2 * min(n, n if window is None else window) + 2
    for a in range(0, n, chunk_targets):
        targets = list(range(a, min(n, a + chunk_targets)))
        jobs = [(j, i) for i in targets for j in window_sources(i, n, window)]
        own = remapper.entries(style, targets)
        if weighted:  # the own frame counts 1
            own = own[:, :-1]
        acc = {i: own[k].clone() for k, i in enumerate(targets)}
        count = {i: 1 for i in targets}  # or a weight map, when remaps carry their weights
        cache: OrderedDict[int, torch.Tensor] = OrderedDict()

        def fetch(jn):
            s = jobs[jn][0]
            if s not in cache:
                cache[s] = remapper.entries(style, [s], raw=True)[0]
                if len(cache) > cache_size:
                    cache.popitem(last=False)
            return cache[s]

        def consume(jn, img):
            t = jobs[jn][1]
            if weighted:  # the payload, then the weight map
                acc[t] += img[:-1] * img[-1:]
                count[t] = count[t] + img[-1:]
            else:
                acc[t] += img
                count[t] += 1

        remapper.run(jobs, fetch, consume)
        for k, i in enumerate(targets):
            sink(i, acc.pop(i) / count[i], own[k])
        if window is not None:  # the next targets read frames from targets[-1] + 1 - window on
            style.release(targets[-1] + 1 - window)
            remapper.guide.release(targets[-1] + 1 - window)


def _run_reference(style: FrameSource, remapper: Remapper, sink: ModeSink, window: int | None):
    """O(n^2) reference: each pair on its own (batch of one), plain Python accumulation."""
    n = len(style)
    dev = remapper.device
    for i in range(n):
        own = remapper.entries(style, [i])[0]
        total, cnt = own, 1
        for j in window_sources(i, n, window):
            keys = remapper.pair_keys([(j, i)])
            src = remapper.entries(style, [j])
            nnf = patchmatch(remapper.guide.load([i], dev), remapper.guide.load([j], dev), src[:, :3],
                             remapper.options, keys)
            total = total + final_vote(src, nnf, remapper.options)[0]
            cnt += 1
            if remapper.progress is not None:
                remapper.progress.update(1)
        sink(i, total / cnt, own)


def _table_pass(
    style: FrameSource,
    remapper: Remapper,
    store: FrameStore,
    window: int | None,
    order: list[int],
    tag: str,
    emit: Callable[[int, torch.Tensor, int], None],
    chunk: int,
    span: tuple[int, int] | None = None,
    base: int = 0,
):
    """One direction of the remapping table over ``order`` (frame indices in processing order).

    For every position i calls ``emit(frame, sum, count)`` where ``sum`` is the sum of the frames at
    positions ``[i - w, i]`` remapped to i, in increasing i. Positions are 1-based and start at
    ``base + 1``: ``base`` places the sequence in a longer one (a shot, or a range read from a longer
    video, counted from that video's first or last frame), so that its table's blocks fall where they
    fall in a run over the whole video, and its frames come out the same. ``span=(first, last)``:
    positions ``first..last`` only; entries the store lacks are computed, so a pass run in spans gives
    what one run over all positions gives (each entry is a function of its frames alone).
    """
    n = len(order)
    K = table_levels(n, window)
    first, last = span or (base + 1, base + n)
    start = base + 1
    frame = lambda c: order[c - start]  # noqa: E731  (position -> frame index)
    weighted = remapper.weighted

    def block(k, c, raw=False):
        """Entry (k, c): the mean of the 2^k frames ending at c, remapped to c (colour, and the
        guide blend if carried); weighted, a last channel holds each pixel's total weight (a frame
        counts 1 at its own position). ``raw``: a frame (k 0) to remap, see Remapper.entries."""
        if k == 0:
            return remapper.entries(style, [frame(c)], raw=raw)[0]
        return store.get((tag, k, c))

    def merge(a, b):
        """Two blends of (payload, weight) as one; unweighted: the mean of two equal counts."""
        if not weighted:
            return (a + b) * 0.5
        w = a[-1:] + b[-1:]
        return torch.cat([(a[:-1] * a[-1:] + b[:-1] * b[-1:]) / w, w])

    def total(img, k):
        """(sum, count) of a blend: weighted, payload x weight and the weight map; else 2^k frames."""
        if weighted:
            return img[:-1] * img[-1:], img[-1:]
        return img * (2**k), 2**k

    for a in range(first, last + 1, chunk):
        positions = list(range(a, min(last, a + chunk - 1) + 1))
        queries = {i: table_query(i, window, K, start) for i in positions}
        # the table entries these queries need, and the entries those are built from
        needed = table_needed(positions[0], positions[-1], window, K, start)
        for k in range(1, K + 1):
            todo = sorted(c for kk, c in needed if kk == k and (tag, k, c) not in store)
            if not todo:
                continue
            half = 2 ** (k - 1)
            jobs = [(frame(c - half), frame(c)) for c in todo]

            def consume(jn, img, k=k, todo=todo, half=half):
                c = todo[jn]
                store.put((tag, k, c), merge(img, block(k - 1, c)))

            remapper.run(jobs, lambda jn, k=k, todo=todo, half=half: block(k - 1, todo[jn] - half, raw=True), consume)
        # queries: the block ending at i needs no remap; every other is remapped once to i
        acc: dict[int, torch.Tensor] = {}
        cnt: dict = {}
        jobs, srcs = [], []
        for i in positions:
            (k0, c0), rest = queries[i][0], queries[i][1:]
            acc[i], cnt[i] = total(block(k0, c0), k0)
            for k, c in rest:
                jobs.append((frame(c), frame(i)))
                srcs.append((k, c, i))

        def consume_q(jn, img):
            k, c, i = srcs[jn]
            add, count = total(img, k)
            acc[i] = acc[i] + add
            cnt[i] = cnt[i] + count

        remapper.run(jobs, lambda jn: block(srcs[jn][0], srcs[jn][1]), consume_q)
        for i in positions:
            emit(frame(i), acc.pop(i), cnt[i])
        if window is not None:
            horizon = a + chunk - window - 2**K - 1
            for key in [key for key in store.keys() if key[0] == tag and key[2] < horizon]:
                store.pop(key)


def _run_table(style, remapper, sink, window, store: FrameStore, chunk: int, segment: int | None = None,
               bases: tuple[int, int] = (0, 0)):
    """Both passes of the remapping table. The backward pass (made first, so that the forward one can
    hand frames on in order) keeps each frame's backward blend until the forward pass finishes that
    frame; with a finite window it runs over ``segment`` frames at a time, each followed by the
    forward pass over the same frames, so that only a segment's blends are kept (a long clip's would
    go to disk). The frames are the same either way. ``bases``: the forward pass's positions start
    after ``bases[0]`` (frames before this one in the video), the backward pass's after ``bases[1]``
    (frames after its last), see :func:`_table_pass`."""
    n = len(style)
    weighted = remapper.weighted
    back_count: dict = {}  # frame -> count of its backward blend (unweighted; weighted, it is stored)

    def keep_backward(f, total, count):
        if weighted:  # keep the weight map with the payload
            store.put(("bwd", f), torch.cat([total / count, count]))
        else:
            store.put(("bwd", f), total / count)
            back_count[f] = count

    def finish(f, total, count):
        back = store.get(("bwd", f))
        own = remapper.entries(style, [f])[0]  # counted in both directions, with weight 1
        if weighted:
            back, cb, own = back[:-1] * back[-1:], back[-1:], own[:-1]
        else:
            cb = back_count.pop(f)
            back = back * cb
        sink(f, (total + back - own) / (count + cb - 1), own)
        store.pop(("bwd", f))

    backward, forward = list(range(n - 1, -1, -1)), list(range(n))
    bf, bb = bases
    for s, e in table_segments(n, segment if window is not None else None):
        # frames e-1 down to s are positions n-e+1 .. n-s of the reversed clip (after bb)
        _table_pass(style, remapper, store, window, backward, "B", keep_backward, chunk,
                    (bb + n - e + 1, bb + n - s), bb)
        for key in [k for k in store.keys() if k[0] == "B"]:
            store.pop(key)
        _table_pass(style, remapper, store, window, forward, "F", finish, chunk, (bf + s + 1, bf + e), bf)
        if window is not None:  # what comes next reads frames from e - window on (a reader may drop the rest)
            style.release(e - window - 1)
            remapper.guide.release(e - window - 1)


def segment_frames(max_segment: int, n: int, window: int, chunk: int) -> int:
    """Frames per segment when ``run_deflicker(max_segment=)`` asks for at most ``max_segment``: at
    least 4 windows (with the table's reach), a multiple of ``chunk``."""
    return -(-max(max_segment, 4 * (window + 2 ** table_levels(n, window))) // chunk) * chunk


def table_segment(n: int, window: int | None, size: tuple[int, int], channels: int, budget: int,
                  chunk: int) -> int | None:
    """Frames per segment of the backward pass (:func:`_run_table`): all of them (None) when their
    blends fit ``budget`` bytes beside the table's own entries (float16, ``channels`` a pixel), else as
    many as fit, in whole chunks, and at least 4 windows (each segment recomputes about a window of
    entries: 2% more remaps at 64 frames of window 15, 0.4% at 256)."""
    entry = channels * size[0] * size[1] * 2
    if window is None:
        return None
    span = window + 2 ** table_levels(n, window)
    table = 4 * (span + chunk) * entry  # each pass's entries within reach of its next positions
    if n * entry + table <= budget:
        return None
    seg = max(4 * span, (budget - table) // entry)
    seg = -(-seg // chunk) * chunk
    return None if seg >= n else seg


def keyframe_sources(i: int, keys: Sequence[int], shot: tuple[int, int] | None = None) -> list[tuple[int, float]]:
    """The keyframes frame ``i`` is rendered from, with their distance weights: the nearest one before
    and the nearest one after it (weights falling linearly with distance), or the one on its side.
    ``keys`` sorted; ``shot=(a, b)``: only keyframes in frames a..b-1 count, where there are any."""
    if shot is not None:
        inside = keys[bisect.bisect_left(keys, shot[0]):bisect.bisect_left(keys, shot[1])]
        keys = inside or keys
    at = bisect.bisect(keys, i)
    lo = keys[at - 1] if at > 0 else None
    hi = keys[at] if at < len(keys) else None
    if lo is not None and hi is not None:
        return [(lo, (hi - i) / (hi - lo)), (hi, (i - lo) / (hi - lo))]
    return [((lo if lo is not None else hi), 1.0)]


def _run_keyframes(guide: FrameSource, keyframes: Mapping[int, torch.Tensor], remapper, sink, chunk: int,
                   shots: Sequence[tuple[int, int]] = (), first_frame: int = 0):
    """Every frame that is not a keyframe from the keyframes around it, in its own shot: a frame whose
    shot has no keyframe takes the nearest ones of the others (said once per such shot, numbered as in
    the video the clip starts at ``first_frame`` of, with the files' names where the guide has the
    ``path`` of a folder of images, as the command line's has)."""
    from ..video import frames_said

    n = len(guide)
    keys = sorted(keyframes)
    dev = remapper.device
    shot_of = {}
    for a, b in shots or [(0, n)]:
        if not any(a <= k < b for k in keys):
            log.warning("frames %s, a shot of their own, hold no keyframe: rendered from keyframes of other "
                        "shots; add a keyframe in that shot",
                        frames_said(getattr(guide, "path", None), first_frame + a, first_frame + b - 1))
        for i in range(a, b):
            shot_of[i] = (a, b)
    for a in range(0, n, chunk):
        targets = list(range(a, min(n, a + chunk)))
        acc: dict[int, torch.Tensor] = {}
        jobs, weights = [], []
        for i in targets:
            if i in keyframes:
                acc[i] = keyframes[i].to(dev, torch.float32)
                continue
            acc[i] = torch.zeros(remapper.channels, *guide.size, device=dev)
            for k, wgt in keyframe_sources(i, keys, shot_of[i]):
                jobs.append((k, i))
                weights.append(wgt)

        if remapper.weighted:
            # each keyframe's remap also counts by how well the guide survives it, per pixel: where
            # one keyframe cannot show the content (it is hidden there, or has left the frame) the
            # other one paints it; where neither can, the distance weights decide (the floor)
            norm = {i: torch.zeros(1, *guide.size, device=dev) for i in acc if i not in keyframes}

            def fetch(jn):
                img = keyframes[jobs[jn][0]].to(dev, torch.float32)
                return torch.cat([img, torch.ones_like(img[:1])])

            def consume(jn, img):
                c = remapper.channels
                w = weights[jn] * (img[c:] + KEYFRAME_WEIGHT_FLOOR)
                acc[jobs[jn][1]] += img[:c] * w
                norm[jobs[jn][1]] += w
        else:
            norm = {}

            def fetch(jn):
                return keyframes[jobs[jn][0]].to(dev, torch.float32)

            def consume(jn, img):
                acc[jobs[jn][1]] += img * weights[jn]

        remapper.run(jobs, fetch, consume)
        for i in targets:
            img = acc.pop(i)
            sink(i, img / norm.pop(i) if i in norm else img, None)
        # the frames after these read the guide from the last keyframe up to them on (the keyframes each
        # frame takes only move forward with it), or from themselves where none is before them
        t = targets[-1] + 1
        at = bisect.bisect_right(keys, t)
        guide.release(min(t, keys[at - 1]) if at else t)


def detect_cuts(guide: FrameSource, device="cpu", threshold: float = 0.08, ratio: float = 6.0,
                chunk: int = 32) -> list[int]:
    """Frames that start a new shot (hard cuts), from the guide video.

    Each frame is reduced to a 32x18 thumbnail; frame t starts a shot when the mean absolute
    difference to frame t-1 (values in [0, 1]) exceeds ``threshold`` and is ``ratio`` times the
    median difference of the 16 frames around it (motion and flashes raise the median, cuts do not), or
    when the two thumbnails are unrelated in structure (a montage that cuts every frame raises the median
    too; see :func:`cuts_from_thumbnails`).
    """
    n = len(guide)
    thumbs = []
    for a in range(0, n, chunk):
        thumbs.append(cut_thumbnails(guide.load(list(range(a, min(n, a + chunk))), device)).cpu())
    return cuts_from_thumbnails(torch.cat(thumbs), threshold, ratio)


def cut_thumbnails(frames: torch.Tensor) -> torch.Tensor:
    """What :func:`detect_cuts` compares: ``(B, 3, H, W)`` frames in [0, 1] as ``(B, 3, 18, 32)``."""
    import torch.nn.functional as F

    return F.adaptive_avg_pool2d(frames, (18, 32))


def frame_thumbnail(frame) -> torch.Tensor:
    """:func:`cut_thumbnails` of one ``(H, W, 3)`` uint8 frame on the host, from exact integer sums
    (an integral image) over the same cells as ``adaptive_avg_pool2d``: ten times cheaper than
    converting a 1080p frame to float first, for a pass that reads a long clip only for its cuts."""
    import cv2

    h, w = frame.shape[:2]
    sums = cv2.integral(np.ascontiguousarray(frame), sdepth=cv2.CV_64F)  # (h + 1, w + 1, 3)
    y0, y1 = (np.arange(18) * h) // 18, -(-(np.arange(1, 19) * h) // 18)
    x0, x1 = (np.arange(32) * w) // 32, -(-(np.arange(1, 33) * w) // 32)
    total = sums[y1][:, x1] - sums[y0][:, x1] - sums[y1][:, x0] + sums[y0][:, x0]
    area = ((y1 - y0)[:, None] * (x1 - x0)[None, :])[..., None]
    return torch.from_numpy((total / (area * 255.0)).astype(np.float32)).permute(2, 0, 1)


def thumbnails_of(frames, size: tuple[int, int] | None = None, workers: int | None = None, chunk: int = 16):
    """:func:`frame_thumbnail` of every ``(H, W, 3)`` uint8 frame of an iterable (resized to ``size``
    first where it differs), ``(T, 3, 18, 32)``, made by ``workers`` threads (OpenCV releases the GIL;
    default: up to 8 of the CPU's cores) while the next frames decode, ``chunk`` frames at a time so
    that no more than that are held: a 1080p frame's thumbnail takes ~13 ms, and a long clip's cut
    pass runs before any other work."""
    from concurrent.futures import ThreadPoolExecutor

    def one(f):
        if size is not None and f.shape[:2] != tuple(size):
            from ..video import resize_frame

            f = resize_frame(f, size)
        return frame_thumbnail(f)

    workers = workers or max(1, min(8, (os.cpu_count() or 2) - 1))
    out, batch = [], []
    with ThreadPoolExecutor(workers) as pool:
        for f in frames:
            batch.append(f)
            if len(batch) == chunk:
                out.extend(pool.map(one, batch))
                batch = []
        out.extend(pool.map(one, batch))
    return torch.stack(out) if out else torch.empty(0, 3, 18, 32)


def cuts_from_thumbnails(t: torch.Tensor, threshold: float = 0.08, ratio: float = 6.0,
                         unrelated: float = 0.5) -> list[int]:
    """:func:`detect_cuts` from the clip's :func:`cut_thumbnails` (made while reading it, say).

    A change over ``threshold`` also starts a shot where the two thumbnails are unrelated: their best
    normalised correlation over shifts of up to 3 cells (a tenth of the width) is under ``unrelated``.
    That finds the cuts of a montage that cuts every frame or two, where every change is large and the
    median rule sees none, while a strobe or a flash (a change of gain) and a pan (a shift) keep their
    correlation (0.9 and more, measured on the registry clips; consecutive frames of one shot do not go
    under 0.6 there, while frames of different shots are under 0.5 four times in five).
    """
    if len(t) < 2:
        return []
    d = (t[1:] - t[:-1]).abs().mean(dim=(1, 2, 3))  # d[k]: change from frame k to k + 1
    cuts, doubt = [], []
    for k in range(len(d)):
        if d[k] <= threshold:
            continue
        around = torch.cat((d[max(0, k - 8) : k], d[k + 1 : k + 9]))
        local = around.median().item() if len(around) else 0.0
        (cuts if d[k] > ratio * local else doubt).append(k)
    if doubt:
        doubt = torch.tensor(doubt)
        corr = thumbnail_correlation(t[doubt], t[doubt + 1])
        cuts += doubt[corr < unrelated].tolist()
    return sorted(k + 1 for k in cuts)


def thumbnail_correlation(a: torch.Tensor, b: torch.Tensor, reach: int = 3) -> torch.Tensor:
    """The best normalised cross-correlation of ``(K, 3, h, w)`` thumbnails with those of ``b``, pair by
    pair, over shifts of up to ``reach`` cells each way (their overlap only), ``(K,)``: 1 for the same
    picture moved or brightened, about 0 for unrelated ones. A flat overlap correlates with nothing (0)."""
    import torch.nn.functional as F

    k, c, h, w = a.shape
    a, b = a.float() - a.float().mean((1, 2, 3), keepdim=True), b.float() - b.float().mean((1, 2, 3), keepdim=True)
    a, one = a.reshape(1, k * c, h, w), torch.ones_like(b)

    def over(x, kernel):  # each pair's sums over each shift's overlap of x (zero-padded) times its kernel
        return F.conv2d(F.pad(x, (reach,) * 4), kernel, groups=k)[0]  # (K, 2 reach + 1, 2 reach + 1)

    n, sa, sb = over(torch.ones_like(a), one), over(a, one), over(torch.ones_like(a), b)
    cov = over(a, b) - sa * sb / n
    var = (over(a * a, one) - sa * sa / n) * (over(torch.ones_like(a), b * b) - sb * sb / n)
    corr = torch.where(var > 1e-8 * n * n, cov / var.clamp_min(1e-30).sqrt(), torch.zeros_like(cov))
    return corr.flatten(1).amax(1)


def _blend_sink(sink: Sink, offset: int, detail: bool, channels: int = 3) -> ModeSink:
    """What a mode hands its finished frames to: ``(shot-local index, blend, own entry)``. The frame
    goes on to ``sink`` at its clip index; with ``detail`` the blend carries the guide blend
    (after the ``channels`` of colour and alpha) and the frame's own entry its style and guide (the
    same channels), already loaded by the mode, and the frame's detail is restored first."""
    if not detail:
        return lambda i, img, own: sink(offset + i, img)
    c = channels

    def restored(i, img, own):
        sink(offset + i, restore_detail(img[:c], img[c:c + 3], own[:c], own[c:c + 3]))

    return restored


def _entry_channels(mode: str, error_sigma="auto", detail="auto", colour: int = 3) -> int:
    """Channels of an image in flight: colour (``colour``: 4 with alpha), the weight map when weighted,
    the guide blend with detail."""
    return colour + (resolve_error_sigma(error_sigma, mode) is not None) + 3 * resolve_detail(detail, mode)


def store_bytes(mode: str, n: int, size: tuple[int, int], window, error_sigma="auto", detail="auto",
                budget: int | None = None, colour: int = 3) -> int:
    """The most a run keeps in its :class:`FrameStore` at once, in bytes (float16): what goes to the
    host and then to disk beyond its budgets. Table mode keeps each frame's backward blend until the
    forward pass reaches it: a shot of ``n`` frames holds ``n`` of them (with a finite window and a
    ``budget``, only a segment's: :func:`table_segment`), plus the table entries of one window; the
    other modes keep nothing there. ``n``: the longest shot (at most the clip)."""
    if mode != "table":
        return 0
    channels = _entry_channels(mode, error_sigma, detail, colour)
    win = normalize_window(window)
    kept = n
    if budget is not None:
        kept = table_segment(n, win, size, channels, budget, 1) or n
    live = kept + 2 * (n if win is None else min(n, win + 2 ** table_levels(n, win)))
    return live * channels * size[0] * size[1] * 2


def store_budget(device) -> int:
    """What a run's store keeps off the disk on ``device``: its host tier and its share of the GPU."""
    dev = torch.device(device)
    return HOST_BUDGET + (int(torch.cuda.mem_get_info(dev)[0] * DEVICE_SHARE) if dev.type == "cuda" else 0)


def count_remaps(mode: str, n: int, window: int | None, keyframes: Sequence[int] = (),
                 shots: Sequence[tuple[int, int]] = (), segment: int | None = None,
                 bases: tuple[int, int] = (0, 0)) -> int:
    """PatchMatch runs a mode will make: for progress bars and cost estimates (keyframes mode: with
    the clip's ``shots``, see :func:`keyframe_sources`; table mode: its backward ``segment`` and the
    ``bases`` of its passes, see :func:`_run_table`)."""
    if mode in ("window", "all_pairs"):
        return len(window_pairs(n, window))
    if mode == "table":
        return count_table_remaps(n, window, segment, bases)
    if mode == "keyframes":
        ks, total = sorted(keyframes), 0
        keyset = set(ks)
        for a, b in shots or [(0, n)]:
            total += sum(len(keyframe_sources(i, ks, (a, b))) for i in range(a, b) if i not in keyset)
        return total
    raise InputError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")


def _check_arguments(mode: str, style, batch, keyframes, device_budget, first_frame, total_frames, n: int) -> None:
    """What would otherwise be ignored without a word (a style in keyframes mode, keyframes in another
    mode, a batch of 0) or fail deep inside (a negative first frame) is refused up front, in one line."""
    def count(name, value, least):
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            raise InputError(f"{name} must be an integer >= {least}, got {value!r}")

    count("batch", batch, 1)
    count("device_budget", device_budget, 0)
    count("first_frame", first_frame, 0)
    count("total_frames", total_frames, 0)
    if total_frames is not None and total_frames < first_frame + n:
        raise InputError(f"total_frames ({total_frames}) must be at least first_frame + the clip's frames "
                         f"({first_frame} + {n}): it is the length of the video the clip was cut from")
    if mode == "keyframes" and style is not None:
        raise InputError("keyframes mode renders every frame from the keyframes and does not use a style video: "
                         "pass style=None, or blend the style with mode='table' or 'window'")
    if mode != "keyframes" and keyframes is not None:
        raise InputError(f"keyframes are used in keyframes mode only, not in mode {mode!r}: pass mode='keyframes' "
                         "(and no style video), or drop the keyframes")


def _check_guide_and_matches(guide, matches) -> None:
    """A guide of None failed in the NaN check ("'NoneType' object is not iterable"), and ``matches`` other
    than a :class:`MatchCache` (a dict) in the run, with Python's errors."""
    if guide is None:
        raise InputError("guide is None: the original video is needed, the matches are found on it "
                         "(deflicker(guide, style), or deflicker(guide, mode='keyframes', keyframes={...}))")
    if matches is not None and not isinstance(matches, MatchCache):
        raise InputError(f"matches must be a MatchCache (flickerless.blend.deflicker.MatchCache()) kept across calls "
                         f"over the same guide, or None, got {type(matches).__name__}")


def _cut_list(cuts, n: int) -> list[int]:
    """The frames that start shots, as given (``cuts``: a list of frame numbers 0..n-1; frame 0 starts
    one anyway, and was refused), checked: a string, a lone number, or a frame outside the clip was taken
    apart or dropped without a word."""
    if isinstance(cuts, (str, bytes)) or not isinstance(cuts, Iterable):
        raise InputError(f"cuts must be True (find them), False (one shot) or a list of frame numbers, got {cuts!r}")
    out = []
    for c in cuts:
        if isinstance(c, bool) or not isinstance(c, (int, np.integer)):
            raise InputError(f"cuts: a cut is the number of the frame that starts a shot, got {c!r}")
        if not 0 <= c < n:
            raise InputError(f"cuts: frame {int(c)} cannot start a shot of a clip of {n} frames (0..{n - 1})")
        out.append(int(c))
    return sorted(set(out) - {0})


def run_deflicker(
    guide: FrameSource,
    style: FrameSource | None,
    sink: Sink,
    mode: str = "table",
    window=15,
    device=None,
    batch: int | None = None,
    keyframes: Mapping[int, torch.Tensor] | None = None,
    options: PatchMatchOptions | None = None,
    progress=False,
    host_budget: int | None = None,
    device_budget: int | None = None,
    tmpdir: str | None = None,
    cuts=True,
    matches: MatchCache | None = None,
    error_sigma: float | str | None = "auto",
    detail: bool | str = "auto",
    exposure: bool | str = "auto",
    exposure_match: bool | str = False,
    first_frame: int = 0,
    max_segment: int | None = None,
    total_frames: int | None = None,
) -> dict:
    """Streaming core of :func:`deflicker`: reads from frame sources, hands each finished frame to
    ``sink(index, frame (C, H, W) float on device)`` in increasing index (C: the style's channels, 4
    with alpha). Returns run statistics.

    cuts: ``True`` detects hard cuts in the guide (:func:`detect_cuts`) and deflickers each shot on
    its own, so nothing is blended across a cut; ``False`` treats the clip as one shot; a list gives
    the frames that start shots. In keyframes mode a frame is rendered from the keyframes of its own
    shot; one whose shot holds none, from the nearest keyframes of the others (with a warning).

    matches: a :class:`MatchCache` kept across calls over the same guide: pairs met before start
    from their last field (faster; the engine's in-loop passes).

    progress: ``True`` shows a tqdm bar of the frame pairs remapped; a callable is called as
    ``progress(done, total)`` (pairs) once before the first pair and after each batch, in the calling
    thread: a GUI's bar, and a way to stop the run (an exception it raises ends the run and comes out
    of this call; the sink has been given the frames finished before it).

    error_sigma: weight each remapped frame per pixel by exp(-e / sigma^2), e the local squared
    error of the guide remapped the same way, so content the remap could not find (occlusions, fast
    motion) blurs less into the result. ``"auto"`` (default): :data:`DEFAULT_ERROR_SIGMA` (0.05) in
    window, table and keyframes modes, a plain mean in all_pairs; ``None`` or 0: a plain mean (see
    :func:`resolve_error_sigma`). In keyframes mode the weight multiplies each keyframe's distance
    weight (with a floor, so that where both keyframes fail the distances decide). In table mode each
    entry carries its per-pixel weight as a last channel, remapped with its colour, so a frame's
    weight at i is the product of the weights of the remaps that brought it there.

    detail: guided detail restoration (:mod:`flickerless.blend.detail`): the guide is blended
    alongside the style, and each frame's own fine detail is added back where the guide shows the
    blend lost it. ``"auto"`` (default): on in window and table modes; entries then carry 3 more
    channels (7 in all with the weighting, against 3 for a plain blend).

    exposure: each remapped frame's colour follows the guide's change of level between its two frames,
    scaled by how the style's levels follow the guide's (:func:`follow_exposure`), so that a fade or a
    light going on is not blended with the frames before it. ``"auto"`` (default): on where the remaps
    are weighted (``error_sigma``), off for a plain mean (see :func:`resolve_exposure`).

    exposure_match: PatchMatch compares each pair's guides brought to one level (the gain the frames'
    content agrees on, :func:`level_gains`), so that in a fade or a light change a frame is matched to
    the same content in the other frame, not to whatever there has the same brightness. Exposure
    following then moves each remap by that gain pixel by pixel, where the light changed
    (:func:`level_change`), and in keyframes mode the weights are taken on the guide error left after
    the gain (a keyframe at another level counts; a black one, which no gain brings to the target, does
    not); elsewhere the weights use the guides as they are. Off by default: it suits a style that
    ignores the lighting (a painting held over a fade, with ``exposure=False``: 16.8 -> 33.5 dB) and
    fades with styles that follow the light (+2.8 to +4.8 dB in table mode, +0.4 to +5.9 with keyframes),
    and costs where a style is not linear in the level (a false-colour or posterised look carried by
    keyframes into a fade: -0.2 to -2.3 dB) or flickers over a fade (-0.6 dB, up to 1.3x the temporal
    error; BENCHMARKS.md, "Session 36" and "Session 37").
    ``True``, or ``"auto"``: on where the remaps are weighted (``error_sigma``).

    first_frame: where the clip starts in a longer video, when it is a range of one read with its
    neighbours (the command line's ``--frames``, ``--resume`` and several devices): PatchMatch is
    seeded per pair of video frames, and table mode lays its blocks out from the video's first frame
    (forward) and last frame (backward, ``total_frames``: the video's length, default the clip's
    end), so the range's frames come out exactly as in a run over the whole video.

    max_segment: table mode with a finite window makes a shot's backward blends at most this many
    frames at a time (:func:`_run_table`; fewer where the store's budgets say so), and tells the frame
    sources when frames will not be read again (``FrameSource.release``): a reader that decodes as it
    goes (:class:`flickerless.video.StreamingFrames`) then holds a stretch of the clip, not all of it.
    The frames are the same whatever the segments."""
    if mode not in MODES:
        raise InputError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    _check_guide_and_matches(guide, matches)
    guide = as_source(guide, "guide")
    style = None if style is None else as_source(style, "style")
    if isinstance(options, Mapping):
        options = PatchMatchOptions.from_kwargs(**options)
    elif options is not None and not isinstance(options, PatchMatchOptions):
        raise InputError(f"options must be a PatchMatchOptions or a dict of its fields, got {type(options).__name__}")
    _check_arguments(mode, style, batch, keyframes, device_budget, first_frame, total_frames, len(guide))
    if not (progress is None or callable(progress) or isinstance(progress, (numbers.Integral, np.bool_))):
        # a bar object (tqdm, ComfyUI's ProgressBar) passed as it is was read as True: a bar of its own, the
        # caller's never moved
        raise InputError(f"progress: True (a progress bar), False, or a function called as progress(done, total); "
                         f"got {type(progress).__name__}: for a bar of your own, pass a function that updates it")
    error_sigma = resolve_error_sigma(error_sigma, mode)
    detail = resolve_detail(detail, mode)
    exposure = resolve_exposure(exposure, mode, error_sigma)
    exposure_match = resolve_exposure(exposure_match, mode, error_sigma, "exposure_match")
    n = len(guide)
    if n == 0:
        raise InputError("the guide video has no frames")
    if guide.channels != 3:
        raise InputError(f"the guide must be RGB (3 channels), got {guide.channels}: only the style may carry alpha")
    win = normalize_window(window)
    dev = resolve_device(device)
    opts = options or PatchMatchOptions()
    if mode == "keyframes":
        if not keyframes:
            raise InputError("keyframes mode needs at least one keyframe")
        # a mapping that loads its keyframes when asked (the command line's) says their size; images given
        # are (C, H, W) tensors under integer frame numbers
        for key, img in _keyframe_items(keyframes) if not hasattr(keyframes, "size") else ():
            _keyframe_index(key)
            if not isinstance(img, torch.Tensor) or img.ndim != 3 or img.shape[0] not in (3, 4):
                what = f"shape {tuple(img.shape)}" if hasattr(img, "shape") else type(img).__name__
                raise InputError(f"keyframe {key}: run_deflicker takes (C, H, W) float tensors in [0, 1], got {what} "
                                 "(flickerless.deflicker takes images as arrays too)")
        bad = [k for k in keyframes if not 0 <= k < n]
        if bad:
            raise InputError(f"keyframe indices {sorted(bad)} are outside the guide video's frames 0..{n - 1}")
        # a mapping that loads its keyframes when asked says their size instead (the command line's)
        sizes = ({k: tuple(keyframes.size) for k in keyframes} if hasattr(keyframes, "size")
                 else {k: tuple(img.shape[-2:]) for k, img in keyframes.items()})
        for k, (h, w) in sizes.items():
            if (h, w) != guide.size:
                raise InputError(f"keyframe {k} is {w}x{h}, the guide is {guide.size[1]}x{guide.size[0]}")
        if hasattr(keyframes, "size"):
            colour = getattr(keyframes, "channels", 3)
        else:
            found = {int(img.shape[0]) for img in keyframes.values()}
            if len(found) > 1:
                raise InputError("keyframes mix RGB and RGBA images: give all of them alpha, or none")
            colour = found.pop()
    else:
        if style is None:
            raise InputError(f"mode {mode!r} needs a stylised video")
        colour = style.channels
        if len(style) != n:
            raise InputError(f"guide has {n} frames but style has {len(style)}: they must match frame for frame")
        if style.size != guide.size:
            raise InputError(
                f"guide is {guide.size[1]}x{guide.size[0]} but style is {style.size[1]}x{style.size[0]}: "
                "sizes must match (the command line can --resize the style to the guide)"
            )
    bs = batch or _default_batch(dev, guide.size)
    if cuts is False or cuts is None:
        starts = []
    elif cuts is True:
        starts = detect_cuts(guide, dev)
        if starts:
            # numbered as in the whole video, where this is a range of it (the command line's --frames)
            from ..video import frames_said

            log.info("scene cuts at frames [%s]: each shot is deflickered on its own",
                     ", ".join(frames_said(getattr(guide, "path", None), first_frame + c) for c in starts))
    else:
        starts = _cut_list(cuts, n)
    shots = list(zip([0] + starts, starts + [n]))
    chunk = max(4, bs)
    if device_budget is None:
        device_budget = store_budget(dev) - HOST_BUDGET
    host_budget = HOST_BUDGET if host_budget is None else host_budget
    # table mode: a long shot's backward blends are made a segment at a time, as many as the budgets hold
    channels = _entry_channels(mode, error_sigma, detail, colour) if mode == "table" else colour
    segments = {(a, b): table_segment(b - a, win, guide.size, channels, device_budget + host_budget, chunk)
                for a, b in shots} if mode == "table" else {}
    if max_segment and win is not None:
        least = segment_frames(max_segment, n, win, chunk)
        segments = {(a, b): (min(seg or b - a, least) if b - a > least else seg) for (a, b), seg in segments.items()}
    # table mode: each shot's positions counted from the video's first frame (forward) and its last
    # (backward), whatever range of it this clip is, so that its blocks fall as in a whole-video run
    video_end = first_frame + n if total_frames is None else int(total_frames)
    bases = {(a, b): (first_frame + a, video_end - first_frame - b) for a, b in shots}
    if mode == "keyframes":  # one pass over the clip, each frame from the keyframes of its shot
        total = count_remaps(mode, n, win, list(keyframes), shots)
    else:
        total = sum(count_remaps(mode, b - a, win, segment=segments.get((a, b)), bases=bases[(a, b)])
                    for a, b in shots)
    bar = None
    if callable(progress):
        bar = _Reporting(progress, total)
    elif progress and total:  # nothing to remap (one frame, window 0): no bar that stays at 0
        from tqdm.auto import tqdm

        bar = tqdm(total=total, unit="pair", desc=f"deflicker ({mode})", dynamic_ncols=True)
    if matches is not None:
        matches.bind(n, guide.size)
    remapper = Remapper(guide, opts, dev, bs, bar, matches, error_sigma, carry_guide=detail, exposure=exposure,
                        exposure_match=exposure_match, level_weights=mode == "keyframes")
    remapper.first_frame = int(first_frame)
    remapper.channels = colour
    store = FrameStore(dev, device_budget=device_budget, host_budget=host_budget, tmpdir=tmpdir)
    remapper.relief.append(store.leave_device)
    try:
        with torch.inference_mode():
            # keyframes mode: one pass over the clip, each frame from the keyframes of its own shot
            passes = shots if mode != "keyframes" else [(0, n)]
            for a, b in passes:
                g, s = (SubFrames(guide, a, b), SubFrames(style, a, b)) if len(passes) > 1 else (guide, style)
                out = _blend_sink(sink, a, detail, colour)
                remapper.reset(g, a)
                store.close()  # a shot's table entries are of no use to the next
                if mode == "table":
                    _run_table(s, remapper, out, win, store, chunk, segments[(a, b)], bases[(a, b)])
                elif mode == "window":
                    span = 2 * min(b - a, (b - a) if win is None else win)
                    _run_window(s, remapper, out, win, max(1, 4 * bs // max(1, span)))
                elif mode == "all_pairs":
                    _run_reference(s, remapper, out, win)
                else:
                    _run_keyframes(guide, keyframes, remapper, out, chunk, shots, first_frame)
        stats = {
            "frames": n,
            "shots": len(shots),
            "remaps": remapper.runs if mode != "all_pairs" else total,
            "batch": remapper.batch,
            "peak_store_host_bytes": store.peak_host_bytes,
            "peak_store_disk_bytes": store.peak_disk_bytes,
        }
    finally:
        store.close()
        if bar is not None:
            bar.close()
    return stats


class _Reporting:
    """A ``progress(done, total)`` callable behind the bar interface the remapper updates."""

    def __init__(self, report, total: int):
        self.report, self.total, self.done = report, int(total), 0
        report(0, self.total)

    def update(self, n: int) -> None:
        self.done += int(n)
        self.report(self.done, self.total)

    def close(self) -> None:
        pass


def warm_up(device, size: tuple[int, int], mode: str = "table", window=15, options: PatchMatchOptions | None = None,
            channels: int = 3, error_sigma: float | str | None = "auto", detail: bool | str = "auto",
            exposure: bool | str = "auto", exposure_match: bool | str = False) -> float:
    """Make a GPU ready for a run with these settings, by running it on four frames of noise of the same
    ``size`` (enough for table mode to remap a stored block as well as a frame, and for keyframes mode
    to render a frame from two keyframes): the CUDA context is made, and every kernel variant the run
    launches is loaded (or compiled, on a machine that has not run it before). The command line does
    this in a thread while it decodes and looks for cuts, work that does not need the GPU; the first
    real pairs then start at once. On a CUDA device it costs a few frame pairs' work; on any other it
    does nothing (the CPU kernels load in about a second, and this would compete with the decoding
    for the cores). Returns the seconds it took; a failure is logged at debug level and left to the
    real run to report."""
    import time

    dev = torch.device(device)
    if dev.type != "cuda":
        return 0.0
    t0 = time.perf_counter()
    try:
        with torch.cuda.device(dev):
            gen = torch.Generator(device=dev).manual_seed(0)
            guide = torch.rand(4, 3, *size, device=dev, generator=gen)
            style = torch.rand(4, channels, *size, device=dev, generator=gen)
            keyframes = {0: style[0], 3: style[3]} if mode == "keyframes" else None
            run_deflicker(TensorFrames(guide), None if keyframes else TensorFrames(style), lambda i, img: None,
                          mode=mode, window=window, device=dev, batch=1, keyframes=keyframes, options=options,
                          cuts=False, error_sigma=error_sigma, detail=detail, exposure=exposure,
                          exposure_match=exposure_match)
            del guide, style, keyframes
            torch.cuda.synchronize(dev)
    except Exception as e:  # noqa: BLE001 - the run that follows meets the same problem and says it
        log.debug("warming up %s failed: %s", dev, e)
    finally:
        try:
            with torch.cuda.device(dev):  # a thread's current device is cuda:0, not necessarily this one
                torch.cuda.empty_cache()  # what the run measures as free (its batch) is as before
        except Exception:  # noqa: BLE001 - a device that failed above may fail here too
            pass
    return time.perf_counter() - t0


class _DefaultWindow(int):
    """deflicker's default window, 15: an int, told apart from a window the caller gave (keyframes mode
    has none, and one given there was ignored without a word)."""


_DEFAULT_WINDOW = _DefaultWindow(15)


def deflicker(
    guide,
    style=None,
    mode: str = "table",
    window=_DEFAULT_WINDOW,
    device=None,
    batch: int | None = None,
    keyframes: Mapping[int, object] | None = None,
    progress=False,
    device_budget: int | None = None,
    cuts=True,
    matches: MatchCache | None = None,
    error_sigma: float | str | None = "auto",
    detail: bool | str = "auto",
    exposure: bool | str = "auto",
    exposure_match: bool | str = False,
    first_frame: int = 0,
    total_frames: int | None = None,
    **patchmatch_options,
):
    """Remove flicker from ``style`` using ``guide`` (the original video) for correspondence.

    guide, style: arrays ``(T, H, W, 3)`` or tensors ``(T, 3, H, W)`` on any device, uint8 (0-255) or
        floats in [0, 1]. The result is of the same kind, type (uint8 or float) and device as ``style``
        (as ``guide`` in keyframes mode); other integer types are refused, not misread, and so are floats
        clearly off [0, 1] (0-255 as floats: divide by 255), or holding NaN or infinite values. A style (or
        keyframes) with alpha, ``(T, H, W, 4)`` or ``(T, 4, H, W)``: matched on its colour, the alpha
        blended alongside through the same fields and weights (the colour comes out as without it). A list
        (or a generator) of frames is read as the array, or with ``(C, H, W)`` tensor frames the tensor,
        they make up. Tensors are read, not differentiated through: ones that require grad are detached,
        and the result has no autograd history (``loss.backward()`` on it fails), whatever the inputs; a
        tensor result is a new contiguous ``(T, C, H, W)`` one (a channels_last input's too).
    mode: ``"table"`` (default, O(n log n)), ``"window"`` (O(n w)), ``"keyframes"`` or ``"all_pairs"``.
    window: frames on each side blended into each frame (default 15); ``None`` or ``inf`` for the whole
        video. Keyframes mode takes none.
    keyframes: keyframes mode: ``{frame index: image}``, each image like one frame of ``guide``.
    device: ``"cuda:1"``, ``"cpu"``...; default the input tensor's GPU, else CUDA if any, else CPU.
    batch: frame pairs per PatchMatch batch (default from free GPU memory; 4 on CPU).
    progress: ``True``: a progress bar (tqdm) of the frame pairs remapped; a callable: called as
        ``progress(done, total)`` before the first pair and after each batch of pairs, in the calling
        thread, for a GUI's own bar; an exception it raises stops the run and comes out of this call.
    cuts: detect hard cuts in the guide and deflicker each shot on its own (default); ``False``: one
        shot; or the list of frames that start shots.
    device_budget: bytes of intermediate images kept on the GPU (default a quarter of free memory;
        0 keeps them in host RAM, then on disk, so GPU memory does not grow with the clip's length).
    matches: a :class:`MatchCache` reused across calls over the same guide (see there).
    error_sigma: weight remapped frames by how well the guide survives the same remap; ``"auto"``
        (default): 0.05 in window, table and keyframes modes, a plain mean in all_pairs; ``None`` or
        0: a plain mean (see :func:`run_deflicker`).
    detail: guided detail restoration, ``"auto"`` (default): on in window and table modes; ``False``
        (or ``None``, as for ``error_sigma``) returns the blend as it is (see :mod:`flickerless.blend.detail`).
    exposure: remapped frames follow the guide's changes of level (fades, lights, a camera's gain), scaled
        by how the style's levels follow the guide's; ``"auto"`` (default): on where the remaps are
        weighted (``error_sigma``), ``False``: off (see :func:`follow_exposure`).
    exposure_match: PatchMatch compares each pair's guides brought to the level their content agrees on, so a
        fade's frames are matched to the same content in brighter or darker frames; off by default (for a
        style that ignores the lighting; see :func:`run_deflicker` for where it costs), ``"auto"``: on where
        the remaps are weighted (see :func:`level_gains`).
    first_frame, total_frames: the index of ``guide``'s frame 0 in a longer video it was cut from, and
        that video's length (default: ``first_frame`` plus the clip's): PatchMatch is seeded per pair of
        that video's frames and table mode's blocks are laid out from its ends, so the frames of a
        stretch read with the neighbours they blend with come out as they do in the whole.
    patchmatch_options: fields of :class:`~flickerless.blend.patchmatch.PatchMatchOptions`
        (patch_sizes, iterations, guide_weight, samples, seed, ...), or ``quality="draft"|"fast"|
        "balanced"|"full"`` (:data:`~flickerless.blend.patchmatch.QUALITY`; fields given as well win).
    """
    opts = PatchMatchOptions.from_kwargs(_also=_DEFLICKER_ARGUMENTS, **patchmatch_options)
    _check_guide_and_matches(guide, matches)
    if mode == "keyframes" and window is not _DEFAULT_WINDOW:
        raise InputError("window: keyframes mode renders each frame from the keyframes either side of it, with no "
                         "window; leave window out")
    # frames that carry autograd history are read, not differentiated through; frames from a generator
    # are gathered (they are in memory anyway, and every mode reads a frame more than once)
    guide, style = (f.detach() if isinstance(f, torch.Tensor) else _indexable(f) for f in (guide, style))
    check_has_values(guide, "guide")
    check_has_values(style, "style")
    like = style if style is not None else guide
    as_tensor = isinstance(like, torch.Tensor)
    dev = resolve_device(device, like if as_tensor else None)
    check_finite(guide, "guide")
    if style is not None:
        check_finite(style, "style")
    g = as_source(guide, "guide")
    s = as_source(style, "style") if style is not None else None
    kf = None
    if keyframes is not None:
        kf = {}
        for k, v in _keyframe_items(keyframes):
            key = _keyframe_index(k)
            if isinstance(v, (np.ndarray, torch.Tensor)):  # NaN named before the range check reads it
                check_finite(v[None], f"keyframe {key}", one=True)
            kf[key] = _to_chw(v, g.size, f"keyframe {key}")
    n = len(g)
    h, w = g.size
    c = s.channels if s is not None else (next(iter(kf.values())).shape[0] if kf else 3)  # 4: with alpha
    if as_tensor:
        dtype = like.dtype  # float in [0, 1], or uint8 0-255 (the sources refuse other types)
        # host output from a GPU run: pinned (up to PIN_BYTES), so each frame's copy back is asynchronous
        # and the caller's next transfer to the GPU (the engine's VAE encode) is fast too
        pin = (like.device.type == "cpu" and dev.type == "cuda"
               and n * c * h * w * like.element_size() <= PIN_BYTES)
        out = torch.empty(n, c, h, w, device=like.device, dtype=dtype, pin_memory=pin)

        def sink(i, img):
            if dtype == torch.uint8:
                out[i].copy_(img.clamp(0, 1).mul_(255).round_(), non_blocking=pin)
            else:
                out[i].copy_(img.clamp_(0, 1), non_blocking=pin)

    elif np.issubdtype(np.asarray(like[0]).dtype, np.floating):  # float arrays in [0, 1] come back so,
        out = np.empty((n, h, w, c), dtype=np.asarray(like[0]).dtype)  # of the type they came in

        def sink(i, img):
            out[i] = img.clamp(0, 1).permute(1, 2, 0).cpu().numpy()

    else:
        out = np.empty((n, h, w, c), dtype=np.uint8)

        def sink(i, img):
            out[i] = to_hwc_uint8(img).cpu().numpy()

    run_deflicker(g, s, sink, mode=mode, window=window, device=dev, batch=batch, keyframes=kf, options=opts,
                  progress=progress, device_budget=device_budget, cuts=cuts, matches=matches,
                  error_sigma=error_sigma, detail=detail, exposure=exposure, exposure_match=exposure_match,
                  first_frame=first_frame, total_frames=total_frames)
    if as_tensor and out.is_pinned():
        torch.cuda.synchronize(dev)  # the copies into ``out`` were asynchronous
    return out


# deflicker's own parameters, suggested beside PatchMatch's options for a misspelt keyword (windw -> window)
_DEFLICKER_ARGUMENTS = tuple(p for p in inspect.signature(deflicker).parameters if p != "patchmatch_options")


def _indexable(frames):
    """Frames as given, or a generator's (or other one-pass iterable's) frames in a list. Tensors in a list
    are read as arrays, as the list's other frames are (one carrying autograd history, or bfloat16, which
    numpy has no type for, stopped the run with torch's error); a list of channels-first tensor frames
    (``list(video)``, what the engine's ``on_frame`` hands out) is one tensor, as the whole clip's is."""
    if frames is None:
        return None
    refuse_path(frames)  # a pathlib.Path was said to be of the wrong type, a str read as frames
    if not isinstance(frames, (np.ndarray, Sequence)) and not hasattr(frames, "__getitem__"):
        if not isinstance(frames, Iterable):
            raise InputError(f"frames must be an array (T, H, W, 3), a tensor (T, 3, H, W) or a list of frames, "
                             f"got {type(frames).__name__}")
        frames = list(frames)
    if isinstance(frames, (list, tuple)) and frames and all(_channels_first(f) for f in frames):
        return _stack_tensor_frames(frames)
    if isinstance(frames, (list, tuple)) and any(isinstance(f, torch.Tensor) for f in frames):
        frames = [_tensor_frame(f) if isinstance(f, torch.Tensor) else f for f in frames]
    return frames


def _channels_first(f) -> bool:
    """A ``(C, H, W)`` tensor frame. One that fits both layouts (3 or 4 pixels wide) is read as a list's
    frames always were, channels last."""
    return isinstance(f, torch.Tensor) and f.ndim == 3 and f.shape[0] in (3, 4) and f.shape[2] not in (3, 4)


def _stack_tensor_frames(frames) -> torch.Tensor:
    """``(C, H, W)`` tensor frames as one ``(T, C, H, W)`` tensor on their device, so they come back as
    a tensor of their own layout (read as arrays, they were refused as not ``(H, W, 3)``)."""
    first = frames[0]
    for i, f in enumerate(frames[1:], 1):
        if f.shape != first.shape or f.dtype != first.dtype or f.device != first.device:
            raise InputError(f"frame {i} is {f.dtype} of shape {tuple(f.shape)} on {f.device}, frame 0 {first.dtype} "
                             f"of shape {tuple(first.shape)} on {first.device}: every frame must be alike")
    return torch.stack([f.detach() for f in frames])


def _tensor_frame(f: torch.Tensor) -> np.ndarray:
    """One frame of a list, given as a tensor: an array of its values (bfloat16 and float16 as float32)."""
    f = f.detach()
    if f.is_floating_point() and f.dtype not in (torch.float32, torch.float64):
        f = f.float()
    return f.cpu().numpy()


def _keyframe_items(keyframes):
    if not isinstance(keyframes, Mapping):
        raise InputError(f"keyframes must be a mapping {{frame index: image}}, got {type(keyframes).__name__}"
                         + (": e.g. dict(zip(indices, images))" if isinstance(keyframes, (list, tuple)) else ""))
    return keyframes.items()


def _keyframe_index(k) -> int:
    """A keyframe's frame number: an integer (numpy's too); 3.7, True or "3" would be read as another."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise InputError(f"keyframes: {k!r} is not a frame number (keys are integer frame indices)")
    return int(k)


def _to_chw(img, size: tuple[int, int] | None = None, name: str = "a keyframe") -> torch.Tensor:
    """A keyframe as ``(C, H, W)`` float32 in [0, 1] (C 3, or 4 with alpha): from a ``(C, H, W)`` tensor
    or an ``(H, W, C)`` array or tensor, uint8 or float in [0, 1]. ``size``: the guide's ``(H, W)``,
    which tells the two apart where the shape alone cannot (a frame 3 pixels high). ``name``: what the
    errors call it (``"keyframe 24"``)."""
    if not isinstance(img, (torch.Tensor, np.ndarray)):
        if isinstance(img, (str, os.PathLike)):
            raise InputError(f"{name} is an image array or tensor, got the path {str(img)!r}: read it first "
                             "(e.g. np.asarray(PIL.Image.open(path).convert('RGB')))")
        img = np.array(img)  # a copy: a PIL image's array is read-only, which torch warned about
        if img.dtype == object:
            raise InputError(f"{name} is an image array or tensor (H, W, 3)")
    if isinstance(img, np.ndarray) and img.dtype not in (np.uint8, np.float16, np.float32, np.float64):
        raise InputError(f"{name} must be uint8 (0-255) or floats in [0, 1], got {img.dtype}")  # (named as numpy's)
    t = img if isinstance(img, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(img))
    if t.ndim != 3 or not ({3, 4} & {t.shape[0], t.shape[2]}):
        raise InputError(f"{name} must be an (H, W, 3) or (3, H, W) image (4 channels with alpha), got shape "
                         f"{tuple(t.shape)}")
    try:
        scale = _pixel_scale(t.dtype, f"{name}'s values", t)
    except ValueError as e:
        raise InputError(str(e)) from None
    chw, hwc = tuple(t.shape[1:]), tuple(t.shape[:2])
    if size is not None and chw != hwc and tuple(size) in (chw, hwc):
        channels_first = chw == tuple(size)
    elif size is not None and chw == hwc == tuple(size) and t.shape[0] == t.shape[2]:
        # a 3x3 frame: either layout fits, so each kind keeps its own (an array's frames are
        # (H, W, C), a tensor's (C, H, W)); it was read channels first, transposed
        channels_first = not isinstance(img, np.ndarray)
    else:
        channels_first = t.shape[0] == 3 or (t.shape[0] == 4 and t.shape[2] not in (3, 4))
    t = t if channels_first else t.permute(2, 0, 1)
    return t.to(torch.float32) / scale
