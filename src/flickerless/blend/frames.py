"""Where frames live while the deflicker runs: sources to read from and a tiered store.

Frame sources give ``(B, C, H, W)`` float32 batches on the compute device from whatever holds the
video: a tensor (already on the GPU, say), a uint8 ``(T, H, W, C)`` array, or anything indexable
that returns ``(H, W, C)`` uint8 frames (a disk-backed reader of a long clip). ``C`` is 3 (RGB), or 4
for a style with transparency (RGBA: the alpha is blended with the colour, through the same fields).

:class:`FrameStore` keeps intermediate images (table entries, half-finished blends) as float16,
on the compute device up to a budget, then in host RAM up to a budget, then in files in a
temporary directory, so that a long clip never holds more than the budgets in memory.
"""

from __future__ import annotations

import os
from typing import Hashable, Sequence

import numpy as np
import torch

from ..errors import InputError, check_unit_range

__all__ = ["FrameSource", "TensorFrames", "ArrayFrames", "SubFrames", "as_source", "FrameStore", "to_hwc_uint8",
           "index_tensor"]


class FrameSource:
    """Random access to a clip's frames: ``len(src)``, ``src.size``, ``src.channels`` (3, or 4 with
    alpha) and ``src.load(indices, device)``."""

    size: tuple[int, int]
    channels: int = 3

    def __len__(self) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def load(self, indices: Sequence[int], device) -> torch.Tensor:  # pragma: no cover - interface
        """Frames ``indices`` as ``(B, C, H, W)`` float32 in [0, 1] on ``device``."""
        raise NotImplementedError

    def release(self, before: int) -> None:
        """Frames before ``before`` will not be read again (a reader of a long clip may drop them)."""


def _pixel_scale(dtype, what: str, sample=None) -> float:
    """What a frame's values are divided by to lie in [0, 1]: 255 for uint8, 1 for floats (taken to be
    in [0, 1] already); any other type is refused rather than silently misread. ``sample`` (a frame,
    array or tensor): floats clearly not on that scale are refused too, see :func:`_check_unit_range`."""
    if dtype in (np.uint8, torch.uint8):
        return 255.0
    if (isinstance(dtype, torch.dtype) and dtype.is_floating_point) or (
            not isinstance(dtype, torch.dtype) and np.issubdtype(dtype, np.floating)):
        if sample is not None:
            _check_unit_range(sample, what)
        return 1.0
    raise InputError(f"{what} must be uint8 (0-255) or floats in [0, 1], got {dtype}")


def _check_unit_range(sample, what: str) -> None:
    """Float frames are read as [0, 1]. Frames of 0-255 as floats (``frames.astype(np.float32)``, a
    common slip) would be blended as values up to 255, and [-1, 1] frames (a VAE decode before
    ``(x + 1) / 2``) clamped at 0, each coming out as nonsense, silently: refused when the frames lie
    clearly off the scale (a decoder's or a resampler's overshoot, -0.05 or 1.02, is not)."""
    if isinstance(sample, torch.Tensor):
        lo, hi = (float(v) for v in torch.aminmax(sample.detach()))  # one pass, no copy
    else:
        lo, hi = float(np.min(sample)), float(np.max(sample))
    check_unit_range(lo, hi, what)


def index_tensor(values: Sequence[int], device) -> torch.Tensor:
    """``values`` as an int64 tensor on ``device``, without making the host wait: to a GPU through
    pinned memory, so the copy is queued behind the kernels already launched instead of waiting for
    them (a copy from pageable memory waits for the GPU's queue to drain, and the GPU then idles while
    the host prepares what comes next). The pinned buffer comes from torch's caching host allocator,
    which reuses it only once the copy has been done."""
    t = torch.tensor(list(values), dtype=torch.int64)
    device = torch.device(device)
    return t.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else t.to(device)


def to_hwc_uint8(img: torch.Tensor) -> torch.Tensor:
    """A ``(C, H, W)`` float image in [0, 1] as a contiguous ``(H, W, C)`` uint8 tensor (rounded) on its
    own device: what writers, PNGs and uint8 arrays take. Made contiguous where it is, so a GPU image
    comes to the host as one plain copy."""
    return img.float().clamp(0, 1).mul(255).round_().to(torch.uint8).permute(1, 2, 0).contiguous()


