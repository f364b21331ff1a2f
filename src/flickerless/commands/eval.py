"""``flickerless eval``: the paper's metrics of a video, printed, as JSON and as an HTML report."""

from __future__ import annotations

import logging
import os

log = logging.getLogger("flickerless")


def register(subparsers) -> None:
    from ..cli import _positive
    from ..weights import DEFAULT_CLIP

    p = subparsers.add_parser(
        "eval",
        help="measure a video: Pixel-MSE, warping error, CLIP score, aesthetic score, FID, Pose-MSE",
        description="Compute DiffSynth's evaluation metrics of a video against its source video and prompt. "
        "Metrics whose weights are missing are skipped with one line saying how to supply them.",
    )
    p.add_argument("--video", required=True, help="the video to evaluate (file or folder of images)")
    p.add_argument("--source", help="the source (input) video: needed by pixel_mse, warp_error, pose_mse (frame "
                   "for frame with --video) and fid (any number of frames)")
    p.add_argument("--prompt", help="the text prompt (needed by clip)")
    p.add_argument("--metrics", help="comma-separated subset of pixel_mse,warp_error,clip,clip_consistency,"
                   "aesthetic,fid,pose_mse (default: all that the inputs allow)")
    p.add_argument("--json", help="write the numbers (and per-frame values) to this JSON file")
    p.add_argument("--report", help="write a self-contained HTML report to this file")
    p.add_argument("--clip-model", default=DEFAULT_CLIP,
                   help=f"CLIP repo id or local folder (default {DEFAULT_CLIP}) for clip, clip_consistency, aesthetic, fid")
    p.add_argument("--aesthetic-weights", help="LAION aesthetic predictor weights (sac+logos+ava1-l14-linearMSE.pth)")
    p.add_argument("--flow", choices=("dis", "raft"), default="dis",
                   help="optical flow on the source: dis (OpenCV, default) or raft (needs torchvision)")
    p.add_argument("--raft-weights", help="raft_large state-dict file (default: torchvision's cached weights)")
    p.add_argument("--fit", choices=("crop", "stretch"),
                   help="a source of another aspect ratio than --video, for pixel_mse, warp_error, pose_mse: crop "
                        "(its centre, as `run` with video.resize = \"crop\"; the default, said in a warning) or "
                        "stretch (video.resize = \"stretch\")")
    p.add_argument("--fid-features", choices=("clip", "inception"), default="clip",
                   help="FID features: clip (CLIP-FID with --clip-model, default) or inception (needs pytorch-fid)")
    p.add_argument("--frames", metavar="START:END",
                   help="only frames START..END-1 of --video (0-based; either may be left out)")
    p.add_argument("--source-frames", metavar="START:END",
                   help="only frames START..END-1 of --source, the ones --video's frames were made from: an output "
                        "of `deflicker --frames 12:24` compares with --source-frames 12:24")
    p.add_argument("--max-frames", type=_positive, help="use only the first N frames of each video (of each range)")
    p.add_argument("--samples", type=_positive, default=4, help="sample frames shown in the report (default 4)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... for the CLIP/RAFT models (default: a GPU if present)")
    p.add_argument("-q", "--quiet", action="store_true", help="only the numbers")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args) -> int:
    from pathlib import Path

    from ..errors import InputError, OutputError
    from ..video import DiskFrames, check_name_fits, check_not_special, cut_short, not_there, open_frames

    for flag in ("json", "report"):
        v = getattr(args, flag)
        if v is not None and not v.strip():  # `--json "$OUT"` with OUT unset: no file, and exit 0
            raise OutputError(f"--{flag} is empty: give a file name (is the shell variable it came from set?)")
        if v and not Path(v).resolve().parent.is_dir():
            raise OutputError(f"--{flag} {v}: folder {Path(v).resolve().parent} does not exist")
        if v:  # said in words (it was an OSError, "File name too long") before the metrics run
            check_name_fits(v, f"--{flag} {v}")
            check_not_special(Path(v), f"--{flag} {v}")  # (/dev/null: root's writable /dev let it be replaced)
        if v and Path(v).is_dir():  # said before the metrics run, not after
            raise OutputError(f"--{flag} {v} is a folder: give a file name")
        if v and not os.access(Path(v).resolve().parent, os.W_OK):
            raise OutputError(f"--{flag} {v}: folder {Path(v).resolve().parent} is not writable")
    for flag in ("video", "source"):
        v = getattr(args, flag)
        if v and not Path(v).exists():
            raise not_there(v, f"--{flag} {v}")
    from ..video import check_output_is_not_input

    for flag in ("json", "report"):  # an input written over with the scores (exit 0, no word)
        if getattr(args, flag):
            check_output_is_not_input(getattr(args, flag), video=args.video, source=args.source)
    if args.json and args.report and Path(args.json).resolve() == Path(args.report).resolve():
        raise OutputError(f"--json and --report are both {args.json}: the report would replace the scores; give two "
                          "file names")
    if args.source_frames is not None and not args.source:
        raise InputError("--source-frames picks frames of --source: give --source too")
    spans = {"video": _range(args.frames, "--frames", args.max_frames),
             "source": _range(args.source_frames, "--source-frames", args.max_frames)}
    if args.device is not None:  # a wrong one was ignored where no metric needed a model
        from ..blend.deflicker import resolve_device

        resolve_device(args.device)
    if args.quiet:
        from ..weights import quiet_model_loading

        quiet_model_loading(with_diffusers=False)
    opened = []

    def frames(flag):
        """A clip over the in-memory limit is read through a file and mapped, not held in RAM."""
        start, stop = spans[flag]
        try:
            f, _ = open_frames(getattr(args, flag), start=start, stop=stop)
        except InputError as e:
            if not getattr(e, "decodable", 0):
                raise
            # deflicker's way out is not eval's; --max-frames cuts both ranges, from the starts given: one step
            # (--frames 0:N left the other clip longer, and a start given was dropped)
            n = e.decodable - start
            option = "--frames" if flag == "video" else "--source-frames"
            use = (f"eval scores {'them' if not start else f'those from frame {start}'} with --max-frames {n}"
                   if n > 0 else f"none from frame {start} on; eval scores them with {option} 0:{e.decodable}")
            raise InputError(cut_short(Path(getattr(args, flag)), e.decodable, e.cause, use)) from e.cause
        if isinstance(f, DiskFrames):
            opened.append(f)
            return f.array()
        return f

    from ..metrics.evaluate import PAIRED, parse_metrics

    paired = any(n in PAIRED for n in parse_metrics(args.metrics)[0])
    infos = _say_inputs(args.video, args.source, paired)
    aspect = _pixel_aspect(infos, args.video, args.source, args.fit)
    try:
        return _evaluate(args, frames("video"), frames("source") if args.source else None, aspect, spans)
    finally:
        for f in opened:
            f.close()


