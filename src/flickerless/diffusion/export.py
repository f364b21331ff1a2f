"""Write a Stable Diffusion 1.x pipeline as one original-layout checkpoint (A1111 / ComfyUI / civitai).

The original (CompVis LDM) layout keeps the three models in one state dict under
``model.diffusion_model.*`` (UNet), ``first_stage_model.*`` (VAE) and
``cond_stage_model.transformer.*`` (CLIP text encoder). This is the inverse of diffusers' single-file
conversion: a file written here loads back through ``load_components(file, config=folder)`` (or any
``from_single_file``) with every tensor equal, and in A1111 and ComfyUI as an SD 1.x checkpoint.

The key map is built from the models' own structure (how many resnets each block holds, whether it
has attention, a down/upsampler), so any SD 1.x-shaped configuration converts, tiny test models
included. A key that has no place in the layout (an SDXL-style embedding, say) is an error naming it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from ..errors import InputError, OutputError
from ..video import usual_mode
from .models import DTYPES, as_dtype  # noqa: F401 - DTYPES: part of this module's names

__all__ = ["save_single_file", "ldm_state_dict", "unet_to_ldm", "vae_to_ldm", "text_encoder_to_ldm", "DTYPES"]

log = logging.getLogger("flickerless")

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."


# Inside one resnet: diffusers name -> LDM name (first components of the key after the resnet's prefix).
_UNET_RESNET = {"norm1.": "in_layers.0.", "conv1.": "in_layers.2.", "time_emb_proj.": "emb_layers.1.",
                "norm2.": "out_layers.0.", "conv2.": "out_layers.3.", "conv_shortcut.": "skip_connection."}
_VAE_RESNET = {"conv_shortcut.": "nin_shortcut."}
_VAE_ATTN = {"group_norm.": "norm.", "to_q.": "q.", "to_k.": "k.", "to_v.": "v.", "to_out.0.": "proj_out."}


def _plain_state_dict(module: torch.nn.Module, what: str) -> dict[str, torch.Tensor]:
    """``module.state_dict()`` without peft wrappers: fused LoRA layers give their merged base weights.

    A LoRA that is loaded but not fused would be silently dropped, so it is an error instead."""
    unfused = [name for name, m in module.named_modules()
               if hasattr(m, "merged_adapters") and getattr(m, "active_adapters", None) and not m.merged]
    if unfused:
        raise InputError(f"the {what} has LoRA layers that are not fused ({unfused[0]}, ...): fuse them first "
                         "(load_components(..., lora=...) does), or export the base model")
    sd = {}
    for k, v in module.state_dict().items():
        if ".lora_" in k:
            continue
        sd[k.replace(".base_layer.", ".")] = v
    return sd


def _renamed(rest: str, renames: dict[str, str]) -> str:
    for old, new in renames.items():
        if rest.startswith(old):
            return new + rest[len(old):]
    return rest


def _apply(sd: dict[str, torch.Tensor], table: list[tuple[str, str, dict]], what: str) -> dict[str, torch.Tensor]:
    """Map every key of ``sd`` through the longest matching diffusers prefix in ``table``."""
    table = sorted(table, key=lambda t: -len(t[0]))
    out, left = {}, []
    for key, value in sd.items():
        for old, new, renames in table:
            if key.startswith(old):
                out[new + _renamed(key[len(old):], renames)] = value
                break
        else:
            left.append(key)
    if left:
        raise InputError(f"the {what} is not shaped like Stable Diffusion 1.x: {len(left)} weights have no place in "
                         f"the original checkpoint layout (first: {left[0]}); export SD 1.x-architecture models only")
    if len(out) != len(sd):  # two diffusers keys on one LDM key would lose a tensor
        raise InputError(f"the {what} maps several weights onto one original-layout key; not an SD 1.x architecture")
    return out


def _layers(unet) -> int:
    n = unet.config.layers_per_block
    if not isinstance(n, int):
        raise InputError(f"the UNet has per-block layers_per_block {tuple(n)}: the original SD 1.x layout (and the "
                         "loaders reading it) needs one number for all blocks")
    for b in unet.down_blocks:
        if len(b.resnets) != n:
            raise InputError(f"the UNet's down blocks hold {len(b.resnets)} resnets, not layers_per_block={n}")
    for b in unet.up_blocks:
        if len(b.resnets) != n + 1:
            raise InputError(f"the UNet's up blocks hold {len(b.resnets)} resnets, not layers_per_block+1={n + 1}")
    return n


def unet_to_ldm(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A diffusers ``UNet2DConditionModel``'s weights under LDM ``openaimodel.UNetModel`` names (no prefix).

    ``input_blocks.0`` is ``conv_in``; then per level ``layers_per_block`` entries of ``[resnet, attention?]``
    and a downsampler entry (``.0.op``) except on the last level. ``middle_block`` is resnet, attention,
    resnet. ``output_blocks`` hold ``layers_per_block + 1`` entries per level, the last of each level but the
    final one ending with the upsampler (``.1.conv``, or ``.2.conv`` after an attention)."""
    n = _layers(unet)
    table = [("conv_in.", "input_blocks.0.0.", {}),
             ("time_embedding.linear_1.", "time_embed.0.", {}), ("time_embedding.linear_2.", "time_embed.2.", {}),
             ("conv_norm_out.", "out.0.", {}), ("conv_out.", "out.2.", {})]
    i = 1
    for b, block in enumerate(unet.down_blocks):
        attns = getattr(block, "attentions", None)
        for j in range(n):
            table.append((f"down_blocks.{b}.resnets.{j}.", f"input_blocks.{i}.0.", _UNET_RESNET))
            if attns is not None:
                table.append((f"down_blocks.{b}.attentions.{j}.", f"input_blocks.{i}.1.", {}))
            i += 1
        if block.downsamplers is not None:
            table.append((f"down_blocks.{b}.downsamplers.0.conv.", f"input_blocks.{i}.0.op.", {}))
            i += 1
    mid = unet.mid_block
    if mid is None or len(mid.resnets) != 2 or len(getattr(mid, "attentions", ())) != 1:
        raise InputError("the UNet's mid block is not resnet-attention-resnet as in SD 1.x (mid_block_type "
                         f"{unet.config.mid_block_type!r}); it has no place in the original layout")
    table += [("mid_block.resnets.0.", "middle_block.0.", _UNET_RESNET), ("mid_block.attentions.0.", "middle_block.1.", {}),
              ("mid_block.resnets.1.", "middle_block.2.", _UNET_RESNET)]
    i = 0
    for b, block in enumerate(unet.up_blocks):
        attns = getattr(block, "attentions", None)
        for j in range(n + 1):
            table.append((f"up_blocks.{b}.resnets.{j}.", f"output_blocks.{i}.0.", _UNET_RESNET))
            if attns is not None:
                table.append((f"up_blocks.{b}.attentions.{j}.", f"output_blocks.{i}.1.", {}))
            if j == n and block.upsamplers is not None:
                after = 2 if attns is not None else 1  # the upsampler follows the resnet and its attention
                table.append((f"up_blocks.{b}.upsamplers.0.conv.", f"output_blocks.{i}.{after}.conv.", {}))
            i += 1
    return _apply(_plain_state_dict(unet, "UNet"), table, "UNet")


