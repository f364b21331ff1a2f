"""Training data from a video: frames center-cropped and resized to the training size, and the
foreground masks that go with them (a folder or video of masks, an array, or a callable such as a
segmentation model).

frames: ``(T, 3, H, W)`` float in [0, 1]; masks: ``(T, 1, H, W)`` float in [0, 1] (1 = foreground).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Union

import numpy as np
import torch

from ..errors import InputError

__all__ = ["parse_resolution", "crop_resize", "load_frames", "load_masks", "clip_pixel_aspect", "MaskSource"]

# a path (folder of images or a video), an array (T, H, W[, C]) at the video's size, or a callable
# taking the training frames (T, 3, H, W) in [0, 1] and returning masks (T[, 1], H, W) in [0, 1]
MaskSource = Union[str, Path, np.ndarray, torch.Tensor, Callable[[torch.Tensor], object]]


def parse_resolution(value, multiple: int = 8) -> tuple[int, int]:
    """``512``, ``"512"``, ``(H, W)`` or ``"WxH"`` -> ``(H, W)``, both positive multiples of ``multiple``."""
    try:
        if isinstance(value, str):
            parts = value.lower().split("x")
            if len(parts) == 1:
                h = w = int(parts[0])
            elif len(parts) == 2:
                w, h = int(parts[0]), int(parts[1])
            else:
                raise ValueError
        elif isinstance(value, (tuple, list)):
            h, w = (int(v) for v in value)
        else:
            h = w = int(value)
    except (TypeError, ValueError):
        raise InputError(f"resolution: {value!r}: give one size like 512 or width x height like 768x512") from None
    if h <= 0 or w <= 0 or h % multiple or w % multiple:
        near = lambda v: max(multiple, int(round(v / multiple)) * multiple)  # noqa: E731
        raise InputError(f"resolution: {w}x{h} is not a positive multiple of {multiple} in both sides; "
                         f"nearest valid: {near(w)}x{near(h)}")
    return h, w


def _crop_box(h: int, w: int, size: tuple[int, int], pixel_aspect: float = 1.0) -> tuple[int, int, int, int]:
    """The largest centered box of ``size``'s aspect ratio inside an ``h x w`` image as it is shown (its
    pixels ``pixel_aspect`` times as wide as high): top, left, height, width in its stored pixels."""
    th, tw = size
    shown = w * pixel_aspect
    if h * tw > shown * th:  # too tall
        ch, cw = max(1, round(shown * th / tw)), w
    else:
        ch, cw = h, max(1, min(w, round(h * tw / th / pixel_aspect)))
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def crop_resize(images: torch.Tensor, size: tuple[int, int], mode: str = "bicubic",
                pixel_aspect: float = 1.0) -> torch.Tensor:
    """Center-crop ``images (T, C, H, W)`` to the aspect ratio of ``size=(H', W')`` and resize to it
    (``mode``: ``bicubic`` with antialiasing for frames, ``area``/``bilinear`` for masks). Values are
    clamped to [0, 1]; uint8 images (0..255) are read as such, cropped before they are made floats. ``pixel_aspect``: the width of a stored pixel as shown, over its height (anamorphic
    DV/DVD video: 64/45), so that the model sees the picture as it is shown, as ``run`` generates it."""
    import torch.nn.functional as F

    top, left, ch, cw = _crop_box(images.shape[-2], images.shape[-1], size, float(pixel_aspect))
    x = images[..., top : top + ch, left : left + cw]
    x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
    if (ch, cw) != tuple(size):
        if mode == "area" and (ch < size[0] or cw < size[1]):
            mode = "bilinear"  # area only shrinks
        kw = {"antialias": True, "align_corners": False} if mode in ("bicubic", "bilinear") else {}
        x = F.interpolate(x, size=tuple(size), mode=mode, **kw)
    return x.clamp(0, 1)


def _to_tensor_frames(frames) -> torch.Tensor:
    """Frames given in memory -> ``(T, 3, H, W)`` float in [0, 1], read as the rest of the library reads
    them (:func:`flickerless.metrics.frames.as_uint8`: either layout, floats in [0, 1] checked; float
    arrays were divided by 255 again, black, and 0-255 floats clamped white). Training frames are 8-bit,
    as a clip's are."""
    from ..metrics.frames import as_uint8

    return torch.from_numpy(as_uint8(frames, "frames")).permute(0, 3, 1, 2).float() / 255


def load_frames(video, size: tuple[int, int], max_frames: int | None = None, every: int = 1,
                pixel_aspect: float | None = None) -> tuple[torch.Tensor, tuple[int, int]]:
    """Frames of ``video`` (a path read with :func:`flickerless.video.iter_frames`, or an array
    ``(T, H, W, 3)`` uint8 / tensor ``(T, 3, H, W)`` in [0, 1]), every ``every``-th one up to
    ``max_frames``, center-cropped and resized to ``size=(H, W)`` as they are shown (``pixel_aspect``:
    see :func:`crop_resize`; None: a path's own, 1 for frames given).

    Returns ``(frames (T, 3, H, W) float in [0, 1], (height, width) of the source)``.
    """
    if pixel_aspect is None:
        pixel_aspect = clip_pixel_aspect(video)
    if every < 1:
        raise InputError(f"every must be >= 1, got {every}")
    if isinstance(video, (str, Path)):
        from ..video import iter_frames

        # each chunk cropped and resized as it is read: the whole clip at its size in float32 (and copies
        # of it) took about 9x its 8-bit size in memory, 48 GB for 30 s of 1080p, to end in a small tensor
        out, chunk, taken, source_size = [], [], 0, None

        def fitted(chunk):  # (stacked by numpy: a frame read from a file may be read-only, which torch warns of)
            return crop_resize(torch.from_numpy(np.stack(chunk)).permute(0, 3, 1, 2).contiguous(), size,
                               pixel_aspect=pixel_aspect)

        for i, f in enumerate(iter_frames(video)):
            if i % every == 0:
                chunk.append(f)
                source_size, taken = tuple(f.shape[:2]), taken + 1
                done = max_frames is not None and taken >= max_frames
                if len(chunk) == 16 or done:
                    out.append(fitted(chunk))
                    chunk.clear()
                if done:
                    break
        if chunk:
            out.append(fitted(chunk))
        if not out:
            raise InputError(f"{video}: has no frames")
        return torch.cat(out), source_size
    src = _to_tensor_frames(video)[::every]
    if max_frames is not None:
        src = src[:max_frames]
    if len(src) == 0:
        raise InputError("the video has no frames")
    out = torch.cat([crop_resize(src[a : a + 16], size, pixel_aspect=pixel_aspect) for a in range(0, len(src), 16)])
    return out, (src.shape[-2], src.shape[-1])


