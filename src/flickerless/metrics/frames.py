"""Frames as the metrics take them: ``(T, H, W, 3)`` uint8 arrays, from whatever the caller holds."""

from __future__ import annotations

import logging

import numpy as np

from ..errors import InputError, check_unit_range

__all__ = ["as_uint8", "fit_frame", "match_size", "fit_source", "FITS"]

log = logging.getLogger("flickerless")

#: how a source of another aspect ratio than the output is fitted to it: as `flickerless run`'s
#: ``video.resize`` makes its frames (``area`` keeps the aspect ratio, so either fits it)
FITS = ("crop", "stretch")


def as_uint8(frames, name: str = "frames") -> np.ndarray:
    """``(T, H, W, 3)`` uint8 from a uint8 array of that shape, a float tensor/array ``(T, 3, H, W)`` in
    [0, 1] (the library's layout), a sequence of ``(H, W, 3)`` uint8 frames, or a clip path. A uint8
    tensor or array may be either layout; other types, floats off [0, 1] (0-255 as floats) or not
    finite are refused (they were saturated to white, or scored as 0)."""
    if isinstance(frames, (str, bytes)) or hasattr(frames, "__fspath__"):
        from ..video import read

        return read(frames)[0]
    frames = _array(frames)
    if not isinstance(frames, np.ndarray):  # a list, or a generator, of frames
        frames = [np.asarray(_array(f)) for f in frames]
        shapes = sorted({f.shape for f in frames}, key=str)
        if len(shapes) > 1:  # numpy's "all input arrays must have the same shape" before
            raise InputError(f"{name}: the frames are of {len(shapes)} shapes ({', '.join(map(str, shapes[:3]))}): "
                             "all frames of a clip must have one size")
        frames = np.stack(frames) if frames else np.zeros((0,))
    if frames.ndim != 4 or len(frames) == 0:
        raise InputError(f"{name}: expected (T, H, W, 3) uint8 or (T, 3, H, W) float frames, got shape {frames.shape}")
    channels_first = frames.shape[1] == 3 and frames.shape[-1] != 3
    if frames.dtype == np.uint8:
        if channels_first:
            frames = frames.transpose(0, 2, 3, 1)
        if frames.shape[-1] != 3:
            raise InputError(f"{name}: uint8 frames must be (T, H, W, 3), got {frames.shape}")
        return np.ascontiguousarray(frames)
    if not np.issubdtype(frames.dtype, np.floating):
        raise InputError(f"{name}: frames must be uint8 (0-255) or floats in [0, 1], got {frames.dtype}")
    check_unit_range(float(np.min(frames)), float(np.max(frames)), f"{name}: the frames")
    if frames.shape[1] == 3:
        frames = frames.transpose(0, 2, 3, 1)
    elif frames.shape[-1] != 3:
        raise InputError(f"{name}: float frames must be (T, 3, H, W) in [0, 1], got {frames.shape}")
    return np.clip(np.round(frames * 255.0), 0, 255).astype(np.uint8)


def _array(x):
    """A torch tensor as an array (uint8 as it is, floats as float32, autograd history dropped); anything
    else as it is."""
    if hasattr(x, "detach"):
        t = x.detach().cpu()
        return (t if str(t.dtype) == "torch.uint8" or not t.is_floating_point() else t.float()).numpy()
    return x


def fit_frame(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One frame ``(H', W', 3)`` at ``size=(H, W)`` (area filter when shrinking, cubic when enlarging;
    the frame itself when it has that size already)."""
    import cv2

    h, w = size
    if frame.shape[:2] == (h, w):
        return frame
    interp = cv2.INTER_AREA if h * w < frame.shape[0] * frame.shape[1] else cv2.INTER_CUBIC
    return cv2.resize(np.ascontiguousarray(frame), (w, h), interpolation=interp)


def match_size(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Every frame resized to ``size=(H, W)`` (:func:`fit_frame`), as a new array. Where frames are
    used one or two at a time, resize them as they are used instead: a long clip's resized copy can
    be larger than RAM."""
    if frames.shape[1:3] == tuple(size):
        return frames
    return np.stack([fit_frame(f, size) for f in frames])


def check_fit(fit) -> None:
    """``fit`` is one of :data:`FITS` or None (checked before any work is done, and where it is used)."""
    if fit is not None and fit not in FITS:
        raise InputError(f"fit {fit!r}: choose crop or stretch")


def _aspects_differ(src_hw: tuple[int, int], out_hw: tuple[int, int], pixel_aspect: float = 1.0) -> bool:
    """Whether an output of ``out_hw`` (H, W) shows another shape than a source of ``src_hw`` whose pixels
    are shown ``pixel_aspect`` times as wide as high, by more than `run` rounding each side to a multiple
    of 8 (up to 4 px each) and 1% make."""
    (h, w), (H, W) = src_hw, out_hw
    ratio = (W / H) / (w * pixel_aspect / h)
    return abs(ratio - 1) > 0.01 + 4 / H + 4 / W


def fit_source(source: np.ndarray, size: tuple[int, int], fit: str | None = None, pixel_aspect: float = 1.0):
    """``source`` (T, h, w, 3) as it is to be compared with an output of ``size=(H, W)``: where their aspect
    ratios differ, ``fit="crop"`` (the default then, said in a warning) keeps its centre at the output's
    aspect ratio (a view, no copy), as `flickerless run` with ``video.resize = "crop"`` made the output;
    ``"stretch"`` keeps it whole, as ``video.resize = "stretch"``. A crop scored against the stretched
    source compared other pixels without a word (Pixel-MSE twice as high). ``pixel_aspect``: the source's
    (anamorphic video; :attr:`~flickerless.video.VideoInfo.pixel_aspect`). Returns (frames, fit used or
    None where the aspect ratios agree)."""
    check_fit(fit)
    h, w = source.shape[1:3]
    if not _aspects_differ((h, w), size, pixel_aspect):
        return source, None
    H, W = size
    # an anamorphic source's shown size: "176x144 and the source 176x144, another aspect ratio" said nothing
    shape = f"the output is {W}x{H} and the source {w}x{h}" + (
        f" shown {round(w * float(pixel_aspect))}x{h} (pixels {float(pixel_aspect):.3g} as wide as high)"
        if pixel_aspect != 1 else "")
    if fit is None:
        fit = "crop"
        log.warning("%s, another aspect ratio: the source is centre-cropped to the output's, as `flickerless run` "
                    "makes frames with video.resize = \"crop\"; give --fit stretch (fit=\"stretch\") for an output "
                    "made with video.resize = \"stretch\"", shape)
    else:
        log.info("%s, another aspect ratio: the source is %s to the output's (--fit %s)", shape,
                 "centre-cropped" if fit == "crop" else "stretched", fit)
    if fit == "stretch":
        return source, fit
    s = max(H / h, W / (w * pixel_aspect))  # output pixels per shown source pixel, as run's crop
    ch, cw = min(h, int(round(H / s))), min(w, int(round(W / s / pixel_aspect)))
    y, x = (h - ch) // 2, (w - cw) // 2
    return source[:, y : y + ch, x : x + cw], fit
