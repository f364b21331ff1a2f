"""Read and write clips: video files (PyAV) and folders of images, frames as (H, W, 3) uint8.

Reading: mp4, avi, mov, mkv, webm, gif, m4v (anything FFmpeg decodes) and folders of
png/jpg/bmp/webp/tif images in natural order (``2.png`` before ``10.png``). The frame rate is kept,
and so are a variable-rate clip's frame times (:func:`frame_times`: phone footage, screen recordings).
Frames come out the way players show them: through the clip's colour matrix (BT.709 for an
untagged HD clip, not FFmpeg's BT.601), rounded exactly; a video's rotation and mirroring (the
display matrix phones write for portrait footage, and a front camera's or an editor's flip) and a
photo's EXIF orientation are applied; 16-bit grey images are scaled to 8 bits. HDR and wide-gamut clips are read as their code values (:attr:`VideoInfo.colour`, kept in a
video output by ``colour=``); transparency is read on request (``alpha=True``: RGBA frames) and kept
in PNGs, ProRes 4444, FFV1 and VP9 (WebM's alpha, read back through libvpx).

Writing: ``.mp4``/``.mov``/``.mkv`` as H.264 yuv420p (odd sizes padded by one edge pixel, as
yuv420p needs even sizes; colours through BT.709 for HD and BT.601 below, said in the stream; a
pixel shape other than square said too), or a folder of PNGs (a path with no video extension). A
video output can carry the sound of another clip (``audio=``: the original's, cut to the frames
written and placed against its first frame), copied as it is where the container takes its codec,
else re-encoded as AAC. Output appears
atomically: frames go to a temporary name beside the target, renamed over it only when complete,
so an existing output is never half-overwritten.

Long clips need not be decoded into RAM: :func:`iter_frames` streams, :class:`DiskFrames`
decodes once into an uncompressed file and reads any frame back from it on demand, and
:class:`StreamingFrames` decodes as a forward-moving reader asks and drops what it has passed (a
stretch of the clip on disk, not all of it). Such files go to :func:`spill_dir` (``--tmp``,
``$FLICKERLESS_TMPDIR``, never a /tmp held in RAM), checked for room by :func:`check_free_space`.
"""

from __future__ import annotations

import errno
import functools
import logging
import math
import os
import re
import shutil
import stat
import sys
import tempfile
import threading
import weakref
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from .errors import InputError, OutputError, check_unit_range

log = logging.getLogger("flickerless")

__all__ = [
    "VideoInfo",
    "probe",
    "iter_frames",
    "read",
    "write",
    "VideoWriter",
    "DiskFrames",
    "StreamingFrames",
    "open_frames",
    "keyframe_files",
    "image_size",
    "load_image",
    "keyframe_positions",
    "warn_about_input",
    "image_alpha",
    "images_alpha",
    "stream_facts",
    "say_colour",
    "colour_name",
    "frame_times",
    "spill_dir",
    "spill_parent",
    "SpillFolder",
    "check_free_space",
    "natural_key",
    "resize_frame",
    "check_output_is_not_input",
    "check_output",
    "check_name_fits",
    "check_not_special",
    "keeps_alpha",
    "READ_VERSION",
    "ALPHA_CODECS",
    "VIDEO_CODECS",
    "has_audio",
    "partial_path",
    "stale_outputs",
    "write_whole",
]

VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts",
              ".mts", ".m2ts", ".3gp", ".ogv", ".vob", ".mxf"}
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".tga"}
WRITE_VIDEO_EXTS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska", ".m4v": "mp4", ".webm": "webm"}
# the codecs a video output can be written with: encoder, pixel format, what it is for
VIDEO_CODECS = {
    "h264": ("libx264", "yuv420p", "H.264, plays everywhere"),
    "h265": ("libx265", "yuv420p", "H.265/HEVC, about half the size of H.264 at the same quality"),
    "vp9": ("libvpx-vp9", "yuv420p", "VP9, for the web"),
    "prores": ("prores_ks", "yuv422p10le", "ProRes 422 HQ, 10-bit, for editing"),
    "ffv1": ("ffv1", "bgr0", "FFV1 lossless RGB: the frames exactly, no chroma subsampling"),
}
# the codecs that keep an alpha channel, and the pixel format they keep it in: ProRes 4444, FFV1 RGBA, VP9
# with alpha (WebM's, as browsers play it; read back through libvpx)
ALPHA_CODECS = {"prores": "yuva444p10le", "ffv1": "bgra", "vp9": "yuva420p"}
# the codecs each container takes, the first its default
CONTAINER_CODECS = {"mp4": ("h264", "h265"), "mov": ("h264", "h265", "prores"),
                    "matroska": ("h264", "h265", "vp9", "prores", "ffv1"), "webm": ("vp9",)}
# audio codecs an mp4/mov output takes as they are (Matroska takes any); others are re-encoded as AAC
COPY_AUDIO_CODECS = {"aac", "mp3", "alac", "ac3", "eac3"}
# a WebM output takes these as they are; others are re-encoded as Opus
WEBM_AUDIO_CODECS = {"opus", "vorbis"}
DEFAULT_FPS = 30.0
MAX_FPS = 10000  # the most a writer takes: 2**40 overflowed in the encoder, and such a rate is a mistake
# what reading a clip gives, as a number: raised whenever decoding changes the frames that come out (2:
# Y'CbCr rounded exactly, session 21), so that what is cached by a file's identity (annotations, a job's
# frames) is not taken for frames read the new way
READ_VERSION = 2
_TIME_TICK = Fraction(1, 90000)  # the time unit of a variable-rate output
# the smallest frame (rows, columns) written as H.265: libx265 refuses frames under 16 pixels a side, and
# the one in PyAV's wheels corrupts the heap at some widths under 50 (glibc aborts the process as the
# encoder closes: "corrupted size vs. prev_size"; 3 frames, even widths 16-140 tried at heights 16 and 64:
# PyAV 18.1 at 34-48, PyAV 19.0.2 at 46 and 48); fine from 50 to 140 wide, and at 64 wide for heights 16-70
_X265_MIN = (16, 64)
MEMORY_LIMIT = 1 << 30  # a clip larger than this, uncompressed, is read through a file (open_frames)


def memory_share(clips: int = 1, parts: int = 1) -> int:
    """Bytes of uncompressed frames one clip may hold in RAM when ``clips`` clips are read at once (a
    guide and its style: 2) over ``parts`` ranges done at once (several devices): :data:`MEMORY_LIMIT`
    shared, so that two clips just under the limit each (1.06 GB apiece: 3.07 GB peak RSS) or eight GPUs
    do not hold several times the limit."""
    return MEMORY_LIMIT // (max(1, clips) * max(1, parts))


@dataclass(frozen=True)
class VideoInfo:
    frames: int
    height: int
    width: int
    fps: float
    # the shape of one pixel as shown, width / height: 1 but for anamorphic video (DV and DVD 16:9 store
    # 720x576 shown 1024x576: 64/45), upright like the frames
    pixel_aspect: Fraction = Fraction(1)
    # fields woven into each frame (1080i camcorder and broadcast footage): moving edges show comb teeth
    interlaced: bool = False
    # a video's colour description where it is not plain SDR video (HDR: phone footage in HLG, PQ
    # masters; wide-gamut primaries): (primaries, transfer, matrix) as FFmpeg numbers them; the frames are
    # read as its code values, and a video output is described the same way (VideoWriter's ``colour``)
    colour: tuple[int, int, int] | None = None
    # transparency (a PNG's alpha, a ProRes 4444 or FFV1 clip's alpha plane): frames are read as RGB
    # unless asked for RGBA (``iter_frames(alpha=True)``, what deflicker does where its output keeps it)
    alpha: bool = False
    # frames before the first that decodes, left out (the count and the numbering start after them): a clip
    # cut without re-encoding (a stream capture, a copy cut mid-GOP) begins with frames that refer to a
    # keyframe it lacks, which the decoder drops
    lost_at_start: int = 0


def natural_key(name: str):
    """Sort key that orders embedded numbers by value: ``2.png`` < ``10.png``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


# image types found in frame folders that are not read as frames (said once per folder, not ignored silently)
UNREAD_IMAGE_EXTS = {".gif", ".exr", ".dpx", ".psd", ".heic", ".heif", ".avif", ".jp2", ".jxl", ".cin", ".svg"}
_said_unread: set[str] = set()


def _image_files(folder: Path) -> list[Path]:
    """The frames of a folder: its images by extension, in natural order. Hidden files are not frames
    (macOS puts a ``._0001.png`` beside each file it copies to a USB or network drive); images of a type
    not read as frames are said once."""
    files, unread = [], []
    for p in folder.iterdir():
        if p.name.startswith(".") or not p.is_file():
            continue
        ext = p.suffix.lower()
        if ext in IMAGE_EXTS:
            files.append(p)
        elif ext in UNREAD_IMAGE_EXTS:
            unread.append(p.name)
    if unread and str(folder) not in _said_unread:
        _said_unread.add(str(folder))
        log.warning("%s: %d file%s not read as frames (%s%s): frames are %s; convert them (e.g. to PNG)", folder,
                    len(unread), "" if len(unread) == 1 else "s", ", ".join(sorted(unread)[:3]),
                    ", ..." if len(unread) > 3 else "", " ".join(sorted(IMAGE_EXTS)))
    # the name itself breaks a tie (frame_001.png and frame_1.png), not the order the folder lists them in
    return sorted(files, key=lambda p: (natural_key(p.name), p.name))


_said_numbering: set[str] = set()


def numbering_problems(files: list[Path]) -> tuple[list[int], list[tuple[str, str]], list[str]]:
    """Frame numbers missing from a numbered sequence of images (``00000.png`` ... with ``00200.png``
    gone), pairs of files that carry one number (``frame_001.png``, ``frame_1.png``), and images without
    a number among numbered ones (a ``poster.png`` left in a folder of frames). A folder's frames are
    read in order, so after a missing one every frame is taken one place earlier: paired with the wrong
    guide frame; a stray image is read as a frame at its sorted place. Sparse numbers (keyframes, every
    tenth frame) are not a sequence with holes and give nothing; nor do names mostly without a number."""
    numbered = {}
    doubled = []
    stray = []
    # read as keyframes are: the run that counts frames, also where text follows it (ComfyUI_00005_.png),
    # so that such a folder's gaps are said too
    for f, k in zip(files, _numbering(files)[0]):
        if k is None:  # several numbers, none clearly the frame's ("0005 copy 2"): the one ending the name
            m = _KEY_RE.search(f.stem)
            k = None if m is None else int(m.group(1))
        if k is None:
            stray.append(f.name)
            continue
        if k in numbered:
            doubled.append((numbered[k].name, f.name))
        else:
            numbered[k] = f
    if len(stray) * 2 >= len(files):  # names mostly without numbers: not a numbered sequence
        return [], [], []
    if len(numbered) < 3:
        return [], doubled, stray
    lo, hi = min(numbered), max(numbered)
    missing = sorted(set(range(lo, hi + 1)) - set(numbered))
    if len(missing) * 10 > hi - lo + 1:  # more than a tenth gone: numbered so on purpose (keyframes)
        missing = []
    return missing, doubled, stray


def warn_numbering(folder: Path, files: list[Path]) -> None:
    """Say once per folder what :func:`numbering_problems` finds."""
    if str(folder) in _said_numbering:
        return
    _said_numbering.add(str(folder))
    missing, doubled, stray = numbering_problems(files)
    if stray:
        log.warning("%s: %s %s no frame number among numbered frames: read as a frame%s at %s sorted place; move %s "
                    "out of the folder", folder, ", ".join(stray[:3]) + (", ..." if len(stray) > 3 else ""),
                    "has" if len(stray) == 1 else "have", "" if len(stray) == 1 else "s",
                    "its" if len(stray) == 1 else "their", "it" if len(stray) == 1 else "them")
    if missing:
        log.warning("%s: frame number%s %s %s missing: frames are read in order, so each frame after a gap is taken "
                    "one place earlier (paired with another guide frame); put the missing image%s back", folder,
                    "" if len(missing) == 1 else "s", ", ".join(map(str, missing[:5])) + (", ..." if len(missing) > 5
                                                                                       else ""),
                    "is" if len(missing) == 1 else "are", "" if len(missing) == 1 else "s")
    if doubled:
        a, b = doubled[0]
        log.warning("%s: %s and %s carry one frame number%s: both are read as frames, one after the other; keep one",
                    folder, a, b, f" ({len(doubled)} such pairs)" if len(doubled) > 1 else "")


def not_there(path, said=None) -> InputError:
    """The error for an input ``path`` that does not exist, ``said`` as given (``--guide x``): a link going
    round a loop is said so (it was "no such file or folder", beside a link the user can see)."""
    said = said or str(path)
    if _loops(Path(path)):
        return InputError(f"{said}: is a link that points to itself (or round a loop of links); give the clip's own "
                          "path")
    return InputError(f"{said}: no such file or folder")


def _check_exists(path: Path) -> None:
    """A clip is a file or a folder that exists. Not a pipe or a device: a clip is opened more than once
    (probed, then read), and a FIFO's second opening waited for a writer forever, while ``/dev/stdin``
    from a pipe was said as a /proc path the user never gave."""
    if not path.exists():
        raise not_there(path)
    mode = path.stat().st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        kind = "a pipe" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else \
            "a special file"
        raise InputError(f"{path}: is {kind}, not a file; a clip is read more than once: save it to a file first")


def load_image(path: Path, alpha: bool = False) -> np.ndarray:
    """An image file as ``(H, W, 3)`` uint8 (``alpha``: ``(H, W, 4)``, opaque where the image has no
    transparency), as it is shown (EXIF orientation applied; 16-bit grey scaled)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode.startswith("I") or im.mode == "F":  # 16/32-bit or float grey (PNG, TIFF): convert("RGB")
                a = np.asarray(im).astype(np.float64)  # clips at 255, and truncates floats in [0, 1] to black
                a = np.clip(np.rint(a / _grey_scale(im.mode, a)), 0, 255).astype(np.uint8)
                grey = np.repeat(a[..., None], 3, axis=2)
                return np.dstack([grey, np.full(a.shape, 255, np.uint8)]) if alpha else grey
            if im.mode == "P" and "transparency" in im.info:
                im = _with_alpha(im)
            return np.asarray(im.convert("RGBA" if alpha else "RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise InputError(f"{path}: cannot read as an image ({e})") from e


def _grey_scale(mode: str, a: np.ndarray) -> float:
    """What a grey image's values are divided by to give 0-255, from its type, the same for every frame of a
    clip: a scale taken from each frame's own maximum read the dark frames of a 16-bit fade as 8-bit
    values (bright) and the rest as 16-bit, a flicker of its own. 16-bit: 257; PIL's 32-bit "I" (also
    16-bit PNGs in older PIL): 257 up to 65535, else the 32-bit range; floats: [0, 1] (a highlight past 1
    up to 1.25 clips) unless the frame holds values past that, which say 0-255."""
    if mode.startswith("I;16"):
        return 257.0
    top = float(a.max(initial=0))
    if mode == "F":
        return 1 / 255 if top <= 1.25 else 1.0
    return 257.0 if top <= 65535 else (2**32 - 1) / 255


def check_images(folder) -> None:
    """Every image of a folder clip opens and has the first one's size as shown (EXIF orientation
    applied), without decoding the pixels: what a run would refuse at that frame, said up front
    (``flickerless info``). Raises :class:`InputError` as :func:`iter_frames` would."""
    from PIL import Image, UnidentifiedImageError

    size = first = None
    for f in _image_files(Path(folder)):
        if f.suffix.lower() in (".jpg", ".jpeg") and _jpeg_cut_short(f):  # verify() reads no JPEG data
            raise InputError(f"{f}: cannot read as an image (cut short: no end-of-image marker)")
        try:
            with Image.open(f) as im:
                im.verify()  # the file's structure and checksums: a truncated PNG fails here
            with Image.open(f) as im:  # (verify leaves the image unusable)
                w, h = im.size
                if im.getexif().get(0x0112) in (5, 6, 7, 8):  # turned a quarter: shown the other way round
                    w, h = h, w
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
            raise InputError(f"{f}: cannot read as an image ({e})") from e
        if size is None:
            size, first = (h, w), f.name
        elif (h, w) != size:
            raise InputError(f"{f}: is {w}x{h} but {first} is {size[1]}x{size[0]}: all images of a clip must have one size")


def _jpeg_cut_short(path: Path) -> bool:
    """Whether a JPEG file is cut short (a copy or render cut off; PIL refuses it only when it decodes the
    pixels): its end-of-image marker is not in its last 64 KiB and it does not decode (a phone's motion
    photo carries a video after the marker, and decodes)."""
    from PIL import Image

    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, path.stat().st_size - 65536))
            if b"\xff\xd9" in fh.read():
                return False
    except OSError:  # unreadable: said when it is opened
        return False
    try:
        with Image.open(path) as im:
            im.load()
    except (OSError, ValueError, SyntaxError):  # PIL's "image file is truncated" is an OSError
        return True
    return False


def _ffmpeg_path(path) -> str:
    """A local file's path as FFmpeg is to open it: absolute, so that FFmpeg never reads a protocol from
    it (``take:1.mp4`` and ``12:30.mp4`` were "Protocol not found", ``pipe:0`` read stdin; a leading
    ``/`` is no protocol's)."""
    p = os.fspath(path)  # joined, not normalised: "link/../clip.mp4" is the clip beside the link's target
    return p if os.path.isabs(p) else os.path.join(os.getcwd(), p)


def _short_of_memory(e: BaseException) -> str | None:
    """What FFmpeg's error ``e`` means where it is a lack of memory, not a problem of the file: ENOMEM (an
    allocation failed), or EAGAIN, which pthread_create gives under an address-space limit (``ulimit -v``:
    each decoding or scaling thread reserves its stack), and a local file's decoder never gives otherwise.
    Both were said as a damaged file."""
    return {errno.ENOMEM: "FFmpeg could not allocate memory",
            errno.EAGAIN: "FFmpeg could not start a thread"}.get(getattr(e, "errno", None))


def _memory_error(path: Path, e: BaseException) -> MemoryError:
    """A decoder short of memory (:func:`_short_of_memory`), as the MemoryError it is: the command line says
    it with what to do (free memory, raise the limit)."""
    return MemoryError(f"{path}: out of memory while decoding it ({_short_of_memory(e)}: {e.strerror}); the file "
                       "is not at fault")


def _open_container(path: Path):
    import av

    try:
        container = av.open(_ffmpeg_path(path))
    except (av.error.FFmpegError, OSError) as e:  # type: ignore[attr-defined]
        if isinstance(e, av.error.FFmpegError) and _short_of_memory(e):  # type: ignore[attr-defined]
            raise _memory_error(path, e) from e
        raise InputError(f"{path}: cannot read as a video ({e.__class__.__name__}: {e})") from e
    try:
        _video_stream(container, path)
    except InputError:
        container.close()
        raise
    return container


_ATTACHED_PIC = 0x0400  # AV_DISPOSITION_ATTACHED_PIC: an audio file's cover art, stored as a one-frame video stream
_said_streams: set[str] = set()


def _video_stream(container, path=None):
    """The video stream of a clip that is read: not cover art (an .mp3's picture); of several, the one
    with the most frames where the container says, else the first, said once (a thumbnail track before
    the main video was read in its place without a word)."""
    streams = [s for s in container.streams.video if not (int(getattr(s, "disposition", 0) or 0) & _ATTACHED_PIC)]
    if not streams:
        raise InputError(f"{path or container.name}: has no video stream" +
                         (" (only cover art)" if container.streams.video else ""))
    # (an MP4 cut short before its index says what it holds has a stream with no codec)
    with_codec = [s for s in streams if s.codec_context is not None]
    if not with_codec:
        raise InputError(f"{path or container.name}: cannot read as a video (its video stream says no codec: "
                         "a file cut short?)")
    streams = with_codec
    best = streams[0]
    if len(streams) > 1:
        counts = {s.index: s.frames or 0 for s in streams}
        if not any(counts.values()) and path is not None:  # (Matroska says none) counted from their packets
            st = Path(path).stat()
            counts = _packet_counts(str(Path(path).resolve()), st.st_size, st.st_mtime_ns,
                                    tuple(s.index for s in streams))
        best = max(streams, key=lambda s: counts[s.index])  # the first of the longest
    key = str(Path(path).resolve()) if path is not None else container.name
    if len(streams) > 1 and key not in _said_streams:
        _said_streams.add(key)
        log.warning("%s has %d video streams: stream %d (%dx%d) is read", path or container.name, len(streams),
                    best.index, best.codec_context.width, best.codec_context.height)
    return best


