"""Frames as the metrics take them: ``(T, H, W, 3)`` uint8 arrays, from whatever the caller holds."""

from __future__ import annotations

import numpy as np

from ..errors import InputError

__all__ = ["as_uint8", "match_size"]


def as_uint8(frames, name: str = "frames") -> np.ndarray:
    """``(T, H, W, 3)`` uint8 from a uint8 array of that shape, a float tensor/array ``(T, 3, H, W)`` in
    [0, 1] (the library's layout), a sequence of ``(H, W, 3)`` uint8 frames, or a clip path."""
    if isinstance(frames, (str, bytes)) or hasattr(frames, "__fspath__"):
        from ..video import read

        return read(frames)[0]
    if hasattr(frames, "detach"):  # torch tensor
        frames = frames.detach().float().cpu().numpy()
    if not isinstance(frames, np.ndarray):
        frames = np.stack([np.asarray(f) for f in frames]) if len(frames) else np.zeros((0,))
    if frames.ndim != 4 or len(frames) == 0:
        raise InputError(f"{name}: expected (T, H, W, 3) uint8 or (T, 3, H, W) float frames, got shape {frames.shape}")
    if frames.dtype == np.uint8:
        if frames.shape[-1] != 3:
            raise InputError(f"{name}: uint8 frames must be (T, H, W, 3), got {frames.shape}")
        return frames
    if frames.shape[1] == 3:
        frames = frames.transpose(0, 2, 3, 1)
    elif frames.shape[-1] != 3:
        raise InputError(f"{name}: float frames must be (T, 3, H, W) in [0, 1], got {frames.shape}")
    return np.clip(np.round(frames * 255.0), 0, 255).astype(np.uint8)


def match_size(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize every frame to ``size=(H, W)`` (area filter when shrinking, cubic when enlarging)."""
    import cv2

    h, w = size
    if frames.shape[1:3] == (h, w):
        return frames
    interp = cv2.INTER_AREA if h * w < frames.shape[1] * frames.shape[2] else cv2.INTER_CUBIC
    return np.stack([cv2.resize(f, (w, h), interpolation=interp) for f in frames])
