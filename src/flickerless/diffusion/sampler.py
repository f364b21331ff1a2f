"""The sampling loop with latent in-iteration deflickering (DiffSynth eqs 2-7).

For T frames, at every step: predict noise for all frames (batched through the UNet and its
ControlNets, classifier-free guidance), and at deflicker steps

    x0_hat = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t)            (2)
    X_hat  = D(x0_hat)                                          (3)  VAE decode
    X_bar  = F(X_hat)                                           (4)  deflicker the video
    x0_bar = E(X_bar)                                           (5)  VAE encode, posterior mean
    eps_bar = (x_t - sqrt(a_t) x0_bar) / sqrt(1 - a_t)          (6)

then step the scheduler with the rebuilt prediction (eq 7 for DDIM). Works with any diffusers
scheduler defined on ``alphas_cumprod`` (DDIM by default; DDPM, PNDM, DPM-Solver, UniPC...) and with
epsilon, v-prediction and sample-prediction models.

The deflicker schedule is data (:class:`DeflickerSchedule`); F is any callable
``F(frames (T, 3, H, W) in [0, 1], guide or None, window) -> frames``; by default
:func:`flickerless.deflicker` in table mode, guided by the input video, or by the decoded frames
themselves when there is none (text-to-video).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from ..errors import InputError
from .attention import CrossFrameAttention, pattern_frames

log = logging.getLogger("flickerless")

__all__ = ["DeflickerSchedule", "ControlNetUnit", "Denoiser", "sample", "default_deflicker", "fixed_noise"]

DeflickerFn = Callable[[torch.Tensor, "torch.Tensor | None", "int | None"], torch.Tensor]


@dataclass
class DeflickerSchedule:
    """When to deflicker: every ``frequency`` steps starting at step 1 (5 of 20 -> 1, 6, 11, 16), or
    at the explicit 1-based ``steps``; ``window`` is handed to F (``None``: the whole video)."""

    frequency: int | None = 5
    steps: Sequence[int] | None = None
    window: int | None = None

    def at(self, step: int) -> bool:
        """Whether 1-based ``step`` is a deflicker step."""
        if self.steps is not None:
            return step in set(self.steps)
        if not self.frequency:
            return False
        return (step - 1) % self.frequency == 0

    def deflicker_steps(self, num_steps: int) -> list[int]:
        return [s for s in range(1, num_steps + 1) if self.at(s)]


def default_deflicker(frames: torch.Tensor, guide: torch.Tensor | None, window: int | None) -> torch.Tensor:
    """F = patch blending in table mode, guided by the input video (or the frames themselves).
    Its intermediate images stay off the GPU, so the engine's GPU memory does not grow with T."""
    from ..blend.deflicker import deflicker

    g = frames if guide is None else guide.to(frames.device, frames.dtype)
    return deflicker(g, frames, mode="table", window=window, device_budget=0)


@dataclass
class ControlNetUnit:
    """One ControlNet: the model, its control frames ``(T, 3, H, W)`` in [0, 1], its scale, and the
    fraction of the denoising steps ``[start, end]`` during which it acts."""

    model: torch.nn.Module
    images: torch.Tensor
    scale: float = 1.0
    start: float = 0.0
    end: float = 1.0


def fixed_noise(num_frames: int, shape: Sequence[int], seed: int, device="cpu", dtype=torch.float32) -> torch.Tensor:
    """The same Gaussian noise for every frame: ``(T, *shape)``, from a seeded CPU generator."""
    g = torch.Generator("cpu").manual_seed(int(seed))
    one = torch.randn(tuple(shape), generator=g, dtype=torch.float32)
    return one.unsqueeze(0).expand(num_frames, *shape).to(device, dtype).contiguous()


