"""Load Stable Diffusion 1.x components the way users hold them, through diffusers.

``model`` may be a local diffusers folder (``model_index.json`` inside), a single ``.safetensors``
or ``.ckpt`` checkpoint (civitai fine-tunes; give ``config=`` a diffusers folder or repo id of the
same architecture when offline), or a Hugging Face repo id (from the local cache when
``HF_HUB_OFFLINE=1`` or the network is unreachable). A model that cannot be found raises
:class:`~flickerless.errors.ModelNotFoundError` naming the id, the places looked in, and how to
supply it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import InputError, ModelNotFoundError
from ..weights import local_only, not_found

__all__ = ["Components", "load_components", "load_controlnet", "check_controlnet_fits", "default_dtype",
           "expand_embedding_tokens"]

SINGLE_FILE_EXTS = (".safetensors", ".ckpt", ".pt", ".bin")


@dataclass
class Components:
    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    scheduler: object
    controlnets: list = field(default_factory=list)


def default_dtype(device: torch.device) -> torch.dtype:
    """fp16 on CUDA, fp32 elsewhere."""
    return torch.float16 if torch.device(device).type == "cuda" else torch.float32


def _not_found(what: str, model: str, err: Exception) -> ModelNotFoundError:
    return not_found(what, model, "Supply a local diffusers folder, a single .safetensors/.ckpt file, or download "
                     f"it once with `huggingface-cli download {model}`", err)


def _load(cls, model: str, what: str, **kw):
    path = Path(model)
    try:
        if path.is_file() and path.suffix.lower() in SINGLE_FILE_EXTS:
            return cls.from_single_file(str(path), **kw)
        return cls.from_pretrained(str(path) if path.exists() else model, local_files_only=local_only() or path.exists(), **kw)
    except (OSError, ValueError) as e:  # diffusers raises these for missing files, repos and configs
        raise _not_found(what, model, e) from e


def _embedding_token(path: str) -> str | None:
    """The token of an A1111/kohya ``.safetensors`` embedding, whose one tensor is ``emb_params``: its file
    name, as A1111 uses it (diffusers would otherwise add the token ``emb_params``). None for other formats,
    which name their token themselves."""
    p = Path(path)
    if not (p.is_file() and p.suffix.lower() == ".safetensors"):
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(p), framework="pt") as f:
            keys = list(f.keys())
    except Exception:  # unreadable here: diffusers' loader reports it
        return None
    return p.stem if keys == ["emb_params"] else None


def expand_embedding_tokens(prompt: str, tokenizer) -> str:
    """Write out multi-vector textual-inversion tokens: an n-vector embedding is loaded as the tokens ``t``,
    ``t_1`` ... ``t_{n-1}``, and ``t`` in a prompt stands for all n of them (as in A1111 and diffusers)."""
    added = getattr(tokenizer, "added_tokens_encoder", None) or {}
    multi = [t for t in added if f"{t}_1" in added]
    if not multi:
        return prompt
    present = set(tokenizer.tokenize(prompt))
    for t in multi:
        if t in present:
            n = 1
            while f"{t}_{n}" in added:
                n += 1
            prompt = re.sub(rf"{re.escape(t)}(?!_\d)", " ".join([t, *(f"{t}_{i}" for i in range(1, n))]), prompt)
    return prompt


def load_controlnet(model: str, device=None, dtype=None):
    from diffusers import ControlNetModel

    dev = torch.device(device or "cpu")
    return _load(ControlNetModel, model, "ControlNet", torch_dtype=dtype or default_dtype(dev)).to(dev).eval()


def check_controlnet_fits(unet, controlnet, name: str = "ControlNet") -> None:
    """Raise :class:`InputError` when ``controlnet`` was made for another base model (an SDXL or
    SD 2.x ControlNet on an SD 1.x UNet, say): its residuals would not add onto the UNet's."""
    u, c = unet.config, controlnet.config
    checks = [("cross_attention_dim", u.cross_attention_dim, c.cross_attention_dim),
              ("block_out_channels", tuple(u.block_out_channels), tuple(c.block_out_channels)),
              ("in_channels", u.in_channels, c.in_channels)]
    bad = [f"{k}: base model {a}, ControlNet {b}" for k, a, b in checks if a != b]
    if bad:
        raise InputError(
            f"ControlNet {name!r} does not fit the base model ({'; '.join(bad)}): use a ControlNet trained for "
            "this base model's family (e.g. an SD 1.5 ControlNet for an SD 1.x model)"
        )


def load_components(
    model: str,
    controlnets: list[str] = (),
    lora: list[tuple[str, float]] = (),
    textual_inversion: list[str] = (),
    device=None,
    dtype=None,
    config: str | None = None,
) -> Components:
    """Load UNet, VAE, text encoder, tokenizer and a DDIM scheduler (plus ControlNets, LoRAs and
    textual-inversion embeddings) onto ``device`` in ``dtype`` (default fp16 on CUDA, fp32 on CPU)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    dev = torch.device(device or "cpu")
    dt = dtype or default_dtype(dev)
    kw = dict(torch_dtype=dt, safety_checker=None, requires_safety_checker=False)
    if config is not None and Path(model).is_file():
        kw["config"] = config
    pipe = _load(StableDiffusionPipeline, model, "model", **kw)
    for path, scale in lora:
        try:
            pipe.load_lora_weights(path, adapter_name=Path(path).stem.replace(".", "_"))
        except (OSError, ValueError) as e:
            raise _not_found("LoRA", path, e) from e
    if lora:
        pipe.set_adapters([Path(p).stem.replace(".", "_") for p, _ in lora], [s for _, s in lora])
        pipe.fuse_lora()
    for path in textual_inversion:
        try:
            pipe.load_textual_inversion(path, token=_embedding_token(path))
        except (OSError, ValueError) as e:
            raise _not_found("textual-inversion embedding", path, e) from e
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config, clip_sample=False, set_alpha_to_one=False)
    cns = [load_controlnet(c, dev, dt) for c in controlnets]
    for name, cn in zip(controlnets, cns):
        check_controlnet_fits(pipe.unet, cn, name)
    return Components(pipe.unet.to(dev).eval(), pipe.vae.to(dev).eval(), pipe.text_encoder.to(dev).eval(),
                      pipe.tokenizer, scheduler, cns)
