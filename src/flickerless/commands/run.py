"""``flickerless run TASK``: one of the five DiffSynth tasks on a clip, from its template."""

from __future__ import annotations

import argparse


def _controlnet(text: str) -> tuple[str, str]:
    name, sep, model = text.partition("=")
    if not sep or not name or not model:
        raise argparse.ArgumentTypeError(f"expected ANNOTATOR=MODEL, e.g. depth=lllyasviel/control_v11f1p_sd15_depth, got {text!r}")
    return name, model


def register(sub) -> None:
    from ..cli import _crf
    from ..pipelines.templates import TASKS
    from ..video import VIDEO_CODECS, codec_help

    tasks = ", ".join(f"{k} ({v})" for k, v in TASKS.items())
    p = sub.add_parser(
        "run",
        help="run a task (stylize, fashion, image_guided, restore, render3d, longvideo) on a video",
        description=f"Run a DiffSynth task from its template. Tasks: {tasks}. Keeps a job folder next to "
        "the output (out.mp4 -> out.job/, out.gif -> out.gif.job/, a PNG folder out -> out.png.job/: settings, "
        "control frames, finished frames) so --resume can continue.",
    )
    p.add_argument("task", help="task name (see `flickerless templates`) or a template .toml file")
    p.add_argument("--video", required=True, help="input clip (file or folder of images)")
    p.add_argument("-o", "--output", required=True, help="output .mp4/.mov/.mkv/.webm/.gif, or a folder for PNG frames")
    p.add_argument("--prompt", default="", help="text prompt")
    p.add_argument("--model", help="base model: Hugging Face repo id, diffusers folder or .safetensors (template's otherwise)")
    p.add_argument("--config", dest="model_config", metavar="FOLDER|REPO",
                   help="diffusers folder or repo id of the architecture, for a single-file --model offline (as in "
                        "train and export)")
    p.add_argument("--controlnet", action="append", type=_controlnet, default=[], metavar="ANNOTATOR=MODEL",
                   help="ControlNet for one of the template's annotators (repeatable)")
    p.add_argument("--lora", action="append", default=None, metavar="PATH[:SCALE]", help="LoRA weights (repeatable)")
    p.add_argument("--style-image", help="style image (image_guided task)")
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                   help="override a template setting, e.g. sampling.steps=30 or controlnets.0.scale=0.5 (repeatable)")
    p.add_argument("--frames", help="frame range START:END of the input (end exclusive)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: the first GPU, else the CPU)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted job in the output's job folder")
    p.add_argument("--restart", action="store_true", help="discard the output's job folder and start over")
    p.add_argument("--cache-dir", help="annotator cache folder (default: $FLICKERLESS_CACHE/annotations or "
                   "~/.cache/flickerless/annotations); one it cannot write is said, and the run goes on uncached")
    p.add_argument("--codec", choices=tuple(VIDEO_CODECS),
                   help=f"video codec of the output (default h264; vp9 for .webm). {codec_help()}")
    p.add_argument("--crf", type=_crf, default=17, help="quality of a video output, 0 (lossless) to 51 (default 17)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from ..errors import InputError
    from ..pipelines.job import run_job

    if args.resume and args.restart:
        raise InputError("give --resume or --restart, not both")
    twice = sorted({a for a, _ in args.controlnet if [b for b, _ in args.controlnet].count(a) > 1})
    if twice:  # the last one was used without a word
        raise InputError(f"--controlnet {twice[0]}=... is given more than once; give one model for each annotator")
    try:
        out = run_job(args.task, args.video, args.output, args.prompt, model=args.model, model_config=args.model_config,
                      controlnets=dict(args.controlnet), lora=args.lora, overrides=args.overrides, frames=args.frames,
                      style_image=args.style_image, device=args.device, resume=args.resume, restart=args.restart,
                      cache_dir=args.cache_dir, progress=not args.quiet, codec=args.codec, crf=args.crf)
    except KeyboardInterrupt as e:
        import sys

        from ..errors import interrupted
        from ..pipelines.job import has_progress, job_of

        what, code = interrupted(e)
        job = job_of(args.output, args.resume)
        if job.is_dir() and has_progress(job):
            print(f"flickerless: {what}; progress is kept in {job}: add --resume to continue", file=sys.stderr)
        else:  # stopped before its first step was saved (or before the job folder was made)
            print(f"flickerless: {what} before any progress was kept; run the command again", file=sys.stderr)
        return code
    print(out)
    return 0