@functools.lru_cache(maxsize=16)
def _packet_counts(path: str, size: int, mtime_ns: int, indices: tuple[int, ...]) -> dict[int, int]:
    """Packets of each of a clip's video streams ``indices``: one pass over the file for each version of
    it, however many times a run opens the clip (each probe and read asks which stream is the clip)."""
    import av

    counts = dict.fromkeys(indices, 0)
    with av.open(_ffmpeg_path(path)) as c:
        for packet in c.demux(*(c.streams[i] for i in indices)):
            if packet.size:
                counts[packet.stream.index] += 1
    return counts


def _stream_fps(stream) -> float:
    """A stream's rate: its average, where that is a rate (FFmpeg 8's raw DV demuxer gives one over the
    time base as the average, 60000 fps for 25), else what FFmpeg guesses from its timing."""
    average, guessed = stream.average_rate, stream.guessed_rate
    tick = stream.time_base
    if average and guessed and tick and average == 1 / tick and guessed != average:
        average = None  # one frame a tick: the time base, not the rate
    if average and guessed and average > 1000 >= guessed:  # thousands a second: a muxer's tick, not a rate
        average = None
    rate = average or guessed or stream.base_rate
    return float(rate) if rate else DEFAULT_FPS


# Colour matrices (AVColorSpace values) and what players assume for a clip that does not say which it
# uses: BT.709 for HD (1280 wide or more than 576 lines, as mpv and VLC guess), BT.601 (SMPTE 170M)
# below. FFmpeg's own default for an untagged clip is BT.601 at any size, which shifts the colours of
# untagged HD footage (reds and greens most) against what every player shows.
_BT709, _UNSPECIFIED, _SMPTE170M = 1, 2, 6


def _is_hd(height: int, width: int) -> bool:
    return width >= 1280 or height > 576


def _orientation(frame) -> tuple[int, bool]:
    """How a decoded frame is shown, from its display matrix: quarter turns anticlockwise (as ``np.rot90``
    counts them) after a left-right mirror where ``mirrored``. Phones store portrait video landscape with a
    rotation; a front camera's or an editor's flip is a mirror, which the matrix's rotation alone (all
    PyAV's ``frame.rotation`` says) reads as half a turn. Read as FFmpeg's own autorotation reads it."""
    try:
        data = frame.side_data
        for item in data:  # the side data (PyAV 18), or their types, the container's keys (PyAV 19)
            sd = item if hasattr(item, "type") else data[item]
            if getattr(sd.type, "name", "") == "DISPLAYMATRIX":
                m = np.frombuffer(bytes(sd), dtype="=i4")
                a, b, c, d = (int(v) for v in m[[0, 1, 3, 4]])
                if abs(a) >= abs(b):  # x stays x: each axis mirrored or not
                    swap, rows, cols = False, d < 0, a < 0
                else:  # x and y trade places
                    swap, rows, cols = True, b < 0, c < 0
                return _ORIENTATIONS[swap, rows, cols]
    except (AttributeError, ValueError, TypeError):  # older PyAV, or a malformed matrix
        pass
    try:
        return round((frame.rotation or 0) / 90) % 4, False
    except (AttributeError, ValueError, TypeError):
        return 0, False


# (axes swapped, rows reversed, columns reversed) -> (turns, mirrored) of ``_orient``
_ORIENTATIONS = {(False, False, False): (0, False), (True, True, False): (1, False), (False, True, True): (2, False),
                 (True, False, True): (3, False), (False, False, True): (0, True), (True, False, False): (1, True),
                 (False, True, False): (2, True), (True, True, True): (3, True)}


def _orient(arr: np.ndarray, turns: int, mirrored: bool) -> np.ndarray:
    """An ``(H, W, ...)`` array as :func:`_orientation` says it is shown."""
    if not turns and not mirrored:
        return arr
    return np.ascontiguousarray(np.rot90(arr[:, ::-1] if mirrored else arr, turns))


def _pixel_aspect(stream) -> Fraction:
    """A video stream's sample aspect ratio, 1 where it says none (or nonsense)."""
    for owner in (stream, stream.codec_context):
        try:
            sar = owner.sample_aspect_ratio
        except AttributeError:
            continue
        if sar and 0.1 < sar < 10:
            return Fraction(sar)
    return Fraction(1)


def _exact_conversion():
    """swscale's flags for a Y'CbCr -> RGB conversion that is rounded, not truncated, with chroma
    interpolated across: its default reads frames darker, by 0.5 levels on average at 8 bits and by
    1.6 at 10 bits (ProRes, HDR and camera log footage), measured on a grey ramp; this costs about
    8 ms a 1080p frame more, on the decoding thread. None where PyAV cannot say them."""
    try:
        from av.video.reformatter import Interpolation as I

        return I.BILINEAR | I.ACCURATE_RND | I.FULL_CHR_H_INT
    except (ImportError, AttributeError):
        return None


_EXACT = _exact_conversion()


def _upright(frame, alpha: bool = False, orientation: tuple[int, bool] | None = None) -> np.ndarray:
    """A decoded frame as players show it: in RGB through its colour matrix (BT.709 for untagged HD,
    see ``_is_hd``), rounded exactly (``_exact_conversion``), turned and mirrored by its display matrix
    (phones store portrait video landscape with a rotation of -90 degrees; FFmpeg and OpenCV turn it on
    reading). ``alpha``: RGBA (opaque for a frame without an alpha plane). ``orientation``: the stream's, as
    :func:`_orientation` read it from its first frame (reading each frame's side data kept every frame's
    buffers until the garbage collector ran: 2.7 times a clip's size held while reading it)."""
    kwargs = {} if _EXACT is None else {"interpolation": _EXACT}
    if getattr(frame, "colorspace", None) == _UNSPECIFIED and frame.format.name.startswith(("yuv", "nv")) \
            and _is_hd(frame.height, frame.width):
        kwargs["src_colorspace"] = "ITU709"
    arr = frame.to_ndarray(format="rgba" if alpha else "rgb24", **kwargs)
    return _orient(arr, *(orientation or _orientation(frame)))


DECODE_THREADS = 8


def _frames(container, stream, threads: bool = False) -> Iterator:
    """The decoded frames of a video stream. A VP8/VP9 stream that carries an alpha plane (WebM's
    ``alpha_mode``) goes through libvpx's decoder: FFmpeg's own drops the alpha. ``threads``: frame
    and slice threads, at most :data:`DECODE_THREADS` (each holds frames of its own)."""
    import av

    vpx = {"vp9": "libvpx-vp9", "vp8": "libvpx"}.get(stream.codec_context.name)
    ctx = None
    if vpx and stream.metadata.get("alpha_mode") == "1":
        try:
            ctx = av.CodecContext.create(vpx, "r")
        except (av.error.FFmpegError, ValueError):  # type: ignore[attr-defined]  # a build without libvpx
            ctx = None
    if threads:
        cc = stream.codec_context if ctx is None else ctx
        try:  # one thread by default in PyAV
            cc.thread_type = "AUTO"
            cc.thread_count = min(DECODE_THREADS, os.cpu_count() or 1)
        except (AttributeError, ValueError, TypeError):  # an older PyAV
            pass
    if ctx is None:
        yield from container.decode(stream)
        return
    for packet in container.demux(stream):
        yield from ctx.decode(packet)  # the last, empty packet flushes the decoder


def _span(start: int | None, stop: int | None) -> tuple[int, int | None]:
    """``(start, stop)`` checked, a start of None read as 0 (as in slicing). Frame numbers count from 0: a
    negative start or stop read from the end in a folder of images (Python's slicing) and meant
    something else in a video, so neither takes them."""
    for name, v in (("start", start), ("stop", stop)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0):
            raise InputError(f"{name} must be a frame number >= 0, got {v!r}")
    return (0 if start is None else int(start)), (None if stop is None else int(stop))


def iter_frames(path, start: int | None = 0, stop: int | None = None, alpha: bool = False) -> Iterator[np.ndarray]:
    """Frames ``start:stop`` of a clip one at a time, ``(H, W, 3)`` uint8 (``alpha``: ``(H, W, 4)``
    RGBA), upright, without holding the clip in memory. Frames before ``start`` are not loaded
    (images) or not converted (video, whose frames are decoded in order anyway); reading ends at
    ``stop``. A file that fails to decode part way (cut short) gives the frames before the failure,
    then an error saying how many there are."""
    path = Path(path)
    start, stop = _span(start, stop)
    _check_exists(path)
    size = None
    if path.is_dir():
        for k, f in enumerate(_image_files(path)[start:stop], start):
            try:
                img = load_image(f, alpha)
            except InputError as e:  # which frame of which clip: a run stopped by it can resume once it is fixed
                e.clip, e.frame = path, k
                raise
            if size is None:
                size, first = img.shape[:2], f.name
            elif img.shape[:2] != size:
                raise InputError(f"{f}: is {img.shape[1]}x{img.shape[0]} but {first} is {size[1]}x{size[0]}: "
                                 "all images of a clip must have one size")
            yield img
        return
    if stop is not None and stop <= start:
        return
    import av

    decoded, threads = 0, True  # frames decoded so far (the file's first ones), and how
    orientation = None  # the stream's, from its first frame (as FFmpeg's autorotation takes it)
    while True:
        container = _open_container(path)
        stream = _video_stream(container, path)
        try:  # decoded with threads: the command line runs two decoders at once, two per device with several
            for i, frame in enumerate(_frames(container, stream, threads=threads)):
                if i < decoded:  # decoded again without threads, after a failure: given out already
                    continue
                decoded = i + 1
                if i < start:
                    continue
                orientation = orientation or _orientation(frame)
                img = _upright(frame, alpha, orientation)
                if size is None:
                    size = img.shape[:2]
                elif img.shape[:2] != size:
                    raise InputError(f"{path}: frame {i} is {img.shape[1]}x{img.shape[0]} but frame {start} is "
                                     f"{size[1]}x{size[0]}: clips that change size are not supported")
                yield img
                if stop is not None and decoded >= stop:  # not a frame more (one cut short fails past its end)
                    break
            return
        except av.error.FFmpegError as e:  # type: ignore[attr-defined]
            if threads:  # a frame thread fails ahead of the frames before it: decode those one by one (also
                threads = False  # where threads could not be had for memory: one needs less)
                continue
            if _short_of_memory(e):  # not the file's fault: its frames past here decode where there is memory
                raise _memory_error(path, e) from e
            # a file cut short (a copy or download that stopped) fails at its last, partial packet: say
            # where, and that the frames before it can be used
            err = InputError(cut_short(path, decoded, e) if decoded else f"{path}: decoding failed ({e})")
            err.decodable, err.cause = decoded, e  # (eval says its own way to use them: cut_short's `use`)
            raise err from e
        finally:
            container.close()


def cut_short(path: Path, decoded: int, e: BaseException,
              use: str = "a run can use them with --frames (table and window modes also read --window frames past "
                         "the range)") -> str:
    """What a clip whose frames past ``decoded`` do not decode is told: where it failed, and ``use``, how the
    command that read it can take the frames before."""
    return (f"{path}: decoding failed after frame {decoded - 1} ({e}): the file may be cut short or damaged there. "
            f"Frames 0-{decoded - 1} decode: {use}, or save them as a clip of their own, e.g. ffmpeg -i {path.name} "
            f"-frames:v {decoded} {path.stem}_first{decoded}.mp4")


def codec_help() -> str:
    """What each codec is and which outputs take it, for ``--codec``'s help."""
    takes = {c: sorted({e for e, f in WRITE_VIDEO_EXTS.items() if c in CONTAINER_CODECS[f] and e != ".m4v"})
             for c in VIDEO_CODECS}
    return "; ".join(f"{c}: {VIDEO_CODECS[c][2]} ({'/'.join(takes[c])})" for c in VIDEO_CODECS)


# FFmpeg's colour numbers (AVColorPrimaries, AVColorTransferCharacteristic, AVColorSpace) of plain SDR
# video: BT.709, unspecified, BT.470 M/BG, SMPTE 170M/240M primaries; transfers with BT.709's curve (or
# near it: gamma 2.2/2.8, linear, log, sRGB, BT.2020's 10/12-bit forms); anything else is said on reading
# and kept in a video output
_SDR_PRIMARIES = {1, 2, 4, 5, 6, 7}
_SDR_TRANSFERS = {1, 2, 4, 5, 6, 7, 8, 13, 14, 15}
_COLOUR_NAMES = {"primaries": {9: "BT.2020", 11: "DCI-P3", 12: "Display P3", 10: "XYZ", 22: "EBU 3213"},
                 "transfer": {16: "PQ (HDR10)", 18: "HLG", 17: "SMPTE 428", 11: "xvYCC", 12: "BT.1361"}}
_HDR_TRANSFERS = {16, 18}
_BT2020_NCL = 9


def _colour(frame) -> tuple[int, int, int] | None:
    """A decoded frame's (primaries, transfer, matrix) where they say other than plain SDR, else None."""
    try:
        prim, trc, matrix = int(frame.color_primaries), int(frame.color_trc), int(frame.colorspace)
    except (AttributeError, TypeError, ValueError):  # an older PyAV
        return None
    if prim in _SDR_PRIMARIES and trc in _SDR_TRANSFERS:
        return None
    if matrix in (_UNSPECIFIED, 0) and prim == 9:  # BT.2020 primaries say nothing of the matrix: its own
        matrix = _BT2020_NCL
    return prim, trc, matrix


def colour_name(colour: tuple[int, int, int]) -> str:
    """``colour`` (:attr:`VideoInfo.colour`) in words: "HLG, BT.2020"."""
    prim, trc, _ = colour
    words = [_COLOUR_NAMES["transfer"].get(trc, f"transfer {trc}")] if trc not in _SDR_TRANSFERS else []
    if prim not in _SDR_PRIMARIES:
        words.append(_COLOUR_NAMES["primaries"].get(prim, f"primaries {prim}"))
    return ", ".join(words)


def _has_alpha(img) -> bool:
    """Whether a PIL image has transparency that is used (an RGBA PNG all opaque has none to lose)."""
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return bool(np.asarray(img.getchannel("A")).min() < 255)
    if "transparency" not in img.info:
        return False
    # a palette or colour key: used only where a pixel takes it (an opaque RGBA image saved as a palette
    # PNG carries a tRNS chunk of 255s)
    return bool(np.asarray(_with_alpha(img).getchannel("A")).min() < 255)


def _with_alpha(img):
    """A PIL image as RGBA: a palette's transparency through RGBA, as PIL asks (going straight to RGB
    warns "Palette images with Transparency expressed in bytes should be converted to RGBA")."""
    return img.convert("RGBA")


def _first_image(folder: Path, files: list[Path] | None = None) -> np.ndarray:
    """The first image of a folder clip (``files``: its images, when already listed)."""
    files = _image_files(folder) if files is None else files
    if not files:
        raise InputError(f"{folder}: folder holds no images ({', '.join(sorted(IMAGE_EXTS))})")
    return load_image(files[0])


def probe(path) -> VideoInfo:
    """Frame count, size and fps of a clip (counts frames by decoding when the container does not say)."""
    path = Path(path)
    _check_exists(path)
    if path.is_dir():
        files = _image_files(path)
        h, w = _first_image(path, files).shape[:2]
        warn_numbering(path, files)
        return VideoInfo(len(files), h, w, DEFAULT_FPS, alpha=images_alpha(files))
    import av

    container = _open_container(path)
    try:
        stream = _video_stream(container, path)
        fps = _stream_fps(stream)
        # FFmpeg guesses a GIF's rate from its first delay; a variable-rate Matroska clip can say one of
        # thousands of frames a second (its shortest step's, in its 1 ms ticks), or none, where the guess is
        # its tick (a variable-rate WebM with sound: 1000 fps): all from their packets
        if container.format.name == "gif" or (stream.average_rate or 0) > 1000 or fps >= 1000:
            fps = _mean_packet_rate(path) or fps
        aspect = _pixel_aspect(stream)
        interlaced = alpha = False
        colour = None
        n = stream.frames
        h = w = 0
        first_pts = None
        try:  # the size as read: the first frame, upright (a rotated stream's coded size is turned)
            frame = next(_frames(container, stream))
            first_pts = frame.pts
            orientation = _orientation(frame)
            h, w = _upright(frame, orientation=orientation).shape[:2]
            if orientation[0] % 2:
                aspect = 1 / aspect
            interlaced = bool(getattr(frame, "interlaced_frame", False))
            colour = _colour(frame)
            # an alpha plane is there on purpose (ProRes 4444 and FFV1 without one decode without one), but
            # FFmpeg decodes every GIF with one: a GIF has transparency where its first frame shows it
            alpha = any(getattr(c, "is_alpha", False) for c in frame.format.components)
            if alpha and container.format.name == "gif":
                alpha = bool(frame.to_ndarray(format="rgba")[..., 3].min() < 255)
        except (StopIteration, av.error.FFmpegError):  # type: ignore[attr-defined]
            n = 0
    finally:
        container.close()
    lost = 0
    timing = None
    if h and (n or not interlaced):
        try:
            timing = _shown_packets(path).timing
        except av.error.FFmpegError:  # type: ignore[attr-defined]
            timing = ()
    if h and not n and not interlaced:
        # a container that does not say (Matroska, WebM, MPEG-TS, fragmented MP4): its shown packets do,
        # without decoding the clip (which a run's several probes each did: 40 s a probe for a minute of
        # 1080p); not where a frame's two fields may be two packets
        n = len(timing)
    if n and h:
        # the header's count includes frames that are never shown; a count only lowered here (a field-coded
        # clip can store a frame's two fields as two packets)
        n = min(n, len(timing)) or n
        if first_pts is not None:  # shown before the first frame that decodes: dropped by the decoder
            lost = sum(1 for p, _ in timing if p is not None and p < first_pts)
            lost = lost if lost < n else 0
            n -= lost
    if not n or not h:
        n, first = 0, None
        for f in iter_frames(path):
            first = f if first is None else first
            n += 1
        if first is not None:
            h, w = first.shape[:2]
    return VideoInfo(int(n), int(h), int(w), fps, aspect, interlaced, colour, alpha, lost)


def stream_facts(path) -> dict:
    """What :func:`probe` does not say of a clip, for ``flickerless info``: a folder's image formats and
    first and last names; a video's codec, pixel format and bit depth, its stored size and the quarter
    turns (after a mirror, where ``mirrored``) that make it upright, and its sound (codec, rate, channels; None for none)."""
    path = Path(path)
    _check_exists(path)
    if path.is_dir():
        files = _image_files(path)
        if not files:
            raise InputError(f"{path}: folder holds no images ({', '.join(sorted(IMAGE_EXTS))})")
        return {"kind": "images", "first": files[0].name, "last": files[-1].name,
                "formats": sorted({f.suffix.lower().lstrip(".") for f in files})}
    import av

    container = _open_container(path)
    try:
        stream = _video_stream(container, path)
        cc = stream.codec_context
        facts = {"kind": "video", "container": container.format.name, "codec": cc.name,
                 "pix_fmt": cc.format.name if cc.format else None, "stored_width": cc.width,
                 "stored_height": cc.height, "turns": 0, "mirrored": False, "bits": None, "sound": None}
        try:
            frame = next(_frames(container, stream))
            facts["turns"], facts["mirrored"] = _orientation(frame)
            facts["pix_fmt"] = frame.format.name
            facts["bits"] = max(c.bits for c in frame.format.components)
        except (StopIteration, av.error.FFmpegError, AttributeError):  # type: ignore[attr-defined]
            pass
        if container.streams.audio:
            a = container.streams.audio[0].codec_context
            facts["sound"] = f"{a.name}, {a.sample_rate} Hz, {a.channels} channel{'s' * (a.channels != 1)}"
        return facts
    finally:
        container.close()


def images_alpha(files, every: bool = False) -> bool:
    """Whether a clip's (or keyframes') image files have transparency that is used: images saved as RGBA
    are often all opaque, and finding that out decodes an image, so a clip's is looked for in nine
    images spread over it; ``every``: in each (keyframes, a few images, all read anyway: one of them
    transparent lost its alpha without a word when only three were looked at)."""
    files = list(files)
    if every or len(files) <= 9:
        return any(image_alpha(f) for f in files)
    return any(image_alpha(files[round(k * (len(files) - 1) / 8)]) for k in range(9))


