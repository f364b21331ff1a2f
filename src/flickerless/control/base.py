"""The annotator protocol, frame sources, settings checks and the helpers every annotator shares.

Convention: an annotator takes frames ``(T, H, W, 3)`` uint8 (or anything :func:`as_source` accepts)
and returns control frames ``(T, H, W, 3)`` uint8 of the same size, the form ``flickerless.video``
reads and writes and the form the cache stores. :func:`to_tensor` turns them into the
``(T, 3, H, W)`` float [0, 1] tensors that ``diffusion.VideoPipeline(controls=...)`` and
``ControlNetUnit.images`` take.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, ClassVar, Iterator

import numpy as np

from ..errors import InputError, check_has_values, check_unit_range, in_batches

log = logging.getLogger("flickerless")

__all__ = ["Annotator", "FrameSource", "as_source", "to_tensor", "default_device", "gray3", "check_local_model"]

_WEIGHT_SUFFIXES = (".pth", ".pt", ".safetensors", ".bin", ".ckpt")


class FrameSource:
    """Random access to a clip's frames as ``(H, W, 3)`` uint8, one chunk at a time.

    Wraps a ``(T, H, W, 3)`` uint8 array, a single ``(H, W, 3)`` image (T = 1), a list of frames,
    :class:`flickerless.video.DiskFrames` (anything with ``len`` and ``[i]``), or a torch tensor
    ``(T, 3, H, W)`` / ``(3, H, W)`` float in [0, 1]. Float numpy arrays are taken as [0, 1].
    Nothing is converted until a chunk is asked for, so a disk-backed clip stays on disk.
    """

    def __init__(self, frames):
        self._torch = False
        if hasattr(frames, "detach") and hasattr(frames, "permute"):  # torch tensor
            check_has_values(frames, "frames")
            given = tuple(frames.shape)
            if frames.ndim == 3:
                frames = frames.unsqueeze(0)
            if frames.ndim != 4 or frames.shape[1] != 3 or len(frames) == 0:
                raise InputError(f"frames tensor must be (T, 3, H, W) float in [0, 1], got {given}")
            if not frames.is_floating_point() and str(frames.dtype) != "torch.uint8":
                raise InputError(f"frames tensor must be float in [0, 1] or uint8, got {frames.dtype}")
            self._torch = True
            self._data = frames
            self.shape = (int(frames.shape[0]), int(frames.shape[2]), int(frames.shape[3]))
            return
        given = getattr(frames, "shape", None)
        if isinstance(frames, np.ndarray) and frames.ndim == 3 and frames.shape[-1] == 3:
            frames = frames[None]
        if isinstance(frames, np.ndarray):
            if frames.ndim != 4 or frames.shape[-1] != 3:
                raise InputError(f"frames must be (T, H, W, 3) uint8 (or one (H, W, 3) frame), got an array of shape "
                                 f"{given}{_grey_hint(given)}")
            if len(frames) == 0:
                raise InputError("no frames to annotate")
            self._data = frames
            self.shape = tuple(int(s) for s in frames.shape[:3])
            return
        if not hasattr(frames, "__len__") or not hasattr(frames, "__getitem__"):
            raise InputError(f"frames must be an array, a list of frames or a tensor, got {type(frames).__name__}")
        if len(frames) == 0:
            raise InputError("no frames to annotate")
        first = np.asarray(frames[0])
        if first.ndim != 3 or first.shape[-1] != 3:
            grey = first.ndim == 2 or (first.ndim == 3 and first.shape[-1] == 1)
            raise InputError(f"each frame must be (H, W, 3) uint8, got {first.shape}"
                             + ("; grey frames: give each 3 channels (np.repeat(f.reshape(*f.shape[:2], 1), 3, -1))"
                                if grey else ""))
        self._data = frames
        self.shape = (len(frames), int(first.shape[0]), int(first.shape[1]))

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def size(self) -> tuple[int, int]:
        """(H, W)"""
        return self.shape[1], self.shape[2]

    def chunk(self, start: int, end: int) -> np.ndarray:
        """Frames ``start:end`` as a ``(n, H, W, 3)`` uint8 array."""
        if self._torch:
            x = self._data[start:end].detach()
            if x.is_floating_point():
                _check_unit_floats(x.float().cpu().numpy(), start)
                x = x.float().clamp(0, 1).mul(255).round().byte()
            return x.permute(0, 2, 3, 1).cpu().numpy()
        if isinstance(self._data, np.ndarray):
            out = self._data[start:end]
        else:
            out = [np.asarray(self._data[i]) for i in range(start, end)]
            for i, f in zip(range(start, end), out):
                if f.shape[:2] != self.size or f.shape[-1] != 3:
                    raise InputError(f"frame {i} is {f.shape}, frame 0 is {(*self.size, 3)}: all frames must have one size")
            out = np.stack(out)
        if out.dtype != np.uint8:
            if not np.issubdtype(out.dtype, np.floating):  # uint16 was clipped at 255: nearly white
                raise InputError(f"frames must be uint8 (0-255) or floats in [0, 1], got {out.dtype}")
            _check_unit_floats(out, start)
            out = (np.clip(out, 0, 1) * 255).round().astype(np.uint8)
        return np.ascontiguousarray(out)

    def chunks(self, size: int) -> Iterator[tuple[int, np.ndarray]]:
        for s in range(0, len(self), size):
            yield s, self.chunk(s, min(len(self), s + size))


def _grey_hint(shape) -> str:
    """What to do with grey frames, ``(T, H, W)`` or ``(T, H, W, 1)``: a 3-D array was taken as one frame
    and said as the ``(1, T, H, W)`` the caller never passed, with no word of grey."""
    if len(shape) == 3 and shape[-1] not in (3, 4):
        return "; grey frames: give them 3 channels (np.repeat(frames[..., None], 3, -1))"
    if len(shape) == 4 and shape[-1] == 1:
        return "; grey frames: give them 3 channels (np.repeat(frames, 3, -1))"
    if len(shape) == 2:
        return "; a grey frame: give it 3 channels (np.repeat(frame[..., None], 3, -1))"
    return ""


def _check_unit_floats(x: np.ndarray, start: int | None = 0) -> None:
    """Float frames are read as [0, 1]: 0-255 floats were saturated, NaN read as black; refused. ``x``:
    the frames to annotate from ``start`` on (a clip is read a chunk at a time; "frames from 0 are
    floats" read as frames made from 0), or (None) control frames."""
    what = ("the control frames" if start is None else "the frames to annotate" if start == 0 else
            f"the frames to annotate from frame {start} on")
    check_unit_range(float(np.min(x)), float(np.max(x)), what)


def check_local_model(model, what: str, holds: str, remedy: str) -> None:
    """A model setting that can only be a local path (ending in '/', starting with '.', '/' or '~', a weights
    file's name, or of three or more parts) and is not there: the ModelNotFoundError naming the missing
    folder and the file(s) it should hold, or the missing file. ``Annotators/`` was said as missing from
    "the Hugging Face repo 'Annotators/'" (depth: "download it once with `hf download Annotators/`")."""
    from ..weights import looks_like_path, not_found

    m = str(model)
    path = Path(m).expanduser()
    if path.exists():
        return
    # "owner/name" is a repo id even beside a folder "owner/" (hf download --local-dir lllyasviel/ControlNet
    # makes one, and lllyasviel/Annotators must still come from the Hugging Face cache)
    if not (looks_like_path(m) or m.endswith("/")):
        return  # a repo id: the loading looks in the Hugging Face cache (and the hub)
    if path.suffix in _WEIGHT_SUFFIXES:
        place = f"local file {path.resolve()} (missing)"
    else:
        place = f"local folder {path.resolve()} (missing; it should hold {holds})"
    raise not_found(what, m, remedy, places=[place])


def as_source(frames) -> FrameSource:
    return frames if isinstance(frames, FrameSource) else FrameSource(frames)


def to_tensor(controls, device=None, dtype=None):
    """Control frames ``(T, H, W, 3)`` uint8 -> ``(T, 3, H, W)`` float tensor in [0, 1] (the sampler's form).
    Also takes one ``(H, W, 3)`` frame, floats in [0, 1] (not scaled again), and a tensor already in
    the sampler's form (moved to ``device`` and ``dtype``)."""
    import torch

    if isinstance(controls, torch.Tensor) and controls.ndim in (3, 4) and controls.shape[-3] == 3 \
            and controls.shape[-1] != 3:  # (T, 3, H, W): the sampler's form already
        x = controls.detach()[None] if controls.ndim == 3 else controls.detach()
        x = x.to(device=device or x.device, dtype=dtype or torch.float32)
        return (x / 255.0 if not controls.is_floating_point() else x).contiguous()
    a = controls.detach().cpu().numpy() if isinstance(controls, torch.Tensor) else np.asarray(controls)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4 or a.shape[-1] != 3:
        raise InputError(f"control frames must be (T, H, W, 3) RGB (uint8), got shape {a.shape}")
    x = torch.from_numpy(np.ascontiguousarray(a))
    scale = 255.0 if a.dtype == np.uint8 else 1.0
    if scale == 1.0:
        if not np.issubdtype(a.dtype, np.floating):
            raise InputError(f"control frames must be uint8 (0-255) or floats in [0, 1], got {a.dtype}")
        _check_unit_floats(a, None)
    x = x.permute(0, 3, 1, 2).to(device=device or "cpu", dtype=dtype or torch.float32) / scale
    return x.contiguous()


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def gray3(x: np.ndarray) -> np.ndarray:
    """``(..., H, W)`` float in [0, 1] -> ``(..., H, W, 3)`` uint8 grey."""
    g = (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=-1)


@dataclasses.dataclass
class Annotator:
    """Base class: a dataclass whose fields are its settings.

    Subclasses set ``name`` and either implement :meth:`process` (independent frames, a batch
    ``(B, H, W, 3)`` uint8 in and out) or override :meth:`run` (annotators that look at the whole
    clip: depth normalisation, keypoint smoothing). ``run`` yields ``(n, H, W, 3)`` uint8 chunks in
    order, so long clips never need to be held in memory by the annotator.

    Fields listed in ``runtime_settings`` (device, batch size, ...) change how the work is done but
    not its result, and do not enter the cache key. Bump ``version`` when an annotator's output changes.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    version: ClassVar[int] = 1
    runtime_settings: ClassVar[tuple[str, ...]] = ("device", "batch_size", "progress")

    def cache_settings(self) -> dict[str, Any]:
        """The settings that determine the output (the cache key)."""
        out = {}
        for f in dataclasses.fields(self):
            if f.name in self.runtime_settings:
                continue
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    def prepare(self, frames: "FrameSource") -> None:
        """Resolve whatever decides the output (which weights exist, fallbacks) before the cache key is
        taken; cheap: it must not load a model. Called by :func:`flickerless.control.iter_annotate`
        and by :meth:`run`."""

    def check_weights(self, size: tuple[int, int]) -> None:
        """Before any work (a clip read, another annotator run): raise what loading this annotator's model
        would, a :class:`~flickerless.errors.ModelNotFoundError` for missing weights or an
        :class:`~flickerless.errors.InputError` for a missing package, without loading it. ``size``:
        ``(H, W)`` of the frames it will be given. By default what :meth:`prepare` resolves."""
        self.prepare(FrameSource(np.zeros((1, *size, 3), np.uint8)))

    def check_device(self) -> None:
        """A ``device`` setting names a device this machine has (torch's own errors said less)."""
        if getattr(self, "device", None) is not None:
            from ..blend.deflicker import resolve_device

            resolve_device(self.device)

    def extras(self) -> dict[str, np.ndarray]:
        """By-products of the last :meth:`run` worth caching beside the frames (pose keypoints)."""
        return {}

    def process(self, batch: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def run(self, frames, chunk: int = 32) -> Iterator[np.ndarray]:
        """Control frames for ``frames``, yielded in order as ``(n, H, W, 3)`` uint8 chunks."""
        src = as_source(frames)
        self.check_device()
        self.prepare(src)
        bs = max(1, int(getattr(self, "batch_size", chunk) or chunk))
        for _, part in src.chunks(chunk):
            outs = []
            # a batch that does not fit the GPU is halved, for this chunk and the ones after
            bs = in_batches(len(part), bs, lambda a, b: outs.append(self.process(part[a:b])), f"{self.name} annotator",
                            f"--set annotators.{self.name}.batch_size={{}}" if hasattr(self, "batch_size") else None)
            yield np.concatenate(outs)

    def __call__(self, frames) -> np.ndarray:
        """All control frames at once: ``(T, H, W, 3)`` uint8."""
        return np.concatenate(list(self.run(frames)))


def check(cond: bool, key: str, message: str) -> None:
    """Raise an :class:`InputError` naming the setting ``key`` unless ``cond``."""
    if not cond:
        raise InputError(f"setting {key!r}: {message}")


def check_choice(key: str, value, choices) -> None:
    check(value in choices, key, f"{value!r} is not one of {', '.join(map(repr, choices))}")
