"""``flickerless export MODEL -o model.safetensors``: one original-layout SD 1.x checkpoint for A1111 / ComfyUI."""

from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="write an SD 1.x model (e.g. a `train --mode full` result) as one .safetensors for A1111/ComfyUI",
        description="Write the UNet, VAE and CLIP text encoder of a Stable Diffusion 1.x model as ONE checkpoint in "
        "the original layout (model.diffusion_model.*, first_stage_model.*, cond_stage_model.transformer.*) that "
        "A1111, ComfyUI and civitai use. MODEL is a diffusers folder (a full fine-tune from `flickerless train "
        "--mode full`, say), a repo id, or a single-file checkpoint; --lora bakes LoRAs into the weights.",
    )
    p.add_argument("model", help="diffusers folder, Hugging Face repo id, or .safetensors/.ckpt file")
    p.add_argument("-o", "--output", required=True, help="the .safetensors file to write")
    p.add_argument("--config", help="diffusers folder or repo id of the architecture, for a single-file MODEL offline")
    p.add_argument("--lora", action="append", default=[], metavar="PATH[:SCALE]",
                   help="LoRA to fuse into the exported weights (repeatable)")
    p.add_argument("--dtype", choices=("fp16", "bf16", "fp32"), default="fp16",
                   help="precision of the written tensors (default fp16: half the size, what A1111/ComfyUI load; "
                   "fp32 keeps a fine-tune's full precision)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress messages")
    p.set_defaults(func=cmd_export)


def cmd_export(args) -> int:
    import logging

    from ..diffusion.export import save_single_file
    from ..errors import OutputError
    from ..pipelines.templates import split_lora

    out = Path(args.output)
    if out.is_dir():
        raise OutputError(f"{out} is a folder: give a .safetensors file name")
    lora = [split_lora(t) for t in args.lora]  # a bad scale said before the model loads
    from ..video import check_output_is_not_input

    # --overwrite replaces an earlier export, not what this one is made from
    check_output_is_not_input(out, model=args.model, config=args.config)
    for path, _ in lora:
        check_output_is_not_input(out, lora=path)
    # nor a file within them: `-o MODEL/unet/diffusion_pytorch_model.safetensors --overwrite` replaced the
    # model's own UNet with the export (and the next load of the model failed)
    for flag, given in [("model", args.model), ("config", args.config), *(("lora", p) for p, _ in lora)]:
        if given and Path(given).is_dir() and out.exists() and out.resolve().is_relative_to(Path(given).resolve()):
            raise OutputError(f"{out}: is a file of the --{flag} folder {given}, which the export is made from; "
                              "choose an output outside it")
    if out.exists() and not args.overwrite:
        raise OutputError(f"{out} already exists: add --overwrite to replace it, or choose another -o")
    if args.quiet:  # the libraries' loading bars too
        from ..weights import quiet_model_loading

        quiet_model_loading()
    path = save_single_file(args.model, out, dtype=args.dtype, config=args.config, lora=lora)
    if not args.quiet:
        # offline, its configs come from the model it was made from (or any of the same architecture)
        logging.getLogger("flickerless").info(
            "wrote %s (%.0f MB): load it in A1111/ComfyUI, or here with --model %s --config %s", path,
            path.stat().st_size / 2**20, path, args.config or args.model)
    return 0