def _pixel_aspect(infos: dict, video, source, fit: str | None = None) -> float:
    """The source's pixel shape over the output's, for fitting one to the other. An anamorphic source is
    shown wider than its pixels: run generates at that shape, square-pixelled; deflicker keeps the stored
    pixels and says their shape (an output of its own shape needs no fit: it was cropped, and scored twice
    as high). Images (a folder, `deflicker -o folder/`, a per-frame tool's PNGs) cannot say a pixel shape:
    ones of the source's very size are taken as its pixel grid, said in a warning (taken as shown narrower,
    the source was centre-cropped: 1.5x the Pixel-MSE of the same frames as an mp4). A video file says its
    shape, and is taken at its word: run's square-pixel output can have the stored size too (it was scored
    uncropped, 9x too high). An explicit ``fit`` says how the output was made, and wins over the guess."""
    from pathlib import Path

    from ..video import IMAGE_EXTS

    if source is None:
        return 1.0
    v, s = infos[video], infos[source]
    images = Path(video).is_dir() or Path(video).suffix.lower() in IMAGE_EXTS
    same_grid = v.pixel_aspect == 1 != s.pixel_aspect and (v.height, v.width) == (s.height, s.width)
    if images and fit is None and same_grid:
        log.warning("%s is %dx%d, the source's stored size, and images say no pixel shape: taken as the source's "
                    "own pixels (shown %.3g as wide as high), not fitted; give --fit crop (or --fit stretch) for "
                    "square-pixel frames made at its shown shape", video, v.width, v.height, float(s.pixel_aspect))
        return 1.0
    return float(s.pixel_aspect / v.pixel_aspect)


def _range(text, flag: str, max_frames) -> tuple[int, int | None]:
    """``START:END`` of ``--frames``/``--source-frames`` as (start, stop), cut to ``max_frames`` frames."""
    from ..errors import InputError
    from ..pipelines.job import parse_frames

    try:
        start, stop = parse_frames(text)
    except InputError as e:  # its messages name deflicker's --frames
        raise InputError(str(e).replace("--frames", flag, 1)) from None
    if max_frames:
        stop = start + max_frames if stop is None else min(stop, start + max_frames)
    return start, stop


