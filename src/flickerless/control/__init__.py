"""Annotators: frames -> control frames for ControlNets, batched, cached on disk.

>>> from flickerless.control import annotate, to_tensor
>>> depth = annotate("depth", frames)                 # (T, H, W, 3) uint8, cached
>>> controls = [to_tensor(depth), to_tensor(annotate("softedge", frames))]   # (T, 3, H, W) in [0, 1]

Frames in: ``(T, H, W, 3)`` uint8 (as ``flickerless.video.read`` gives), a ``DiskFrames``, a list of
frames, or a ``(T, 3, H, W)`` float tensor in [0, 1]. Control frames out: ``(T, H, W, 3)`` uint8
of the frames' size (``tile`` and ``shuffle`` take a ``size``/``scale`` setting to change it).

Names: depth, softedge, pose, tile, shuffle, canny, lineart (:func:`available`).
"""

from __future__ import annotations

import importlib
import logging
import types
import typing
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import InputError
from .base import Annotator, FrameSource, as_source, to_tensor
from .cache import CHUNK, AnnotationCache, cache_key, default_cache_dir, frames_hash, video_identity

log = logging.getLogger("flickerless")

__all__ = [
    "annotate", "iter_annotate", "get_annotator", "keypoints", "available", "to_tensor", "Annotator", "FrameSource",
    "video_identity", "default_cache_dir", "extract_keypoints", "smooth_keypoints", "pose_keypoints",
    "draw_pose", "OPENPOSE_KEYPOINTS",
]

_REGISTRY = {
    "depth": "depth:DepthAnnotator",
    "softedge": "edges:SoftEdgeAnnotator",
    "pose": "pose:PoseAnnotator",
    "tile": "tile:TileAnnotator",
    "shuffle": "shuffle:ShuffleAnnotator",
    "canny": "edges:CannyAnnotator",
    "lineart": "edges:LineartAnnotator",
}


def _class(name: str) -> type[Annotator]:
    if name not in _REGISTRY:
        raise InputError(f"unknown annotator {name!r}; available: {', '.join(_REGISTRY)}")
    module, cls = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(f".{module}", __name__), cls)


def available() -> dict[str, str]:
    """Annotator names with a one-line description each."""
    return {name: _class(name).description for name in _REGISTRY}


def get_annotator(name: str, **settings) -> Annotator:
    """The annotator ``name`` with ``settings`` (its dataclass fields); an unknown or out-of-range
    setting raises :class:`~flickerless.errors.InputError` naming it (and the valid ones)."""
    import dataclasses

    cls = _class(name)
    valid = [f.name for f in dataclasses.fields(cls)]
    bad = [k for k in settings if k not in valid]
    if bad:
        raise InputError(f"annotator {name!r} has no setting {', '.join(map(repr, bad))}; valid: {', '.join(valid)}")
    hints = typing.get_type_hints(cls)
    for k, v in settings.items():
        what = _kind(hints.get(k), v)
        if what is not None:  # a string where a number goes failed inside the annotator, as a TypeError
            raise InputError(f"annotator {name!r}: setting {k!r} must be {what}, got {v!r}")
    try:
        return cls(**settings)
    except InputError as e:  # a value's own check ("setting 'scale': must be positive") names it, not whose
        raise InputError(f"annotator {name!r}: {e}") from e


_KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _kind(hint, value) -> str | None:
    """What ``value`` should be for the type ``hint`` of a setting (``int``, ``float | None``, ...), or
    None when it fits (or the hint is one this does not check: sizes, sequences)."""
    import math
    import numbers

    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if value is None:
        return None if type(None) in args else _KINDS.get(args[0], "a value")
    simple = [a for a in args if a in _KINDS]
    if len(simple) < len([a for a in args if a is not type(None)]):
        return None
    for a in simple:
        if a is bool and isinstance(value, bool):
            return None
        if a is int and isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return None
        if a is float and isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value):
            return None
        if a is str and isinstance(value, str):
            return None
    return " or ".join("a finite number" if a is float else _KINDS[a] for a in simple)