def _said(name: str | None, what: str) -> str:
    """``what`` of the input called ``name`` (``"style frames"``): a wrong type or range said of plain
    "frames" left the caller to guess whether the guide or the style was wrong."""
    return f"{name} {what}" if name else what


class TensorFrames(FrameSource):
    """A ``(T, C, H, W)`` tensor (C 3, or 4 with alpha), float in [0, 1] or uint8, on any device.
    ``name`` (``"guide"``, ``"style"``): what the errors call it."""

    def __init__(self, frames: torch.Tensor, name: str | None = None):
        if frames.ndim != 4 or frames.shape[1] not in (3, 4):
            hint = ("; a (T, H, W, 3) tensor: pass frames.permute(0, 3, 1, 2)"
                    if frames.ndim == 4 and frames.shape[3] in (3, 4) else "")
            raise InputError(f"{name + ': ' if name else ''}expected a (T, 3, H, W) tensor (or (T, 4, H, W) with "
                             f"alpha), got shape {tuple(frames.shape)}{hint}")
        _check_area(frames.shape[2], frames.shape[3], name)
        self.scale = _pixel_scale(frames.dtype, f"{name} frames" if name else "frame tensors",
                                  frames if len(frames) else None)
        self.frames = frames
        self.size = (int(frames.shape[2]), int(frames.shape[3]))
        self.channels = int(frames.shape[1])

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    def load(self, indices, device) -> torch.Tensor:
        device = torch.device(device)
        if self.frames.device.type == "cpu" and device.type == "cuda":
            # host -> GPU: send runs of consecutive frames as slices of the tensor itself, so a pinned
            # tensor is copied from pinned memory (a gathered host copy would be pageable: ~10x slower)
            out = consecutive_runs(self.frames, list(indices), device).to(torch.float32)
        else:
            idx = index_tensor(indices, self.frames.device)
            out = self.frames.index_select(0, idx).to(device=device, dtype=torch.float32)
        return out.div_(self.scale) if self.scale != 1.0 else out


def _check_area(h: int, w: int, name: str | None) -> None:
    """Frames with no pixels (0 rows or columns, a crop that went wrong) refused, not met by torch's error."""
    if not (h and w):
        raise InputError(f"{name + ': ' if name else ''}frames of {w}x{h} pixels have nothing to deflicker: give "
                         "frames at least 1 pixel wide and high")


def consecutive_runs(src: torch.Tensor, ids: Sequence[int], device) -> torch.Tensor:
    """``src[ids]`` on ``device``, sent as one slice per run of consecutive indices (asynchronous
    from pinned memory) and concatenated there."""
    ids = [int(i) for i in ids]
    parts, start = [], 0
    for k in range(1, len(ids) + 1):
        if k == len(ids) or ids[k] != ids[k - 1] + 1:
            parts.append(src[ids[start] : ids[k - 1] + 1].to(device, non_blocking=True))
            start = k
    return parts[0] if len(parts) == 1 else torch.cat(parts)


