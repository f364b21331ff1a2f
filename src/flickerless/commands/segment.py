"""``flickerless segment``: foreground masks of a clip with SAM, as a folder of PNGs (white =
foreground), e.g. for ``flickerless train --masks`` (combined tuning) or to look at."""

from __future__ import annotations


def _floats(n: int):
    def parse(text: str):
        import argparse

        try:
            v = tuple(float(t) for t in text.split(","))
        except ValueError:
            v = ()
        if len(v) != n or not all(0 <= x <= 1 for x in v):
            raise argparse.ArgumentTypeError(f"expected {n} comma-separated numbers in [0, 1] (fractions of the "
                                             f"frame's width and height), got {text!r}")
        return v
    return parse


def register(sub) -> None:
    from ..cli import _positive

    p = sub.add_parser("segment", help="foreground masks of a clip with SAM (prompted by the person's pose, a point "
                       "or a box), as PNGs for `flickerless train --masks`",
                       description="Segment the foreground of every frame with SAM (transformers SamModel). The "
                       "prompt is the person's pose keypoints (mediapipe, default), a point or a box, in fractions "
                       "of the frame. Writes OUTPUT/00000.png, ... at the clip's size; masks are cached.")
    p.add_argument("--video", required=True, help="clip (file or folder of images)")
    p.add_argument("-o", "--output", required=True, help="folder for the mask PNGs (created)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--point", type=_floats(2), metavar="X,Y", help="a foreground point, e.g. 0.5,0.4")
    g.add_argument("--box", type=_floats(4), metavar="X0,Y0,X1,Y1", help="a box around the foreground")
    p.add_argument("--model", default=None, help="SAM repo id or folder (default facebook/sam-vit-base)")
    p.add_argument("--frames", type=_positive, help="only the first N frames")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--cache-dir", help="mask cache (default: $FLICKERLESS_CACHE/masks or ~/.cache/flickerless/masks)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)


def _run(args) -> int:
    import logging
    import shutil
    import tempfile
    from pathlib import Path

    import numpy as np

    from ..errors import InputError, OutputError
    from ..segment import DEFAULT_SAM, segment
    from ..video import check_output, check_output_is_not_input, publish_folder, read

    log = logging.getLogger("flickerless")
    check_output_is_not_input(args.output, video=args.video)
    # a new folder, or an earlier output of numbered PNGs (replaced whole): never a clip's frame folder, which
    # took the masks beside its frames, nor earlier masks left beside fewer new ones
    if check_output(args.output, kind="masks") is not None:
        raise OutputError(f"{args.output}: segment writes a folder of PNG masks; give a folder path without extension")
    if args.device is not None:  # said before the clip is read and the keypoints found
        from ..blend.deflicker import resolve_device

        resolve_device(args.device)
    from ..weights import check_available  # as the model: found missing after the pose of every frame

    check_available(args.model or DEFAULT_SAM, "SAM model", "Pass --model with a SAM repo id or a local folder "
                    "(config.json, the weights, preprocessor_config.json)", index_file="config.json")
    if args.point is None and args.box is None:  # the pose prompts: mediapipe, said before the clip is read
        from ..control import get_annotator

        try:
            get_annotator("pose").check_weights((64, 64))
        except InputError as e:  # its backend="openpose" is no option of this command
            said = str(e).split("; or backend=")[0]
            raise InputError(f"{said}; or prompt SAM without the pose: --point X,Y or --box X0,Y0,X1,Y1 (fractions "
                             "of the frame)") from e
    if args.quiet:
        from ..weights import quiet_model_loading

        quiet_model_loading(with_diffusers=False)
    frames, _ = read(args.video, max_frames=args.frames)
    prompt = {}
    if args.point is not None:
        prompt["point"] = args.point
    elif args.box is not None:
        prompt["box"] = args.box
    else:
        from .. import control

        prompt["keypoints"] = control.keypoints(frames, progress=not args.quiet)
    masks = segment(frames, model=args.model or DEFAULT_SAM, device=args.device, progress=not args.quiet,
                    cache_dir=args.cache_dir, **prompt)
    out = Path(args.output)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent if str(out.parent) else "."))
    except OSError as e:
        raise OutputError(f"{out}: cannot create the mask folder ({e})") from e
    from PIL import Image

    try:
        for i, m in enumerate(masks.numpy()):
            Image.fromarray((m > 0.5).astype(np.uint8) * 255).save(tmp / f"{i:05d}.png")
        publish_folder(tmp, out, kind="masks")  # replaces earlier masks, or an empty folder (checked above)
    except OSError as e:
        raise OutputError(f"{out}: cannot write the masks ({e})") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("wrote %d masks to %s (mean foreground %.1f%%)", len(masks), out, 100 * float(masks.mean()))
    print(out)
    return 0