def _say_inputs(video, source, paired: bool = True) -> dict:
    """What reading a clip does not keep (frames that cannot be decoded at the start, interlacing), as the
    other commands say it: scores of frames that are not the ones meant came without a word. Transparency
    is said here: frames are scored as their RGB, hidden colours included. Frames are compared one for
    one; clips at other rates (a 30 fps output of a 15 fps source: frame t against frame t, half a second
    apart by frame 15) are said, as the comparison is then of other times; ``paired``: whether a metric
    compares frame t with frame t (FID compares sets of frames, and was warned of too). Returns
    {path: VideoInfo}."""
    from pathlib import Path

    from ..video import probe, warn_about_input

    infos = {}
    for path in (video, source):
        if path is None:
            continue
        infos[path] = info = probe(path)
        warn_about_input(path, info, say_alpha=False)  # its "the output has none" is of other commands
        if info.alpha:
            log.warning("%s has transparency (an alpha channel): its frames are scored as their RGB colours, the "
                        "alpha left out (a fully transparent pixel counts with the colour it holds)", path)
    if source is None or not paired or Path(video).is_dir() or Path(source).is_dir():  # a folder has no rate of its own
        return infos
    a, b = infos[video].fps, infos[source].fps
    if a and b and abs(a - b) > 0.01 * max(a, b):
        log.warning("the video is %.4g fps and the source %.4g fps: frames are compared one for one, so frame t of "
                    "each is a different moment", a, b)
    return infos


def _evaluate(args, video, source, source_pixel_aspect: float = 1.0, spans: dict | None = None) -> int:
    import json

    from ..errors import OutputError
    from ..metrics import METRICS, evaluate, write_report
    from ..metrics.evaluate import check_frame_counts, parse_metrics
    from ..video import write_whole

    # said with the options that line the frames up: --max-frames, offered before, kept the first frames of
    # each, which for an output of a stretch of the source compared other frames (a score 7x too high)
    if source is not None:
        check_frame_counts(parse_metrics(args.metrics)[0], len(video), len(source),
                           hint=": pick the frames that correspond with --frames START:END (of the video) and "
                           "--source-frames START:END (of the source), e.g. --source-frames 12:24 for an output of "
                           "`deflicker --frames 12:24`")
    res = evaluate(video, source, prompt=args.prompt, metrics=args.metrics, clip_model=args.clip_model,
                   aesthetic_weights=args.aesthetic_weights, flow=args.flow, raft_weights=args.raft_weights,
                   fid_features=args.fid_features, device=args.device, log_skips=False, fit=args.fit,
                   source_pixel_aspect=source_pixel_aspect)
    width = max(len(n) for n in METRICS)
    for n, v in res.values.items():
        # an output that loses the person scores better: the score without its coverage misleads
        extra = (f"; keypoints compared: {res.info['pose_keypoints_compared']} of {res.info['pose_keypoints_source']}"
                 " the source shows" if n == "pose_mse" else "")
        print(f"{n:<{width}}  {v:.6g}  ({METRICS[n][1]} is better{extra})")
    for n, why in res.skipped.items():
        print(f"{n:<{width}}  skipped: {why}")
    data = res.to_dict()
    data["info"].update(video=str(args.video), source=args.source, prompt=args.prompt)
    # which frames of each file were scored (per-pair indices count from the first of them), and the source's
    # count: FIDs are comparable over equal counts, which the JSON could not show
    spans = spans or {}
    start = spans.get("video", (0,))[0]
    data["info"]["video_range"] = [start, start + len(video)]
    if source is not None:
        start = spans.get("source", (0,))[0]
        data["info"].update(source_frame_count=int(len(source)), source_range=[start, start + len(source)])
    if args.json:
        try:
            write_whole(args.json, json.dumps(data, indent=2) + "\n")
        except OSError as e:
            raise OutputError(f"--json {args.json}: cannot write ({e})") from e
        log.info("wrote %s", args.json)
    if args.report:
        write_report(args.report, res, video, source, samples=args.samples,
                     names={"video": args.video, "source": args.source})
        log.info("wrote %s", args.report)
    # a metric asked for by name, or every metric, not measured: a script must not take it for a score
    missed = [n for n in res.skipped if args.metrics] or ([] if res.values else list(res.skipped))
    if missed:
        import sys

        print(f"flickerless: error: not measured: {', '.join(missed)} (why: above)", file=sys.stderr)
        return 2
    return 0
