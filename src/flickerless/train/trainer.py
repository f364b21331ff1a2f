"""Fine-tune a Stable Diffusion 1.x UNet on the frames of one video (DiffSynth's fashion task: one
fine-tuned model is one virtual person; the long-video paper's combined tuning module, eq 20).

LoRA (peft, on the UNet attention projections) or full UNet fine-tuning with the loss
``l1*L + l2*L_fg + l3*L_bg`` (:mod:`flickerless.train.losses`). The frames' VAE latents (posterior
mean) and the prompt's embedding are computed once; each step draws frames, timesteps and noise
from one seeded CPU generator, so a run is reproducible and a resumed run continues exactly.

Output (``config.output``, a folder):

- LoRA: ``pytorch_lora_weights.safetensors`` in the diffusers/peft format (``--lora`` of every
  pipeline; ``VideoPipeline.from_pretrained(model, lora=[(path, 1.0)])``);
- full: a diffusers Stable Diffusion folder (``--model`` of every pipeline);
- ``checkpoints/step-NNNNNN/``: trainable weights, optimizer, gradient scaler and RNG states, every
  ``checkpoint_every`` steps and at the end (the last ``keep_checkpoints`` are kept);
- ``training.json``: the settings and the loss.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import DeviceError, InputError, OutputError, out_of_memory, stops_held
from ..video import check_output_is_not_input, usual_mode
from ..weights import quiet_model_loading
from .data import MaskSource, clip_pixel_aspect, load_frames, load_masks, parse_resolution
from .losses import Losses, combined_loss, diffusion_target, latent_masks

log = logging.getLogger("flickerless")

__all__ = ["TrainConfig", "Trainer", "TrainResult", "train", "latest_checkpoint", "LORA_TARGETS"]

LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
# what a result is made of in the output folder (a LoRA's file, a diffusers folder's parts): replaced
# whole by the next result; anything else there (checkpoints/) is kept
RESULT_NAMES = frozenset({LORA_WEIGHTS, "training.json", "model_index.json", "unet", "vae", "text_encoder",
                          "tokenizer", "scheduler", "safety_checker", "feature_extractor"})
# settings a checkpoint cannot be resumed under if they changed (the trainable weights differ)
_STRUCTURAL = ("mode", "lora_rank", "lora_alpha", "lora_targets")


@dataclass
class TrainConfig:
    """Settings of one fine-tuning run. ``lr`` defaults to 1e-4 for LoRA and 2e-6 (the long-video
    paper's) for full fine-tuning; ``lora_alpha`` to ``lora_rank`` (scale 1)."""

    model: str
    prompt: str
    output: str
    mode: str = "lora"
    lora_rank: int = 4
    lora_alpha: float | None = None
    lora_targets: tuple[str, ...] = LORA_TARGETS
    steps: int = 500
    lr: float | None = None
    warmup_steps: int = 0
    batch: int = 1
    resolution: int | str | tuple = 512
    max_frames: int | None = None
    every: int = 1
    loss_weights: tuple[float, float, float] = (1.0, 0.0, 0.0)
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    seed: int = 0
    device: str | None = None
    precision: str = "auto"
    gradient_checkpointing: bool = False
    max_grad_norm: float | None = 1.0
    config: str | None = None  # diffusers folder / repo id of the architecture, for a single-file model offline

    def validate(self) -> "TrainConfig":
        def bad(key, msg):
            raise InputError(f"{key}: {msg}")

        if self.mode not in ("lora", "full"):
            bad("mode", f"expected 'lora' or 'full', got {self.mode!r}")
        def whole(v) -> bool:  # 2.5 steps ran 3, 1.5 frames a batch failed in torch
            return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

        for key in ("lora_rank", "steps", "batch", "every", "keep_checkpoints"):
            if not whole(getattr(self, key)) or getattr(self, key) < 1:
                bad(key, f"must be a positive integer, got {getattr(self, key)!r}")
        for key in ("checkpoint_every", "warmup_steps"):
            if not whole(getattr(self, key)) or getattr(self, key) < 0:
                bad(key, f"must be an integer >= 0, got {getattr(self, key)!r}")
        if self.max_frames is not None and (not whole(self.max_frames) or self.max_frames < 1):
            bad("max_frames", f"must be a positive integer, got {self.max_frames!r}")
        if isinstance(self.lora_targets, str):  # read a letter at a time, failing inside peft
            bad("lora_targets", f"must be a list of module names, e.g. [{self.lora_targets!r}], got a string")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            bad("lr", f"must be a positive number, got {self.lr}")
        if self.lora_alpha is not None and not self.lora_alpha > 0:
            bad("lora_alpha", f"must be positive, got {self.lora_alpha}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            bad("max_grad_norm", f"must be positive (or None for no clipping), got {self.max_grad_norm}")
        w = tuple(float(x) for x in self.loss_weights)
        if len(w) != 3 or any(x < 0 or not math.isfinite(x) for x in w) or not any(w):
            bad("loss_weights", f"expected three weights l1,l2,l3 >= 0, not all zero, got {self.loss_weights}")
        self.loss_weights = w
        if self.precision not in PRECISIONS:
            bad("precision", f"expected one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if not str(self.prompt).strip():  # blank trained the unconditional embedding, the one CFG subtracts
            bad("prompt", "give the instance prompt the frames are trained on, e.g. 'a photo of sks person'")
        parse_resolution(self.resolution)
        self.lora_targets = tuple(self.lora_targets)
        return self

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else (1e-4 if self.mode == "lora" else 2e-6)

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["lora_targets"] = list(self.lora_targets)
        d["loss_weights"] = list(self.loss_weights)
        d["resolution"] = list(parse_resolution(self.resolution))
        return d


@dataclass
class TrainResult:
    output: Path
    weights: Path  # the LoRA file, or the diffusers folder of a full fine-tune
    step: int
    loss: float  # running mean of the total loss over the last steps
    losses: list[float] = field(default_factory=list)  # total loss of every step run in this call


def latest_checkpoint(output) -> Path | None:
    """The checkpoint with the highest step under ``output/checkpoints``, or None."""
    root = Path(output) / "checkpoints"
    if not root.is_dir():
        return None
    found = [p for p in root.glob("step-*") if p.is_dir() and (p / "state.json").exists()]
    return max(found, key=lambda p: int(p.name.split("-")[1]), default=None)


def _resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (None: plain fp32)."""
    if device.type != "cuda":
        if precision in ("bf16", "fp16"):
            raise InputError(f"precision {precision} needs a CUDA device; on {device.type} train with precision fp32")
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise InputError("this GPU does not support bf16: use precision fp16")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def _check_output_folder(output: Path, config: TrainConfig | None = None, video=None, masks=None) -> None:
    """Refuse, before the model loads, an output folder that cannot be made or written: one of the
    inputs (``-o`` the base model's folder: a full fine-tune was saved over the base model), a file at its
    path or at one of its parents (``-o notes.txt/lora``), or an unwritable folder it would be made in.
    Found at the first checkpoint, such a path cost the steps trained before it."""
    if config is not None:
        path = lambda v: v if isinstance(v, (str, Path)) else None  # noqa: E731 - arrays and callables are no paths
        check_output_is_not_input(output, model=config.model, config=config.config, video=path(video), masks=path(masks))
    if output.exists() and not output.is_dir():
        raise OutputError(f"output {output} is a file: give a folder for the trained weights")
    nearest = output
    while not nearest.exists() and nearest != nearest.parent:
        nearest = nearest.parent
    if not nearest.is_dir():
        raise OutputError(f"output {output}: {nearest} is a file, so the folder cannot be made there; give another folder")
    if not os.access(nearest, os.W_OK):
        raise OutputError(f"output {output}: folder {nearest} is not writable")
    if output.is_dir():
        # a result is saved into the folder and replaces an earlier one's files there: only ever into a
        # folder train wrote (or an empty one), never among a project's files or another model's
        names = {p.name for p in output.iterdir() if not p.name.startswith((".saving.", ".replaced."))}
        other = sorted(names - RESULT_NAMES - {"checkpoints"})
        if other:
            raise OutputError(f"output {output}: folder holds other files ({', '.join(other[:3])}"
                              f"{', ...' if len(other) > 3 else ''}); give a new or empty folder for the trained weights")
        if names and not names & {"training.json", "checkpoints"}:
            raise OutputError(f"output {output}: folder holds a model or LoRA that train did not write (no training.json), "
                              "which the result would replace; give a new or empty folder")


def _check_masks_count(masks, video) -> None:
    """Masks go frame for frame with the video: more masks than it has frames are most likely another
    clip's (of the same size), used without a word; said. Counted against the video's frames, not the
    ones trained on: ``--frames``/``--every`` take fewer frames, never fewer masks per frame."""
    if not all(isinstance(p, (str, Path)) for p in (masks, video)):
        return
    from ..video import probe

    have, need = probe(masks).frames, probe(video).frames
    if have and need and have > need:
        log.warning("masks %s: %d masks for the %d frames of %s, which go frame for frame: the last %d have no "
                    "frame; are they another clip's?", masks, have, need, video, have - need)


def _check_masks_teach(fg: torch.Tensor, weights, source) -> None:
    """Refuse masks that leave the weighted losses nothing to learn from (all black with only the
    foreground weighted, all white with only the background), and warn where one weighted term has
    nothing: the run ended with a loss of 0 and an unchanged model, without a word. ``segment`` writes
    black masks where it found no one."""
    l1, l2, l3 = weights
    what = f"masks {source}" if isinstance(source, (str, Path)) else "masks"
    empty = {"foreground loss l2": (l2, bool(fg.amax() <= 0), "all black (no foreground)"),
             "background loss l3": (l3, bool(fg.amin() >= 1), "all white (no background)")}
    idle = [(name, why) for name, (w, none, why) in empty.items() if w > 0 and none]
    if not idle:
        return
    name, why = idle[0]
    if not l1 and len(idle) == sum(w > 0 for w, _, _ in empty.values()):
        raise InputError(f"{what}: {why} in all {len(fg)} training frames, so the {name}, the only one weighted, learns "
                         "nothing; check the masks (segment writes black ones where it finds no one) or weight l1 too")
    log.warning("%s: %s in all %d training frames: the %s learns nothing from them", what, why, len(fg), name)


def _oom(step: int, output: Path, when: str) -> DeviceError:
    last = latest_checkpoint(output)
    kept = f"last checkpoint kept: {last} (continue with --resume)" if last else "no checkpoint was saved yet"
    return DeviceError(
        f"out of memory {when} (step {step}); {kept}. Try a smaller --batch or --resolution, "
        "--gradient-checkpointing, --precision bf16/fp16, or --mode lora"
    )


class Trainer:
    """One fine-tuning run: data and model prepared at construction, then :meth:`fit`.

    video: a path, ``(T, H, W, 3)`` uint8 array or ``(T, 3, H, W)`` tensor in [0, 1]. masks: foreground
    masks (see :func:`flickerless.train.data.load_masks`), needed when ``l2`` or ``l3`` is nonzero;
    the background mask is ``1 - foreground``.
    """

    def __init__(self, config: TrainConfig, video, masks: MaskSource | None = None):
        from diffusers import DDPMScheduler

        from ..blend.deflicker import resolve_device
        from ..diffusion.codec import VAECodec
        from ..diffusion.models import load_components

        self.cfg = cfg = config.validate()
        self.output = Path(cfg.output)
        _check_output_folder(self.output, cfg, video, masks)
        self.device = resolve_device(cfg.device)
        self.autocast_dtype = _resolve_precision(cfg.precision, self.device)
        size = parse_resolution(cfg.resolution)
        aspect = clip_pixel_aspect(video)  # an anamorphic clip is trained on as it is shown, as `run` generates it
        frames, source_size = load_frames(video, size, cfg.max_frames, cfg.every, pixel_aspect=aspect)
        fg = load_masks(masks, frames, source_size, cfg.every, pixel_aspect=aspect) if masks is not None else None
        if fg is None and any(cfg.loss_weights[1:]):
            raise InputError("loss_weights: l2/l3 weight the foreground/background but no masks were given "
                             "(give --masks, or --loss-weights 1,0,0)")
        if fg is not None:
            _check_masks_teach(fg, cfg.loss_weights, masks)
            _check_masks_count(masks, video)
        self.num_frames = len(frames)
        # what the run trains on, kept in its checkpoints: a resume from another clip (or masks) is said
        self.data_hash = hashlib.sha1(frames.detach().cpu().numpy().tobytes()).hexdigest()[:16]
        self.mask_hash = hashlib.sha1(fg.numpy().tobytes()).hexdigest()[:16] if fg is not None else None
        try:
            self._setup_model(load_components, VAECodec, DDPMScheduler, frames, fg)
        except Exception as e:  # noqa: BLE001 - only running out of memory is said here
            if not out_of_memory(e):
                raise
            raise _oom(0, self.output, "while loading the model and encoding the frames") from e
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.step = 0
        self._ema: float | None = None
        self._in_update = False
        self._step_start = None  # (generator, torch) random states as the step in progress began

    # ---- setup ------------------------------------------------------------------------------
    def _setup_model(self, load_components, VAECodec, DDPMScheduler, frames, fg):
        cfg, dev = self.cfg, self.device
        comps = load_components(cfg.model, device=dev, dtype=torch.float32, config=cfg.config)
        self.components = comps
        codec = VAECodec(comps.vae, batch_size=4)
        self.latents = codec.encode(frames, out_device=dev)  # (T, 4, h, w), posterior mean, scaled
        self.fg = latent_masks(fg, codec.factor).to(dev) if fg is not None else None
        with torch.no_grad():
            tok = comps.tokenizer([cfg.prompt], padding="max_length", max_length=comps.tokenizer.model_max_length,
                                  truncation=True, return_tensors="pt")
            self.text = comps.text_encoder(tok.input_ids.to(dev))[0].float()  # (1, L, D)
        self.scheduler = DDPMScheduler.from_config(comps.scheduler.config)
        comps.vae.to("cpu")  # frozen and no longer needed on the device; kept to save a full fine-tune
        comps.text_encoder.to("cpu")
        if dev.type == "cuda":
            torch.cuda.empty_cache()

        unet = comps.unet
        unet.requires_grad_(False)
        if cfg.mode == "lora":
            from peft import LoraConfig

            if self.autocast_dtype is not None:
                # frozen base weights in half precision, LoRA weights in fp32 (plain Module.to: diffusers'
                # override warns about fp32-only modules, which SD's UNet does not have)
                torch.nn.Module.to(unet, self.autocast_dtype)
            torch.manual_seed(cfg.seed)  # LoRA A init
            unet.add_adapter(LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha or cfg.lora_rank,
                                        init_lora_weights=True, target_modules=list(cfg.lora_targets)))
            for p in unet.parameters():
                if p.requires_grad:
                    p.data = p.data.float()
        else:
            unet.requires_grad_(True)
        if cfg.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        self.unet = unet
        self.params = [(n, p) for n, p in unet.named_parameters() if p.requires_grad]
        if not self.params:
            raise InputError(f"lora_targets {cfg.lora_targets} match no layer of the UNet")
        self.optimizer = torch.optim.AdamW([p for _, p in self.params], lr=cfg.learning_rate, weight_decay=1e-2)
        self.scaler = torch.amp.GradScaler(dev.type, enabled=self.autocast_dtype == torch.float16)
        n = sum(p.numel() for _, p in self.params)
        log.info("training %s: %d frames of %dx%d, %s trainable parameters, lr %g, batch %d, %s on %s",
                 cfg.mode, self.num_frames, frames.shape[-1], frames.shape[-2], f"{n:,}", cfg.learning_rate,
                 cfg.batch, {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.autocast_dtype], dev)

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    # ---- loss -------------------------------------------------------------------------------
    def draw(self, generator: torch.Generator, batch: int):
        """Frame indices, timesteps and noise for one batch, all from ``generator`` (on the CPU)."""
        n = self.num_frames
        idx = torch.randperm(n, generator=generator)[:batch] if batch <= n else torch.randint(n, (batch,), generator=generator)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (batch,), generator=generator)
        noise = torch.randn((batch, *self.latents.shape[1:]), generator=generator)
        return idx, t, noise

    def loss(self, idx: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> Losses:
        """Eq 20 on frames ``idx`` at timesteps ``t`` with ``noise (B, 4, h, w)``."""
        dev = self.device
        idx = idx.to(dev)
        x0 = self.latents[idx]
        noise, t = noise.to(dev), t.to(dev)
        xt = self.scheduler.add_noise(x0, noise, t)
        target = diffusion_target(self.scheduler, x0, noise, t)
        with self._autocast():
            pred = self.unet(xt, t, encoder_hidden_states=self.text.expand(len(idx), -1, -1)).sample
        fg = self.fg[idx] if self.fg is not None else None
        return combined_loss(pred.float(), target.float(), self.cfg.loss_weights, fg)

    @torch.no_grad()
    def evaluate(self, samples: int = 16, seed: int = 12345) -> Losses:
        """The loss on a fixed set of ``samples`` (frame, timestep, noise) draws from ``seed``: the
        same set on every call, so values before and after training compare. Returns floats."""
        g = torch.Generator().manual_seed(seed)
        was_training = self.unet.training
        self.unet.eval()
        sums = torch.zeros(4, dtype=torch.float64)
        try:
            for a in range(0, samples, max(self.cfg.batch, 4)):
                b = min(max(self.cfg.batch, 4), samples - a)
                idx = torch.arange(a, a + b) % self.num_frames
                _, t, noise = self.draw(g, b)
                sums += torch.tensor([float(v) for v in self.loss(idx, t, noise)], dtype=torch.float64) * b
        finally:
            self.unet.train(was_training)
        return Losses(*(float(v) / samples for v in sums))

    # ---- training ---------------------------------------------------------------------------
    def train_step(self) -> Losses:
        """One optimizer step; returns the batch's losses (detached)."""
        cfg = self.cfg
        self.unet.train()
        # the random state before this step's draws: a stop within the step saves it, so that the resumed
        # run draws what the step would have (it saved the state after them: other noise, other weights)
        self._step_start = (self.generator.get_state(), torch.get_rng_state())
        losses = self.loss(*self.draw(self.generator, cfg.batch))
        if not torch.isfinite(losses.total):
            raise InputError(f"the loss became {float(losses.total.detach())} at step {self.step + 1}: lower --lr"
                             + (" or use --precision bf16/fp32" if self.autocast_dtype == torch.float16 else ""))
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(losses.total).backward()
        lr = cfg.learning_rate * min(1.0, (self.step + 1) / cfg.warmup_steps) if cfg.warmup_steps else cfg.learning_rate
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        # a stop within the update (a third of a full fine-tune's step on the CPU) left some weights and
        # moments updated and others not, and nothing could be saved: it is held until the step is whole
        with stops_held():
            self._in_update = True
            if cfg.max_grad_norm is not None:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_([p for _, p in self.params], cfg.max_grad_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.step += 1
            total = float(losses.total.detach())
            self._ema = total if self._ema is None else 0.9 * self._ema + 0.1 * total
            self._in_update = False
            self._step_start = None
        return Losses(*(v.detach() for v in losses))

    def fit(self, progress: bool = True, on_step: Callable[[int, Losses], None] | None = None) -> list[float]:
        """Train up to ``config.steps``, saving checkpoints every ``checkpoint_every`` steps and at the
        end. ``on_step(step, losses)`` is called after each step. On Ctrl-C a checkpoint of the last
        finished step is saved; out of memory (CUDA, MPS, CPU) a :class:`DeviceError` names the last checkpoint."""
        from tqdm.auto import tqdm

        cfg = self.cfg
        history: list[float] = []
        last_saved = self.step
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not progress, desc="training", unit="step", leave=False)
        try:
            while self.step < cfg.steps:
                losses = self.train_step()
                history.append(float(losses.total))
                bar.update(1)
                bar.set_postfix(loss=f"{self._ema:.4f}")
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                    self.save_checkpoint()
                    last_saved = self.step
                if on_step is not None:
                    on_step(self.step, losses)
            if cfg.checkpoint_every and self.step != last_saved:
                self.save_checkpoint()
        except Exception as e:  # noqa: BLE001 - only running out of memory is said here
            if not out_of_memory(e):
                raise
            raise _oom(self.step + 1, self.output, "during training") from e
        except KeyboardInterrupt:
            # saved whatever --checkpoint-every says (0: no periodic ones): a stop is when one is needed
            if not self._in_update and self.step != last_saved:
                if self._step_start is not None:  # stopped within a step: as it was before the step
                    self.generator.set_state(self._step_start[0])
                    torch.set_rng_state(self._step_start[1])
                path = self.save_checkpoint()
                log.warning("interrupted: checkpoint of step %d saved in %s (continue with --resume)", self.step, path)
            raise
        finally:
            bar.close()
        return history

    @property
    def running_loss(self) -> float:
        return float("nan") if self._ema is None else self._ema

    # ---- checkpoints ------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        """Write ``output/checkpoints/step-NNNNNN`` atomically and drop all but the newest ``keep_checkpoints``."""
        from safetensors.torch import save_file

        root = self.output / "checkpoints"
        final = root / f"step-{self.step:06d}"
        tmp = root / f".step-{self.step:06d}.tmp"
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            save_file({n: p.detach().to("cpu", copy=True).contiguous() for n, p in self.params}, tmp / "weights.safetensors")
            usual_mode(tmp / "weights.safetensors")  # safetensors writes 0600
            torch.save({
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(),
                "generator": self.generator.get_state(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else [],
                "ema": self._ema,
            }, tmp / "state.pt")
            (tmp / "state.json").write_text(json.dumps({"step": self.step, "settings": self.cfg.to_json(),
                                                        "frames": self.data_hash, "masks": self.mask_hash}, indent=1))
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        except (OSError, RuntimeError) as e:  # torch.save reports a full disk as a RuntimeError
            shutil.rmtree(tmp, ignore_errors=True)
            free = shutil.disk_usage(root).free / 2**30
            raise OutputError(f"cannot write checkpoint {final} ({free:.1f} GiB free there; a full fine-tune's "
                              f"checkpoint takes about 3x the UNet's fp32 size): {str(e).splitlines()[0]}") from e
        olds = sorted((p for p in root.glob("step-*") if p.is_dir()), key=lambda p: int(p.name.split("-")[1]))
        for old in olds[: -self.cfg.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        log.debug("checkpoint %s", final)
        return final

    def load_checkpoint(self, path) -> None:
        """Restore weights, optimizer, scaler, RNG and step from a checkpoint folder."""
        from safetensors.torch import load_file

        path = Path(path)
        if not (path / "state.json").exists():
            raise InputError(f"{path}: not a training checkpoint (no state.json); checkpoints live in OUTPUT/checkpoints/step-N")
        meta = json.loads((path / "state.json").read_text())
        saved, now = meta["settings"], self.cfg.to_json()
        changed = [k for k in _STRUCTURAL if saved.get(k) != now.get(k)]
        if changed:
            raise InputError(f"checkpoint {path} was trained with different {', '.join(changed)} "
                             f"({', '.join(f'{k}={saved.get(k)!r}' for k in changed)}): resume with the same settings")
        other = [k for k in ("model", "prompt", "resolution", "batch", "lr", "loss_weights", "max_frames", "every", "seed")
                 if saved.get(k) != now.get(k)]
        if meta.get("frames", self.data_hash) != self.data_hash:  # another --video (a run was resumed silently)
            other.append("training frames (another video?)")
        if meta.get("masks", self.mask_hash) != self.mask_hash:  # the masked losses learn from other pixels
            other.append("masks")
        if other:
            log.warning("resuming with changed %s: the run will differ from an uninterrupted one", ", ".join(other))
        weights = load_file(path / "weights.safetensors")
        missing = [n for n, _ in self.params if n not in weights]
        if missing:
            raise InputError(f"checkpoint {path} lacks {len(missing)} trainable tensors (e.g. {missing[0]})")
        wrong = [n for n, p in self.params if tuple(weights[n].shape) != tuple(p.shape)]
        if wrong:
            raise InputError(f"checkpoint {path} does not fit this model ({wrong[0]}: {tuple(weights[wrong[0]].shape)} "
                             f"in the checkpoint): resume with the --model it was trained from ({saved.get('model')})")
        with torch.no_grad():
            for n, p in self.params:
                p.copy_(weights[n])
        state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if self.device.type == "cuda" and state["cuda_rng"]:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self._ema = state.get("ema")
        self.step = int(meta["step"])
        log.info("resumed from %s at step %d", path, self.step)
        if self.step > self.cfg.steps:  # "trained 60 steps" of --steps 10, without a word
            log.warning("checkpoint %s is at step %d, past steps %d: nothing more is trained, its weights are saved "
                        "(steps counts the resumed ones: raise it to train longer)", path, self.step, self.cfg.steps)

    # ---- result -----------------------------------------------------------------------------
    def save(self) -> Path:
        """Save the result: the LoRA file, or a diffusers folder holding the fine-tuned UNet. It is written
        in a temporary folder and moved into place once whole: a stop or a full disk while writing (seconds
        for a full fine-tune) left a half-written output, or an earlier one's parts mixed with the new.
        A stop saves a checkpoint of the trained steps if there is none, to be resumed."""
        from diffusers import StableDiffusionPipeline

        final = self.output.resolve()
        unet = self.unet
        tmp = None
        try:
            final.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".saving.", dir=final))
            if self.cfg.mode == "lora":
                from diffusers.utils import convert_state_dict_to_diffusers
                from peft.utils import get_peft_model_state_dict

                layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
                meta = unet.peft_config["default"].to_dict()
                meta = {k: (sorted(v) if isinstance(v, set) else v) for k, v in meta.items()}
                StableDiffusionPipeline.save_lora_weights(tmp, unet_lora_layers=layers,
                                                          unet_lora_adapter_metadata=meta, weight_name=LORA_WEIGHTS)
                out = self.output / LORA_WEIGHTS
            else:
                c = self.components
                if self.cfg.gradient_checkpointing:
                    unet.disable_gradient_checkpointing()
                pipe = StableDiffusionPipeline(vae=c.vae, text_encoder=c.text_encoder, tokenizer=c.tokenizer, unet=unet,
                                               scheduler=c.scheduler, safety_checker=None, feature_extractor=None,
                                               requires_safety_checker=False)
                try:
                    pipe.save_pretrained(tmp)
                finally:
                    if self.cfg.gradient_checkpointing:
                        unet.enable_gradient_checkpointing()
                out = self.output
            for f in tmp.rglob("*.safetensors"):  # safetensors writes 0600: a result is shared like any file
                usual_mode(f)
            (tmp / "training.json").write_text(json.dumps(
                {"step": self.step, "loss": self._ema, "frames": self.num_frames, "settings": self.cfg.to_json()}, indent=1))
            with stops_held():  # a few renames, never left half done
                _swap_in(tmp, final)
                tmp = None
        except OSError as e:
            raise OutputError(f"cannot write the trained weights to {self.output}: {e}") from e
        except KeyboardInterrupt:
            last = latest_checkpoint(self.output)
            if last is None or int(last.name.split("-")[1]) != self.step:  # --checkpoint-every 0, or not at the end
                path = self.save_checkpoint()
                log.warning("interrupted while saving the result: checkpoint of step %d saved in %s (continue with "
                            "--resume)", self.step, path)
            raise
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
        log.info("saved %s after %d steps (loss %.4f)", out, self.step, self.running_loss)
        return out


def _swap_in(tmp: Path, final: Path) -> None:
    """Move the finished result in ``tmp`` (a folder inside the output ``final``, so on its filesystem
    also where ``final`` is a mount point) into ``final``, in place of an earlier result's parts, by
    renames; what else the output holds (its checkpoints) stays where it is. A failed rename puts back
    what was moved, so that the output holds one whole result or the earlier one."""
    old = Path(tempfile.mkdtemp(prefix=".replaced.", dir=final))
    moved_out, moved_in = [], []
    try:
        try:
            for entry in final.iterdir():
                if entry.name in RESULT_NAMES:
                    os.replace(entry, old / entry.name)
                    moved_out.append(entry.name)
            for entry in tmp.iterdir():
                os.replace(entry, final / entry.name)
                moved_in.append(entry.name)
        except BaseException:
            for name in moved_in:
                os.replace(final / name, tmp / name)
            for name in moved_out:
                os.replace(old / name, final / name)
            raise
    finally:
        shutil.rmtree(old, ignore_errors=True)
    tmp.rmdir()


def train(config: TrainConfig, video, masks: MaskSource | None = None, resume=None, overwrite: bool = False,
          progress: bool = True, on_step: Callable[[int, Losses], None] | None = None) -> TrainResult:
    """Fine-tune ``config.model`` on ``video`` and save the result in ``config.output``.

    resume: None (start fresh), ``"latest"``/True (the newest checkpoint under ``output/checkpoints``;
    starts fresh when there is none) or a checkpoint folder. A fresh start refuses an output that
    already holds checkpoints or a result unless ``overwrite`` (not given with ``resume``). A folder
    holding anything else is refused.
    """
    config.validate()
    if resume and overwrite:  # the resume went on, the overwrite ignored
        raise InputError("resume and overwrite: give one (resume continues the run in the output, overwrite starts it over)")
    out = Path(config.output)
    _check_output_folder(out, config, video, masks)  # before --overwrite removes anything there
    finished = (out / "training.json").is_file()
    ckpt = None
    if resume in (True, "latest"):
        ckpt = latest_checkpoint(out)
        if ckpt is None and finished:  # a new run would replace the result
            raise OutputError(f"{out} holds the result of an earlier run but no checkpoint to resume from: start over "
                              "(--overwrite instead of --resume) or give another folder")
        if ckpt is None:
            log.info("no checkpoint in %s: starting a new run", out / "checkpoints")
    elif resume:
        ckpt = Path(resume)
        m = re.fullmatch(r"step-(\d+)", ckpt.name)
        if not ckpt.is_dir() and m:  # step-3 for the step-000003 the run writes
            ckpt = ckpt.with_name(f"step-{int(m.group(1)):06d}")
        if not ckpt.is_dir():
            raise InputError(f"resume: {resume} is not a checkpoint folder (expected OUTPUT/checkpoints/step-000100, "
                             "as the run writes them, or 'latest')")
    elif latest_checkpoint(out) is not None:
        if not overwrite:
            raise OutputError(f"{out} holds checkpoints of an earlier run: resume it (--resume) or start over (--overwrite)")
        shutil.rmtree(out / "checkpoints")
    elif finished and not overwrite:  # its checkpoints gone (--checkpoint-every 0, or deleted): replaced without a word
        raise OutputError(f"{out} holds the result of an earlier run: start over (--overwrite) or give another folder")
    if not progress:
        quiet_model_loading()
    # the run seeds (and a resume restores) torch's random state for itself: the caller's is as it was after
    gpus = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=gpus):
        trainer = Trainer(config, video, masks)
        if ckpt is not None:
            trainer.load_checkpoint(ckpt)
        history = trainer.fit(progress=progress, on_step=on_step)
        weights = trainer.save()
    return TrainResult(out, weights, trainer.step, trainer.running_loss, history)