@dataclass
class Denoiser:
    """UNet + ControlNets + classifier-free guidance, run over a video in batches of frames.

    prompt_embeds / negative_embeds: ``(1 or T, L, D)``. With cross-frame attention a batch also
    carries the frames its frames attend to (first, neighbours), whose outputs are dropped.
    """

    unet: torch.nn.Module
    prompt_embeds: torch.Tensor
    negative_embeds: torch.Tensor | None = None
    guidance_scale: float = 7.5
    controlnets: list[ControlNetUnit] = field(default_factory=list)
    batch_size: int = 8
    cross_frame: CrossFrameAttention | None = None

    @property
    def device(self):
        return next(self.unet.parameters()).device

    @property
    def dtype(self):
        return next(self.unet.parameters()).dtype

    def _embeds(self, e: torch.Tensor, ids: list[int]) -> torch.Tensor:
        if e.shape[0] == 1:
            return e.expand(len(ids), *e.shape[1:])
        return e[ids]

    @torch.no_grad()
    def __call__(self, latents: torch.Tensor, t, scheduler, fraction: float) -> torch.Tensor:
        """Model prediction for every frame (the model's own parameterisation), on ``latents.device``."""
        n = latents.shape[0]
        out = torch.empty_like(latents, dtype=torch.float32)
        cfg = self.negative_embeds is not None and self.guidance_scale != 1.0
        for a in range(0, n, self.batch_size):
            own = list(range(a, min(n, a + self.batch_size)))
            ids = own
            if self.cross_frame is not None:
                need = {f for i in own for f in pattern_frames(i, n, self.cross_frame.pattern)}
                ids = sorted(need | set(own))
            x = latents[ids].to(self.device, self.dtype)
            x = scheduler.scale_model_input(x, t)
            emb = self._embeds(self.prompt_embeds, ids)
            groups = 1
            if cfg:
                x = torch.cat([x, x])
                emb = torch.cat([self._embeds(self.negative_embeds, ids), emb])
                groups = 2
            emb = emb.to(self.device, self.dtype)
            if self.cross_frame is not None:
                self.cross_frame.set_frames(ids, n, groups)
            down, mid = None, None
            for unit in self.controlnets:
                if not unit.start <= fraction <= unit.end or unit.scale == 0:
                    continue
                img = unit.images[ids].to(self.device, self.dtype)
                if groups == 2:
                    img = torch.cat([img, img])
                d, m = unit.model(x, t, encoder_hidden_states=emb, controlnet_cond=img,
                                  conditioning_scale=unit.scale, return_dict=False)
                down = d if down is None else [p + q for p, q in zip(down, d)]
                mid = m if mid is None else mid + m
            pred = self.unet(x, t, encoder_hidden_states=emb, down_block_additional_residuals=down,
                             mid_block_additional_residual=mid, return_dict=False)[0].float()
            if cfg:
                un, co = pred.chunk(2)
                pred = un + self.guidance_scale * (co - un)
            keep = [ids.index(i) for i in own]
            out[own] = pred[keep].to(out.device)
        if self.cross_frame is not None:
            self.cross_frame.clear()
        return out


def _alphas(scheduler, t, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    ac = getattr(scheduler, "alphas_cumprod", None)
    if ac is None:
        raise InputError(
            f"{type(scheduler).__name__} is not defined on alphas_cumprod; in-iteration deflicker needs one that is "
            "(DDIM, DDPM, PNDM, DPMSolverMultistep, UniPC, ...)"
        )
    a = ac[int(t)].to(like.device, torch.float64)
    return a.sqrt().float(), (1 - a).sqrt().float()


def split_prediction(pred: torch.Tensor, x_t: torch.Tensor, t, scheduler) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0_hat, eps) from a model prediction of the scheduler's ``prediction_type`` (eq 2)."""
    sa, sb = _alphas(scheduler, t, x_t)
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return (x_t - sb * pred) / sa, pred
    if kind == "v_prediction":
        return sa * x_t - sb * pred, sa * pred + sb * x_t
    if kind == "sample":
        return pred, (x_t - sa * pred) / sb
    raise InputError(f"prediction_type {kind!r} is not supported (epsilon, v_prediction, sample)")


def join_prediction(x0: torch.Tensor, x_t: torch.Tensor, t, scheduler) -> torch.Tensor:
    """The model prediction that yields ``x0`` at ``x_t`` (eq 6, in the scheduler's parameterisation)."""
    sa, sb = _alphas(scheduler, t, x_t)
    eps = (x_t - sa * x0) / sb
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return eps
    if kind == "v_prediction":
        return sa * eps - sb * x0
    return x0


@torch.no_grad()
def sample(
    denoiser: Callable,
    scheduler,
    codec,
    latents: torch.Tensor,
    timesteps: Sequence,
    schedule: DeflickerSchedule | None = None,
    deflicker: DeflickerFn | None = default_deflicker,
    guide: torch.Tensor | None = None,
    progress: bool = False,
    on_step: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Denoise ``latents`` ``(T, 4, h, w)`` over ``timesteps``, deflickering at the scheduled steps.

    denoiser(latents, t, scheduler, fraction) -> model prediction; codec: ``encode``/``decode``
    between ``(T, 3, H, W)`` frames in [0, 1] and latents (:class:`~.codec.VAECodec`).
    """
    schedule = schedule or DeflickerSchedule(frequency=None)
    steps = list(timesteps)
    it = steps
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(steps, desc="sampling", unit="step", dynamic_ncols=True)
    for s, t in enumerate(it):
        pred = denoiser(latents, t, scheduler, s / max(1, len(steps) - 1))
        if deflicker is not None and schedule.at(s + 1):
            x0, _ = split_prediction(pred, latents, t, scheduler)  # eq 2
            frames = codec.decode(x0)  # eq 3
            frames = deflicker(frames, guide, schedule.window)  # eq 4
            x0_bar = codec.encode(frames, out_device=latents.device)  # eq 5
            pred = join_prediction(x0_bar, latents, t, scheduler)  # eq 6
        latents = scheduler.step(pred, t, latents, return_dict=False)[0]  # eq 7
        if on_step is not None:
            on_step(s + 1, latents)
    return latents