class ArrayFrames(FrameSource):
    """Anything indexable by frame number returning ``(H, W, C)`` frames (a numpy array, a reader; C 3,
    or 4 with alpha): uint8, or floats in [0, 1]. ``name`` (``"guide"``, ``"style"``): what the errors call it."""

    def __init__(self, frames, name: str | None = None):
        refuse_path(frames)
        self.frames = frames
        if not len(frames):
            raise InputError(f"{name + ': ' if name else ''}no frames: expected (T, H, W, 3) frames (or (T, H, W, 4) "
                             "with alpha), T >= 1")
        first = np.asarray(frames[0])
        if first.ndim != 3 or first.shape[2] not in (3, 4):
            whole = getattr(frames, "shape", None)
            hint = ""
            if whole is not None and len(whole) == 3 and whole[2] in (3, 4):
                hint = f"; the array of shape {tuple(whole)} looks like one frame: pass frames[None]"
            elif first.dtype.kind in "OSU":  # a list of paths, or of other things than images
                hint = (f"; frame 0 is a {type(frames[0]).__name__}, not an image: read the frames first "
                        "(flickerless.video.read reads a clip or a folder of images)")
            elif first.ndim == 2:
                hint = "; grey frames: give them 3 channels (np.repeat(frames[..., None], 3, -1))"
            elif first.ndim == 3 and first.shape[0] in (3, 4):
                hint = "; channels-first frames: move the channels last (np.moveaxis(frames, -3, -1))"
            elif first.ndim == 3 and first.shape[2] == 1:
                hint = "; grey frames: give them 3 channels (np.repeat(frames, 3, -1))"
            elif whole is not None:
                hint = f"; the frames given are of shape {tuple(whole)}"
            raise InputError(f"{name + ': ' if name else ''}expected frames of shape (H, W, 3) (or (H, W, 4) with "
                             f"alpha), got {first.shape}{hint}")
        _check_area(first.shape[0], first.shape[1], name)
        if isinstance(frames, (list, tuple)):
            for i, f in enumerate(frames[1:], 1):
                f = np.asarray(f)
                if f.shape != first.shape or f.dtype != first.dtype:
                    raise InputError(f"{_said(name, 'frame')} {i} is {f.dtype} of shape {f.shape}, frame 0 "
                                     f"{first.dtype} of shape {first.shape}: every frame must be alike")
        # floats: the range of every frame in memory, not of the first alone (an off-scale frame 5 came out
        # white); a reader's frames are uint8
        what = _said(name, "frames")
        self.scale = _pixel_scale(first.dtype, what, first)
        if self.scale == 1.0 and isinstance(frames, np.ndarray):
            _check_unit_range(frames, what)
        elif self.scale == 1.0 and isinstance(frames, (list, tuple)):
            for f in frames[1:]:
                _check_unit_range(np.asarray(f), what)
        self.size = (int(first.shape[0]), int(first.shape[1]))
        self.channels = int(first.shape[2])

    def __len__(self) -> int:
        return len(self.frames)

    def release(self, before: int) -> None:
        drop = getattr(self.frames, "release_before", None)  # video.StreamingFrames
        if drop is not None:
            drop(before)

    def load(self, indices, device) -> torch.Tensor:
        frames = [np.asarray(self.frames[int(i)]) for i in indices]
        if torch.device(device).type == "cuda":  # stacked straight into pinned memory (see index_tensor)
            dtype = torch.from_numpy(np.empty(0, dtype=frames[0].dtype)).dtype
            buf = torch.empty((len(frames), *frames[0].shape), dtype=dtype, pin_memory=True)
            np.stack(frames, out=buf.numpy())
            t = buf.to(device, non_blocking=True)
        else:
            t = torch.from_numpy(np.stack(frames)).to(device)
        t = t.permute(0, 3, 1, 2).to(torch.float32)
        return t.div_(self.scale) if self.scale != 1.0 else t


class SubFrames(FrameSource):
    """Frames ``[start, stop)`` of another source, renumbered from 0 (one shot of a clip)."""

    def __init__(self, source: FrameSource, start: int, stop: int):
        self.source, self.start, self.stop = source, start, stop
        self.size = source.size
        self.channels = source.channels

    def __len__(self) -> int:
        return self.stop - self.start

    def load(self, indices, device) -> torch.Tensor:
        return self.source.load([self.start + int(i) for i in indices], device)

    def release(self, before: int) -> None:
        self.source.release(self.start + before)


def check_finite(frames, what: str, one: bool = False) -> None:
    """Float frames (a tensor, an array or a list of them) holding NaN or infinite values, as an fp16
    VAE decode that overflowed gives, would spread them through every blend they enter (their
    neighbours' too): refused, naming the first such frame (``one``: ``what`` names the only one). One
    sum per frame, in float32 (a sum is not finite where any of its values is not)."""
    if isinstance(frames, FrameSource):
        return
    if isinstance(frames, torch.Tensor):
        if not frames.is_floating_point() or not len(frames):
            return
        bad = ~torch.isfinite(frames.sum(dim=tuple(range(1, frames.ndim)), dtype=torch.float32))  # any layout
        found = int(bad.nonzero()[0, 0]) if bool(bad.any()) else None
    else:
        found = None
        for i, f in enumerate(frames):
            f = np.asarray(f)
            if not np.issubdtype(f.dtype, np.floating):
                return
            if not np.isfinite(f.sum(dtype=np.float64)):
                found = i
                break
    if found is not None:
        which = what if one else f"{what} frame {found}"
        raise InputError(f"{which} holds NaN or infinite values (an fp16 overflow, in a VAE decode or a denoising "
                         "run, gives them): replace or drop that frame")


