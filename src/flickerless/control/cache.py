"""On-disk cache of annotator outputs, so that a second run with a new prompt does not recompute them.

Key: the video's identity, its shape ``(T, H, W)``, the annotator's name and code version, and the
settings that determine its output (``Annotator.cache_settings``: not device or batch size).
The video's identity is ``video_id`` when the caller gives one (:func:`video_identity` makes one
from a file's path, size and modification time), else a content hash of the frames (BLAKE2b over
every pixel, streamed chunk by chunk).

Layout: ``<cache_dir>/<annotator>/<key>/`` holding ``00000.npz, 00001.npz, ...`` (compressed uint8
chunks of at most ``CHUNK`` frames) and ``meta.json``, written last (plus ``extras.npz`` for by-products such as pose keypoints): an entry without ``meta.json``
is incomplete (an interrupted run) and is recomputed. Reading streams one chunk at a time.

Where: the ``cache_dir`` argument; else ``$FLICKERLESS_CACHE/annotations``; else
``~/.cache/flickerless/annotations``. A cache that cannot be written there (a read-only HOME, a full
disk) is said once, and the frames are given uncached (their by-products, pose keypoints, are kept in
memory for the process: longvideo's fusion reads them after its pose ControlNet's frames).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from ..video import usual_mode
from .base import FrameSource

__all__ = ["default_cache_dir", "video_identity", "folder_stamp", "frames_hash", "cache_key", "AnnotationCache", "CHUNK"]

CHUNK = 32  # frames per stored chunk (and per annotator run step)
log = logging.getLogger("flickerless")


def default_cache_dir() -> Path:
    root = os.environ.get("FLICKERLESS_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "flickerless"
    return base / "annotations"


def video_identity(path, frames: tuple[int, int] | None = None, size: tuple[int, int] | None = None) -> str:
    """A cheap identity for a clip on disk: resolved path, byte size and mtime (plus the frame range
    ``frames=(start, end)`` and the ``size=(H, W)`` it was resized to, when the caller cut or resized it),
    and how clips are read (:data:`flickerless.video.READ_VERSION`: the same file read another way gives
    other frames)."""
    from ..video import READ_VERSION

    p = Path(path).resolve()
    st = p.stat()
    stamp: object = [st.st_size, st.st_mtime_ns] if not p.is_dir() else folder_stamp(p)
    return json.dumps([str(p), stamp, list(frames) if frames else None, list(size) if size else None, READ_VERSION])


def folder_stamp(folder) -> str:
    """The images of a folder clip (name, size, mtime), hashed: what its frames are. The folder's own
    stat misses an image rewritten in place (a cache keyed on it served the old frame's annotations)
    and changes with anything else put there (a job folder, notes), which refused a --resume."""
    from ..video import _image_files

    h = hashlib.blake2b(digest_size=16)
    for f in _image_files(Path(folder)):
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def frame_stamps(folder) -> list[str]:
    """Each image of a folder clip's (name, size, mtime), hashed short, in frame order: which frames changed
    between two runs (a damaged style frame fixed after a stop), where :func:`folder_stamp` says only
    whether any did."""
    from ..video import _image_files

    out = []
    for f in _image_files(Path(folder)):
        st = f.stat()
        out.append(hashlib.blake2b(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode(), digest_size=4).hexdigest())
    return out


def input_stamp(path) -> list:
    """What a clip or image folder given as an input is, cheaply: a folder's :func:`folder_stamp`, a
    file's size and modification time. A resumed run compares it, so that frames kept from inputs
    changed since (a keyframe fixed, a style re-rendered at the same path) are not mixed with new ones."""
    path = Path(path)
    if path.is_dir():
        return [folder_stamp(path)]
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def frames_hash(src: FrameSource, chunk: int = CHUNK) -> str:
    """Content hash of all frames (BLAKE2b-160 over shape and pixels)."""
    h = hashlib.blake2b(digest_size=20)
    h.update(repr(src.shape).encode())
    for _, part in src.chunks(chunk):
        h.update(np.ascontiguousarray(part).tobytes())
    return h.hexdigest()


def cache_key(name: str, version: int, settings: dict, video: str, shape) -> str:
    blob = json.dumps({"annotator": name, "version": version, "settings": settings, "video": video,
                       "shape": list(shape)}, sort_keys=True, default=str)
    return hashlib.blake2b(blob.encode(), digest_size=16).hexdigest()


class AnnotationCache:
    def __init__(self, cache_dir=None):
        self.root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()

    def entry(self, name: str, key: str) -> Path:
        return self.root / name / key

    def has(self, name: str, key: str) -> bool:
        return (self.entry(name, key) / "meta.json").is_file()

    def read(self, name: str, key: str) -> Iterator[np.ndarray]:
        d = self.entry(name, key)
        meta = json.loads((d / "meta.json").read_text())
        for i in range(meta["chunks"]):
            with np.load(d / f"{i:05d}.npz") as z:
                yield z["frames"]

    def read_extra(self, name: str, key: str, what: str):
        """An array stored beside the frames (``extras.npz``, e.g. pose keypoints), or kept in memory where
        the entry could not be written (:data:`_UNWRITTEN`); else None."""
        f = self.entry(name, key) / "extras.npz"
        if not self.has(name, key) or not f.is_file():
            kept = _UNWRITTEN.get(str(self.entry(name, key)), {}).get(what)
            return None if kept is None else np.array(kept)  # a copy, as a file gives: edited, it was everyone's
        with np.load(f) as z:
            return z[what] if what in z.files else None

    def writer(self, name: str, key: str, meta: dict) -> "_Writer":
        return _Writer(self.entry(name, key), meta)


_SAID: set[str] = set()  # the cache folders already said to be unwritable, said once a process
# the by-products (pose keypoints, T x 18 x 3: small) of the newest entries that could not be written, by
# entry: longvideo's fusion asks for the keypoints right after its pose ControlNet's frames were made, and
# with the cache unwritable the pose model ran a second time over the same frames
_UNWRITTEN: dict[str, dict] = {}
_UNWRITTEN_KEPT = 8


def _keep_unwritten(entry: Path, extras: dict | None) -> None:
    if not extras:
        return
    _UNWRITTEN.pop(str(entry), None)
    _UNWRITTEN[str(entry)] = {k: np.array(v) for k, v in extras.items()}  # the caller's arrays may change
    while len(_UNWRITTEN) > _UNWRITTEN_KEPT:
        del _UNWRITTEN[next(iter(_UNWRITTEN))]


def say_unwritable(root: Path, e: OSError, what: str = "annotation cache", kept: str = "control frames") -> None:
    """Say, once for ``root``, that a cache (``what``: the annotation cache, SAM's mask cache) cannot be
    written there: a read-only HOME or a full disk stopped `run` and `demo --engine` with a remedy that
    named Python arguments, and `segment` lost every mask it had computed. What it holds (``kept``) is
    given uncached."""
    if str(root) in _SAID:
        return
    _SAID.add(str(root))
    log.warning("%s %s: cannot write there (%s); %s are not cached, so a next run computes them again: set "
                "FLICKERLESS_CACHE, or give --cache-dir (run, segment; cache_dir= in Python), a writable folder",
                what, root, e, kept)


class _Writer:
    """Writes chunks into a temporary folder beside the entry, renamed into place on :meth:`close`. Where
    that cannot be written, it is said (:func:`say_unwritable`) and nothing is kept."""

    def __init__(self, final: Path, meta: dict):
        self.final = final
        self.meta = dict(meta)
        self.n = 0
        self.frames = 0
        self.tmp: Path | None = None
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            self.tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
        except OSError as e:
            say_unwritable(final.parent.parent, e)

    def write(self, chunk: np.ndarray) -> None:
        if self.tmp is None:
            return
        try:
            np.savez_compressed(self.tmp / f"{self.n:05d}.npz", frames=np.ascontiguousarray(chunk, dtype=np.uint8))
        except OSError as e:  # a disk that filled: the frames go on, uncached
            self._give_up(e)
            return
        self.n += 1
        self.frames += len(chunk)

    def _give_up(self, e: OSError) -> None:
        say_unwritable(self.final.parent.parent, e)
        self.abort()

    def close(self, extras: dict | None = None) -> None:
        if self.tmp is None:  # could not be written: the by-products are kept in memory for this process
            _keep_unwritten(self.final, extras)
            return
        try:
            if extras:
                np.savez_compressed(self.tmp / "extras.npz", **extras)
            self.meta.update(chunks=self.n, frames=self.frames)
            (self.tmp / "meta.json").write_text(json.dumps(self.meta, indent=1, default=str))
        except OSError as e:
            self._give_up(e)
            _keep_unwritten(self.final, extras)
            return
        if self.final.exists():
            shutil.rmtree(self.final, ignore_errors=True)
        usual_mode(self.tmp)
        try:
            os.replace(self.tmp, self.final)
        except OSError:  # another process finished the same entry first: theirs is as good
            shutil.rmtree(self.tmp, ignore_errors=True)

    def abort(self) -> None:
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None