def iter_annotate(name: str, frames, *, cache: bool = True, cache_dir=None, video_id: str | None = None,
                  **settings) -> Iterator[np.ndarray]:
    """Like :func:`annotate` but yields ``(n, H, W, 3)`` uint8 chunks in order, so memory stays
    bounded on long clips (the frames may be a disk-backed ``DiskFrames``)."""
    from tqdm.auto import tqdm

    if isinstance(name, Annotator) and settings:
        raise InputError(f"give settings to get_annotator, not with an annotator object ({', '.join(settings)})")
    ann = name if isinstance(name, Annotator) else get_annotator(name, **settings)
    ann.check_device()  # annotators that run the clip themselves (depth, pose, tile) skip the base run's check
    src = as_source(frames)
    ann.prepare(src)
    progress = getattr(ann, "progress", True)
    bar = tqdm(total=len(src), desc=f"annotate {ann.name}", unit="frame", disable=not progress, leave=False)
    if not cache:
        for part in ann.run(src, chunk=CHUNK):
            bar.update(len(part))
            yield part
        bar.close()
        return
    store, key, vid = _entry(ann, src, cache_dir, video_id)
    if store.has(ann.name, key):
        log.info("annotator %s: using cached control frames from %s", ann.name, store.entry(ann.name, key))
        for part in store.read(ann.name, key):
            bar.update(len(part))
            yield part
        bar.close()
        return
    writer = store.writer(ann.name, key, {"annotator": ann.name, "version": ann.version,
                                          "settings": ann.cache_settings(), "video": vid, "shape": src.shape})
    try:
        for part in ann.run(src, chunk=CHUNK):
            writer.write(part)
            bar.update(len(part))
            yield part
    except BaseException:
        writer.abort()
        raise
    finally:
        bar.close()
    writer.close(extras=ann.extras())


def _entry(ann: Annotator, src: FrameSource, cache_dir, video_id):
    from ..weights import weights_identity

    store = AnnotationCache(cache_dir)
    vid = video_id if video_id is not None else "sha:" + frames_hash(src)
    settings = ann.cache_settings()
    # local weights enter as their files (size, mtime): replaced at the same path, they are new weights
    weights = {k: weights_identity(v) for k, v in settings.items() if isinstance(v, str) and Path(v).exists()}
    found = getattr(ann, "_path", None)  # a weights file found in the hub's cache (HED)
    if found is not None:
        weights["_path"] = weights_identity(found)
    if weights:
        settings = {**settings, "weights": weights}
    return store, cache_key(ann.name, ann.version, settings, vid, src.shape), vid


def keypoints(frames, *, cache: bool = True, cache_dir=None, video_id: str | None = None, **settings) -> np.ndarray:
    """The pose annotator's keypoints ``(T, 18, 3)`` float32 (x, y as fractions of the frame, off it for a landmark placed outside it;
    confidence; smoothed as
    its settings say), cached together with its skeleton images: after ``annotate("pose", ...)`` with
    the same frames and settings this reads them back instead of running the pose model again."""
    ann = get_annotator("pose", **settings)
    src = as_source(frames)
    if cache:
        store, key, _ = _entry(ann, src, cache_dir, video_id)
        kp = store.read_extra("pose", key, "keypoints")
        if kp is not None:
            return kp
    for _ in iter_annotate(ann, src, cache=cache, cache_dir=cache_dir, video_id=video_id):
        pass
    if ann.keypoints is None:  # entry cached before keypoints were stored alongside
        ann.keypoints = ann.compute_keypoints(src)
    return ann.keypoints


def annotate(name: str, frames, *, cache: bool = True, cache_dir=None, video_id: str | None = None,
             **settings) -> np.ndarray:
    """Control frames for ``frames`` from the annotator ``name``: ``(T, H, W, 3)`` uint8.

    frames: ``(T, H, W, 3)`` uint8, a list of ``(H, W, 3)`` frames, a ``DiskFrames``, or a
    ``(T, 3, H, W)`` float tensor in [0, 1]. ``cache``: reuse/store results on disk under
    ``cache_dir`` (default ``$FLICKERLESS_CACHE/annotations`` or ``~/.cache/flickerless/annotations``),
    keyed by the video (``video_id``, e.g. from :func:`video_identity`, else a hash of the frames),
    the annotator and its settings. ``settings``: the annotator's (see :func:`get_annotator`).
    Use :func:`to_tensor` for the sampler's ``(T, 3, H, W)`` float form.
    """
    parts = list(iter_annotate(name, frames, cache=cache, cache_dir=cache_dir, video_id=video_id, **settings))
    return np.concatenate(parts)


def __getattr__(attr):  # pose helpers without importing mediapipe/scipy at package import
    if attr in ("extract_keypoints", "smooth_keypoints", "pose_keypoints", "draw_pose", "OPENPOSE_KEYPOINTS"):
        from . import pose

        return getattr(pose, attr)
    raise AttributeError(attr)
