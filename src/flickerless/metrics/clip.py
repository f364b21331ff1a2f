"""CLIP-based metrics: CLIP score, CLIP frame consistency and the LAION aesthetic score.

The CLIP model loads through transformers (``CLIPModel``) from a Hugging Face repo id (the local cache
when ``HF_HUB_OFFLINE=1`` or offline) or a local folder saved with ``save_pretrained``; default
``openai/clip-vit-large-patch14`` (ViT-L/14, as the LAION aesthetic predictor needs). Images are
preprocessed by the folder's ``CLIPImageProcessor`` (resize shortest side, centre crop, CLIP mean/std);
a folder without one gets the standard CLIP preprocessing at the model's input size.

Embeddings are the projected outputs (``visual_projection`` of the pooled vision output,
``text_projection`` of the pooled text output), L2-normalised.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import InputError, ModelNotFoundError, in_batches
from ..weights import DEFAULT_CLIP, dtype_kwarg, local_only, not_found
from .frames import as_uint8

__all__ = [
    "DEFAULT_CLIP",
    "ClipModel",
    "load_clip",
    "image_embeddings",
    "text_embeddings",
    "clip_score",
    "clip_consistency",
    "AestheticPredictor",
    "load_aesthetic",
    "aesthetic_score",
    "AESTHETIC_HELP",
]

AESTHETIC_HELP = (
    "the LAION improved aesthetic predictor weights sac+logos+ava1-l14-linearMSE.pth "
    "(github.com/christophschuhmann/improved-aesthetic-predictor; an MLP on CLIP ViT-L/14 embeddings): "
    "pass --aesthetic-weights PATH / aesthetic_weights=PATH (a .pth or .safetensors file, or OWNER/REPO/FILE on the Hugging Face hub)"
)


def _cached(repo_id: str) -> bool:
    """True when ``repo_id`` is in the local Hugging Face cache: then it loads without asking the hub."""
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # noqa: BLE001 - not a valid repo id, no huggingface_hub: fall back to the normal path
        return False


@dataclass
class ClipModel:
    """A loaded CLIP: the transformers model, its tokenizer and image processor, device and the id."""

    model: torch.nn.Module
    tokenizer: object
    processor: object
    device: torch.device
    name: str

    @property
    def dim(self) -> int:
        return int(self.model.config.projection_dim)


def _default_device(device) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def load_clip(model: str = DEFAULT_CLIP, device=None, dtype=None) -> ClipModel:
    """Load a CLIP model (repo id or local folder) onto ``device`` (default CUDA if present, else CPU).

    ``dtype`` defaults to fp16 on CUDA, fp32 elsewhere. Raises ModelNotFoundError naming the id, where
    it was looked for and how to supply it (``--clip-model PATH``).
    """
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

    dev = _default_device(device)
    dt = dtype or (torch.float16 if dev.type == "cuda" else torch.float32)
    path = Path(model)
    src = str(path) if path.exists() else model
    local = path.exists() or local_only() or _cached(model)
    try:
        m = CLIPModel.from_pretrained(src, local_files_only=local, **dtype_kwarg("transformers", dt))
        tok = AutoTokenizer.from_pretrained(src, local_files_only=local)
    except (OSError, ValueError) as e:
        from ..weights import download_hint

        raise not_found("CLIP model", model, "Pass --clip-model PATH / clip_model=PATH (a folder saved by transformers' save_pretrained, "
                        f"with tokenizer){download_hint(model, ' or')}", e) from e
    try:
        proc = CLIPImageProcessor.from_pretrained(src, local_files_only=local)
    except (OSError, ValueError):
        size = int(m.config.vision_config.image_size)
        proc = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    return ClipModel(m.to(dev).eval(), tok, proc, dev, model)


@torch.inference_mode()
def image_embeddings(clip: ClipModel, frames, batch: int = 16) -> torch.Tensor:
    """L2-normalised CLIP image embeddings. frames: (T, H, W, 3) uint8 or (T, 3, H, W) float in [0, 1]
    -> (T, D) float32 on the CPU."""
    frames = as_uint8(frames)
    out = []
    dtype = next(clip.model.parameters()).dtype

    def step(a, b):
        # channels last, said: a frame 1-4 pixels high was taken for channels first (a wrong embedding)
        px = clip.processor(images=list(frames[a:b]), return_tensors="pt", input_data_format="channels_last")["pixel_values"]
        px = px.to(clip.device, dtype)
        pooled = clip.model.vision_model(pixel_values=px).pooler_output
        out.append(clip.model.visual_projection(pooled).float().cpu())

    in_batches(len(frames), batch, step, "CLIP")
    emb = torch.cat(out)
    return emb / emb.norm(dim=-1, keepdim=True)


@torch.inference_mode()
def text_embeddings(clip: ClipModel, texts: list[str]) -> torch.Tensor:
    """L2-normalised CLIP text embeddings, (N, D) float32 on the CPU. Long prompts are truncated to the
    model's context length (77 tokens for OpenAI CLIP), as CLIP-score implementations do."""
    max_len = int(clip.model.config.text_config.max_position_embeddings)
    enc = clip.tokenizer(list(texts), padding=True, truncation=True, max_length=max_len, return_tensors="pt")
    enc = {k: v.to(clip.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
    pooled = clip.model.text_model(**enc).pooler_output
    emb = clip.model.text_projection(pooled).float().cpu()
    return emb / emb.norm(dim=-1, keepdim=True)


def clip_score(frames, prompt, clip: ClipModel, image_emb: torch.Tensor | None = None):
    """CLIP score (Hessel et al. 2021, scaled by 100 instead of their 2.5 as torchmetrics scales it): per
    frame ``100 * max(cos(image, text), 0)``, averaged over frames. The clamp is per frame, as Hessel et
    al.'s per-image score; torchmetrics clamps the mean, which differs where a frame's cosine is negative.
    ``prompt``: one string, or one per frame.

    Returns (mean, per-frame list), each in [0, 100]. ``image_emb``: precomputed :func:`image_embeddings`.
    """
    try:
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    except TypeError:  # None was list()'s TypeError
        prompts = None
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise InputError(f"clip_score needs a prompt: a string, or a list of one per frame (got {type(prompt).__name__})")
    emb = image_embeddings(clip, frames) if image_emb is None else image_emb
    if len(prompts) not in (1, len(emb)):
        raise InputError(f"{len(prompts)} prompts for {len(emb)} frames: give one prompt, or one per frame")
    txt = text_embeddings(clip, prompts)
    per = (100.0 * (emb * txt).sum(-1)).clamp(min=0)
    return float(per.mean()), per.tolist()


def clip_consistency(frames, clip: ClipModel, image_emb: torch.Tensor | None = None):
    """CLIP frame consistency: mean cosine similarity of the embeddings of consecutive frames, in [-1, 1]
    (1: every frame looks the same to CLIP). Returns (mean, per-pair list)."""
    emb = image_embeddings(clip, frames) if image_emb is None else image_emb
    if len(emb) < 2:
        raise InputError("CLIP frame consistency needs at least 2 frames")
    per = (emb[1:] * emb[:-1]).sum(-1)
    return float(per.mean()), per.tolist()


class AestheticPredictor(torch.nn.Module):
    """LAION's improved aesthetic predictor: an MLP from a normalised CLIP ViT-L/14 image embedding to a
    1-10 rating. Same module layout as the public ``sac+logos+ava1-l14-linearMSE.pth`` (keys
    ``layers.{0,2,4,6,7}.{weight,bias}``; dropouts at 1, 3, 5; no activations, as published)."""

    def __init__(self, input_size: int = 768, hidden: tuple[int, int, int, int] = (1024, 128, 64, 16)):
        super().__init__()
        h1, h2, h3, h4 = hidden
        self.input_size = input_size
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(input_size, h1), torch.nn.Dropout(0.2),
            torch.nn.Linear(h1, h2), torch.nn.Dropout(0.2),
            torch.nn.Linear(h2, h3), torch.nn.Dropout(0.1),
            torch.nn.Linear(h3, h4),
            torch.nn.Linear(h4, 1),
        )

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return self.layers(emb)

    @classmethod
    def from_state_dict(cls, sd: dict) -> "AestheticPredictor":
        """Build with the sizes read from ``sd`` and load it (strict)."""
        try:
            dims = [sd[f"layers.{i}.weight"].shape for i in (0, 2, 4, 6, 7)]
        except KeyError as e:
            raise ModelNotFoundError(f"not an aesthetic-predictor state dict: missing key {e} "
                                     f"(expected layers.0/2/4/6/7.weight/bias); {AESTHETIC_HELP}") from None
        m = cls(int(dims[0][1]), tuple(int(d[0]) for d in dims[:4]))
        m.load_state_dict(sd)
        return m.eval()


def load_aesthetic(weights: str, device=None) -> AestheticPredictor:
    """Load the aesthetic MLP from a ``.pth``/``.pt``/``.ckpt`` (torch state dict) or ``.safetensors`` file,
    or ``OWNER/REPO/FILE`` on the Hugging Face hub (its cache when offline)."""
    path = Path(weights)
    if not path.is_file():
        parts = str(weights).split("/")
        local = path.is_absolute() or str(weights).startswith((".", "~")) or path.parent.is_dir()
        if len(parts) >= 3 and not path.exists() and not local:
            try:
                from huggingface_hub import hf_hub_download

                # the cache alone where the hub cannot be reached, as load_clip: HF_HUB_OFFLINE alone let an
                # offline machine sit through huggingface_hub's retries (25 s, each line said twice)
                path = Path(hf_hub_download("/".join(parts[:2]), "/".join(parts[2:]), local_files_only=local_only()))
            except Exception as e:  # noqa: BLE001 - any hub failure means: not available
                # the cache's miss says "set local_files_only to False", which is not the user's to do
                raise not_found("aesthetic predictor weights", weights, f"Needs {AESTHETIC_HELP}",
                                None if local_only() else e) from e
        else:
            raise ModelNotFoundError(f"aesthetic predictor weights {weights!r}: no such file; needs {AESTHETIC_HELP}")
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
            if isinstance(sd, dict) and "state_dict" in sd:
                sd = sd["state_dict"]
    except Exception as e:  # noqa: BLE001 - unreadable or not a tensor file
        import pickle

        # torch's refusal is a page that advises weights_only=False (running the file's code): not ours to say
        text = str(e).strip()
        why = f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__
        if isinstance(e, pickle.UnpicklingError):
            why = "not a file of tensors (a .pth is read as tensors alone, never as code)"
        raise ModelNotFoundError(f"aesthetic predictor weights {path}: cannot be read ({why}); "
                                 f"needs {AESTHETIC_HELP}") from e
    return AestheticPredictor.from_state_dict(sd).to(_default_device(device))


def check_aesthetic_fits(predictor: AestheticPredictor, clip: ClipModel) -> None:
    """An aesthetic predictor takes the embeddings of the CLIP it was trained on: refused otherwise."""
    if clip.dim != predictor.input_size:
        raise InputError(
            f"the aesthetic predictor takes {predictor.input_size}-d CLIP embeddings but CLIP model {clip.name!r} "
            f"gives {clip.dim}-d: use the CLIP it was trained on (ViT-L/14: --clip-model {DEFAULT_CLIP})"
        )


@torch.inference_mode()
def aesthetic_score(frames, clip: ClipModel, predictor: AestheticPredictor, image_emb: torch.Tensor | None = None):
    """Mean LAION aesthetic score of the frames (1-10 for the real weights on CLIP ViT-L/14) and the
    per-frame list. The MLP sees each frame's L2-normalised CLIP image embedding, as in LAION's code."""
    check_aesthetic_fits(predictor, clip)
    emb = image_embeddings(clip, frames) if image_emb is None else image_emb
    dev = next(predictor.parameters()).device
    per = predictor(emb.to(dev)).squeeze(-1).float().cpu()
    return float(per.mean()), per.tolist()
