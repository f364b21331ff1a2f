"""Load Stable Diffusion 1.x components the way users hold them, through diffusers.

``model`` may be a local diffusers folder (``model_index.json`` inside), a single ``.safetensors``
or ``.ckpt`` checkpoint (civitai fine-tunes; give ``config=`` a diffusers folder or repo id of the
same architecture when offline), or a Hugging Face repo id (from the local cache when
``HF_HUB_OFFLINE=1`` or the network is unreachable). A model that cannot be found raises
:class:`~flickerless.errors.ModelNotFoundError` naming the id, the places looked in, and how to
supply it.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import InputError, ModelNotFoundError
from ..weights import _first_line, dtype_kwarg, local_only, not_found

__all__ = ["Components", "load_components", "as_dtype", "DTYPES", "load_controlnet", "check_controlnet_fits", "load_adapter",
           "check_adapter_fits", "default_dtype", "expand_embedding_tokens"]

SINGLE_FILE_EXTS = (".safetensors", ".ckpt", ".pt", ".bin")


@dataclass
class Components:
    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    scheduler: object
    controlnets: list = field(default_factory=list)
    adapters: list = field(default_factory=list)  # T2I-Adapters


def default_dtype(device: torch.device) -> torch.dtype:
    """fp16 on CUDA, fp32 elsewhere."""
    return torch.float16 if torch.device(device).type == "cuda" else torch.float32


_LORA_REMEDY = "Give the path of a LoRA .safetensors file, a folder holding one, or a Hugging Face repo id"
_EMBEDDING_REMEDY = ("Give a textual-inversion embedding: a .safetensors/.bin file, or a folder or Hugging Face repo "
                     "id holding one")


def _not_found(what: str, model: str, err: Exception,
               remedy: str = "Supply a local diffusers folder or a single .safetensors/.ckpt file") -> ModelNotFoundError:
    """Weights that did not load: where a file or folder is there, "could not be loaded as" it (not "not
    found"), with the remedy for what it should be (a LoRA's is not the base model's)."""
    from ..weights import download_hint

    if Path(model).exists():
        return ModelNotFoundError(f"{what} {model!r} could not be loaded as one{_first_line(err)}. {remedy}")
    return not_found(what, model, remedy + download_hint(model), err)


# what the base model must have: a folder without one of these loaded, then failed deep inside (a missing
# tokenizer/ gave a tokenizer without a vocabulary, which failed at the first prompt)
_NEEDED = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


def _check_folder(cls, path: Path, what: str) -> None:
    """A local diffusers folder is what ``cls`` loads: a pipeline's folder has the subfolders it needs
    (named when missing), a model's config names ``cls`` (a UNet's folder given as a ControlNet loaded
    its weights onto nothing: "Cannot copy out of meta tensor")."""
    import json

    if not path.is_dir():
        return
    index, config = path / "model_index.json", path / "config.json"
    if index.is_file() and hasattr(cls, "components"):  # a pipeline
        missing = [k for k in _NEEDED if not (path / k).is_dir()]
        if missing:
            raise ModelNotFoundError(
                f"{what} {str(path)!r} has no {', '.join(m + '/' for m in missing)} (a diffusers folder of an SD 1.x "
                f"model holds {', '.join(k + '/' for k in _NEEDED)} and model_index.json): copy the missing "
                "folders from the model's repo or download it whole")
        return
    try:
        found = json.loads(config.read_text(encoding="utf-8")).get("_class_name") if config.is_file() else None
    except (OSError, ValueError):
        return  # unreadable: diffusers says so
    if found and found != cls.__name__:
        kind = {"UNet2DConditionModel": "UNet", "AutoencoderKL": "VAE", "ControlNetModel": "ControlNet",
                "T2IAdapter": "T2I-Adapter"}.get(found, found)
        raise InputError(f"{what} {str(path)!r} holds a {kind} ({found} in its config.json), not a {what}: give "
                         f"the folder of a {what}")


def _load(cls, model: str, what: str, **kw):
    path = Path(model)
    _check_folder(cls, path, what)
    try:
        if path.is_file() and path.suffix.lower() in SINGLE_FILE_EXTS:
            try:
                return cls.from_single_file(str(path), **kw)
            except (OSError, ValueError) as e:
                if "config" in kw or not hasattr(cls, "components"):
                    raise
                # the weights are there; what is missing is its architecture's configs, which diffusers
                # fetches from the Hub (offline: not found, said as "no usable weights")
                raise ModelNotFoundError(
                    f"{what} {str(path)!r}: a single-file checkpoint is loaded with the configs of its architecture, "
                    f"which could not be had here ({str(e).splitlines()[0][:200]}): give a diffusers folder or repo id "
                    "of the same architecture, e.g. an SD 1.5 folder (`--config FOLDER` on the command line, "
                    "`VideoPipeline.from_pretrained(..., config=FOLDER)`)") from e
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
    return _load(ControlNetModel, model, "ControlNet", **dtype_kwarg("diffusers", dtype or default_dtype(dev))).to(dev).eval()


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


def load_adapter(model: str, device=None, dtype=None):
    """A T2I-Adapter (diffusers ``T2IAdapter``, e.g. TencentARC/t2iadapter_openpose_sd14v1) from a repo id
    or a local diffusers folder; a missing one raises :class:`ModelNotFoundError`."""
    from diffusers import T2IAdapter

    dev = torch.device(device or "cpu")
    if Path(model).is_file():
        raise InputError(f"{model}: a T2I-Adapter loads from a diffusers folder (config.json and weights) or a "
                         "repo id, not a single file")
    return _load(T2IAdapter, model, "T2I-Adapter", **dtype_kwarg("diffusers", dtype or default_dtype(dev))).to(dev).eval()


def _adapter_feature_channels(config) -> list[int] | None:
    """The channels of the features a T2I-Adapter adds to the UNet's down blocks, in order."""
    ch = list(config.channels)
    if config.adapter_type == "full_adapter":
        return ch
    if config.adapter_type == "light_adapter":  # one more block at the last width
        return ch + ch[-1:]
    return None  # full_adapter_xl: SDXL's layout


def _unet_adapter_scales(unet) -> list[int] | None:
    """How many times smaller than the latents the UNet's down blocks are where diffusers adds a T2I-Adapter's
    features: a cross-attention block adds it before its downsampler, any other block after it (a UNet
    whose first block is a plain ``DownBlock2D`` takes the first feature at half size). None: no down blocks."""
    blocks = getattr(unet, "down_blocks", None)
    if blocks is None:
        return None
    scales, f = [], 1
    for b in blocks:
        down = 2 if getattr(b, "downsamplers", None) is not None else 1
        scales.append(f if getattr(b, "has_cross_attention", False) else f * down)
        f *= down
    return scales


def check_adapter_fits(unet, adapter, name: str = "T2I-Adapter", vae_factor: int | None = None) -> None:
    """Raise :class:`InputError` when ``adapter`` was made for another base model (an SDXL adapter on an
    SD 1.x UNet, say): its features would not add onto the UNet's down blocks. ``vae_factor``: the
    VAE's downscale factor, which the adapter's pixel unshuffle must equal so that its first features
    have the latents' size."""
    u, c = unet.config, adapter.config
    feats = _adapter_feature_channels(c)
    blocks = list(u.block_out_channels)
    bad = []
    if feats is None:
        bad.append(f"adapter_type {c.adapter_type!r} is SDXL's")
    elif feats != blocks:
        bad.append(f"feature channels: base model {tuple(blocks)} (block_out_channels), adapter {tuple(feats)}")
    if vae_factor is not None and c.downscale_factor != vae_factor:
        bad.append(f"downscale factor: base model's VAE {vae_factor}, adapter {c.downscale_factor}")
    # the adapter halves its features' size from one to the next; where the UNet's blocks are at other sizes
    # there, the check passed and sampling failed with torch's "The size of tensor a (20) must match ..."
    unet_scales = _unet_adapter_scales(unet)
    made = [2 ** i for i in range(len(unet_scales or ()))]  # 1, 1/2, 1/4, ... of the latents' size
    if not bad and unet_scales is not None and unet_scales != made:
        said = lambda v: ", ".join("1" if k == 1 else f"1/{k}" for k in v)  # noqa: E731
        types = ", ".join(getattr(u, "down_block_types", ()))
        raise InputError(
            f"T2I-Adapter {name!r} does not fit the base model (feature sizes, of the latents': the down blocks "
            f"({types}) take them at {said(unet_scales)}, the adapter makes {said(made)}): no T2I-Adapter fits this "
            'UNet; condition through a ControlNet instead (a unit of kind "controlnet")'
        )
    if bad:
        raise InputError(
            f"T2I-Adapter {name!r} does not fit the base model ({'; '.join(bad)}): use a T2I-Adapter trained for "
            "this base model's family (e.g. TencentARC/t2iadapter_*_sd14v1 or t2i-adapter_sd15 ones for SD 1.x)"
        )


@contextlib.contextmanager
def _quiet_failure():
    """Hold the warnings and diffusers' log lines raised inside; yields a function that says them. Called
    when the work succeeds; a failure drops them, since its own one-line error says what went wrong (a LoRA
    of another model printed peft's warnings and diffusers' "Loading ... was unsuccessful" before it)."""
    import logging
    import warnings

    held: list = []

    class _Hold(logging.Handler):
        def emit(self, record):
            held.append(record)

    lib = logging.getLogger("diffusers")
    hold, propagate = _Hold(), lib.propagate
    old_handlers = lib.handlers[:]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        lib.handlers, lib.propagate = [hold], False
        try:
            def say():
                for w in caught:
                    if "Already found a `peft_config`" in str(w.message):  # a second LoRA: several are the point
                        continue
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
                caught.clear()
                for r in held:
                    for h in old_handlers or logging.getLogger().handlers:
                        if r.levelno >= h.level:
                            h.handle(r)
                held.clear()
            yield say
        finally:
            lib.handlers, lib.propagate = old_handlers, propagate


DTYPES = {"fp16": torch.float16, "float16": torch.float16, "half": torch.float16, "bf16": torch.bfloat16,
          "bfloat16": torch.bfloat16, "fp32": torch.float32, "float32": torch.float32, "float": torch.float32}


def as_dtype(dtype) -> torch.dtype | None:
    """A torch dtype from itself or its name (``"bfloat16"``, ``"fp16"``, as templates and ``export`` spell
    them; a name was ignored, with only a note of diffusers'); None or ``"auto"``: None (the default)."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if str(dtype).lower() == "auto":
        return None
    try:
        return DTYPES[str(dtype).lower()]
    except KeyError:
        raise InputError(f"dtype {dtype!r}: expected one of fp16, bf16, fp32 (or float16, bfloat16, float32)") from None


def load_components(
    model: str,
    controlnets: list[str] = (),
    lora: list[tuple[str, float]] = (),
    textual_inversion: list[str] = (),
    device=None,
    dtype=None,
    config: str | None = None,
    adapters: list[str] = (),
) -> Components:
    """Load UNet, VAE, text encoder, tokenizer and a DDIM scheduler (plus ControlNets, T2I-Adapters,
    LoRAs and textual-inversion embeddings) onto ``device`` in ``dtype`` (default fp16 on CUDA, fp32 on CPU)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from ..blend.deflicker import resolve_device

    # a device that is not there is said before the model loads (it was torch's AssertionError after)
    dev = resolve_device(device) if device is not None else torch.device("cpu")
    dt = as_dtype(dtype) or default_dtype(dev)
    kw = dict(**dtype_kwarg("diffusers", dt), safety_checker=None, requires_safety_checker=False)
    if config is not None and Path(model).is_file():
        kw["config"] = config
    pipe = _load(StableDiffusionPipeline, model, "model", **kw)
    # adapters named by their place, not their file: two LoRAs that `train` made are both
    # pytorch_lora_weights.safetensors, and a name used twice was refused as "not found"
    names = [f"lora_{i}" for i in range(len(lora))]
    for (path, scale), name in zip(lora, names):
        if Path(path).suffix.lower() in SINGLE_FILE_EXTS and not Path(path).exists():
            # a file name is not a repo id: diffusers would ask the Hub for it (offline: a connection error)
            raise not_found("LoRA", path, _LORA_REMEDY)
        try:
            with _quiet_failure() as said:
                pipe.load_lora_weights(path, adapter_name=name, local_files_only=local_only() or Path(path).exists())
            said()  # loaded: the libraries' notes, as they were
        except (OSError, ValueError) as e:
            raise _not_found("LoRA", path, e, _LORA_REMEDY) from e
        except RuntimeError as e:  # its layers' shapes are another model's (an SDXL LoRA on SD 1.5): a traceback
            if "size mismatch" not in str(e):
                raise
            m = re.search(r"size mismatch for ([\w.]+?)\.lora_\w\.\S*: copying a param with shape torch\.Size\((\[[^]]*\])\)"
                          r".*?current model is torch\.Size\((\[[^]]*\])\)", str(e))
            where = f" ({m.group(1)}: {m.group(2)} in the LoRA, {m.group(3)} in the model)" if m else ""
            raise InputError(f"LoRA {path!r} does not fit the base model {model!r}: its layers are of other sizes"
                             f"{where}; use a LoRA trained for this base model's family (an SD 1.x LoRA for an SD 1.x "
                             "model)") from None
    if lora:
        pipe.set_adapters(names, [s for _, s in lora])
        pipe.fuse_lora()
    for path in textual_inversion:
        try:
            pipe.load_textual_inversion(path, token=_embedding_token(path),
                                        local_files_only=local_only() or Path(path).exists())
        except (OSError, ValueError) as e:
            raise _not_found("textual-inversion embedding", path, e, _EMBEDDING_REMEDY) from e
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config, clip_sample=False, set_alpha_to_one=False)
    cns = [load_controlnet(c, dev, dt) for c in controlnets]
    for name, cn in zip(controlnets, cns):
        check_controlnet_fits(pipe.unet, cn, name)
    ads = [load_adapter(a, dev, dt) for a in adapters]
    for name, ad in zip(adapters, ads):
        check_adapter_fits(pipe.unet, ad, name, vae_factor=2 ** (len(pipe.vae.config.block_out_channels) - 1))
    return Components(pipe.unet.to(dev).eval(), pipe.vae.to(dev).eval(), pipe.text_encoder.to(dev).eval(),
                      pipe.tokenizer, scheduler, cns, ads)