def image_alpha(path) -> bool:
    """Whether an image file has transparency that is used (not an all-opaque RGBA image)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return _has_alpha(im)
    except (OSError, ValueError):  # unreadable: said when its frames are read
        return False


@dataclass(frozen=True)
class _Packets:
    """A clip's video packets that are shown, read without decoding: not those an edit list discards
    (a trim by ``ffmpeg -ss ... -c copy`` keeps the frames before its cut, to decode from), not the
    empty ones an AVI has for dropped frames, none past where a cut-short file ends."""

    time_base: Fraction | None
    frames: int  # what the stream's header says
    timing: tuple[tuple[int | None, int], ...]  # (pts, duration) of each, in decoding order
    end: int | None = None  # when the stream's last frame ends, as its header says (an MP4 track's edit)
    own_durations: bool = False  # each packet's duration is its own frame's (Matroska), not a decoding step
    stored: int = 0  # packets with data, shown or not: fewer than the header counts in a file cut short
    corrupt: bool = False  # a packet the demuxer flags as cut off (a file that stops inside its last one)


def _shown_packets(path) -> _Packets:
    """:class:`_Packets` of a clip: one pass over the file for each version of it, which the frame
    count, the variable-rate timing and a GIF's rate all read (a run probes a clip several times)."""
    st = Path(path).stat()
    return _read_packets(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _read_packets(path: str, size: int, mtime_ns: int) -> _Packets:
    container = _open_container(Path(path))
    try:
        stream = _video_stream(container, path)
        # each packet's time taken as it passes, not the packets kept: a list of them held the whole file in
        # RAM at every probe (a 2 GB ProRes clip, 2 GB more, before a frame was decoded)
        timing, stored, corrupt = [], 0, False
        for p in container.demux(stream):
            if not p.size:
                continue
            stored += 1
            corrupt = corrupt or bool(getattr(p, "is_corrupt", False))
            if not getattr(p, "is_discard", False):
                timing.append((p.pts, p.duration or 0))
        end = None if stream.duration is None else (stream.start_time or 0) + stream.duration
        return _Packets(stream.time_base, stream.frames, tuple(timing), end,
                        "matroska" in (container.format.name or ""), stored, corrupt)
    finally:
        container.close()


# rates a clip is made at, which a GIF's whole hundredths can only approximate over its length
COMMON_RATES = (8, 10, 12, 12.5, 15, 20, 24000 / 1001, 24, 25, 30000 / 1001, 30, 48, 50)


def _mean_packet_rate(path) -> float | None:
    """Frames a second over a clip's whole length, from its packets' durations (no decoding): a GIF's
    30 fps is stored as delays of 3 and 4 hundredths of a second, and its first delay says 33.3. Where
    a common rate (30, 25, 24, 23.976, ...) gives the length to within half a tick, as a GIF written at
    that rate does (its frames start at whole hundredths, rounded), it is that rate (a whole number
    first: a short clip cannot tell 24 from 23.976): 10 frames at 30 fps last 33 hundredths, which alone
    would read as 30.3."""
    packets = _shown_packets(path)
    ticks = sum(d for _, d in packets.timing)
    stamps = sorted(p for p, _ in packets.timing if p is not None)
    if not ticks and len(stamps) > 1:  # blocks without durations (a WebM's with sound): the frames' span,
        ticks = (stamps[-1] - stamps[0]) * len(stamps) / (len(stamps) - 1)  # the last as long as the mean
    seconds = float(ticks * packets.time_base) if ticks and packets.time_base else 0.0
    if not packets.timing or seconds <= 0:
        return None
    n, half_tick = len(packets.timing), float(packets.time_base) / 2
    fits = [r for r in COMMON_RATES if abs(n / r - seconds) <= half_tick + 1e-9]
    # where 24 and 23.976 both fit (a short clip cannot tell them apart), the whole number
    fits = [r for r in fits if float(r).is_integer()] or fits
    return float(min(fits, key=lambda r: abs(n / r - seconds))) if fits else n / seconds


def _frame_bytes(path) -> int:
    """Bytes of one ``(H, W, 3)`` frame of a clip, from its header (a folder: its first image), without
    what :func:`probe` may do for a container that does not say its frame count: decode it all."""
    path = Path(path)
    _check_exists(path)
    if path.is_dir():
        return _first_image(path).size
    container = _open_container(path)
    try:
        cc = _video_stream(container, path).codec_context
        return max(1, cc.width * cc.height * 3)  # turned upright, a rotated frame has as many bytes
    finally:
        container.close()


def frame_times(path, frames: int | None = None) -> np.ndarray | None:
    """When each frame of a variable-frame-rate clip is shown, in seconds from the first frame, plus one
    entry more: when the last frame ends. None for a clip at a constant rate (its fps says it all), a
    folder of images, or a clip whose timestamps do not account for each of its ``frames`` frames.

    Phones and screen recorders write variable-rate video (frames further apart in low light or on a
    still screen); played at its average rate instead, a stretch drifts against the sound by up to the
    gaps it had. Read from the packets (no decoding): each frame's presentation time, in order.
    """
    import av

    path = Path(path)
    if path.is_dir():
        return None
    try:
        shown = _shown_packets(path)
    except av.error.FFmpegError:  # type: ignore[attr-defined]
        return None
    tb = shown.time_base
    packets = [(p, d) for p, d in shown.timing if p is not None]
    # a container that does not count its frames (Matroska, WebM) is counted from its packets, as probe does
    frames = frames or shown.frames or len(packets)
    pts = np.asarray([p for p, _ in packets], dtype=np.int64)
    if len(pts) < 3 or not tb or len(pts) != frames or len(set(pts.tolist())) != len(pts):
        return None
    in_order = bool(np.all(np.diff(pts) > 0))
    pts = np.sort(pts)
    steps = np.diff(pts)
    last = _last_frame_ticks(packets, pts, in_order, shown)
    typical = float(np.median(steps))
    # a constant rate whose frame time is not a whole number of ticks steps by one tick either way
    # (29.97 fps in 1/1000 s: 33, 34, 33, ...): constant, as is anything within 1% of its median step. The
    # last frame's length comes from the stream's end, which an MP4 muxer rounds to its movie time scale
    # (1/1000 s): within a millisecond more of the step, it is constant too (a 29.97 fps clip read as variable)
    close = max(1.0, 0.01 * typical)
    if np.all(np.abs(steps - typical) <= close) and abs(last - typical) <= max(close, 0.001 / float(tb)):
        return None
    return (np.append(pts, pts[-1] + last) - pts[0]) * float(tb)


def _last_frame_ticks(packets, pts: np.ndarray, in_order: bool, shown: _Packets) -> int:
    """How long the last shown frame lasts, in time-base ticks, from ``packets`` (pts, duration) in
    decoding order and their times ``pts`` sorted.

    In the order they are shown (a GIF holding its last frame, say), the last packet's duration says
    it, as the last shown packet's does in Matroska, whose blocks keep their own frame's duration.
    With frames reordered (B-frames), an MP4's packet durations are the steps between decoding times,
    and the last frame lasts until the stream's end as its header says it. A stream that ends before
    its last frame is shown, or says no end, says nothing: the step before it."""
    duration = packets[-1][1]
    if shown.own_durations and not in_order:
        duration = max(packets, key=lambda p: p[0])[1]
    if in_order or shown.own_durations:
        return int(duration) if duration > 0 else int(pts[-1] - pts[-2])
    if shown.end is not None and shown.end > pts[-1]:
        return int(shown.end - pts[-1])
    return int(pts[-1] - pts[-2])


def warn_about_input(path, info: VideoInfo, say_alpha: bool = True) -> None:
    """Say once what reading a clip does not keep, and the way out: interlacing (frames are read as
    stored, two fields woven together, and patch matching and generation see their comb teeth) and,
    unless the caller says what becomes of it (``say_alpha=False``: deflicker's style), transparency
    (frames are read as RGB). HDR is said by :func:`say_colour`."""
    if info.interlaced:
        log.warning("%s is interlaced (two fields woven into each frame): moving edges show comb teeth that "
                    "matching and generation take for detail; deinterlace it first, e.g. ffmpeg -i %s -vf bwdif "
                    "-c:a copy progressive.mp4", path, Path(path).name)
    if info.lost_at_start:
        log.warning("%s: its first %d frames cannot be decoded (they refer to a keyframe the file lacks, as in a clip "
                    "cut without re-encoding): they are left out, and frame 0 is the first that decodes", path,
                    info.lost_at_start)
    if info.alpha and say_alpha:
        log.warning("%s has transparency (an alpha channel): its frames are read as RGB, without it, and the "
                    "output has none", path)


def say_colour(path, info: VideoInfo, kept: bool) -> None:
    """Say that a clip is HDR or wide-gamut (:attr:`VideoInfo.colour`), whose frames are read as their
    code values, not tone mapped: ``kept`` when a video output is described as this clip is (it plays
    with the same colours), else with the advice to convert it to SDR first."""
    if info.colour is None:
        return
    name, what = Path(path).name, colour_name(info.colour)
    if info.colour[1] not in _HDR_TRANSFERS:
        log.info("%s has a wide-gamut colour description (%s): %s", path, what,
                 "a video output is described the same way" if kept else "its frames are read as its code values")
    elif kept:
        log.warning("%s is HDR (%s): its frames are worked on as their code values at 8 bits per channel "
                    "(smooth gradients may band); a video output is described as %s is, so it plays with the "
                    "same colours (a PNG folder or GIF cannot say so: they look flat); --codec h265 writes the "
                    "10-bit H.265 that HDR players and sites expect", path, what, name)
    else:
        log.warning("%s is HDR (%s): its frames are read as their code values, without tone mapping, and look "
                    "flat and grey to a model trained on SDR images; convert it to SDR first, e.g. ffmpeg -i %s "
                    "-vf zscale=t=linear:npl=100,format=gbrpf32le,zscale=p=bt709,tonemap=hable,zscale=t=bt709:"
                    "m=bt709:r=tv,format=yuv420p sdr.mp4", path, what, name)


def read(path, max_frames: int | None = None) -> tuple[np.ndarray, float]:
    """The whole clip in memory: ``(T, H, W, 3)`` uint8 and fps. For long clips use :func:`open_frames`."""
    if max_frames is not None and (isinstance(max_frames, bool) or not isinstance(max_frames, (int, np.integer))
                                   or max_frames < 1):  # was said of "stop", which read has not; 0 of "0:0"
        raise InputError(f"max_frames must be a number of frames, at least 1 (None: all of them), got {max_frames!r}")
    frames, info = open_frames(path, memory_limit=sys.maxsize, stop=max_frames)  # one array, filled as decoded
    return frames, info.fps


# file systems held in RAM: frames spilled there to spare host memory would take it all the same
_MEMORY_FILESYSTEMS = {"tmpfs", "ramfs"}


def _filesystem(path) -> str | None:
    """The type of the file system ``path`` is on (Linux: from /proc/mounts), or None if unknown."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    real = os.path.realpath(path)
    best, kind = "", None
    for line in mounts:
        parts = line.split()
        if len(parts) < 3:
            continue
        point = parts[1].replace("\\040", " ")
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, parts[2]
    return kind


def spill_dir(near=None, chosen=None) -> str:
    """Where frames that do not fit in host memory are kept, uncompressed: ``chosen`` (``--tmp``), else
    ``$FLICKERLESS_TMPDIR``, else the system's temporary folder, unless that is held in RAM (a tmpfs
    /tmp, as Fedora and Arch mount it), where spilling would spend the memory it is meant to spare:
    then the folder of ``near`` (the output), said once."""
    for d, what in ((chosen, "--tmp"), (os.environ.get("FLICKERLESS_TMPDIR"), "FLICKERLESS_TMPDIR")):
        if d:
            if not os.path.isdir(d) or not os.access(d, os.W_OK):
                raise InputError(f"{what} {d}: not a writable folder")
            return str(d)
    tmp = tempfile.gettempdir()
    if near is not None and _filesystem(tmp) in _MEMORY_FILESYSTEMS:
        folder = str(Path(near).resolve().parent)
        if _filesystem(folder) not in _MEMORY_FILESYSTEMS and os.access(folder, os.W_OK):
            log.info("%s is held in memory (tmpfs): frames that do not fit in RAM go to %s instead (--tmp DIR "
                     "chooses)", tmp, folder)
            return folder
    return tmp


def spill_parent(tmpdir=None) -> str | None:
    """The folder spilled frames go in: ``tmpdir``, else ``$FLICKERLESS_TMPDIR``, else None (the
    system's temporary folder)."""
    return tmpdir or os.environ.get("FLICKERLESS_TMPDIR") or None


def _spill_prefix(prefix: str) -> str:
    """A spill file's or folder's name prefix, with this process's id: one a killed run left is known
    by its process being gone (:func:`stale_spills`)."""
    return f"{prefix}{os.getpid()}-"


def _remove(path: str, owner: int | None = None) -> None:
    """Remove a working file or folder; ``owner``: only in the process of that id (a finalizer is copied
    into a forked child, whose exit removed the parent's files)."""
    if owner is not None and os.getpid() != owner:
        return
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.unlink(path)
        except OSError:
            pass


# exactly the names _spill_prefix and tempfile make (mkstemp's and mkdtemp's 8 characters): a name of the
# user's that merely starts alike (flickerless-2024-results/) is never taken for one
_SPILL_NAME = re.compile(r"flickerless-(?:frames-)?(\d+)-[a-z0-9_]{8}(?:\.u8)?")


def stale_spills(folder, older_than: float = 600.0) -> list[Path]:
    """Spill files and folders in ``folder`` that a run killed outright left (SIGKILL, the out-of-memory
    killer: nothing ran to remove them; a clip's size each): their process is gone, and they were not
    written to for ``older_than`` seconds."""
    import time

    found = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return []
    for p in entries:
        m = _SPILL_NAME.fullmatch(p.name)
        if m is None or int(m.group(1)) == os.getpid() or (p.suffix == ".u8") == p.is_dir():
            continue
        try:
            if p.is_symlink() or p.lstat().st_uid != os.getuid():  # ours only: a shared /tmp holds others'
                continue
        except (OSError, AttributeError):
            continue
        try:
            os.kill(int(m.group(1)), 0)
            continue  # its run is alive
        except ProcessLookupError:
            pass
        except (PermissionError, OverflowError, OSError):  # another user's live process, or nonsense
            continue
        try:
            if time.time() - p.stat().st_mtime > older_than:
                found.append(p)
        except OSError:
            continue
    return sorted(found)


def remove_stale_spills(folder) -> None:
    """Remove what :func:`stale_spills` finds, said with the room it gives back."""
    stale = stale_spills(folder)
    if not stale:
        return
    size, gone = 0, []
    for p in stale:
        try:
            n = sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size
        except OSError:
            n = 0
        _remove(str(p))
        if not p.exists():  # said only when it is gone: one that could not be removed was said at every run
            size += n
            gone.append(p)
    if gone:
        log.warning("%s: removed %d working file%s of runs that were killed (%s): %s freed", folder, len(gone),
                    "" if len(gone) == 1 else "s", ", ".join(p.name for p in gone[:3]) + (", ..." if len(gone) > 3 else ""),
                    _bytes_text(size))


class SpillFolder:
    """A temporary folder for frames that do not fit in RAM: made on first use in
    :func:`spill_parent`, removed with all it holds by :meth:`close` (or when it is collected, or at
    exit: a caller that forgot to close it left a clip's size behind)."""

    def __init__(self, tmpdir=None, prefix: str = "flickerless-"):
        self.parent, self.prefix = spill_parent(tmpdir), prefix
        self.path: str | None = None
        self._gone = None

    def file(self, name: str) -> str:
        """A path for ``name`` in the folder (made now if it is not there yet)."""
        if self.path is None:
            self.path = tempfile.mkdtemp(prefix=_spill_prefix(self.prefix), dir=self.parent)
            self._gone = weakref.finalize(self, _remove, self.path, os.getpid())
        return os.path.join(self.path, name)

    def close(self) -> None:
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            self.path = None
        if self._gone is not None:
            self._gone.detach()


def usual_mode(path) -> None:
    """Give a finished result the permissions a plainly created file (or folder) would have under the
    process's umask: ``0644`` / ``0755`` under the usual ``022``. The temporary names results are written
    under (``mkstemp``, ``mkdtemp``; safetensors' files too) are private, ``0600`` / ``0700``, and
    renaming keeps that: an output nobody else on the machine (a web server, a colleague, a render
    farm's next job) could read. A failure to change them (a filesystem without modes) is ignored."""
    try:
        os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~_umask())
    except OSError:
        pass


def _name_max(folder) -> int:
    """The longest file name, in bytes, that ``folder``'s file system takes (255 on most)."""
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def check_name_fits(path, said=None) -> None:
    """Refuse an output whose name is longer than its file system takes, before any work (``said``: how
    the message names it, such as ``--json NAME``): it failed only when written, after the work."""
    path = Path(path)
    n, limit = len(os.fsencode(path.name)), _name_max(path.parent if str(path.parent) else ".")
    if n > limit:
        raise OutputError(f"{said or path}: the name is {n} bytes, {n - limit} more than its file system takes "
                          f"({limit}); give a shorter name")


def _hidden_stem(name: str, folder, room: int) -> str:
    """``name`` as it starts a hidden temporary name beside it, ``.NAME`` then ``room`` bytes (a dot, the
    random part, a suffix): cut short where the whole would pass the file system's limit, as a valid
    name of 246-255 bytes did ("File name too long" after the work: eval lost its scores). A cut name
    ends in 8 characters of the whole name's hash, so that two long names alike at their start (``A...A.mp4``,
    ``A...A.mkv``) do not share a lock or each other's leftovers. The same cut (:func:`stale_outputs`)
    keeps it recognised."""
    limit = _name_max(folder)
    if len(os.fsencode("." + name)) + room <= limit:
        return name
    import hashlib

    tag = "~" + hashlib.sha1(os.fsencode(name)).hexdigest()[:8]
    cut = name
    while cut and len(os.fsencode("." + cut + tag)) + room > limit:
        cut = cut[:-1]
    return cut + tag


def _link_loop(path: Path) -> Path | None:
    """The link at or above ``path`` that never reaches a file (``ln -s loop.mp4 loop.mp4``, or a ring of
    links), if any: the one nearest the root, where the loop is."""
    if not _loops(path):
        return None
    return next((p for p in (*reversed(path.parents), path) if os.path.islink(p) and _loops(p)), path)


def _loops(path: Path) -> bool:
    """Whether ``path`` goes round a loop of links. Python's realpath follows links one by one and knows a
    loop by a link seen twice; the kernel's ELOOP (os.stat) comes after 40 links, so a chain of 45 that
    ends in a file was refused as a loop."""
    try:
        os.path.realpath(path, strict=True)
    except OSError as e:
        return e.errno == errno.ELOOP
    except RuntimeError:  # (older Pythons said a loop so)
        return True
    return False


def _through_link(path: Path) -> Path:
    """Where an output at ``path`` goes: a link's target. Written under a temporary name and renamed onto
    the link, the output replaced the link itself without a word. A link that loops is refused: its
    target cannot be found (it ended in pathlib's RuntimeError traceback)."""
    loop = _link_loop(path)
    if loop is not None:
        raise OutputError(f"{path}: {'is' if loop == path else f'its folder {loop} is'} a link that points to itself "
                          f"(or round a loop of links), so nothing can be written through it; remove the link or give "
                          "another output path")
    try:
        link = path.is_symlink()
    except OSError:  # a name too long to look up: said by the output's own checks
        return path
    return Path(os.path.realpath(path)) if link else path


def check_not_special(path: Path, said=None) -> None:
    """Refuse an output that is (or links to) a device or a pipe: the renamed result would replace it
    (``/dev/null`` made a regular file, where the folder is writable, as root's ``/dev`` is)."""
    target = _through_link(path)
    try:
        mode = target.stat().st_mode
    except OSError:  # not there yet
        if target != path and re.fullmatch(r"(pipe|socket|anon_inode):\[?.*", target.name):
            # /dev/stdout into a pipe: a link to /proc/PID/fd/1, itself to "pipe:[N]", no file of that name
            raise OutputError(f"{said or path}: is a pipe, not a file; give a file path") from None
        return
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        where = "" if target == path else f" (through the link, {target})"
        raise OutputError(f"{said or path}: is not a file or a folder{where}; an output would replace it, give a file "
                          "path")


def write_whole(path, content) -> None:
    """``content`` (text, or a callable that writes the file it is given) written to a temporary file
    beside ``path``, then renamed onto it: a write that fails (a full disk, a file size limit, a stop)
    leaves what ``path`` held before, not a cut-off file in its place, and no temporary file behind. The
    result has the permissions a plainly written file would. A link is written through, to its target."""
    path = Path(path)
    check_not_special(path)
    path = _through_link(path)
    parent = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{_hidden_stem(path.name, parent, len('.XXXXXXXX.tmp'))}.", suffix=".tmp",
                               dir=parent)
    try:
        if callable(content):
            os.close(fd)
            content(Path(tmp))
        else:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(content)
        usual_mode(tmp)  # mkstemp's 0600 would make it readable to nobody else
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process's umask: read from /proc on Linux, where reading it changes nothing; elsewhere set
    and set straight back (the only way there), which a file made by another thread in between would see."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def check_free_space(folder, needed: int, what: str) -> None:
    """Refuse, in one line, to start work that will fill the disk of ``folder``: ``needed`` bytes."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if needed > free:
        raise InputError(f"{what} needs about {_bytes_text(needed)} in {folder}, which has {_bytes_text(free)} free: "
                         "pass --tmp DIR on a disk with room, or a shorter --frames range")


def _bytes_text(n: int) -> str:
    """``1.5 GiB``, ``12 MiB``, ``300 KiB``: a size said with a unit that shows it (0.0 GiB said nothing)."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{max(1, round(n / 2**10))} KiB"