def vae_to_ldm(vae: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A diffusers ``AutoencoderKL``'s weights under LDM ``AutoencoderKL`` names (no prefix).

    Decoder levels are numbered the other way round (diffusers ``up_blocks.0`` is LDM ``up.{n-1}``) and the
    mid-block attention's q/k/v/proj_out are 1x1 convolutions there, linear layers in diffusers."""
    table = [(p, p, {}) for p in ("quant_conv.", "post_quant_conv.")]
    for part in ("encoder", "decoder"):
        coder = getattr(vae, part)
        table += [(f"{part}.conv_in.", f"{part}.conv_in.", {}), (f"{part}.conv_out.", f"{part}.conv_out.", {}),
                  (f"{part}.conv_norm_out.", f"{part}.norm_out.", {}),
                  (f"{part}.mid_block.resnets.0.", f"{part}.mid.block_1.", _VAE_RESNET),
                  (f"{part}.mid_block.resnets.1.", f"{part}.mid.block_2.", _VAE_RESNET),
                  (f"{part}.mid_block.attentions.0.", f"{part}.mid.attn_1.", _VAE_ATTN)]
        if len(coder.mid_block.resnets) != 2:
            raise InputError(f"the VAE's {part} mid block holds {len(coder.mid_block.resnets)} resnets, not 2 as in SD 1.x")
        down = part == "encoder"
        blocks = coder.down_blocks if down else coder.up_blocks
        for b, block in enumerate(blocks):
            src = f"{part}.{'down' if down else 'up'}_blocks.{b}."
            level = f"encoder.down.{b}." if down else f"decoder.up.{len(blocks) - 1 - b}."
            for j in range(len(block.resnets)):
                table.append((f"{src}resnets.{j}.", f"{level}block.{j}.", _VAE_RESNET))
            if down:
                table.append((f"{src}downsamplers.0.conv.", f"{level}downsample.conv.", {}))
            else:
                table.append((f"{src}upsamplers.0.conv.", f"{level}upsample.conv.", {}))
    out = {}
    for k, v in _apply(_plain_state_dict(vae, "VAE"), table, "VAE").items():
        if ".mid.attn_1." in k and k.endswith(".weight") and v.ndim == 2:  # linear -> 1x1 conv
            v = v[:, :, None, None]
        out[k] = v
    return out


def text_encoder_to_ldm(text_encoder: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A transformers ``CLIPTextModel``'s weights under ``text_model.*`` (the layout inside
    ``cond_stage_model.transformer``), with the ``position_ids`` buffer original checkpoints carry."""
    sd = _plain_state_dict(text_encoder, "text encoder")
    # transformers >= 5.6 flattened CLIPTextModel: its keys lost the "text_model." the layout has
    out = {k if k.startswith("text_model.") else "text_model." + k: v for k, v in sd.items()}
    if "text_model.embeddings.position_embedding.weight" not in out:
        raise InputError("the text encoder is not a CLIP text model (no embeddings.position_embedding): SD 1.x "
                         "checkpoints hold a CLIPTextModel")
    n = out["text_model.embeddings.position_embedding.weight"].shape[0]
    out.setdefault("text_model.embeddings.position_ids", torch.arange(n, dtype=torch.int64)[None])
    return out


def ldm_state_dict(components, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The whole original-layout state dict of ``components`` (anything with ``unet``, ``vae`` and
    ``text_encoder``), on the CPU, floating tensors cast to ``dtype`` when given."""
    missing = [n for n in ("unet", "vae", "text_encoder") if getattr(components, n, None) is None]
    if missing:
        raise InputError(f"cannot export: no {', '.join(missing)} (give a model folder, repo id, Components or a "
                         "StableDiffusionPipeline holding unet, vae and text_encoder)")
    parts = [(UNET_PREFIX, unet_to_ldm(components.unet)), (VAE_PREFIX, vae_to_ldm(components.vae)),
             (CLIP_PREFIX, text_encoder_to_ldm(components.text_encoder))]
    out, seen = {}, set()
    for prefix, sd in parts:
        for k, v in sd.items():
            v = v.detach().to("cpu", dtype=dtype if dtype is not None and v.is_floating_point() else v.dtype)
            v = v.contiguous()
            if v.untyped_storage().data_ptr() in seen:  # safetensors refuses tensors that share memory
                v = v.clone()
            seen.add(v.untyped_storage().data_ptr())
            out[prefix + k] = v
    return out


def save_single_file(components_or_folder, path, dtype=None, *, config: str | None = None,
                     lora: list[tuple[str, float]] = ()) -> Path:
    """Write UNet, VAE and CLIP text encoder as ONE original-layout ``.safetensors`` checkpoint.

    components_or_folder: a diffusers folder (a full fine-tune from ``flickerless train --mode full``, say),
        a repo id or single-file checkpoint (with ``config=`` offline), loaded with ``lora`` fused in; or
        loaded :class:`~flickerless.diffusion.Components` / a diffusers ``StableDiffusionPipeline``.
    path: the ``.safetensors`` file to write (parent folders are made; an existing file is replaced).
    dtype: ``torch.float16``/``"fp16"``, ``bf16`` or ``fp32`` for the floating tensors; None keeps them
        as loaded (fp32 for a folder).

    Scheduler, tokenizer and VAE scaling factor are not part of the layout: loaders take them from
    the SD 1.x defaults or from ``config=``. Returns ``Path(path)``."""
    dt = as_dtype(dtype)
    out = Path(path)
    if out.suffix.lower() != ".safetensors":
        raise InputError(f"output {out}: give a .safetensors file name (pickled .ckpt files are not written)")
    if isinstance(components_or_folder, (str, os.PathLike)):
        from .models import load_components

        components = load_components(str(components_or_folder), lora=list(lora), device="cpu",
                                     dtype=torch.float32, config=config)
    else:
        if lora:
            raise InputError("lora= applies when exporting from a model path; fuse LoRAs into loaded components first")
        components = components_or_folder
    sd = ldm_state_dict(components, dt)

    from safetensors.torch import save_file

    tmp = out.with_name(out.name + ".partial")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        save_file(sd, str(tmp), metadata={"format": "pt"})
        usual_mode(tmp)  # safetensors writes 0600; a checkpoint is shared like any file
        os.replace(tmp, out)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {out}: {e.strerror or e}") from e
    log.debug("wrote %s (%d tensors, %.1f MB)", out, len(sd), out.stat().st_size / 2**20)
    return out