def clip_pixel_aspect(video) -> float:
    """A clip path's pixel shape as shown (:attr:`flickerless.video.VideoInfo.pixel_aspect`); 1 for frames
    given as arrays or tensors."""
    if not isinstance(video, (str, Path)):
        return 1.0
    from ..video import probe

    return float(probe(video).pixel_aspect)


def _mask_tensor(arr, what: str) -> torch.Tensor:
    """Masks as ``(T, 1, H, W)`` float in [0, 1]: uint8 (0..255), bool or float input; colour masks
    are averaged over channels (last axis for arrays ``(T, H, W, C)``)."""
    t = arr if isinstance(arr, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(np.asarray(arr)))
    t = t.detach().cpu()
    if t.dtype == torch.bool:
        t = t.float()
    elif t.dtype == torch.uint8:
        t = t.float() / 255
    else:
        t = t.float()
    if t.dim() == 4 and t.shape[1] not in (1, 3) and t.shape[-1] in (1, 3, 4):
        t = t[..., :3].mean(-1)  # (T, H, W, C) channels-last
    if t.dim() == 4:
        t = t.mean(1)  # (T, C, H, W)
    if t.dim() != 3:
        raise InputError(f"{what}: masks must be (T, H, W), (T, 1, H, W) or (T, H, W, C), got shape {tuple(t.shape)}")
    if t.numel() and (t.min() < 0 or t.max() > 1):
        raise InputError(f"{what}: mask values must lie in [0, 1] (or 0..255 as uint8), got [{t.min():.3g}, {t.max():.3g}]")
    return t[:, None]


def load_masks(source: MaskSource, frames: torch.Tensor, source_size: tuple[int, int], every: int = 1,
               pixel_aspect: float = 1.0) -> torch.Tensor:
    """Foreground masks for the training ``frames (T, 3, H, W)``: ``(T, 1, H, W)`` in [0, 1].

    ``source``: a folder of mask images or a mask video (frame for frame with the source video,
    ``source_size=(H, W)``, subsampled by ``every``), an array at the source size, or a callable
    given the training frames and returning masks at their size. Files and arrays get the same
    center crop and resize as the frames (``pixel_aspect``: the video's, as :func:`load_frames` took it).
    """
    n, size = frames.shape[0], tuple(frames.shape[-2:])
    if callable(source) and not isinstance(source, (str, Path)):
        masks = _mask_tensor(source(frames), "the mask callable's result")
        if masks.shape[0] != n or tuple(masks.shape[-2:]) != size:
            raise InputError(f"the mask callable returned {tuple(masks.shape)}, expected {n} masks of {size[1]}x{size[0]}")
        return masks
    if isinstance(source, (str, Path)):
        from ..video import iter_frames

        what = f"masks {source}"
        out, chunk, given, taken = [], [], 0, 0
        for i, m in enumerate(iter_frames(source)):  # a chunk at a time at the video's size, as load_frames
            given = i + 1
            if i % every == 0:
                chunk.append(m)
                taken += 1
                if len(chunk) == 16 or taken >= n:
                    out.append(_fit_masks(_mask_tensor(np.stack(chunk), what), what, source_size, size, pixel_aspect))
                    chunk.clear()
                if taken >= n:
                    break
        if not taken:
            raise InputError(f"{what}: has no images")
        if chunk:
            out.append(_fit_masks(_mask_tensor(np.stack(chunk), what), what, source_size, size, pixel_aspect))
        masks = torch.cat(out)
    else:
        what = "masks"
        masks = _mask_tensor(source, what)
        given, masks, taken = masks.shape[0], masks[::every][:n], len(masks[::every][:n])
        if taken >= n:
            masks = _fit_masks(masks, what, source_size, size, pixel_aspect)
    if taken < n:  # the count given, not the one left after taking every k-th ("1 masks" of 3)
        one_in = f" ({taken} taken, one in {every})" if every > 1 else ""
        raise InputError(f"{what}: {given} mask{'' if given == 1 else 's'}{one_in} for {n} training frames: give one "
                         "mask per video frame")
    return masks


def _fit_masks(masks: torch.Tensor, what: str, source_size, size, pixel_aspect: float) -> torch.Tensor:
    """Masks at the video's size, cropped and resized as its frames were."""
    if tuple(masks.shape[-2:]) != tuple(source_size):
        raise InputError(f"{what}: masks are {masks.shape[-1]}x{masks.shape[-2]} but the video is "
                         f"{source_size[1]}x{source_size[0]}: they must match frame for frame")
    return crop_resize(masks, size, mode="area", pixel_aspect=pixel_aspect)