def refuse_path(frames) -> None:
    """A clip's path where its frames were expected (a string is a sequence, of characters, and was read
    as frames of no dimensions): refused, saying how to read it."""
    if isinstance(frames, (str, bytes, os.PathLike)):
        raise InputError(f"got the path {os.fsdecode(frames)!r} where frames were expected: read the clip first "
                         "(frames, fps = flickerless.video.read(path))")


def as_source(frames, name: str | None = None) -> FrameSource:
    """``frames`` as a :class:`FrameSource`; ``name`` (``"guide"``, ``"style"``): what its errors call it."""
    if isinstance(frames, FrameSource):
        return frames
    if isinstance(frames, torch.Tensor):
        return TensorFrames(frames, name)
    return ArrayFrames(frames, name)


class FrameStore:
    """Key -> image store, float16, tiered: compute device, then host RAM, then disk.

    ``device_budget`` and ``host_budget`` are in bytes. Values come back as float32 on ``device``.
    What goes to disk goes to ``tmpdir``, else ``$FLICKERLESS_TMPDIR``, else the system's temporary folder.
    """

    def __init__(self, device, device_budget: int = 0, host_budget: int = 1 << 30, tmpdir: str | None = None):
        self.device = torch.device(device)
        self.device_budget = device_budget if self.device.type != "cpu" else 0
        self.host_budget = host_budget
        from ..video import SpillFolder  # the I/O layer, above this one

        self._folder = SpillFolder(tmpdir)
        self._mem: dict[Hashable, torch.Tensor] = {}
        self._disk: dict[Hashable, tuple[str, tuple[int, ...]]] = {}
        self._files_made = 0
        self.device_bytes = 0
        self.host_bytes = 0
        self.peak_host_bytes = 0
        self.disk_bytes = 0
        self.peak_disk_bytes = 0

    def __contains__(self, key) -> bool:
        return key in self._mem or key in self._disk

    def __len__(self) -> int:
        return len(self._mem) + len(self._disk)

    def put(self, key: Hashable, value: torch.Tensor) -> None:
        self.pop(key)
        v = value.detach().to(torch.float16)
        nbytes = v.numel() * 2
        if self.device.type != "cpu" and self.device_bytes + nbytes <= self.device_budget:
            self._mem[key] = v.to(self.device)
            self.device_bytes += nbytes
        elif self.host_bytes + nbytes <= self.host_budget:
            self._mem[key] = v.cpu()
            self.host_bytes += nbytes
            self.peak_host_bytes = max(self.peak_host_bytes, self.host_bytes)
        else:
            path = self._folder.file(f"{self._files_made}.f16")
            self._files_made += 1
            arr = v.cpu().numpy()
            arr.tofile(path)
            self._disk[key] = (path, tuple(arr.shape))
            self.disk_bytes += nbytes
            self.peak_disk_bytes = max(self.peak_disk_bytes, self.disk_bytes)

    def get(self, key: Hashable) -> torch.Tensor:
        if key in self._mem:
            return self._mem[key].to(self.device, torch.float32)
        path, shape = self._disk[key]
        arr = np.fromfile(path, dtype=np.float16).reshape(shape)
        return torch.from_numpy(arr).to(self.device, torch.float32)

    def pop(self, key: Hashable) -> None:
        v = self._mem.pop(key, None)
        if v is not None:
            nbytes = v.numel() * 2
            if v.device.type == "cpu":
                self.host_bytes -= nbytes
            else:
                self.device_bytes -= nbytes
        entry = self._disk.pop(key, None)
        if entry is not None:
            os.unlink(entry[0])
            self.disk_bytes -= int(np.prod(entry[1])) * 2

    def keys(self):
        return list(self._mem) + list(self._disk)

    def leave_device(self) -> int:
        """Move what is kept on the GPU to host RAM (then disk) and keep nothing there from now on,
        for the work in progress when the GPU runs short. Returns the bytes freed on the GPU."""
        freed, self.device_budget = self.device_bytes, 0
        for key in [k for k, v in self._mem.items() if v.device.type != "cpu"]:
            self.put(key, self._mem[key])
        return freed

    def close(self) -> None:
        self._mem.clear()
        self._disk.clear()
        self.device_bytes = self.host_bytes = self.disk_bytes = 0
        self._folder.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
