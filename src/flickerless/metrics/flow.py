"""Optical flow for the temporal metrics, and backward warping with it.

Convention used everywhere in :mod:`flickerless.metrics`: ``flow(a, b)`` is an ``(H, W, 2)`` float32
array of pixel displacements ``(dx, dy)`` such that ``a[p] ~= b[p + flow[p]]`` for every pixel ``p``
of ``a``. So ``flow(frame[t+1], frame[t])`` is the *backward* flow from ``t+1`` to ``t``, and
``warp(frame[t], that_flow)`` brings frame ``t`` into frame ``t+1``'s pixel grid by sampling it at
``p + flow[p]`` (backward warping, bilinear). Samples that land outside frame ``t`` are reported as
invalid by :func:`warp` and left out of every average; nothing is padded or extrapolated.

Backends:

- ``"dis"`` (default): OpenCV's DIS optical flow (Kroeger et al. 2016), ``medium`` preset, on the
  grey-level frames. Needs no weights.
- ``"raft"``: RAFT-large from torchvision (``torchvision.models.optical_flow.raft_large``), the flow
  network Pix2Video used. Needs ``torchvision`` and its weights: either in torch's hub cache
  (downloaded once by torchvision) or a file passed as ``raft_weights``.
- any callable ``f(a, b) -> (H, W, 2)`` on ``(H, W, 3)`` uint8 frames, with the convention above.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import InputError, ModelNotFoundError

__all__ = ["FlowFn", "get_flow", "dis_flow", "RaftFlow", "warp", "pair_flows", "occlusion_mask"]

FlowFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


DIS_MIN = 16  # OpenCV's DIS takes frames of at least 12 pixels a side (OpenCV 4 and 5); a margin above that


def dis_flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """DIS flow with ``a[p] ~= b[p + flow[p]]``. a, b: (H, W, 3) uint8 -> (H, W, 2) float32 (dx, dy)."""
    import cv2

    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    ga = cv2.cvtColor(np.ascontiguousarray(a), cv2.COLOR_RGB2GRAY)
    gb = cv2.cvtColor(np.ascontiguousarray(b), cv2.COLOR_RGB2GRAY)
    h, w = ga.shape
    if h < DIS_MIN or w < DIS_MIN:  # DIS refuses frames this small: edge pixels repeated out to its minimum
        pad = ((0, max(0, DIS_MIN - h)), (0, max(0, DIS_MIN - w)))
        ga, gb = np.pad(ga, pad, mode="edge"), np.pad(gb, pad, mode="edge")
    # OpenCV's calc(prev, next) returns f with prev(p) ~= next(p + f(p)): our convention with prev=a.
    return dis.calc(ga, gb, None)[:h, :w].astype(np.float32)


class RaftFlow:
    """RAFT-large (torchvision) flow with ``a[p] ~= b[p + flow[p]]``.

    ``weights``: a state-dict file for ``raft_large``; without it torchvision's
    ``Raft_Large_Weights.DEFAULT`` are loaded from torch's hub cache (downloaded once when online).
    Frames are padded to a multiple of 8 and at least 128 pixels a side (edge replicated; RAFT's
    correlation pyramid needs it) and the flow cropped back.
    """

    def __init__(self, weights: str | None = None, device=None, iters: int = 12):
        try:
            import torch
            from torchvision.models.optical_flow import Raft_Large_Weights, raft_large
        except Exception as e:  # noqa: BLE001 - ImportError, or RuntimeError from a torchvision built for another torch
            from ..weights import torchvision_install

            what = "is not installed" if isinstance(e, ImportError) else "does not load with this torch"
            raise ModelNotFoundError(
                f"the RAFT flow backend needs torchvision, which {what} ({type(e).__name__}: {e}): "
                f"{torchvision_install()}; or use the DIS backend (--flow dis / flow=\"dis\", the default)"
            ) from e
        self.torch = torch
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.iters = iters
        if weights is not None:
            if not Path(weights).is_file():
                raise ModelNotFoundError(f"RAFT weights {weights}: no such file; pass a raft_large state-dict file "
                                         "(--raft-weights PATH / raft_weights=PATH) or leave it out to use torchvision's cached weights")
            model = raft_large(weights=None)
            try:
                model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
            except (RuntimeError, OSError) as e:
                raise ModelNotFoundError(f"RAFT weights {weights}: not a raft_large state dict ({e})") from e
        else:
            try:
                model = raft_large(weights=Raft_Large_Weights.DEFAULT)
            except Exception as e:  # URLError, OSError, ...: no cached file and no network
                raise ModelNotFoundError(
                    "RAFT weights Raft_Large_Weights.DEFAULT are not in torch's hub cache "
                    f"({torch.hub.get_dir()}/checkpoints) and could not be downloaded ({type(e).__name__}: {e}); "
                    "pass a raft_large state-dict file with --raft-weights PATH / raft_weights=PATH, or use --flow dis / flow=\"dis\""
                ) from e
        self.model = model.to(self.device).eval()

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        torch = self.torch
        h, w = a.shape[:2]
        # RAFT needs multiples of 8 and at least 128 px a side (its correlation pyramid): pad, crop back
        ph, pw = max(128, h + (-h) % 8) - h, max(128, w + (-w) % 8) - w

        def prep(x):
            t = torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)[None].float().div(127.5).sub(1)
            t = torch.nn.functional.pad(t, (0, pw, 0, ph), mode="replicate")
            return t.to(self.device)

        with torch.inference_mode():
            flow = self.model(prep(a), prep(b), num_flow_updates=self.iters)[-1]
        return flow[0, :, :h, :w].permute(1, 2, 0).float().cpu().numpy()


def get_flow(flow="dis", raft_weights: str | None = None, device=None) -> FlowFn:
    """A flow function from a backend name (``"dis"``, ``"raft"``) or a callable (returned as is)."""
    if callable(flow):
        return flow
    if flow == "dis":
        return dis_flow
    if flow == "raft":
        return RaftFlow(raft_weights, device=device)
    raise InputError(f"unknown flow backend {flow!r}: use 'dis' (OpenCV, default) or 'raft' (torchvision)")


def warp(image: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Backward warp: ``out[p] = image[p + flow[p]]`` (bilinear).

    image: (H, W, C) or (H, W) any numeric dtype; flow: (H, W, 2) (dx, dy) in pixels.
    Returns (warped float32 of image's shape, valid (H, W) bool): valid is False where
    ``p + flow[p]`` lies outside ``[0, W-1] x [0, H-1]`` (those pixels of ``out`` are 0).
    """
    import cv2

    h, w = flow.shape[:2]
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    mx = xs + flow[..., 0].astype(np.float32)
    my = ys + flow[..., 1].astype(np.float32)
    out = cv2.remap(np.ascontiguousarray(image, dtype=np.float32), mx, my, cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    eps = 1e-3
    valid = (mx >= -eps) & (mx <= w - 1 + eps) & (my >= -eps) & (my <= h - 1 + eps)
    return out, valid


def occlusion_mask(backward: np.ndarray, forward: np.ndarray, alpha: float = 0.01, beta: float = 0.5) -> np.ndarray:
    """Pixels of frame t+1 that are visible in frame t: forward-backward consistency (Sundaram et al. 2010,
    as used by Ruder et al. 2016 and Lai et al. 2018).

    backward: flow(t+1 -> t) on frame t+1's grid; forward: flow(t -> t+1) on frame t's grid, both (H, W, 2).
    A pixel p of t+1 is consistent when, with ``f = forward`` sampled at ``p + backward[p]``,
    ``|backward[p] + f|^2 <= alpha (|backward[p]|^2 + |f|^2) + beta``. Returns (H, W) bool, True where
    consistent (not occluded) and the sample lies inside frame t.
    """
    fw, inside = warp(forward, backward)
    s = backward + fw
    lhs = (s**2).sum(-1)
    rhs = alpha * ((backward**2).sum(-1) + (fw**2).sum(-1)) + beta
    return (lhs <= rhs) & inside


def pair_flows(source: np.ndarray, flow_fn: FlowFn, forward: bool = False, progress=None):
    """Flows between consecutive frames of ``source`` (T, H, W, 3) uint8.

    Returns ``backward`` (T-1, H, W, 2) with ``backward[t] = flow(source[t+1], source[t])``, and with
    ``forward=True`` also ``forward[t] = flow(source[t], source[t+1])`` (else None).
    """
    n = len(source) - 1
    bwd = np.empty((n,) + source.shape[1:3] + (2,), np.float32)
    fwd = np.empty_like(bwd) if forward else None
    for t in range(n):
        bwd[t] = flow_fn(source[t + 1], source[t])
        if forward:
            fwd[t] = flow_fn(source[t], source[t + 1])
        if progress is not None:
            progress.update(1)
    return bwd, fwd
