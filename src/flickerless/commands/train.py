"""``flickerless train``: fine-tune a Stable Diffusion 1.x model on the frames of one video (LoRA or
full UNet), with the foreground/background-weighted loss of the combined tuning module."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

log = logging.getLogger("flickerless")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="fine-tune SD 1.x (LoRA or full UNet) on the frames of a video with an instance prompt",
        description="Fine-tune a Stable Diffusion 1.x model on the frames of one video so that it draws that "
        "person/object (DiffSynth's fashion task; the long-video paper's combined tuning). The loss is "
        "l1*L + l2*L_fg + l3*L_bg: the noise-prediction error, and the same error weighted by foreground and "
        "background masks. The result is a LoRA (use it with --lora) or a diffusers folder (use it as --model).",
    )
    p.add_argument("--model", required=True, help="SD 1.x base: diffusers folder, .safetensors/.ckpt file or repo id")
    p.add_argument("--config", help="diffusers folder or repo id of the architecture, for a single-file --model offline")
    p.add_argument("--video", required=True, help="training video (file or folder of images)")
    p.add_argument("--prompt", required=True, help="instance prompt, e.g. 'a photo of sks person'")
    p.add_argument("-o", "--output", required=True, help="output folder (LoRA file or diffusers model, and checkpoints/)")
    p.add_argument("--mode", choices=("lora", "full"), default="lora", help="LoRA on the attention projections, "
                   "or the whole UNet (default: lora)")
    p.add_argument("--lora-rank", type=int, default=4, help="LoRA rank (default 4)")
    p.add_argument("--lora-alpha", type=float, help="LoRA alpha (default: the rank, i.e. scale 1)")
    p.add_argument("--steps", type=int, default=500, help="optimizer steps in all, counting resumed ones (default 500)")
    p.add_argument("--lr", type=float, help="learning rate (default 1e-4 for lora, 2e-6 for full)")
    p.add_argument("--warmup-steps", type=int, default=0, help="linear learning-rate warm-up steps (default 0)")
    p.add_argument("--batch", type=int, default=1, help="frames per step (default 1)")
    p.add_argument("--resolution", default="512", help="training size: 512 (square) or WxH like 768x512, multiples "
                   "of 8; frames are center-cropped to its aspect ratio and resized (default 512)")
    p.add_argument("--frames", type=int, help="use at most this many frames (default: all)")
    p.add_argument("--every", type=int, default=1, help="use every N-th frame (default 1)")
    p.add_argument("--masks", help="foreground masks, frame for frame with the video: a folder of images or a video "
                   "(white = foreground); needed when l2 or l3 is nonzero")
    p.add_argument("--loss-weights", default="1,0,0", help="l1,l2,l3: weights of the plain, foreground and background "
                   "losses (default 1,0,0)")
    p.add_argument("--checkpoint-every", type=int, default=100, help="save a resumable checkpoint every N steps "
                   "(0: none but on a stop; default 100)")
    p.add_argument("--keep-checkpoints", type=int, default=2, help="checkpoints kept (default 2, the newest)")
    p.add_argument("--resume", nargs="?", const="latest", help="continue from the newest checkpoint in --output "
                   "(or the checkpoint folder given)")
    p.add_argument("--overwrite", action="store_true", help="start over even though --output holds checkpoints or "
                   "the result of an earlier run")
    p.add_argument("--seed", type=int, default=0, help="seed of the frames, timesteps and noise drawn (default 0)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: a GPU if there is one)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                   help="mixed precision on CUDA (auto: bf16 where supported, else fp16); the CPU trains in fp32")
    p.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations: less memory, slower")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)


def _loss_weights(text: str) -> tuple[float, float, float]:
    from ..errors import InputError

    try:
        w = tuple(float(t) for t in text.split(","))
    except ValueError:
        w = ()
    if len(w) != 3:
        raise InputError(f"--loss-weights: expected three numbers l1,l2,l3 like 1,0.5,0.5, got {text!r}")
    return w


def cmd_train(args) -> int:
    import dataclasses

    from ..errors import InputError, interrupted
    from ..train import TrainConfig, train

    if args.resume and args.overwrite:
        raise InputError("--resume and --overwrite: give one (--resume continues the run in --output, --overwrite "
                         "starts it over)")
    from ..video import not_there

    if not Path(args.video).exists():
        raise not_there(args.video, f"--video {args.video}")
    if args.masks and not Path(args.masks).exists():
        raise not_there(args.masks, f"--masks {args.masks}")
    cfg = TrainConfig(
        model=args.model, prompt=args.prompt, output=args.output, mode=args.mode, lora_rank=args.lora_rank,
        lora_alpha=args.lora_alpha, steps=args.steps, lr=args.lr, warmup_steps=args.warmup_steps, batch=args.batch,
        resolution=args.resolution, max_frames=args.frames, every=args.every, loss_weights=_loss_weights(args.loss_weights),
        checkpoint_every=args.checkpoint_every, keep_checkpoints=args.keep_checkpoints, seed=args.seed,
        device=args.device, precision=args.precision, gradient_checkpointing=args.gradient_checkpointing,
        config=args.config,
    )
    flags = {"max_frames": "--frames"}
    try:
        cfg.validate()
    except InputError as e:  # name the flag, not the settings key
        key, _, rest = str(e).partition(":")
        if key in {f.name for f in dataclasses.fields(cfg)}:
            raise InputError(f"{flags.get(key, '--' + key.replace('_', '-'))}:{rest}") from None
        raise
    try:
        result = train(cfg, args.video, masks=args.masks, resume=args.resume, overwrite=args.overwrite,
                       progress=not args.quiet)
    except KeyboardInterrupt as e:
        from ..train import latest_checkpoint

        what, code = interrupted(e)
        if latest_checkpoint(Path(args.output)) is not None:
            print(f"flickerless: {what}; resume with the same command and --resume (checkpoints in "
                  f"{Path(args.output) / 'checkpoints'})", file=sys.stderr)
        else:  # stopped before its first step, or within one
            print(f"flickerless: {what} before a checkpoint was saved; run the command again", file=sys.stderr)
        return code
    use = f"--lora {result.weights}" if cfg.mode == "lora" else f"--model {result.weights}"
    log.info("trained %d steps, loss %.4f; wrote %s (use it with %s)", result.step, result.loss, result.weights, use)
    return 0
