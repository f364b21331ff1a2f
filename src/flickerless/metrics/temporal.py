"""Temporal consistency through optical flow on the source video: Pixel-MSE and warping error.

Both take the flow from the **source** (input) video, not from the output, so an output that flickers
cannot hide it by having flow that follows its own flicker. Flow direction and warping (see
:mod:`flickerless.metrics.flow`): for each pair (t, t+1), ``F = flow(source[t+1], source[t])`` is the
backward flow on frame t+1's grid, and output frame t is sampled at ``p + F[p]`` (bilinear), giving
output frame t seen from frame t+1. Pixels whose sample falls outside frame t are left out (no padding).
If the output has another size than the source, the source is resized to the output's size first (and,
where their aspect ratios differ, centre-cropped to the output's first or stretched: ``fit``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from .flow import get_flow, occlusion_mask, pair_flows, warp
from .frames import as_uint8, fit_frame, fit_source, match_size

__all__ = ["TemporalScore", "pixel_mse", "warp_error", "temporal_scores", "source_flows"]


@dataclass
class TemporalScore:
    """``value``: the mean over frame pairs; ``per_pair[t]``: the error of pair (t, t+1) (NaN where no
    pixel was usable); ``coverage[t]``: the fraction of pixels that entered pair t's mean."""

    value: float
    per_pair: list[float] = field(default_factory=list)
    coverage: list[float] = field(default_factory=list)


def _check(output: np.ndarray, source: np.ndarray) -> None:
    if len(output) != len(source):
        raise InputError(f"the output has {len(output)} frames but the source has {len(source)}: "
                         "they must match frame for frame")
    if len(output) < 2:
        raise InputError("temporal metrics need at least 2 frames")


def source_flows(source, size: tuple[int, int] | None = None, flow="dis", forward: bool = False,
                 raft_weights: str | None = None, device=None, progress=None):
    """Backward (and with ``forward=True`` forward) flows between consecutive frames of the source,
    resized to ``size=(H, W)`` first when given. See :func:`flickerless.metrics.flow.pair_flows`."""
    src = as_uint8(source, "source")
    if size is not None:
        src = match_size(src, size)
    return pair_flows(src, get_flow(flow, raft_weights, device), forward=forward, progress=progress)


def _mean(values: list[float]) -> float:
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else float("nan")


def _pair_pixel_mse(o0: np.ndarray, o1: np.ndarray, backward: np.ndarray) -> tuple[float, float]:
    """Pixel-MSE of one pair and its coverage (see :func:`pixel_mse`)."""
    warped, valid = warp(o0, backward)
    d = (warped - o1.astype(np.float32))[valid]
    return (float(np.mean(d.astype(np.float64) ** 2)) if d.size else float("nan")), float(valid.mean())


def _pair_warp_error(o0: np.ndarray, o1: np.ndarray, backward: np.ndarray, forward: np.ndarray) -> tuple[float, float]:
    """Warping error of one pair and its coverage (see :func:`warp_error`)."""
    warped, _ = warp(o0.astype(np.float32) / 255.0, backward)
    mask = occlusion_mask(backward, forward)
    d = ((warped - o1.astype(np.float32) / 255.0) ** 2).sum(-1)[mask]
    return (float(d.astype(np.float64).mean()) if d.size else float("nan")), float(mask.mean())


def temporal_scores(output, source, flow_fn, names=("pixel_mse", "warp_error"), progress=None, fit=None,
                    pixel_aspect: float = 1.0) -> dict:
    """:func:`pixel_mse` and/or :func:`warp_error` (``names``) of ``output`` against ``source`` in one
    pass over the frame pairs, each pair's flows computed once and dropped after it: memory does not
    grow with the clip (all flows of 1000 frames of 1080p, both ways, would take 33 GB). ``flow_fn``: a
    flow function (:func:`~flickerless.metrics.flow.get_flow`). ``fit``, ``pixel_aspect``: how a source
    of another aspect ratio is fitted (:func:`~flickerless.metrics.frames.fit_source`). Returns
    ``{name: TemporalScore}``."""
    out = as_uint8(output, "output")
    src = as_uint8(source, "source")
    return _temporal_scores(out, fit_source(src, out.shape[1:3], fit, pixel_aspect)[0], flow_fn, names, progress)