class DiskFrames:
    """A clip decoded once into an uncompressed file; ``frames[i]`` reads frame i back, and
    :meth:`append` adds frames at the end.

    Holds one frame in memory at a time. Use as a context manager or call :meth:`close`. The file is
    made in ``tmpdir``, else ``$FLICKERLESS_TMPDIR``, else the system's temporary folder.
    """

    def __init__(self, frames: Iterable[np.ndarray] = (), tmpdir: str | None = None):
        fd, self.path = tempfile.mkstemp(prefix=_spill_prefix("flickerless-frames-"), suffix=".u8",
                                         dir=spill_parent(tmpdir))
        # removed when collected or at exit too: an open_frames result not closed left a clip's size behind
        self._gone = weakref.finalize(self, _remove, self.path, os.getpid())
        self.n = 0
        self.shape: tuple[int, int, int] | None = None
        self._out = os.fdopen(fd, "wb")  # appends go here; reads through their own handle
        self._fh = open(self.path, "rb")
        try:
            for fr in frames:
                self.append(fr)
        except BaseException:
            self.close()
            raise

    def append(self, frame: np.ndarray) -> None:
        """Add a frame at the end (a clip written as it is computed): uint8, or floats in [0, 1] (scaled,
        as :func:`write` does; a cast made them black)."""
        frame = _as_bytes(frame, self.n)
        if self.shape is None:
            self.shape = frame.shape
        elif frame.shape != self.shape:
            raise InputError(f"frame {self.n} is {frame.shape[1]}x{frame.shape[0]}, earlier frames are "
                             f"{self.shape[1]}x{self.shape[0]}: all frames must have one size")
        self._out.write(frame.tobytes())
        self.n += 1

    @property
    def frame_bytes(self) -> int:
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> np.ndarray:
        if not -self.n <= i < self.n:
            raise IndexError(i)
        i %= self.n
        self._out.flush()  # frames appended since the last read
        self._fh.seek(i * self.frame_bytes)
        return np.frombuffer(self._fh.read(self.frame_bytes), dtype=np.uint8).reshape(self.shape)

    def array(self) -> np.ndarray:
        """All frames as one read-only ``(T, H, W, 3)`` array mapped from the file: what reads a whole
        clip by slices (the metrics) takes it from here without holding it in RAM. Valid until
        :meth:`close`."""
        if not self.n:
            raise InputError("no frames")
        self._out.flush()
        return np.memmap(self.path, dtype=np.uint8, mode="r", shape=(self.n, *self.shape))

    def close(self) -> None:
        for name in ("_out", "_fh"):
            fh = getattr(self, name, None)
            if fh is not None:
                fh.close()
                setattr(self, name, None)
        if os.path.exists(self.path):
            os.unlink(self.path)
        self._gone.detach()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class StreamingFrames:
    """Frames ``start:start + count`` of a clip, decoded in order as they are asked for and kept until
    :meth:`release_before` drops them: a long clip read by a pass that moves forward (table mode in
    segments) holds a stretch of it, not all of it. ``frames[i]`` is ``(H, W, 3)`` uint8 (``alpha``:
    ``(H, W, 4)``; resized to ``resize=(H, W)`` if given). Frames are kept in chunks, in RAM up to
    ``memory_limit`` bytes (default :data:`MEMORY_LIMIT`), then in files in ``tmpdir``.

    Decoding runs in a thread of its own (the decoder releases the GIL), ``ahead`` frames past the
    furthest frame asked for: a pass that asks for the next stretch once it is done with this one finds
    it decoded while it worked. :meth:`prefetch` starts it before the first frame is asked for. A frame
    asked for again after it was released is decoded again, from the start of the clip, beside the
    thread (correct, not fast). An error of the thread (a clip shorter than it says, a full disk) is
    raised by the read that waits for its frames."""

    CHUNK = 16  # frames a chunk holds at most
    CHUNK_BYTES = 64 * 2**20  # and bytes: the thread holds the chunk it decodes (a 4K frame is 25 MB)

    def __init__(self, path, count: int, start: int = 0, resize: tuple[int, int] | None = None,
                 memory_limit: int | None = None, tmpdir: str | None = None, ahead: int = 0, alpha: bool = False):
        self.path, self.n, self.start = Path(path), int(count), int(start)
        self.resize = None if resize is None else tuple(resize)
        self.alpha = alpha  # frames (H, W, 4): RGBA
        size = _frame_bytes(self.path) if self.resize is None else self.resize[0] * self.resize[1] * 3
        size = size * 4 // 3 if alpha else size
        self.CHUNK = max(1, min(self.CHUNK, self.CHUNK_BYTES // size))
        self.memory_limit = MEMORY_LIMIT if memory_limit is None else memory_limit
        self.ahead = int(ahead)
        self._folder = SpillFolder(tmpdir, "flickerless-frames-")
        self._chunks: dict[int, object] = {}  # chunk -> array in RAM, or (file, shape)
        self.ram_bytes = self.peak_ram_bytes = self.disk_bytes = self.peak_disk_bytes = 0
        self.decoded = 0  # frames decoded, counting those decoded again
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._next = 0  # the first frame of the chunk the thread decodes next
        self._want = 0  # the thread decodes the chunks that start before this frame
        self._error: BaseException | None = None
        self._stop = False

    def __len__(self) -> int:
        return self.n

    def prefetch(self, upto: int | None = None) -> None:
        """Start decoding now, up to frame ``upto`` (default: ``ahead`` frames), without waiting."""
        self._ask(self.ahead if upto is None else upto)

    def _ask(self, upto: int) -> None:
        with self._cond:
            if upto > self._want:
                self._want = upto
                self._cond.notify_all()
            if self._thread is None and not self._stop:
                self._thread = threading.Thread(target=self._decode, name=f"decode {self.path.name}", daemon=True)
                self._thread.start()

    def _decode(self) -> None:
        """The thread: chunks in order, while they are wanted."""
        reader = iter_frames(self.path, self.start, self.start + self.n, self.alpha)
        try:
            while True:
                with self._cond:
                    while not self._stop and self._next >= min(self._want, self.n):
                        self._cond.wait()
                    if self._stop:
                        return
                    c = self._next // self.CHUNK
                arr = self._take(reader, c)
                self._keep(c, arr)  # a file is written without the lock: reads of kept chunks go on
                with self._cond:
                    self._next += len(arr)
                    self._cond.notify_all()
        except BaseException as e:  # noqa: BLE001 - raised in the thread that reads
            with self._cond:
                self._error = e
                self._cond.notify_all()
        finally:
            reader.close()  # type: ignore[attr-defined]

    def _take(self, reader: Iterator[np.ndarray], c: int) -> np.ndarray:
        want = min(self.CHUNK, self.n - c * self.CHUNK)
        arr, got = None, 0
        for f in reader:  # into one array made up front: a list then stacked holds the chunk twice
            if self.resize is not None and f.shape[:2] != self.resize:
                f = resize_frame(f, self.resize)
            if arr is None:
                arr = np.empty((want, *f.shape), dtype=np.uint8)
            arr[got] = f
            got += 1
            if got == want:
                break
        with self._cond:
            self.decoded += got
        if got < want:
            raise InputError(f"{self.path}: ended after {self.start + c * self.CHUNK + got} frames, though it "
                             f"says it has {self.start + self.n}")
        return arr

    def _keep(self, c: int, arr: np.ndarray) -> None:
        """Keep chunk ``c``: in RAM while it fits ``memory_limit``, else in a file. Called without the lock."""
        with self._cond:
            if self.ram_bytes + arr.nbytes <= self.memory_limit:
                self._chunks[c] = arr
                self.ram_bytes += arr.nbytes
                self.peak_ram_bytes = max(self.peak_ram_bytes, self.ram_bytes)
                return
            path = self._folder.file(f"{c}.u8")
        arr.tofile(path)
        with self._cond:
            self._chunks[c] = (path, arr.shape)
            self.disk_bytes += arr.nbytes
            self.peak_disk_bytes = max(self.peak_disk_bytes, self.disk_bytes)

    def _got(self, c: int):
        """Chunk ``c`` as kept, once it is: waits for the thread, or decodes it again if it was released."""
        if self._stop:
            raise ValueError(f"{self.path.name}: frames read after the reader was closed")
        self._ask((c + 1) * self.CHUNK + self.ahead)
        with self._cond:
            while c not in self._chunks:
                if self._error is not None:
                    raise self._error
                if c * self.CHUNK < self._next:  # released: decoded again, here
                    break
                self._cond.wait()
            else:
                return self._chunks[c]
        reader = iter_frames(self.path, self.start + c * self.CHUNK, self.start + self.n, self.alpha)
        try:
            arr = self._take(reader, c)
        finally:
            reader.close()  # type: ignore[attr-defined]
        if c not in self._chunks:
            self._keep(c, arr)
        return arr

    def _frame(self, i: int) -> np.ndarray:
        c, k = divmod(i, self.CHUNK)
        got = self._got(c)
        if isinstance(got, tuple):  # one frame of the chunk's file, not the whole chunk
            path, shape = got
            size = int(np.prod(shape[1:]))
            return np.fromfile(path, dtype=np.uint8, count=size, offset=k * size).reshape(shape[1:])
        return got[k]  # type: ignore[index]

    def __getitem__(self, i: int) -> np.ndarray:
        if not -self.n <= i < self.n:
            raise IndexError(i)
        i %= self.n
        return self._frame(i)

    def release_before(self, k: int) -> None:
        """Frames before ``k`` are not needed any more: drop the chunks that hold only such frames."""
        with self._cond:
            for c in [c for c in self._chunks if (c + 1) * self.CHUNK <= k]:
                got = self._chunks.pop(c)
                if isinstance(got, tuple):
                    os.unlink(got[0])
                    self.disk_bytes -= int(np.prod(got[1]))
                else:
                    self.ram_bytes -= got.nbytes  # type: ignore[union-attr]

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._chunks.clear()
        self.ram_bytes = self.disk_bytes = 0
        self._folder.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class ReadCancelled(Exception):
    """Reading was stopped from another thread (:func:`open_frames`' ``cancel``)."""


def _until(frames: Iterable[np.ndarray], cancel) -> Iterator[np.ndarray]:
    for f in frames:
        if cancel.is_set():
            raise ReadCancelled("reading stopped")
        yield f


def open_frames(path, memory_limit: int | None = None, tmpdir: str | None = None, resize: tuple[int, int] | None = None,
                start: int = 0, stop: int | None = None, cancel=None, alpha: bool = False):
    """Random-access frames of a clip: an in-memory array when the clip fits ``memory_limit`` bytes,
    else a :class:`DiskFrames`. ``resize=(H, W)`` resizes every frame (Lanczos); ``start``/``stop``
    keep frames ``start:stop`` only (renumbered from 0). ``cancel``: a :class:`threading.Event`; once
    it is set, reading stops at the next frame with :class:`ReadCancelled` (nothing is left on disk).
    ``alpha``: frames ``(H, W, 4)``, RGBA. Returns (frames, info). ``memory_limit``: default
    :data:`MEMORY_LIMIT`."""
    memory_limit = MEMORY_LIMIT if memory_limit is None else memory_limit
    start, stop = _span(start, stop)
    _check_open_arguments(resize, tmpdir)
    info = probe(path)
    if info.frames == 0:
        raise InputError(f"{path}: has no frames")
    frames: Iterable[np.ndarray] = iter_frames(path, start, stop, alpha)
    channels = 4 if alpha else 3
    if cancel is not None:
        frames = _until(frames, cancel)
    if start or stop is not None:
        count = len(range(info.frames)[start:stop])
        if count == 0:
            raise InputError(f"{path}: no frames in {start}:{'' if stop is None else stop} (it has {info.frames})")
        info = replace(info, frames=count)
    if resize is not None and tuple(resize) != (info.height, info.width):
        frames = (resize_frame(f, resize) for f in frames)
        info = replace(info, height=resize[0], width=resize[1])
    if info.frames * info.height * info.width * channels <= memory_limit:
        arr = _fill(frames, (info.frames, info.height, info.width, channels))
        if len(arr) == 0:
            raise InputError(f"{path}: has no frames")
        return arr, replace(info, frames=len(arr))
    disk = DiskFrames(frames, tmpdir=tmpdir)
    return disk, replace(info, frames=len(disk))


def _check_open_arguments(resize, tmpdir) -> None:
    """:func:`open_frames`'s size and spill folder, before the clip is read: a size of 0, -5, 50 or
    50.5 failed in PIL or numpy, and a folder not there as a temporary file's FileNotFoundError once the
    clip had been read to the memory limit."""
    whole = (lambda v: isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1)
    if resize is not None and not (isinstance(resize, (tuple, list)) and len(resize) == 2 and all(map(whole, resize))):
        raise InputError(f"resize is (height, width), whole numbers of pixels >= 1, got {resize!r}")
    if tmpdir is not None and not (os.path.isdir(tmpdir) and os.access(tmpdir, os.W_OK | os.X_OK)):
        why = "is not a writable folder" if os.path.isdir(tmpdir) else "is not a folder"
        raise InputError(f"tmpdir {os.fsdecode(tmpdir)}: {why}; give an existing folder for frames that do not fit in "
                         "memory, or None for the system's temporary folder")


def _fill(frames: Iterable[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """The frames in one array made up front (a list then stacked holds the clip twice): ``shape``
    is what the container said; fewer frames are cut off, more are appended."""
    arr = np.empty(shape, dtype=np.uint8)
    n, extra = 0, []
    for f in frames:
        if n < len(arr):
            arr[n] = f
            n += 1
        else:
            extra.append(f)
    return np.concatenate([arr, np.stack(extra)]) if extra else arr[:n]


def resize_frame(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an ``(H, W, 3)`` uint8 frame to ``size=(H, W)`` with Lanczos filtering."""
    from PIL import Image

    return np.asarray(Image.fromarray(frame).resize((size[1], size[0]), Image.LANCZOS))


_KEY_RE = re.compile(r"(\d+)$")  # a number ending the name: numbering_problems' reading where _numbering's is unclear
_DIGITS = re.compile(r"\d+")


def _template(name) -> tuple[str, ...]:
    """The text around a name's digit runs: its naming template (``ComfyUI_00005_`` -> ``("ComfyUI_", "_")``)."""
    return tuple(_DIGITS.split(Path(name).stem))


def _numbering(files, like: dict | None = None) -> tuple[list[int | None], dict]:
    """Each file's frame number, read as tools name frames: the digit run that counts them, also where a
    fixed text follows it (ComfyUI's ``ComfyUI_00005_.png``, ``frame_0012_final.png``, ``shot2.0012.png``).
    Names of one template are read together: the run that varies between them counts frames, not a fixed
    one (``shot2``); a name alone in its template with several runs (``0020 copy 2.png``, ``5_v2.png``)
    takes the run of ``like`` (other files' templates, ``{template: run}``), or none (None: which of its
    numbers is the frame's is not clear). Also returns ``{template: run}`` and its files' counts."""
    runs = [_DIGITS.findall(Path(f).stem) for f in files]
    groups: dict[tuple[str, ...], list[list[str]]] = {}
    for f, r in zip(files, runs):
        if r:
            groups.setdefault(_template(f), []).append(r)
    counter: dict[tuple[str, ...], int | None] = {}
    for texts, members in groups.items():
        values = [[int(r[j]) for r in members] for j in range(len(texts) - 1)]
        varying = [j for j, v in enumerate(values) if len(set(v)) > 1]
        unique = [j for j in varying if len(set(values[j])) == len(members)]  # a frame counter: one per file
        pick = varying if len(varying) == 1 else unique
        if like and like.get(texts) is not None:  # the guide's many frames say it more surely than a few keys
            counter[texts] = like[texts]
        elif len(values) == 1 or len(pick) == 1:
            counter[texts] = 0 if len(values) == 1 else pick[0]
        elif len(members) == 1 and (len(members[0][-1]) > 1 and members[0][-1].startswith("0")
                                    or all(len(members[0][-1]) > len(r) for r in members[0][:-1])):
            # one name alone whose last number is a zero-padded or the longest run (shot2_0012, 2024-05-01_0012):
            # a frame counter's shape, as names ending in their number were read before; a copy's or a
            # version's short number (0020 copy 2, 5_v2) is not
            counter[texts] = len(values) - 1
        else:
            counter[texts] = None
    numbers = [None if not r or counter[_template(f)] is None else int(r[counter[_template(f)]])
               for f, r in zip(files, runs)]
    return numbers, {t: (j, len(groups[t])) for t, j in counter.items()}


def keyframe_files(folder, guide=None, warn: bool = True) -> dict[int, Path]:
    """The keyframe images of a folder by their number (``12.png``, ``frame_0012.jpg``,
    ``ComfyUI_00012_.png``), not loaded: many keyframes of a long clip need not all be in memory at once
    (see :func:`load_image`). ``guide`` (a folder of frames): a keyframe named as its frames are reads its
    number where they do. ``warn=False``: names unlike the others are not said (``info`` only guessing
    whether a folder is keyframes at all)."""
    folder = Path(folder)
    _check_exists(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: keyframes must be a folder of images named by frame number")
    files = _image_files(folder)
    if not files:
        raise InputError(f"{folder}: folder holds no images")
    like = None
    if guide is not None and Path(guide).is_dir():
        like = {t: j for t, (j, _) in _numbering(_image_files(Path(guide)))[1].items()}
    numbers, templates = _numbering(files, like)
    bad = [f.name for f, k in zip(files, numbers) if k is None and not _DIGITS.search(f.stem)]
    if bad:
        raise InputError(
            f"{folder}: keyframe names must hold their frame number, e.g. 12.png, frame_0012.png or "
            f"ComfyUI_00012_.png; not: {', '.join(bad[:5])}"
        )
    unclear = [f for f, k in zip(files, numbers) if k is None]
    if unclear:  # a copy's or a version's number (Finder's "0020 copy 2.png") was taken for the frame's
        f = unclear[0]
        raise InputError(
            f"{folder}: keyframe {f.name} holds several numbers ({', '.join(_DIGITS.findall(f.stem))}), and which is "
            f"its frame number is not clear from the other keyframes' or the guide frames' names: name it by its "
            f"frame number alone (e.g. 12{f.suffix} for frame 12) or as the guide's frames are named")
    out: dict[int, Path] = {}
    for f, k in zip(files, numbers):
        if k in out:
            raise InputError(f"{folder}: {out[k].name} and {f.name} are both keyframe {k}; keep one")
        out[k] = f
    if warn and len(templates) > 1:  # "final_v2.png" among "0005.png"...: its number may not be its frame's
        main = max(templates, key=lambda t: (like is not None and t in like, templates[t][1], -len(t)))
        odd = [f"{f.name} as keyframe {k}" for f, k in zip(files, numbers) if _template(f) != main]
        usual = next(f.name for f in files if _template(f) == main)
        log.warning("%s: named unlike the other keyframes (such as %s), read by the number in the name: %s%s; rename "
                    "any whose number is not the frame it stylises", folder, usual, ", ".join(odd[:5]),
                    ", ..." if len(odd) > 5 else "")
    return out


def frames_said(path, first: int, last: int | None = None) -> str:
    """Frame index ``first`` (or frames ``first``-``last``) of the clip at ``path`` as a message says it:
    for a folder of images with the files' names, as indices count from 0 where file names most often
    count from 1 (frame 30 is ``frame_00031.png``), and a user acting on the index alone picked the wrong file."""
    said = str(first) if last is None else f"{first}-{last}"
    if path is None or not Path(path).is_dir():
        return said
    # one listing per folder version: a message names several frames (each cut, each changed file)
    files = _folder_names(str(Path(path).resolve()), Path(path).stat().st_mtime_ns)
    end = first if last is None else last
    if not 0 <= first <= end < len(files):
        return said
    return f"{said} ({files[first]}{'' if last is None else '-' + files[end]})"


@functools.lru_cache(maxsize=8)
def _folder_names(folder: str, mtime_ns: int) -> tuple[str, ...]:
    return tuple(f.name for f in _image_files(Path(folder)))


def image_size(path, decode: bool = False) -> tuple[int, int]:
    """``(H, W)`` of an image as it is read (its EXIF orientation applied), from its header alone;
    ``decode``: after decoding it whole, so that a file cut short (a JPEG's header is whole) is said now."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            w, h = im.size
            turned = im.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # orientations that swap width and height
            if decode:
                im.load()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise InputError(f"{path}: cannot read as an image ({e})") from e
    return (w, h) if turned else (h, w)


def keyframe_positions(numbers, guide, start: int | None = None) -> dict[int, int]:
    """Which frame of ``guide`` each keyframe number names: ``{number: index}``, said in the log.

    ``start`` given: the number of the guide's first frame (1 for frames numbered as FFmpeg writes
    them, ``%04d.png`` from 0001), so a number n is frame n - start. Otherwise, a guide that is a folder
    of numbered images is matched by file number, as EbSynth does (keyframe ``0025.png`` is the guide's
    ``0025.png`` or ``ComfyUI_00025_.png``, whatever its position), and a video's frames are numbered
    from 0; a folder whose names hold no numbers, by position from 0 (warned: it may be a frame off)."""
    numbers = sorted(numbers)
    guide = Path(guide)
    files = _image_files(guide) if guide.is_dir() else []

    def shown(where):  # "5 -> ComfyUI_00005_.png (index 4)": the files, where indices count from 0
        said = [f"{k} -> {files[i].name} (index {i})" if 0 <= i < len(files) else f"{k} -> index {i}"
                for k, i in list(where.items())[:4]]
        return ", ".join(said) + (", ..." if len(where) > 4 else "")

    if start is not None:
        where = {k: k - start for k in numbers}
        log.info("keyframes matched to the guide's frames by --keyframe-start %d: %s", start, shown(where))
        return where
    if not guide.is_dir():
        where = {k: k for k in numbers}
        log.info("keyframes matched to the video's frames by number, counting from 0 (--keyframe-start 1 if they "
                 "count from 1): %s", shown(where))
        return where
    found = _numbering(files)[0]
    if not files or all(n is None for n in found):
        where = {k: k for k in numbers}
        log.warning("the guide folder %s's names hold no frame numbers: keyframes are matched to its images by "
                    "position in name order, counting from 0 (--keyframe-start 1 if they count from 1): %s", guide,
                    shown(where))
        return where
    index: dict[int, int] = {}
    for i, (f, n) in enumerate(zip(files, found)):
        if n is None:  # a stray image (said when the folder is read) is a frame, but no number's
            continue
        if n in index:  # counted by position, every keyframe would land where the numbers do not say
            raise InputError(f"the guide folder {guide} has two frames numbered {n} ({files[index[n]].name}, {f.name}), "
                             "and keyframes are matched to guide frames by number: keep one, or give --keyframe-start "
                             "N to count the guide's frames by position from N")
        index[n] = i
    missing = [k for k in numbers if k not in index]
    if missing:
        lo, hi = min(index), max(index)
        raise InputError(
            f"keyframe {', '.join(map(str, missing[:5]))}: the guide folder {guide} has no frame of that number "
            f"(its frames are numbered {lo} to {hi}); name each keyframe as the guide frame it stylises, or give "
            f"--keyframe-start N (the number of the guide's first frame)")
    where = {k: index[k] for k in numbers}
    log.info("keyframes matched to the guide's frames by the number in their names: %s", shown(where))
    return where


_OUTPUT_PNG = re.compile(r"\d+\.png")
# left in a folder of PNG frames this wrote: only such a folder is replaced by a new output, never one of
# numbered PNGs from elsewhere (a clip's extracted frames would have been deleted)
OUTPUT_MARK = ".flickerless-output"


def mark_output(folder, kind: str = "frames") -> None:
    """Say in ``folder`` that it is an output of ours, of ``kind`` (``frames``: a video's, by deflicker and
    run; ``masks``: segment's), which a later output of that kind may replace whole."""
    (Path(folder) / OUTPUT_MARK).write_text(f"{kind} written by flickerless; a new output to this folder replaces it\n")


def output_kind(folder) -> str | None:
    """What a folder marked by :func:`mark_output` holds (``frames``, ``masks``), or None if unmarked.
    A mark from before kinds were written is ``frames``."""
    try:
        words = (Path(folder) / OUTPUT_MARK).read_text().split()
    except OSError:
        return None
    return words[0] if words and words[0] in ("frames", "masks") else "frames"


def publish_folder(tmp, path, kind: str = "frames") -> None:
    """A finished folder of PNGs ``tmp`` (beside ``path``) becomes the output ``path``: marked as ours, and
    swapped in for an earlier output by renames, so that ``path`` is never missing or half written (a
    link: its target, the link kept)."""
    tmp, path = Path(tmp), _through_link(Path(path))
    mark_output(tmp, kind)
    usual_mode(tmp)
    if path.exists():
        parent = path.parent if str(path.parent) else Path(".")
        old = Path(tempfile.mkdtemp(prefix=f".{_folder_stem(path)}.old.", dir=parent))
        os.replace(path, old / "x")
        try:
            os.replace(tmp, path)
        except OSError:  # the earlier output back in its place (a kept partial is not lost to a failed swap)
            os.replace(old / "x", path)
            shutil.rmtree(old, ignore_errors=True)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)


def stale_outputs(output, older_than: float = 600.0) -> list[Path]:
    """Unfinished outputs of ``output`` that a killed run left (SIGKILL, the kernel's out-of-memory
    killer, a power cut: nothing ran to remove them): :class:`VideoWriter`'s hidden ``.NAME.XXXXXXXX.mp4``
    files and ``.NAME.XXXXXXXX`` folders beside it, and deflicker's ``.NAME.partial.mp4.json.next``, not
    written to for ``older_than`` seconds (a run of the same output at work keeps writing to its own; one
    of deflicker, which does not, is locked out)."""
    import re
    import time

    out = _through_link(Path(output))  # (where VideoWriter writes)
    parent = out.parent if str(out.parent) else Path(".")
    # (the .next is the record a run writes as it starts, renamed into place if it is stopped, removed as
    # it ends: a killed run's was never said)
    names = re.compile(rf"\.(?:{re.escape(_file_stem(out))}\.[a-z0-9_]{{8}}{re.escape(out.suffix)}|"
                       rf"{re.escape(_folder_stem(out))}\.(?:old\.)?[a-z0-9_]{{8}}|"
                       rf"{re.escape(partial_path(out).name)}\.json\.next)", re.IGNORECASE)
    try:
        found = [p for p in parent.iterdir() if names.fullmatch(p.name)]
    except OSError:
        return []
    now = time.time()

    def idle(p: Path) -> bool:
        try:
            newest = max([p.stat().st_mtime, *(f.stat().st_mtime for f in p.iterdir())] if p.is_dir() else
                         [p.stat().st_mtime])
        except OSError:  # gone meanwhile
            return False
        return now - newest > older_than

    return sorted(p for p in found if idle(p))


def _file_stem(output: Path) -> str:
    """The start of a video's (or a GIF's) hidden temporary file ``.STEM.XXXXXXXX.mp4`` (cut to fit)."""
    return _hidden_stem(output.stem, output.parent if str(output.parent) else ".",
                        len(".XXXXXXXX") + len(os.fsencode(output.suffix)))


def _folder_stem(output: Path) -> str:
    """The start of a hidden temporary folder ``.NAME.XXXXXXXX`` beside a PNG-folder or GIF output, and of
    the ``.NAME.old.XXXXXXXX`` an earlier output is swapped through (one cut, to fit the longer)."""
    return _hidden_stem(output.name, output.parent if str(output.parent) else ".", len(".old.XXXXXXXX"))


def partial_path(output) -> Path:
    """Where :meth:`VideoWriter.keep_partial` keeps the frames of an unfinished ``output``:
    ``NAME.partial.mp4`` beside ``NAME.mp4``, or a ``NAME.partial`` folder beside a PNG folder."""
    output = Path(output)
    if output.suffix.lower() in WRITE_VIDEO_EXTS:
        return output.with_name(f"{output.stem}.partial{output.suffix}")
    return output.with_name(f"{output.name}.partial")


class OutputLock:
    """Held (``with``) for a run's length: a hidden ``.NAME.lock`` beside ``output``, locked with flock and
    holding the run's pid. A second run of the same output is refused, naming the first: two deflicker
    runs at once mixed each other's frames into their output (exit 0), and one deleted the frames the
    other had said it kept for --resume; two ``run`` jobs of one output finished each other's latents.
    ``busy``: the refusal, before " (pid N)" is said after ``another``; by default deflicker's. The lock
    goes with the process, also when it is killed. A name too long for ``.NAME.lock`` is cut as temporary
    names are (the same cut for every run). Where the system has no flock, or the file cannot be made
    (no such folder: said by the output's checks), runs are not locked."""

    def __init__(self, output, busy: tuple[str, str] | None = None):
        # a link's target is what is written: a run given the link and one given the target are one output
        self.output = _through_link(Path(output))
        self.busy = busy or (f"{self.output}: another flickerless run",
                             " is writing it (and the frames it keeps if stopped); wait for it to end, or give "
                             "another output")
        self.fd = None

    def __enter__(self):
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return self
        if not self.output.name:
            return self
        folder = self.output.parent if str(self.output.parent) else Path(".")
        path = folder / f".{_hidden_stem(self.output.name, folder, len('.lock'))}.lock"
        while True:
            try:  # never through a link planted at that name (its target would be overwritten with the pid)
                fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
            except OSError:
                return self
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                return self
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                try:
                    pid = os.read(fd, 32).decode(errors="replace").strip()
                except OSError:
                    pid = ""
                os.close(fd)
                raise OutputError(f"{self.busy[0]}{f' (pid {pid})' if pid.isdigit() else ''}{self.busy[1]}") from None
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:  # removed by the run that held it as it ended: locked a file no one sees
                same = False
            if same:
                break
            os.close(fd)
        self.fd, self.path = fd, path
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:  # (a full disk): locked all the same, only not named
            pass
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            self.path.unlink(missing_ok=True)  # while held: a run waiting on the old file tries again
            os.close(self.fd)
            self.fd = None
        return False


def check_output_is_not_input(output, **inputs) -> None:
    """Refuse an output path that is one of the inputs (``--guide clip.mp4 -o clip.mp4``): the output
    replaces what is at its path, and the footage being read would be lost. ``inputs`` maps each
    input's option name to its path (None is skipped)."""
    out = Path(output)
    _through_link(out)  # a link that loops is refused before resolve() meets it
    partial = partial_path(out)
    for name, given in inputs.items():
        if given is None:
            continue
        src = Path(given)
        flag = name.replace("_", "-")
        if _same_path(out, src):
            raise OutputError(f"{output}: is the --{flag} input; writing there would replace it, choose another output path")
        if _same_path(partial, src):  # removed when a run ends, replaced when one is stopped: the input was lost
            raise OutputError(f"{output}: {partial.name}, where a stopped run keeps its frames (removed once a run "
                              f"finishes), is the --{flag} input; choose another output path, or rename the input")
        if src.is_dir() and out.resolve().parent == src.resolve() and out.suffix.lower() in IMAGE_EXTS:
            raise OutputError(f"{output}: is a frame of the --{flag} folder; writing there would replace or add one, "
                              "choose another output path")


def _same_path(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name one file or folder (also through links), or one path not made yet."""
    try:
        if a.exists() and b.exists() and os.path.samefile(a, b):
            return True
    except OSError:
        pass
    return a.resolve() == b.resolve()


class _Output:
    """As a context manager: :meth:`close` on success, :meth:`abort` on an exception."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()


def check_output(path, codec: str | None = None, named: bool = True, kind: str = "frames") -> str | None:
    """Whether ``path`` can take an output, before any work (an hour of generation must not end in
    "cannot write .avi"): a video whose container holds ``codec`` (its default when None), or a
    folder of PNGs, in a folder that exists and is writable, not replacing a folder of other files.
    ``named``: ``path`` is as the user typed it, and a new folder's name must not end in what looks
    like a file type (``out.mp44``, ``out.txt``) unless it ends in ``/``. Returns the video codec
    (``"gif"`` for a GIF), None for a folder of PNGs; raises :class:`OutputError` saying why not."""
    raw, path = path, Path(path)
    check_name_fits(path)  # (before looking at it: a name too long is an OSError there)
    ext = path.suffix.lower()
    if ext in VIDEO_EXTS and ext not in WRITE_VIDEO_EXTS and ext != ".gif":
        raise OutputError(
            f"{path}: cannot write {ext} files; write .mp4, .mov, .mkv, .webm, .gif or a folder of PNGs (a "
            "path without extension)"
        )
    if ext in IMAGE_EXTS:  # not made a folder named like an image (a typo for a video, or one frame wanted)
        # an ffmpeg-style pattern (out_%05d.png, frame_####.png) named the frames: the folder is what is before it
        stem = re.sub(r"[_\-. ]*(%0?\d*d|#+)$", "", path.stem) or "frames"
        raise OutputError(
            f"{path}: an output is a video (.mp4, .mov, .mkv, .webm, .gif) or a folder of PNG frames (named "
            f"00000.png on); for the frames give a folder path without an extension, such as {path.with_name(stem)}"
        )
    folder = str(raw).endswith(("/", os.sep)) or path.is_dir()
    if named and not folder and path.name != path.name.rstrip():  # pasted from a list or a spreadsheet
        raise OutputError(f"{str(raw)!r}: the name ends in a space (pasted with the name?); give {path.name.rstrip()!r}")
    if named and not folder and not ext and path.name.lower() in {*WRITE_VIDEO_EXTS, ".gif"}:
        # "$NAME.mp4" with NAME empty: a file with no name but its type, which Python reads as a hidden folder
        raise OutputError(f"{path}: has no name before its extension (an empty variable in \"$NAME{path.name}\"?); "
                          f"give a name, such as out{path.name}")
    if named and ext and ext not in WRITE_VIDEO_EXTS and ext != ".gif" and not folder and re.fullmatch(r"\.[a-z][a-z0-9]{0,5}", ext):
        # "out.mp44" or "out.txt" became a folder of PNGs without a word
        raise OutputError(f"{path}: {ext} is not an output this writes: give .mp4, .mov, .mkv, .webm or .gif, or a folder "
                          f"for PNG frames (a path without extension, or ending in / for a folder with a dot in its name)")
    if ext == ".gif" and codec is not None:
        raise OutputError(f"{path}: a GIF has no codec to choose ({codec}); write .mp4, .mov, .mkv or .webm for one")
    is_video, chosen = ext in WRITE_VIDEO_EXTS or ext == ".gif", "gif" if ext == ".gif" else None
    if ext in WRITE_VIDEO_EXTS:
        takes = CONTAINER_CODECS[WRITE_VIDEO_EXTS[ext]]
        chosen = takes[0] if codec is None else str(codec).lower()
        if chosen not in VIDEO_CODECS:
            raise OutputError(f"{path}: unknown codec {codec!r}; choose one of {', '.join(VIDEO_CODECS)}")
        if chosen not in takes:
            fits = [e for e, f in WRITE_VIDEO_EXTS.items() if chosen in CONTAINER_CODECS[f] and e != ".m4v"]
            raise OutputError(f"{path}: a {ext} file cannot hold {chosen}; it takes {', '.join(takes)} "
                              f"(write {chosen} to {' or '.join(fits)})")
        _check_encoder(path, chosen)
    elif codec is not None:
        raise OutputError(f"{path}: a codec ({codec}) is for a video output; a folder of PNGs has none")
    check_not_special(path)
    parent = _through_link(path).parent if str(path.parent) else Path(".")  # a link's target's, written there
    if not parent.is_dir():
        raise OutputError(f"{path}: {parent} is a file, not a folder" if parent.exists() else
                          f"{path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"{path}: folder {parent} is not writable")
    if path.exists() and path.is_dir() != (not is_video):
        kind = "a folder" if path.is_dir() else "a file"
        raise OutputError(f"{path}: exists and is {kind}; choose another output path")
    if not is_video and path.is_dir():
        # the folder is replaced as a whole on close: only ever replace an earlier output (numbered
        # PNGs), never a folder that holds anything else (``-o .`` must not delete a project)
        names = [e.name for e in path.iterdir()]
        other = [n for n in names if not _OUTPUT_PNG.fullmatch(n) and n != OUTPUT_MARK]
        if other:
            raise OutputError(f"{path}: folder exists and holds other files ({', '.join(sorted(other)[:3])}"
                              f"{', ...' if len(other) > 3 else ''}); give a new or empty folder for the PNG frames")
        if names and OUTPUT_MARK not in names:
            raise OutputError(f"{path}: folder holds PNG frames that flickerless did not write (a clip's frames?), "
                              "which the output would replace; give a new or empty folder (an output of "
                              f"flickerless, marked by its {OUTPUT_MARK} file, is replaced)")
        held = output_kind(path) if names else None
        if held is not None and held != kind:  # segment's masks over a deflickered clip's frames, or back
            raise OutputError(f"{path}: folder holds the {held} of another flickerless output, which these {kind} "
                              "would replace; give another folder")
    return chosen


GIF_PALETTE_SAMPLES = 48  # frames the palette is made from, spread over the clip


def _write_gif(frames: list[Path], out: Path, delays: list[int]) -> None:
    """A looping GIF of the PNG ``frames`` with one 256-colour palette for all of them, made from
    frames spread over the clip, and no dithering: per-frame palettes or error diffusion would make
    still areas change colour from frame to frame, the flicker this tool removes."""
    from PIL import Image

    pick = np.unique(np.linspace(0, len(frames) - 1, min(len(frames), GIF_PALETTE_SAMPLES)).round().astype(int))
    thumbs = []
    for k in pick:
        with Image.open(frames[k]) as im:
            im = im.convert("RGB")
            im.thumbnail((256, 256))
            thumbs.append(np.asarray(im))
    width = max(t.shape[1] for t in thumbs)
    sheet = np.concatenate([np.pad(t, ((0, 0), (0, width - t.shape[1]), (0, 0)), mode="edge") for t in thumbs])
    palette = Image.fromarray(sheet).quantize(255, method=Image.Quantize.MEDIANCUT)  # 255: the last index is kept
    # fewer where the frames have fewer (flat graphics, grey footage)
    colours = np.asarray(palette.getpalette()[: 255 * 3], dtype=np.float64).reshape(-1, 3)
    k = len(colours)
    # each colour moved to the mean of the sheet's pixels it stands for (median cut's are box averages):
    # 20-45% less error on the bundled clips
    from scipy.spatial import cKDTree

    packed = (sheet[..., 0].astype(np.int32) << 16 | sheet[..., 1].astype(np.int32) << 8 | sheet[..., 2]).ravel()
    distinct, back = np.unique(packed, return_inverse=True)
    index = cKDTree(colours).query(np.stack([distinct >> 16, distinct >> 8 & 255, distinct & 255], 1))[1][back]
    count = np.bincount(index, minlength=k)
    sums = np.stack([np.bincount(index, sheet[..., c].ravel(), minlength=k) for c in range(3)], 1)
    used = count > 0
    colours[used] = np.round(sums[used] / count[used, None])
    table = _nearest_colours(colours)
    # indices past the colours, up to the see-through one, are never used; the see-through one gets a colour
    # no frame has: black there made PIL take a black-cornered frame for the one before, and fold it in
    rgb = np.clip(colours, 0, 255).astype(np.uint8)
    have = {tuple(c) for c in rgb.tolist()}
    see = next(c for c in [(255, 0, 255), *((i, 255 - i, i * 7 % 256) for i in range(256))] if c not in have)
    flat = rgb.ravel().tolist() + rgb[0].tolist() * (255 - k) + list(see)

    def indexed():
        before = None
        for f in frames:
            with Image.open(f) as im:
                rgb = np.asarray(im.convert("RGB"))
            # the nearest colour, looked up in our own table: PIL's lookup reads a pixel at 6 bits a channel,
            # truncated, and so made every GIF about 1.4 levels darker
            idx = table[rgb[..., 0] >> 1, rgb[..., 1] >> 1, rgb[..., 2] >> 1]
            if before is not None and np.array_equal(idx, before):
                # PIL folds a frame equal to the one before into it (a still clip came back with fewer
                # frames): one pixel at the transparent index shows the same pixel of the frame beneath
                idx = idx.copy()
                idx[0, 0] = _GIF_SEE_THROUGH
            before = idx
            q = Image.fromarray(idx)
            q.putpalette(flat)  # an "L" image with a palette is a "P" one
            yield q

    it = indexed()
    first = next(it)
    first.save(out, save_all=True, append_images=it, duration=delays, loop=0, disposal=1, transparency=_GIF_SEE_THROUGH)


_GIF_SEE_THROUGH = 255  # the GIF palette's transparent index: no colour of the frames takes it


def _nearest_colours(colours: np.ndarray) -> np.ndarray:
    """A ``(128, 128, 128)`` uint8 table: for a colour at 7 bits a channel (``rgb >> 1``), the index of the
    nearest of ``colours`` ``(K, 3)`` to the centre of its cell. About a second to build."""
    from scipy.spatial import cKDTree

    g = np.arange(128, dtype=np.float32) * 2 + 0.5
    grid = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    return cKDTree(colours).query(grid, workers=-1)[1].astype(np.uint8).reshape(128, 128, 128)


# the colour matrices a video output is converted through, by FFmpeg's number (AVColorSpace): the
# name (or number) swscale knows it by, and its red and blue weights; BT.2020's constant-luminance form
# is written as its non-constant one, and a matrix not here as the one players assume at the size
_MATRICES = {_BT709: ("ITU709", 0.2126, 0.0722), 4: (4, 0.30, 0.11), 5: ("ITU601", 0.299, 0.114),
             _SMPTE170M: ("ITU601", 0.299, 0.114), 7: (7, 0.212, 0.087), _BT2020_NCL: (9, 0.2627, 0.0593),
             10: (9, 0.2627, 0.0593)}


def _yuv10(rgb: np.ndarray, matrix: int, pix_fmt: str = "yuv422p10le", primaries: int = 2, transfer: int = 2):
    """An ``(H, W, 3)`` uint8 RGB frame as a 10-bit 4:2:2 (``yuv422p10le``, W even) or 4:2:0
    (``yuv420p10le``, H and W even) frame, or an ``(H, W, 4)`` RGBA one as 4:4:4 with alpha
    (``yuva444p10le``, ProRes 4444), limited range (the alpha full), through ``matrix`` (a key of
    ``_MATRICES``), converted here rather than by FFmpeg: the rgb24 -> yuv422p10le conversion of PyAV 19.0.2's FFmpeg
    turned the first 16 columns of a frame grey at times (measured on an H200 host). Chroma is sited
    with the even luma samples across, as MPEG's is, filtered 1-2-1 before it is taken; 4:2:0's between
    two rows down (the mean of the two). ``primaries`` and ``transfer`` are said in the frame (ProRes
    takes them from there, not from the stream)."""
    import av

    _, kr, kb = _MATRICES[matrix]
    x = rgb.astype(np.float32) * np.float32(1 / 255)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    y = kr * r + (1 - kr - kb) * g + kb * b
    cb, cr = (b - y) / (2 * (1 - kb)), (r - y) / (2 * (1 - kr))
    planes = [np.clip(np.rint(64 + 876 * y), 0, 1023)]
    for c in (cb, cr):
        if pix_fmt == "yuva444p10le":  # chroma at full size
            planes.append(np.clip(np.rint(512 + 896 * c), 0, 1023))
            continue
        p = np.pad(c, ((0, 0), (1, 1)), mode="edge")
        sited = 0.25 * p[:, 0:-2:2] + 0.5 * p[:, 1:-1:2] + 0.25 * p[:, 2::2]
        if pix_fmt == "yuv420p10le":
            sited = 0.5 * (sited[0::2] + sited[1::2])
        planes.append(np.clip(np.rint(512 + 896 * sited), 0, 1023))
    if pix_fmt == "yuva444p10le":  # the alpha, full range
        planes.append(np.rint(rgb[..., 3].astype(np.float32) * np.float32(1023 / 255)))
    frame = av.VideoFrame(rgb.shape[1], rgb.shape[0], pix_fmt)
    try:  # what the frame says of itself goes into the stream, over the encoder's settings
        frame.colorspace, frame.color_range = matrix, 1
        frame.color_primaries, frame.color_trc = primaries, transfer
    except AttributeError:  # a PyAV that cannot set them: the encoder's settings stand
        pass
    for plane, values in zip(frame.planes, planes):
        rows = np.zeros((values.shape[0], plane.line_size // 2), np.uint16)
        rows[:, : values.shape[1]] = values
        plane.update(rows.tobytes())
    return frame


def _two_rows_420(frame: np.ndarray, to: dict):
    """A frame 2 rows tall as yuv420p, its one chroma row the two rows' own: swscale gives such a frame the
    bottom row's chroma (a red top row over grey came back grey; from 4 rows on it averages). Converted
    as the frame twice over, whose first chroma row is these two rows', and cut back to 2 rows."""
    import av

    tall = av.VideoFrame.from_ndarray(np.concatenate([frame, frame]), format="rgb24").reformat(format="yuv420p", **to)
    planes, half = tall.to_ndarray(), frame.shape[1] // 2  # Y's 4 rows, then U's and V's 2 rows each flattened
    chroma = np.concatenate([planes[4, :half], planes[5, :half]])  # the first row of each: the two rows'
    vf = av.VideoFrame.from_ndarray(np.concatenate([planes[:2], chroma[None]]), format="yuv420p")
    vf.colorspace, vf.color_range = tall.colorspace, tall.color_range
    return vf


def _check_encoder(path, codec: str) -> None:
    """PyAV built against an FFmpeg without this codec's encoder (a system FFmpeg without x265, say)."""
    import av

    encoder = VIDEO_CODECS[codec][0]
    try:
        av.codec.Codec(encoder, "w")
    except Exception:  # av.codec.codec.UnknownCodecError, whose module path differs between PyAV versions
        others = [c for c in VIDEO_CODECS if c != codec]
        raise OutputError(f"{path}: this install's FFmpeg (PyAV {av.__version__}) has no {encoder} encoder for "
                          f"{codec}; choose another codec ({', '.join(others)})") from None


def keeps_alpha(chosen: str | None) -> bool:
    """Whether an output keeps transparency, from the codec :func:`check_output` chose for it: a folder of
    PNGs (None), or a codec of :data:`ALPHA_CODECS` (ProRes 4444 in .mov/.mkv, FFV1 in .mkv, VP9 in
    .webm/.mkv)."""
    return chosen is None or chosen in ALPHA_CODECS


def _codec_options(codec: str, crf: int, alpha: bool = False) -> dict[str, str]:
    """Encoder options for ``crf`` on x264's scale (0 lossless, 17 visually lossless, 51 smallest);
    ``alpha``: ProRes 4444 rather than 422 HQ."""
    if codec == "h264":
        return {"crf": str(crf), "preset": "medium"}
    if codec == "h265":
        params = "log-level=error" + (":lossless=1" if crf == 0 else "")
        return {"crf": str(crf), "preset": "medium", "x265-params": params}
    if codec == "vp9":  # constant quality; VP9's scale runs to 63, so x264's is stretched onto it
        opts = {"crf": str(round(crf * 63 / 51)), "b": "0", "row-mt": "1", "deadline": "good", "cpu-used": "2"}
        if crf == 0:
            opts["lossless"] = "1"
        return opts
    if codec == "prores":
        return {"profile": "4" if alpha else "3", "vendor": "apl0"}  # 4444 (with alpha), or 422 HQ
    return {"level": "3", "slicecrc": "1"}  # ffv1: lossless whatever the crf


CRF_CODECS = ("h264", "h265", "vp9")  # the others (prores, ffv1, gif, PNGs) take no crf
CRF_MAX = 51  # x264's scale, which every codec's quality is given on (VP9's is stretched onto it)


def check_crf(value) -> int | float:
    """``value`` as a crf, 0-51 on x264's scale: an integer, a string of digits as typed on the command
    line, or a float (x264 and x265 take fractional ones, 17.5). Out of range, the encoder failed at the
    first frame, said as the frame size's fault."""
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise InputError(f"expected an integer 0-{CRF_MAX}, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(f"expected a number 0-{CRF_MAX}, got {value!r}")
    if not 0 <= value <= CRF_MAX:  # NaN too
        raise InputError(f"expected a number 0-{CRF_MAX} (0 lossless, 17 the default, 23 x264's), got {value}")
    return int(value) if float(value).is_integer() else float(value)


def _check_times(times) -> np.ndarray:
    """A writer's ``times`` as float64 seconds, refused unless finite and increasing by a tick of the
    90 kHz clock at least: PyAV failed at the mux on ones that went back (or on equal ones), and NaN
    failed in a cast."""
    try:
        t = np.asarray(times, dtype=np.float64)
    except (TypeError, ValueError):
        t = None
    if t is None or t.ndim != 1 or len(t) < 2 or not np.isfinite(t).all():
        raise InputError("times must be finite seconds, one for each frame and one more for when the last ends "
                         f"(frame_times gives them), got {times!r}"[:300])
    ticks = np.round((t - t[0]) / float(_TIME_TICK))
    if (np.diff(ticks) <= 0).any():
        i = int(np.argmax(np.diff(ticks) <= 0))
        raise InputError(f"times must increase (by 1/90000 s at least): entry {i + 1} is {t[i + 1]:.6g} s after "
                         f"{t[i]:.6g} s")
    return t


def _check_pixel_aspect(value) -> Fraction:
    """``pixel_aspect`` as a Fraction (to 1/1000), from anything :class:`~fractions.Fraction` takes ("10/11",
    a Decimal) and numpy numbers (which it does not): NaN and text failed in :mod:`fractions`, 0 and
    negative ones were written as 1:1 without a word."""
    try:
        if isinstance(value, (bool, np.bool_)):
            raise TypeError
        if isinstance(value, np.number):
            value = value.item()  # a Python int or float, which Fraction takes
        f = Fraction(value).limit_denominator(1000)
    except (TypeError, ValueError, OverflowError, ZeroDivisionError):
        f = None
    if f is None or f <= 0:
        raise InputError(f"pixel_aspect must be a positive number or fraction (\"10/11\"), a pixel's width over its "
                         f"height as shown (VideoInfo.pixel_aspect; 1 for square pixels), got {value!r}")
    return f


class VideoWriter(_Output):
    """Write frames one at a time; the output appears at ``path`` only on a successful :meth:`close`.

    ``path`` ending in .mp4/.mov/.mkv/.m4v/.webm: a video, by default H.264 (libx264, yuv420p, ``crf``
    0 lossless to 51 smallest; .webm: VP9); ``codec`` one of :data:`VIDEO_CODECS` its container takes
    (:data:`CONTAINER_CODECS`): ``"h265"``, ``"prores"`` (422 HQ, 10-bit; ``crf`` unused), ``"ffv1"``
    (lossless RGB: the frames exactly). ``.gif``: a looping GIF with one palette for all its frames (kept as PNGs until
    :meth:`close`; a stopped one keeps them in ``NAME.gif.partial/``). Otherwise a folder of PNG files
    ``00000.png, 00001.png, ...``.

    ``crf``: an integer or float; None only for an output that takes none (PNGs, GIF, ProRes, FFV1).

    ``pixel_aspect``: the shape of a pixel as shown (:attr:`VideoInfo.pixel_aspect`; a number, a Fraction,
    or text as "10/11"), said in a video output so that anamorphic frames play as wide as their source.

    ``alpha``: frames are ``(H, W, 4)`` RGBA, kept in RGBA PNGs, ProRes 4444, FFV1 RGBA or VP9 with
    alpha (:func:`keeps_alpha`; another output is refused).

    ``colour``: the colour description of the clip the frames' code values come from
    (:attr:`VideoInfo.colour`: HDR, wide gamut), converted through its matrix and said in a video output
    so that it plays as that clip does. Without it, SDR: BT.709 for HD, BT.601 below.

    ``times``: for a variable frame rate, when each frame is shown, in seconds from the first, and one
    entry more, when the last ends (:func:`frame_times`), increasing; frame ``i`` written is shown at
    ``times[i]``.
    Without it frames are ``1 / fps`` apart. A folder of PNGs has no timing.

    ``audio``: a clip whose first audio stream goes into a video output, from ``audio_start`` seconds
    for as long as the frames written last (the original's sound, when the frames are the original's
    frames at its timing). A clip without sound adds none; sound that cannot be carried over is left out
    with a warning, never at the cost of the frames.
    """

    def __init__(self, path, fps: float = DEFAULT_FPS, crf: float | None = 17, audio=None, audio_start: float = 0.0,
                 pixel_aspect=1, times=None, codec: str | None = None, colour: tuple[int, int, int] | None = None,
                 alpha: bool = False):
        self.path = Path(path)
        self.colour = colour
        self.alpha = bool(alpha)
        self.times = None if times is None else _check_times(times)
        # the longest frame in the stream's time base (1 at a constant rate): how far reordering reaches
        self._frame_ticks = 1 if self.times is None or len(self.times) < 2 else \
            max(1, math.ceil(float(np.diff(self.times).max()) / _TIME_TICK))
        self._durations: dict[int, int] = {}  # pts -> duration (90 kHz ticks) of frames not yet muxed
        self._last_dts = None
        self._first_dts = None
        self._held = None  # the last packet encoded, muxed once the next comes (or at the end)
        self._shape = None  # the first frame's, which every frame keeps
        self.pixel_aspect = _check_pixel_aspect(pixel_aspect)
        if fps is not None and (isinstance(fps, bool) or not (isinstance(fps, (int, float, Fraction, np.number))
                                                               and 0 <= fps <= MAX_FPS)):
            # True was written at 1 fps, 2**40 failed in the encoder
            raise InputError(f"fps must be a number of frames per second up to {MAX_FPS} (0 or None: "
                             f"{DEFAULT_FPS:g}), got {fps!r}")
        self.fps = float(fps) if fps and fps > 0 else DEFAULT_FPS
        try:  # None: for an output without a crf, checked once the codec is known
            self.crf = None if crf is None else check_crf(crf)
        except InputError as e:
            raise InputError(f"crf: {e}") from None
        self.audio = audio
        self.audio_start = float(audio_start)
        self.count = 0
        ext = self.path.suffix.lower()
        self.codec = check_output(self.path, codec, named=False)  # the command checked the name as typed
        if self.alpha and not keeps_alpha(self.codec):
            raise OutputError(f"{self.path}: cannot keep transparency; write a folder of PNGs, .webm, .mov or .mkv "
                              "with --codec prores (4444), or .mkv with --codec ffv1")
        # a GIF's frames are kept as PNGs until close, which makes one palette for all of them
        self.is_gif = self.codec == "gif"
        self.is_video = self.codec is not None and not self.is_gif
        if self.crf is None and self.codec in CRF_CODECS:
            raise InputError(f"crf: {self.path.name} ({self.codec}) is encoded at a crf: give one 0-{CRF_MAX} (17 the "
                             "default), or leave it out")
        target = _through_link(self.path)  # made beside where it goes: renamed onto it, not onto the link
        if target != self.path:
            log.info("%s is a link: the output is written to %s, where it points", self.path, target)
        parent = target.parent if str(target.parent) else Path(".")
        try:
            if self.is_video:
                fd, tmp = tempfile.mkstemp(prefix=f".{_file_stem(target)}.", suffix=ext, dir=parent)
                os.close(fd)
                self.tmp = Path(tmp)
            else:
                self.tmp = Path(tempfile.mkdtemp(prefix=f".{_folder_stem(target)}.", dir=parent))
        except OSError as e:
            raise OutputError(f"{self.path}: cannot write there ({e})") from e
        self._container = None
        self._stream = None
        self._kept_at: Path | None = None  # a finished output close could not move into place
        self._pad = (0, 0)
        # "closed" or "aborted" once it is: a write after either reopened a video at the temporary name, which
        # the next close moved over the finished output (a folder's failed on the hidden folder's name)
        self._ended: str | None = None
        self._failed = False  # dropped by a failure (not by abort()): keep_partial says why nothing is kept

    def _open_video(self, h: int, w: int) -> None:
        import av

        self._container = av.open(_ffmpeg_path(self.tmp), mode="w", format=WRITE_VIDEO_EXTS[self.path.suffix.lower()])
        rate = Fraction(self.fps).limit_denominator(1001000)
        encoder = VIDEO_CODECS[self.codec][0]
        pix_fmt = self._pixel_format()
        s = self._container.add_stream(encoder, rate=rate)
        if self.times is not None:  # each frame at its own time, in 90 kHz ticks (MPEG's clock)
            s.codec_context.time_base = s.time_base = _TIME_TICK
        else:  # frame n at n / fps
            s.codec_context.time_base = 1 / rate
        self._pad = self._padding(h, w)
        why = f"{pix_fmt} video needs even sizes"
        if self.codec == "h265" and (h < _X265_MIN[0] or w < _X265_MIN[1]):
            why = f"H.265 is written at least {_X265_MIN[1]}x{_X265_MIN[0]}"
        if any(self._pad):
            log.info("%s: %dx%d is written as %dx%d, the last %s repeated (%s); "
                     "a folder of PNGs keeps the exact size", self.path.name, w, h, w + self._pad[1], h + self._pad[0],
                     " and ".join(n if p == 1 else f"{p} {n}s" for n, p in zip(("row", "column"), self._pad) if p), why)
        s.width, s.height = w + self._pad[1], h + self._pad[0]
        s.pix_fmt = pix_fmt
        options = _codec_options(self.codec, self.crf, self.alpha)
        if self.codec == "ffv1" and min(h, w) < 16:  # FFV1's automatic slices cannot split a frame 1 pixel wide
            options = {**options, "slices": "1"}
        s.options = options
        if self.codec == "h265" and self._container.format.name in ("mp4", "mov"):
            s.codec_context.codec_tag = "hvc1"  # what Apple's players ask of HEVC in mp4/mov
        self._pix_fmt = pix_fmt
        self._stream = s
        if self.pixel_aspect != 1:  # anamorphic: shown as wide as the clip it came from
            s.codec_context.sample_aspect_ratio = self.pixel_aspect
            if self.codec in ("ffv1", "vp9"):  # their FFmpeg encoders do not carry it (measured, PyAV 18.1)
                log.warning("%s: %s does not keep the pixel shape (%s): it plays with square pixels; h264, h265 "
                            "or prores keep it", self.path.name, self.codec, self.pixel_aspect)
        # the colour description players assume at this size (or the source's, ``colour``), used and said
        # in the stream, so that tag-reading and size-guessing players alike show the frames' own RGB
        hd = _is_hd(s.height, s.width)
        sdr = _BT709 if hd else _SMPTE170M
        prim, trc, matrix = self.colour if self.colour is not None else (sdr, sdr, sdr)
        matrix = matrix if matrix in _MATRICES else sdr
        cc = s.codec_context
        for name, value in (("color_primaries", prim), ("color_trc", trc)):
            try:
                setattr(cc, name, value)
            except AttributeError:  # PyAV too old to set them: the matrix below is what decoding needs
                pass
        if pix_fmt in ("bgr0", "bgra"):  # RGB as it is: no matrix, nothing to say about one
            self._matrix = None
            return
        self._matrix = matrix
        self._tags = prim, trc
        cc.colorspace = matrix
        cc.color_range = 1  # limited ("tv") range, as yuv420p H.264 is played

    def _pixel_format(self) -> str:
        pix_fmt = VIDEO_CODECS[self.codec][1]
        if self.codec == "h265" and self.colour is not None and self.colour[1] in _HDR_TRANSFERS:
            pix_fmt = "yuv420p10le"  # HDR's H.265 is Main 10, what HDR players and sites look for
        if self.alpha:
            pix_fmt = ALPHA_CODECS[self.codec]
        return pix_fmt

    def _padding(self, h: int, w: int) -> tuple[int, int]:
        """Rows and columns a video adds to ``h`` x ``w`` frames (the last repeated): chroma at half size needs
        even sizes (4:2:0 both, 4:2:2 the width; RGB none), and H.265 is written at least :data:`_X265_MIN`."""
        if not self.is_video:
            return 0, 0
        pix_fmt = self._pixel_format()
        pad = {"yuv420p": (h % 2, w % 2), "yuv420p10le": (h % 2, w % 2), "yuva420p": (h % 2, w % 2),
               "yuv422p10le": (0, w % 2)}.get(pix_fmt, (0, 0))
        if self.codec == "h265" and (h < _X265_MIN[0] or w < _X265_MIN[1]):
            pad = (max(pad[0], _X265_MIN[0] - h), max(pad[1], _X265_MIN[1] - w))
        return pad

    def stored_size(self, h: int, w: int) -> tuple[int, int]:
        """The ``(H, W)`` that ``h`` x ``w`` frames are stored at (a video's padding: :meth:`_padding`), which
        its frames read back at."""
        pad = self._padding(h, w)
        return h + pad[0], w + pad[1]

    _muxed_dts = None  # the decoding time of the packet muxed last, which the held one must come after

    def _mux(self, packets, last: bool = False) -> None:
        for packet in packets:
            if packet.pts in self._durations:
                packet.duration = self._durations.pop(packet.pts)
            self._mend_dts(packet)
            if self._first_dts is None:
                self._first_dts = packet.dts
            if self._held is not None:
                self._muxed_dts = self._held.dts
                self._container.mux(self._held)
            self._held = packet
        if last and self._held is not None:
            self._end_track(self._held)
            self._container.mux(self._held)
            self._held = None

    def _end_track(self, packet) -> None:
        """At a variable rate, make the last packet in decoding order end the track where the last
        frame ends (:func:`_end_mp4_track`). Matroska (and WebM) blocks keep their own frame's duration,
        set already: the MP4 rule there lengthened a short last frame by the reordering delay."""
        if self.times is None or self._first_dts is None:
            return
        if {"matroska", "webm"} & set(self._container.format.name.split(",")):
            return
        end, last = (round((self.times[k] - self.times[0]) / _TIME_TICK) for k in (self.count, self.count - 1))
        _end_mp4_track(packet, end, last, self._first_dts, self._muxed_dts)

    def _mend_dts(self, packet) -> None:
        """FFmpeg's libx265 wrapper gives the packets of a clip of fewer than 3 frames a decoding time
        from memory it never set (seen: 7.5e18, -4.6e18, -1.3e18 for one frame), which the mp4 muxer
        refused now and then ("pts/dts pair unsupported", about 1 write in 300) and otherwise wrote.
        A decoding time after its frame's time, further before it than any reordering reaches (16
        frames), or not after the one before, is replaced by the earliest valid one."""
        pts, dts = packet.pts, packet.dts
        if pts is None:
            return
        if dts is None or dts > pts or dts < pts - 17 * self._frame_ticks or (
                self._last_dts is not None and dts <= self._last_dts):
            mended = pts if self._last_dts is None else min(pts, self._last_dts + 1)
            if self._last_dts is not None and mended <= self._last_dts:
                return  # nothing valid to give it: the muxer says what is wrong
            log.debug("%s: packet at %s had decoding time %s, written as %s", self.path.name, pts, dts, mended)
            packet.dts = dts = mended
        self._last_dts = dts

    def copy_from(self, path, frames: int, shape: tuple[int, ...]) -> bool:
        """Take the ``frames`` frames of ``path``, a video an earlier writer of these settings wrote (a
        stopped run's kept frames), as they were encoded: their packets are copied, not decoded and encoded
        again, so a lossy video loses nothing more however many times its run is stopped and resumed.
        ``shape``: the frames' own ``(H, W, C)``, as :meth:`write` would be given them. Only before the first
        frame is written. False, with no frame written, where the packets cannot continue this encoder's
        stream (another codec, size or stream header, other frame times, more or fewer frames than
        ``frames``): the caller then writes the frames decoded."""
        import av

        self._check_open()
        if not self.is_video or self.count or self._container is not None or frames <= 0:
            return False
        if self.times is not None and len(self.times) <= frames:
            return False
        shown = _shown_packets(path)
        if len(shown.timing) != frames or shown.stored != frames or shown.corrupt or shown.time_base is None \
                or any(pts is None for pts, _ in shown.timing):
            return False
        self._open_video(*shape[:2])
        try:
            self._container.start_encoding()  # opens the encoder: its header is what the kept packets need
        except av.error.FFmpegError as e:  # type: ignore[attr-defined]
            self._drop()
            raise OutputError(f"{self.path}: the {self.codec} encoder cannot write {shape[1]}x{shape[0]} frames "
                              f"({e}); write a folder of PNGs") from e
        ours = self._stream.codec_context
        # each kept frame's time in this encoder's unit, where it would have been written, in decoding order:
        # the nearest frame's, within half the file's unit (Matroska keeps milliseconds)
        scale = shown.time_base / ours.time_base
        wanted = [round((self.times[k] - self.times[0]) / _TIME_TICK) for k in range(frames + 1)] \
            if self.times is not None else list(range(frames + 1))
        first = min(pts for pts, _ in shown.timing)  # (Matroska starts a video after sound's priming: 21 ms)
        exact = np.array([float((pts - first) * scale) for pts, _ in shown.timing])
        rank = np.argsort(np.argsort(exact, kind="stable"), kind="stable")  # each packet's place in time order
        if np.abs(exact - np.asarray(wanted, dtype=np.float64)[rank]).max() > max(float(scale), 1) / 2:
            return False
        stamps = [wanted[i] for i in rank]
        container = _open_container(Path(path))
        try:
            theirs = _video_stream(container, path)
            cc = theirs.codec_context
            name = ours.codec.canonical_name  # "h264" for libx264, as its decoder is named
            if (cc.codec.canonical_name != name or (cc.width, cc.height) != (ours.width, ours.height)
                    or cc.format is None or _layout(theirs) != _layout(self._stream, self._pix_fmt)
                    or _header_units(cc.extradata, name) != _header_units(ours.extradata, name)):
                return False
            # decoding times, which Matroska does not store and a short MP4 stores without the reordering delay
            # that the encoder's new packets come with: each kept packet decodes as many frames before its place
            # in time order as this encoder's do (or as its reordering needs), so that the first new packet
            # decodes after the last kept one (one before it: the muxer refused the output as it was finished)
            order, delay = sorted(stamps), self._reorder_delay()
            while any(order[k - delay] > stamps[k] for k in range(delay, frames)):
                delay += 1
            step = wanted[1] - wanted[0]  # (a frame apart before the first, as after it: a rate read off them)
            dts = [order[0] - (delay - k) * step if k < delay else order[k - delay] for k in range(frames)]
            for k in range(frames):
                self._durations[wanted[k]] = wanted[k + 1] - wanted[k]
            # H.264 and H.265 are stored with lengths before their units (as the kept file holds them); this
            # encoder's units come with start codes, which the muxer turns into lengths: the kept ones are
            # given start codes too (copied as they were, a player read their lengths as data)
            annex_b = None
            if name in ("h264", "hevc") and bytes(cc.extradata or b"")[:1] == b"\1":
                try:
                    from av.bitstream import BitStreamFilterContext
                except ImportError:  # a PyAV without bitstream filters: the frames are decoded and written again
                    return False
                annex_b = BitStreamFilterContext(f"{name}_mp4toannexb", theirs)
            for k, packet in enumerate(self._kept_packets(container.demux(theirs), annex_b)):
                if k >= frames:
                    break
                packet.pts = stamps[k]
                packet.dts = dts[k]
                packet.time_base = ours.time_base
                packet.stream = self._stream
                self._mux([packet])
        finally:
            container.close()
        self._shape = tuple(shape)
        self.count = frames
        return True

    def _reorder_delay(self) -> int:
        """How many frames before its time this writer's encoder has a frame decoded (its B-frames'
        reordering): measured once per codec, options and pixel format on a small encoder of the same
        settings, from its first packet (x264 and x265 at these settings: 2; taken as 2 where it cannot be
        measured: a larger delay than the encoder's is safe, a smaller one is not)."""
        try:
            return _reorder_delay(VIDEO_CODECS[self.codec][0], self._pixel_format(),
                                  tuple(sorted(_codec_options(self.codec, self.crf, self.alpha).items())))
        except Exception as e:  # noqa: BLE001 - a PyAV that measures otherwise: x264's and x265's, more than enough
            log.debug("the encoder's reordering delay could not be measured (%s): 2 frames taken", e)
            return 2

    @staticmethod
    def _kept_packets(packets, annex_b):
        for packet in packets:
            if packet.size:
                yield from (annex_b.filter(packet) if annex_b is not None else (packet,))
        if annex_b is not None:
            yield from annex_b.filter(None)

    def _check_open(self) -> None:
        if self._ended is not None:
            raise OutputError(f"the writer of {self.path} was {self._ended}; open a new VideoWriter")

    def write(self, frame: np.ndarray) -> None:
        self._check_open()
        frame = _as_bytes(frame, self.count)
        channels = 4 if self.alpha else 3
        if frame.ndim != 3 or frame.shape[2] != channels:
            raise InputError(f"frames must be (H, W, {channels}) uint8, got {frame.shape}")
        if self._shape is None:
            self._shape = frame.shape
        elif frame.shape != self._shape:
            raise InputError(f"frame {self.count} is {frame.shape[1]}x{frame.shape[0]}, the first was "
                             f"{self._shape[1]}x{self._shape[0]}: every frame of an output is one size")
        if (self.is_video or self.is_gif) and self.times is not None and self.count >= len(self.times) - 1:
            raise InputError(f"{self.path}: frame {self.count} written, but times are given for {len(self.times) - 1} "
                             "frames: pass one time for each frame and one more, for when the last ends")
        try:
            if self.is_video:
                import av

                if self._container is None:
                    self._open_video(*frame.shape[:2])
                if any(self._pad):
                    frame = np.pad(frame, ((0, self._pad[0]), (0, self._pad[1]), (0, 0)), mode="edge")
                if self._pix_fmt in ("yuv422p10le", "yuv420p10le", "yuva444p10le"):  # converted here: see _yuv10
                    vf = _yuv10(frame, self._matrix, self._pix_fmt, *self._tags)
                else:
                    to = {} if self._matrix is None else {"dst_colorspace": _MATRICES[self._matrix][0],
                                                           "dst_color_range": "MPEG"}
                    if self._pix_fmt == "yuv420p" and frame.shape[0] == 2:
                        vf = _two_rows_420(frame, to)
                    else:
                        vf = av.VideoFrame.from_ndarray(frame, format="rgba" if self.alpha else "rgb24")
                        vf = vf.reformat(format=self._pix_fmt, **to)
                if self.times is not None:
                    vf.pts = round((self.times[self.count] - self.times[0]) / _TIME_TICK)
                    vf.time_base = _TIME_TICK
                    # each frame lasts until the next one's time: the container's last sample (a GIF's
                    # held last frame, say) takes its duration from its packet
                    self._durations[vf.pts] = round((self.times[self.count + 1] - self.times[0]) / _TIME_TICK) - vf.pts
                else:  # frame n at n / fps: a frame with no time reached x265 unset, and its packet's
                    # made-up one broke the mp4 muxer now and then ("pts/dts pair unsupported")
                    vf.pts, vf.time_base = self.count, self._stream.codec_context.time_base
                try:  # the encoder opens at its first frame, and says there what it cannot take
                    packets = self._stream.encode(vf)
                except av.error.FFmpegError as e:  # type: ignore[attr-defined]
                    if self.count or isinstance(e, OSError) or _short_of_memory(e):  # (PyAV's ENOMEM is no OSError)
                        raise
                    self._drop()
                    raise OutputError(f"{self.path}: the {self.codec} encoder cannot write {frame.shape[1]}x"
                                      f"{frame.shape[0]} frames ({e}); write a folder of PNGs") from e
                self._mux(packets)
            else:
                from PIL import Image

                # a GIF's frames wait here until close: fast to write, not small
                name = self.tmp / f"{self.count:05d}.png"
                try:
                    Image.fromarray(frame).save(name, compress_level=1 if self.is_gif else 6)
                except OSError:  # a full disk: this frame is not one of those done, which stay for keep_partial
                    name.unlink(missing_ok=True)
                    raise
        except (OSError, MemoryError) as e:  # (PyAV's ENOMEM is a MemoryError, not an OSError)
            short = _short_of_memory(e) if self.is_video else None
            if short:  # the encoder (or its threads) short of memory: the file is whole up to the frames before,
                # and closing it (keep_partial) keeps them; it was said as "writing failed ([Errno 11] ...)"
                raise MemoryError(f"{self.path}: out of memory while encoding frame {self.count} ({short}: "
                                  f"{getattr(e, 'strerror', None) or e})") from e
            if isinstance(e, MemoryError):  # numpy's, say: said as it is
                raise
            if self.is_video:  # a video cut off mid-file cannot be finished: nothing of it can be kept
                self._drop()
            raise OutputError(f"{self.path}: writing failed ({e})") from e
        self.count += 1

    def close(self) -> None:
        """Finish and move the result into place (replacing any previous output). Where the move fails
        (the folder made read-only, or removed, during the run), the finished output is kept where it
        was made and the error says where: nothing computed is deleted for want of a rename. A GIF that
        cannot be written (a full disk) keeps its frames for :meth:`keep_partial` (or :meth:`abort`). Once
        closed (or aborted), the writer takes no more frames; closing again does nothing, as a file's close
        (``close()`` inside ``with`` was an error after a good output)."""
        if self._ended == "closed":
            return
        self._check_open()
        done = None  # the finished output (or, for a GIF, its frames), once there is one
        try:
            if self.is_video:
                if self._container is None:
                    raise OutputError(f"{self.path}: no frames were written")
                self._mux(self._stream.encode(), last=True)
                self._container.close()
                self._container = None
                final = self.tmp
                if self.audio is not None:
                    final = _with_audio(self.tmp, self.audio, self.audio_start, self.duration,
                                        None if self.times is None else self.times[:self.count + 1]) or self.tmp
                done = final
                if final != self.tmp:
                    self.tmp.unlink()
                usual_mode(final)
                os.replace(final, _through_link(self.path))
            elif self.is_gif:
                if self.count == 0:
                    raise OutputError(f"{self.path}: no frames were written")
                done = self.tmp
                if self.audio is not None and has_audio(self.audio):
                    log.info("%s: a GIF has no sound; the guide's is left out", self.path.name)
                target = _through_link(self.path)
                fd, gif = tempfile.mkstemp(prefix=f".{_file_stem(target)}.", suffix=".gif", dir=target.parent)
                os.close(fd)
                try:
                    try:
                        _write_gif(sorted(self.tmp.glob("*.png")), Path(gif), self._gif_delays())
                    except OSError as e:  # a full disk: its frames stay, for keep_partial
                        raise OutputError(f"{self.path}: writing the GIF failed ({e})") from e
                    except Exception as e:  # a fault of ours too keeps the frames (keep_partial), said as it was
                        raise OutputError(f"{self.path}: writing the GIF failed ({e.__class__.__name__}: {e})") from e
                    usual_mode(gif)
                    os.replace(gif, target)
                finally:
                    Path(gif).unlink(missing_ok=True)
                shutil.rmtree(self.tmp, ignore_errors=True)
            else:
                if self.count == 0:
                    raise OutputError(f"{self.path}: no frames were written")
                done = self.tmp
                publish_folder(self.tmp, self.path)
            self._ended = "closed"
        except OutputError:
            if not self.is_gif or self.count == 0:
                self._drop()
            raise  # (a GIF's frames stay: keep_partial keeps them, abort drops them)
        except OSError as e:
            if done is not None and Path(done).exists():
                self._kept_at = Path(done)  # neither keep_partial nor abort touches it now
                self._ended = "closed"
                what = "its frames are" if self.is_gif else "the finished output is"
                raise OutputError(f"{self.path}: could not be put in place ({e}); {what} kept in {done}: move "
                                  "it there yourself") from e
            self._drop()
            raise OutputError(f"{self.path}: finishing the output failed ({e})") from e
        except BaseException:
            self._drop()
            raise

    def _gif_delays(self) -> list[int]:
        """Each frame's delay in milliseconds, whole hundredths of a second (a GIF's unit), rounded
        where the frames start so that the timing does not drift: 30 fps is 30, 40, 30, ... ms. A
        frame is shown 1/100 s at least (0 is read as 1/10 s): every frame is kept, a frame shorter
        than that starts a hundredth after the one before, and the frames after it catch up where they
        are long enough (a burst in a variable-rate clip); above 100 fps the GIF plays slower, said
        with how long it lasts (each 0 had been made 10 ms, and the lag added up without a word)."""
        n = self.count
        t = (self.times[: n + 1] - self.times[0]) if self.times is not None else np.arange(n + 1) / self.fps
        cs = np.round(np.asarray(t, dtype=np.float64) * 100).astype(np.int64)
        # each start the later of its own and a hundredth after the one before: i + max_(j<=i) (cs[j] - j)
        k = np.arange(n + 1)
        starts = np.maximum.accumulate(cs - k) + k
        delays = np.diff(starts) * 10
        if starts[-1] > cs[-1]:
            wanted, got = float(t[-1]), starts[-1] / 100
            log.warning("%s: a GIF shows a frame for 1/100 s at least (100 fps at most): with every frame kept, its %d "
                        "frames last %.2f s instead of %.3g s (%.1fx as long), and many viewers slow 1/100 s frames to "
                        "1/10 s; write .mp4/.webm to keep the timing", self.path.name, n, got, wanted,
                        got / wanted if wanted > 0 else float("inf"))
        elif (delays < 20).any():
            log.warning("%s: frames shorter than 2/100 s (50 fps and up): many viewers slow them to 1/10 s; "
                        "give --fps 25 or less, or write .mp4/.webm", self.path.name)
        return [int(d) for d in delays]

    @property
    def duration(self) -> float:
        """How long the frames written so far play, in seconds."""
        if self.times is not None:
            return float(self.times[self.count] - self.times[0]) if self.count else 0.0
        return self.count / self.fps

    def keep_partial(self, more_than: int = 0) -> Path | None:
        """After a failure: keep the frames written so far beside the output, as ``NAME.partial.mp4``
        (or a ``NAME.partial`` folder of PNGs), with their sound; any output at ``path`` stays as it
        was. Returns where they are, or None when there were none (or keeping them failed). Unless there
        are more than ``more_than`` frames (a resumed run stopped while it copied the frames an earlier
        one kept): then these are dropped, and the earlier ones stay as they were. A folder of frames
        (PNGs, and a GIF's frames) is kept by renames, which a full disk does not stop, and an earlier
        partial is swapped out only once the new one is in place."""
        if self._kept_at is not None or self._ended == "closed":
            return None  # finished, in place or kept where it was made (said): closing again deleted it
        if self._ended == "aborted" and not self._failed:
            return None  # dropped by abort(): nothing failed (it was said "failed as it was finished")
        if self.count <= more_than:
            self.abort()
            return None
        dest = partial_path(self.path)
        if not self.is_video:  # the frames as they are (exact for --resume)
            try:
                publish_folder(self.tmp, dest)
                self._ended = "closed"
                return dest
            except OSError as e:
                log.warning("the %d frames done could not be moved to %s (%s); they are in %s", self.count, dest, e,
                            self.tmp)
                return None
        if self._container is None and not self.tmp.exists():  # dropped already: finishing it failed (a full disk)
            log.warning("the %d frames done could not be kept: writing the video failed as it was finished, and a "
                        "video cut off cannot be finished (a folder of PNGs, -o without an extension, keeps its "
                        "frames through a full disk)", self.count)
            return None
        keep, self.path = self.path, dest
        try:
            self.close()
            return dest
        except (OutputError, OSError) as e:
            log.warning("the %d frames done could not be kept (%s)", self.count, e)
            return None
        finally:
            self.path = keep

    def _drop(self) -> None:
        """:meth:`abort`, for a failure of writing: :meth:`keep_partial` then says the frames were lost."""
        self._failed = True
        self.abort()

    def abort(self) -> None:
        """Drop what was written; any earlier output at ``path`` stays as it was (and a finished output
        that could not be moved there stays where :meth:`close` said it is). Nothing once closed."""
        if self._kept_at is not None or self._ended == "closed":
            return
        self._ended = "aborted"
        if self._container is not None:
            try:
                self._container.close()
            except Exception:
                pass
            self._container = None
        if self.tmp.is_dir():
            shutil.rmtree(self.tmp, ignore_errors=True)
        elif self.tmp.exists():
            try:
                self.tmp.unlink()
            except OSError as e:  # said, not raised in place of the error that led here
                log.warning("could not remove the unfinished %s (%s)", self.tmp, e)


class BackgroundWriter(_Output):
    """A :class:`VideoWriter` fed from a thread of its own, so that encoding a frame (and waiting for
    its copy from the GPU) overlaps the computing of the next ones.

    :meth:`write` takes an ``(H, W, 3)`` uint8 array, or a callable that returns one, called in the
    writing thread (a frame still on its way from the GPU: see :func:`host_frame`). At most ``depth``
    frames wait. An error of the writing thread is raised by the next :meth:`write` or by
    :meth:`close`. :meth:`close` and :meth:`keep_partial` first write every frame handed on, so nothing
    computed is lost; ``count`` is exact once either has returned.
    """

    def __init__(self, writer: VideoWriter, depth: int = 8):
        import queue
        import threading

        self.writer = writer
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="flickerless-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is not None:
                continue  # after a failure the rest is dropped; the frames before it stay written
            try:
                self.writer.write(item() if callable(item) else item)
            except BaseException as e:  # noqa: BLE001 - raised again in the caller's thread
                self._error = e

    @property
    def count(self) -> int:
        return self.writer.count

    def write(self, frame) -> None:
        if self._error is not None:
            self._finish()
            raise self._error
        if not self._thread.is_alive():
            raise RuntimeError("the writer was closed")
        self._queue.put(frame)

    def _finish(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def finish(self) -> None:
        """Write every frame handed on; raise what the writing thread met (the writer is left as it is,
        for :meth:`keep_partial`)."""
        self._finish()
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        self._finish()
        if self._error is not None:
            self.writer.abort()
            raise self._error
        self.writer.close()

    def copy_from(self, path, frames: int, shape: tuple[int, ...]) -> bool:
        """:meth:`VideoWriter.copy_from`, before any frame is handed on (in the caller's thread: the writing
        thread has nothing to do until then)."""
        if self._error is not None or self.writer.count or not self._queue.empty():
            return False
        return self.writer.copy_from(path, frames, shape)

    def stored_size(self, h: int, w: int) -> tuple[int, int]:
        return self.writer.stored_size(h, w)

    def keep_partial(self, more_than: int = 0) -> Path | None:
        self._finish()
        return self.writer.keep_partial(more_than)

    def abort(self) -> None:
        self._finish()
        self.writer.abort()


def host_frame(img):
    """An ``(3, H, W)`` float image in [0, 1] as ``(H, W, 3)`` uint8 for a writer. On a GPU the copy
    to pinned host memory is only started, and a callable that waits for it is returned (for a
    :class:`BackgroundWriter`; the caller's thread goes on queueing work); on the CPU the array."""
    import torch

    from .blend.frames import to_hwc_uint8

    u8 = to_hwc_uint8(img)
    if u8.device.type != "cuda":
        return u8.cpu().numpy()  # the CPU (no copy), or another accelerator (MPS: a plain copy)
    host = torch.empty(u8.shape, dtype=torch.uint8, pin_memory=True)
    host.copy_(u8, non_blocking=True)
    done = torch.cuda.Event()
    done.record(torch.cuda.current_stream(u8.device))

    def wait() -> np.ndarray:
        done.synchronize()
        return host.numpy()

    return wait


def _first_frame_time(path: Path) -> float:
    """When a clip's first video frame is shown, in seconds (0 where it cannot say)."""
    import av

    try:
        with av.open(_ffmpeg_path(path)) as c:
            if not c.streams.video:
                return 0.0
            return float(next(c.decode(_video_stream(c, path))).time or 0.0)
    except (StopIteration, av.error.FFmpegError, OSError, InputError):  # type: ignore[attr-defined]
        return 0.0


@functools.lru_cache(maxsize=16)
def _reorder_delay(encoder: str, pix_fmt: str, options: tuple[tuple[str, str], ...]) -> int:
    """:meth:`VideoWriter._reorder_delay`: 16 grey frames of 64x64 at 25 fps through ``encoder``."""
    import av

    ctx = av.CodecContext.create(encoder, "w")
    ctx.width, ctx.height, ctx.pix_fmt = _X265_MIN[1], _X265_MIN[1], pix_fmt
    ctx.time_base = Fraction(1, 25)
    ctx.options = dict(options)
    grey = av.VideoFrame.from_ndarray(np.full((_X265_MIN[1], _X265_MIN[1], 3), 128, np.uint8), format="rgb24")
    packets = []
    for i in range(16):
        f = grey.reformat(format=pix_fmt)
        f.pts, f.time_base = i, ctx.time_base
        packets += ctx.encode(f)
    packets += ctx.encode(None)
    first = min((p for p in packets if p.dts is not None), key=lambda p: p.dts, default=None)
    return max(0, int(first.pts - first.dts)) if first is not None and first.pts is not None else 0


def _header_units(extradata: bytes | None, codec: str) -> tuple[bytes, ...] | bytes:
    """A stream header as what it says, whichever way it is stored: H.264's and H.265's parameter sets
    are stored by the encoder with start codes (Annex B) and by an MP4 or Matroska file as an ``avcC`` /
    ``hvcC`` record, which hold the same units (their SEI left out: :func:`_is_sei`). ProRes has none
    (b""). Any other codec's header as its bytes (none: b"")."""
    data = bytes(extradata or b"")
    if codec == "prores":  # each frame says what it is; Matroska keeps its fourcc (b"apch") as a header
        return b""
    if codec not in ("h264", "hevc") or not data:
        return data
    if data[:3] == b"\0\0\1" or data[:4] == b"\0\0\0\1":  # Annex B: units between start codes
        units = [u.rstrip(b"\0") for u in re.split(b"\0\0\1", data) if u.strip(b"\0")]
        return tuple(sorted(u for u in units if not _is_sei(u, codec)))
    units, at = [], 0
    try:
        if codec == "h264":  # avcC: 5 bytes, then the SPSs, then the PPSs, each a count and units of 2-byte length
            at = 5
            for mask in (0x1F, 0xFF):
                count, at = data[at] & mask, at + 1
                for _ in range(count):
                    n = int.from_bytes(data[at:at + 2], "big")
                    units.append(data[at + 2:at + 2 + n])
                    at += 2 + n
        else:  # hvcC: 22 bytes, then arrays of a type byte, a count and units of 2-byte length
            arrays, at = data[22], 23
            for _ in range(arrays):
                count = int.from_bytes(data[at + 1:at + 3], "big")
                at += 3
                for _ in range(count):
                    n = int.from_bytes(data[at:at + 2], "big")
                    units.append(data[at + 2:at + 2 + n])
                    at += 2 + n
    except IndexError:
        return data
    return tuple(sorted(u for u in units if u and not _is_sei(u, codec)))


def _layout(stream, pix_fmt: str | None = None) -> tuple[bool, tuple[tuple[int, int], ...]]:
    """Whether a video stream's frames have alpha, and its planes' sizes: what a stream's pixel format
    says, whatever depth its decoder gives them at (ProRes 4444 written at 10 bits is read at 12). VP9's
    alpha is side data, which its stream says (Matroska's AlphaMode)."""
    import av

    cc = stream.codec_context
    fmt = av.VideoFormat(pix_fmt, cc.width, cc.height) if pix_fmt else cc.format
    alpha = any(c.is_alpha for c in fmt.components) or stream.metadata.get("alpha_mode") == "1"
    return alpha, tuple((c.width, c.height) for c in fmt.components if not c.is_alpha)


def _is_sei(unit: bytes, codec: str) -> bool:
    """A supplemental information unit, which decoding does not need: x265's names the machine's CPU and
    threads, so a stopped run resumed on another machine would not match its own stream's header."""
    return (unit[0] & 0x1F) == 6 if codec == "h264" else ((unit[0] >> 1) & 0x3F) in (39, 40)


def _end_mp4_track(packet, end: int, last: int, first_dts: int, after: int | None) -> None:
    """Make ``packet``, the last in decoding order of a variable-rate MP4 track whose frames start at 0,
    end the track at ``end``; ``last`` is the last frame's time, ``first_dts`` the first packet's
    decoding time, ``after`` the one before it (None: none, or not known). All in the stream's ticks.

    An MP4 keeps each sample's duration as the step to the next decoding time, so with frames
    reordered (B-frames) the last shown frame's own duration is stored nowhere else, and the track ends
    twice: its samples at the last decoding time plus that duration, what plays (its edit) at the
    latest of each frame's time plus its duration. Both end at ``end`` only where the last packet's
    decoding time runs behind its frame's time by as much as the first packet's did; at a variable
    rate the encoder's delay varies, so the last one is moved to that, as far as the decoding order
    allows. The last frame shown keeps its own duration: the decoding-time rule cut it short by the
    whole delay where it comes last in decoding order too (0.5 s played as 0.44).
    :func:`_last_frame_ticks` reads it back."""
    if packet.dts is None or packet.pts is None:
        return
    packet.dts = max(packet.pts + first_dts, packet.dts if after is None else after + 1)
    ticks = end - packet.pts if packet.pts >= last else end - packet.dts + first_dts
    if ticks > 0:
        packet.duration = ticks


def _with_audio(video_file: Path, source, start: float, duration: float, times=None) -> Path | None:
    """A copy of ``video_file`` (frames only) with the first audio stream of ``source`` from ``start``
    seconds for ``duration`` seconds, in a temporary file beside it; None when ``source`` has no sound
    or it cannot be carried over (said once). ``times``: the frames' times at a variable rate (as
    :class:`VideoWriter` takes them), whose durations an MP4's copy would lose (:func:`_end_mp4_track`)."""
    import av

    source = Path(source)
    if source.is_dir():
        return None
    try:
        src = av.open(_ffmpeg_path(source))
    except (av.error.FFmpegError, OSError) as e:  # type: ignore[attr-defined]
        log.warning("%s: sound not read, the output has none (%s)", source, e)
        return None
    # ``start`` counts from the source's first frame, which need not be at time 0 (MPEG-TS and
    # camcorder .MTS clips start at a second or more; a B-frame delay puts an mp4's first frame
    # later than its sound): the sound is cut and placed against that frame, as it plays in the source
    origin = start + _first_frame_time(source)
    tmp = os.devnull
    try:
        # a short name: the video's own is hidden and random already (its stem again overran a long name's limit)
        fd, tmp = tempfile.mkstemp(prefix=".a.", suffix=video_file.suffix, dir=video_file.parent)
        os.close(fd)
        if not src.streams.audio:
            Path(tmp).unlink()
            return None
        ain = src.streams.audio[0]
        fmt = WRITE_VIDEO_EXTS[video_file.suffix.lower()]
        # the format's name (a descriptor's), not the decoder's: FFmpeg decodes MP3 with "mp3float" and may
        # pick "ac3_fixed" or "aac_fixed", and MP3 was re-encoded where it could be copied
        name = ain.codec_context.codec.canonical_name
        copy = (name in WEBM_AUDIO_CODECS if fmt == "webm"
                else fmt == "matroska" or name in COPY_AUDIO_CODECS)
        with av.open(_ffmpeg_path(video_file)) as vin, av.open(_ffmpeg_path(tmp), mode="w", format=fmt) as out:
            vstream = vin.streams.video[0]
            vout = out.add_stream_from_template(vstream)
            # what the template leaves out, which the muxer would make up: the tag Apple's players ask of HEVC
            # (hvc1, not hev1) and ProRes 4444's (ap4h, not 422's apch), VP9's alpha flag, the pixel shape
            if fmt in ("mp4", "mov") and vstream.codec_context.codec_tag:
                vout.codec_context.codec_tag = vstream.codec_context.codec_tag
            if vstream.metadata.get("alpha_mode") == "1":  # Matroska's AlphaMode: written for a format with alpha
                vout.codec_context.pix_fmt = "yuva420p"
            sar = vstream.sample_aspect_ratio or vstream.codec_context.sample_aspect_ratio
            if sar and sar != 1:
                vout.codec_context.sample_aspect_ratio = sar
            if copy:
                aout = out.add_stream_from_template(ain)
            else:
                if fmt == "webm":  # Opus: 48 kHz, 20 ms frames
                    aout = out.add_stream("libopus", rate=48000)
                    sample_fmt, frame_size = "flt", 960
                else:
                    aout = out.add_stream("aac", rate=ain.codec_context.sample_rate or 48000)
                    sample_fmt, frame_size = "fltp", 1024
                aout.layout = ain.codec_context.layout
                resample = av.AudioResampler(format=sample_fmt, layout=ain.codec_context.layout,
                                             rate=aout.codec_context.sample_rate, frame_size=frame_size)
            # an MP4 read back gives each packet the step to the next decoding time as its duration, and
            # its copy ended the frames where the muxer made of those: each frame gets its own again, and
            # the last packet ends the track as the writer ended it (a variable rate's last frame up to
            # half a second short or long)
            own = held = first_dts = after = None
            if times is not None and fmt in ("mp4", "mov") and vstream.time_base:
                ticks = [round(t / vstream.time_base) for t in (np.asarray(times) - times[0]).tolist()]
                own = dict(zip(ticks[:-1], np.diff(ticks).tolist()))
            for pkt in vin.demux(vstream):
                if not pkt.size:  # the demuxer's empty flush packet (Matroska's first packets have no dts)
                    continue
                pkt.stream = vout
                if own is None:
                    out.mux(pkt)
                    continue
                pkt.duration = own.get(pkt.pts, pkt.duration)
                first_dts = pkt.dts if first_dts is None else first_dts
                if held is not None:
                    after = held.dts
                    out.mux(held)
                held = pkt
            if held is not None:
                _end_mp4_track(held, ticks[-1], ticks[-2], first_dts, after)
                out.mux(held)
            end = origin + duration
            # re-encoded sound is numbered in samples from where its first kept frame is heard against the
            # output's first frame: the encoder then starts its packets before that by its priming samples
            # (AAC's 1024, Opus's 312), which the muxer writes down (an mp4 edit list, Matroska's codec delay)
            # and players skip. Left unnumbered, the muxer started the priming at 0: the sound 21 ms late
            placed = None
            # the sound ends where the last frame does, also within a packet: the source's last one kept ran
            # up to a packet (21 ms of AAC) past it, and an output that ends later than its frames drifts
            # when outputs are joined one after another
            stop = end - max(origin, 0)  # in the output's time

            def encode(frames):
                nonlocal placed
                rate = aout.codec_context.sample_rate
                for f in frames:
                    keep = round(stop * rate) - placed
                    if keep <= 0:
                        return
                    if f.samples > keep:
                        f = _first_samples(f, keep)  # the encoder's last frame: its packet is as short
                    f.pts, f.time_base = placed, Fraction(1, rate)
                    placed += f.samples
                    out.mux(aout.encode(f))

            for pkt in src.demux(ain):
                if not pkt.size or pkt.pts is None:
                    continue
                t = float(pkt.pts * pkt.time_base)
                if t >= end or (origin > 0 and t < origin):
                    continue
                if copy:
                    shift = round(origin / pkt.time_base) if origin > 0 else 0
                    pkt.pts -= shift
                    if pkt.dts is not None:
                        pkt.dts -= shift
                    _end_sound_at(pkt, stop, ain, side_data=bool({"matroska", "webm"} & set(out.format.name.split(","))))
                    pkt.stream = aout
                    out.mux(pkt)
                else:
                    for frame in pkt.decode():
                        if placed is None:  # at its time in the source, as a copied packet is (not a packet late)
                            placed = max(0, round(((frame.time if frame.time is not None else t) - max(origin, 0))
                                                  * aout.codec_context.sample_rate))
                        frame.pts = None
                        encode(resample.resample(frame))
            if not copy:
                if placed is not None:
                    encode(resample.resample(None))
                out.mux(aout.encode(None))
        return Path(tmp)
    except Exception as e:  # sound is a courtesy: any failure keeps the frames, without it
        log.warning("%s: sound not carried over, the output has none (%s: %s)", source, e.__class__.__name__, e)
        if tmp != os.devnull:
            Path(tmp).unlink(missing_ok=True)
        return None
    finally:
        src.close()


def _first_samples(frame, n: int):
    """The first ``n`` samples of an audio frame."""
    import av

    a = frame.to_ndarray()
    a = a[:, :n] if frame.format.is_planar else a[:, :n * len(frame.layout.channels)]
    cut = av.AudioFrame.from_ndarray(np.ascontiguousarray(a), format=frame.format.name, layout=frame.layout.name)
    cut.sample_rate = frame.sample_rate
    return cut


def _end_sound_at(pkt, stop: float, stream, side_data: bool = True) -> None:
    """A copied sound packet that runs past ``stop`` seconds ends there: its duration shortened (the track,
    and an mp4's edit, end there) and the samples past it marked to be dropped (FFmpeg's skip_samples side
    data, which Matroska and WebM keep as DiscardPadding and decoders apply; an mp4 has no place for it, so
    FFmpeg still decodes that packet whole). Left as it is where its duration is not known, or PyAV is too
    old to set side data. ``side_data``: only where the output keeps it (Matroska, WebM): FFmpeg 7's mp4 muxer
    refused an MP3 packet that carried it ("Invalid data found"), and the sound was dropped."""
    rate = stream.codec_context.sample_rate
    ticks = pkt.duration or (round(stream.codec_context.frame_size / rate / pkt.time_base)
                             if stream.codec_context.frame_size and rate else 0)
    over = float((pkt.pts + ticks) * pkt.time_base) - stop
    if not ticks or over <= 0 or pkt.pts * pkt.time_base >= stop:
        return
    pkt.duration = ticks - round(over / pkt.time_base)
    if not side_data:
        return
    try:
        from av.packet import PacketSideData, packet_sidedata_type_from_literal
    except ImportError:  # PyAV before 14
        return
    import struct

    # the start's skip, where the packet is the first too, and its own end padding (an Opus stream's last
    # packet, whose duration the demuxer already gives without it: it is dropped as well as what runs past)
    held = bytes(pkt.get_sidedata("skip_samples"))
    start, end = (struct.unpack_from("<I", held, 0)[0] if len(held) >= 4 else 0,
                  struct.unpack_from("<I", held, 4)[0] if len(held) >= 8 else 0)
    side = PacketSideData(packet_sidedata_type_from_literal("skip_samples"), 10)
    side.update(struct.pack("<IIBB", start, end + round(over * rate), 0, 0))
    pkt.set_sidedata(side)


def has_audio(path) -> bool:
    """Whether a clip (a video file) has a sound stream."""
    import av

    path = Path(path)
    if path.is_dir() or not path.exists():
        return False
    try:
        with av.open(_ffmpeg_path(path)) as c:
            return bool(c.streams.audio)
    except (av.error.FFmpegError, OSError):  # type: ignore[attr-defined]
        return False


_said_layout: list = []  # a tensor frame that fits either layout, said once a process


def _as_bytes(frame, index: int) -> np.ndarray:
    """A frame to write as contiguous uint8: floats are read as [0, 1] (what :func:`flickerless.deflicker`
    returns for float input) and scaled; other types, and floats clearly off that scale, are refused
    (a cast made [0, 1] floats black and wrapped 16-bit values around). A tensor frame is read as its
    values, ``(C, H, W)`` as a tensor's frames are laid out (deflicker's tensors were refused as not
    ``(H, W, 3)``, bfloat16 ones and ones with autograd history failed in torch); channels-first where
    that is ambiguous (a first dimension of 3 or 4), channels-last only where it cannot be."""
    torch = sys.modules.get("torch")  # a tensor implies torch was imported: not imported here for arrays
    if torch is not None and isinstance(frame, torch.Tensor):
        frame = frame.detach()
        # a (3, H, 3) frame, 3 pixels wide, was taken as channels-last and written scrambled
        if frame.ndim == 3 and frame.shape[0] in (3, 4):
            if frame.shape[2] in (3, 4) and not _said_layout:  # (3, 4, 3): either way
                _said_layout.append(True)
                log.warning("tensor frames of shape %s are read as (C, H, W), a tensor's layout, though (H, W, C) "
                            "fits too: permute channels-last frames to (C, H, W) first", tuple(frame.shape))
            frame = frame.permute(1, 2, 0)
        frame = (frame.float() if frame.is_floating_point() else frame).cpu().numpy()
    frame = np.asarray(frame)
    if frame.dtype == np.uint8:
        return np.ascontiguousarray(frame)
    if np.issubdtype(frame.dtype, np.floating) and frame.size:
        check_unit_range(float(np.min(frame)), float(np.max(frame)), f"frame {index}'s values")
        return np.round(np.clip(frame, 0, 1) * 255).astype(np.uint8)
    raise InputError(f"frame {index} is {frame.dtype}: frames are uint8 (0-255) or floats in [0, 1]")


def write(path, frames: Iterable[np.ndarray], fps: float = DEFAULT_FPS) -> int:
    """Write all ``frames`` ((T, H, W, 3) uint8 or an iterable of (H, W, 3); floats in [0, 1] are
    scaled to 0-255; a (T, 3, H, W) tensor, as :func:`flickerless.deflicker` returns it, or (3, H, W)
    tensor frames, too: a tensor is read channels-first where that is ambiguous (a 4-D one as
    (T, C, H, W), a frame whose first dimension is 3 or 4 as (C, H, W)), an array as (T, H, W, C),
    whatever the width); returns the count. Frames with alpha (4 channels) keep it where ``path`` can (a
    folder of PNGs, .webm) and are refused elsewhere. ``path`` is read as the commands read ``-o``: a
    name ending in a file type this does not write (``out.txt``) is refused rather than made a folder of
    PNGs."""
    codec = check_output(path)
    frames = iter(frames)  # a (T, C, H, W) tensor's (C, H, W) frames are laid out by _as_bytes
    first = next(frames, None)
    alpha = False
    if first is not None:  # its channels say whether the writer is made for RGBA
        first = _as_bytes(first, 0)
        alpha = first.ndim == 3 and first.shape[2] == 4
        if alpha and not keeps_alpha(codec):
            raise InputError(f"{path}: the frames have alpha (4 channels), which this output cannot keep: write a "
                             "folder of PNGs or .webm (.mov/.mkv: VideoWriter(path, fps, alpha=True, "
                             "codec='prores')), or pass the colour channels alone")
    with VideoWriter(path, fps, alpha=alpha) as w:
        for f in ([] if first is None else [first]):
            w.write(f)
        for f in frames:
            w.write(f)
        return w.count