def _temporal_scores(out: np.ndarray, src: np.ndarray, flow_fn, names, progress=None) -> dict:
    """:func:`temporal_scores` of a source fitted already (stretched to the output's size as it is)."""
    _check(out, src)
    both = "warp_error" in names
    scores = {n: ([], []) for n in names}
    s1 = fit_frame(src[0], out.shape[1:3])  # a source of another size is resized a frame at a time
    for t in range(len(out) - 1):
        s0, s1 = s1, fit_frame(src[t + 1], out.shape[1:3])
        bwd = flow_fn(s1, s0)
        if "pixel_mse" in names:
            for acc, v in zip(scores["pixel_mse"], _pair_pixel_mse(out[t], out[t + 1], bwd)):
                acc.append(v)
        if both:
            fwd = flow_fn(s0, s1)
            for acc, v in zip(scores["warp_error"], _pair_warp_error(out[t], out[t + 1], bwd, fwd)):
                acc.append(v)
        if progress is not None:
            progress.update(1)
    return {n: TemporalScore(_mean(per), per, cov) for n, (per, cov) in scores.items()}


def _flows(flows, out: np.ndarray, which: str) -> np.ndarray:
    """Precomputed ``which`` flows as a float32 array, checked against the output ``(T, H, W, 3)``: one
    (H, W, 2) field per pair of frames (the wrong size failed in numpy's broadcasting, too few as an
    IndexError)."""
    t, h, w = out.shape[:3]
    if hasattr(flows, "detach"):
        flows = flows.detach().cpu().float().numpy()
    flows = np.asarray(flows, np.float32)
    if flows.shape != (t - 1, h, w, 2):
        raise InputError(f"{which} flows: expected one (H, W, 2) field per pair of frames at the output's size, "
                         f"({t - 1}, {h}, {w}, 2), got {flows.shape}")
    return flows


def pixel_mse(output, source, flow="dis", backward=None, fit=None) -> TemporalScore:
    """Pixel-MSE (Pix2Video; DiffSynth Tables 3-4): mean over pairs (t, t+1) of
    ``mean_p (warp(output[t], F)[p] - output[t+1][p])^2`` on the 0-255 scale, averaged over the RGB
    channels and the pixels whose sample lies inside frame t, where ``F = flow(source[t+1], source[t])``.

    output, source: (T, H, W, 3) uint8 or (T, 3, H, W) float in [0, 1] (or clip paths).
    flow: ``"dis"``, ``"raft"`` or a callable (see :mod:`~flickerless.metrics.flow`); ``backward``:
    precomputed backward flows (T-1, H, W, 2) at the output's size, which then replace ``flow``.
    ``fit``: ``"crop"`` or ``"stretch"``, how a source of another aspect ratio is fitted to the output
    (default crop, with a warning; :func:`~flickerless.metrics.frames.fit_source`).
    """
    if backward is None:
        return temporal_scores(output, source, get_flow(flow), ("pixel_mse",), fit=fit)["pixel_mse"]
    out = as_uint8(output, "output")
    _check(out, as_uint8(source, "source"))
    backward = _flows(backward, out, "backward")
    per, cov = zip(*(_pair_pixel_mse(out[t], out[t + 1], backward[t]) for t in range(len(out) - 1)))
    return TemporalScore(_mean(list(per)), list(per), list(cov))


def warp_error(output, source, flow="dis", backward=None, forward=None, fit=None) -> TemporalScore:
    """Warping error with occlusion mask (Lai et al. 2018, "Learning blind video temporal consistency"):
    mean over pairs of ``sum_p M[p] |warp(output[t], F)[p] - output[t+1][p]|^2 / sum_p M[p]``, frames in
    [0, 1], ``|.|^2`` the squared L2 norm over RGB, ``F = flow(source[t+1], source[t])`` as in
    :func:`pixel_mse`, and ``M`` the non-occluded pixels of frame t+1 by the forward-backward check
    (:func:`~flickerless.metrics.flow.occlusion_mask`) whose sample lies inside frame t.

    ``backward``/``forward``: precomputed flows (T-1, H, W, 2) at the output's size; ``fit``: as
    :func:`pixel_mse`.
    """
    if backward is None or forward is None:
        return temporal_scores(output, source, get_flow(flow), ("warp_error",), fit=fit)["warp_error"]
    out = as_uint8(output, "output")
    _check(out, as_uint8(source, "source"))
    backward, forward = _flows(backward, out, "backward"), _flows(forward, out, "forward")
    per, cov = zip(*(_pair_warp_error(out[t], out[t + 1], backward[t], forward[t]) for t in range(len(out) - 1)))
    return TemporalScore(_mean(list(per)), list(per), list(cov))
