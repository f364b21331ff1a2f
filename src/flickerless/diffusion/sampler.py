"""The sampling loop with latent in-iteration deflickering (DiffSynth eqs 2-7).

For T frames, at every step: predict noise for all frames (batched through the UNet and its
ControlNets, classifier-free guidance), and at deflicker steps

    x0_hat = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t)            (2)
    X_hat  = D(x0_hat)                                          (3)  VAE decode
    X_bar  = F(X_hat)                                           (4)  deflicker the video
    x0_bar = E(X_bar)                                           (5)  VAE encode, posterior mean
    eps_bar = (x_t - sqrt(a_t) x0_bar) / sqrt(1 - a_t)          (6)

then step the scheduler with the rebuilt prediction (eq 7 for DDIM). a_t is the noise level the
scheduler steps with: ``alphas_cumprod[t]`` for DDIM and DDPM, its ``sigmas`` (a_t = 1 / (1 + sigma^2))
for DPM-Solver and UniPC (Karras sigmas included), and for Euler, Euler-Ancestral and LMS, whose
latents are x0 + sigma eps, the same on x_t / sqrt(1 + sigma^2). Those are the schedulers supported
(:data:`SCHEDULERS`); others are refused (PNDM and Heun take more model calls than steps). The noise
that DDPM, Euler-Ancestral and SDE DPM-Solver add at each step is seeded, and the same for every frame.
Epsilon, v-prediction and sample-prediction models.

The deflicker schedule is data (:class:`DeflickerSchedule`); F is any callable
``F(frames (T, 3, H, W) in [0, 1], guide or None, window) -> frames``; by default
:func:`flickerless.deflicker` in table mode, guided by the input video, or by the decoded frames
themselves when there is none (text-to-video).
"""

from __future__ import annotations

import inspect
import logging
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from ..blend.frames import consecutive_runs
from ..errors import InputError, in_batches
from .attention import CrossFrameAttention, pattern_frames

log = logging.getLogger("flickerless")

__all__ = ["DeflickerSchedule", "ControlNetUnit", "AdapterUnit", "Clip", "Denoiser", "sample", "default_deflicker",
           "remembering_deflicker", "fixed_noise", "check_scheduler", "SCHEDULERS"]

DeflickerFn = Callable[[torch.Tensor, "torch.Tensor | None", "int | None"], torch.Tensor]


@dataclass
class DeflickerSchedule:
    """When to deflicker: every ``frequency`` steps starting at step 1 (5 of 20 -> 1, 6, 11, 16; 0 or
    None: never), or at the explicit 1-based ``steps``; ``window`` is handed to F (``None``: the whole
    video)."""

    frequency: int | None = 5
    steps: Sequence[int] | None = None
    window: int | None = None

    def __post_init__(self):
        # a negative frequency or a step 0 never deflickered, without a word
        if self.frequency is not None and (isinstance(self.frequency, bool) or not isinstance(self.frequency, int)
                                           or self.frequency < 0):
            raise InputError(f"frequency must be an integer >= 0 (0 or None: never), got {self.frequency!r}")
        if self.steps is not None and not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1
                                              for s in self.steps):
            raise InputError(f"steps are 1-based step numbers, got {list(self.steps)!r}")

    def at(self, step: int) -> bool:
        """Whether 1-based ``step`` is a deflicker step."""
        if self.steps is not None:
            return step in set(self.steps)
        if not self.frequency:
            return False
        return (step - 1) % self.frequency == 0

    def deflicker_steps(self, num_steps: int) -> list[int]:
        return [s for s in range(1, num_steps + 1) if self.at(s)]


def default_deflicker(frames: torch.Tensor, guide: torch.Tensor | None, window: int | None,
                      progress: bool = False, matches=None, **patchmatch_options) -> torch.Tensor:
    """F = patch blending in table mode, guided by the input video (or the frames themselves).

    Its intermediate images are kept on the GPU only within the headroom under the GPU's peak so
    far (half of peak minus what is allocated now: memory the denoiser already needed), the rest
    off the GPU, so the engine's peak GPU memory does not grow with T.
    ``progress``: a progress bar with time left for each pass; ``matches``: a
    :class:`~flickerless.blend.deflicker.MatchCache` shared by passes over this guide (see
    :func:`remembering_deflicker`); ``patchmatch_options``: as for
    :func:`flickerless.deflicker` (``patch_sizes``, ``iterations``, ...). Bind them with a closure or
    functools.partial."""
    from ..blend.deflicker import deflicker, resolve_device

    g = frames if guide is None else guide.to(frames.device, frames.dtype)
    budget = patchmatch_options.pop("device_budget", None)
    if budget is None:
        budget = peak_headroom(resolve_device(patchmatch_options.get("device"), frames)) if torch.cuda.is_available() else 0
    # plain means: weighted blending (deflicker's default) made the CPU engine demo less steady
    # (Pixel-MSE 41.9 against 38.5, BENCHMARKS.md); it stays an option here
    patchmatch_options.setdefault("error_sigma", None)
    # and no detail restoration: it too made the demo less steady (Pixel-MSE 41.5 against 38.5)
    patchmatch_options.setdefault("detail", False)
    return deflicker(g, frames, mode="table", window=window, device_budget=budget, progress=progress,
                     matches=matches, **patchmatch_options)


def remembering_deflicker(matches=None, **patchmatch_options) -> DeflickerFn:
    """:func:`default_deflicker` for one video job: its passes over the same guide share a
    :class:`~flickerless.blend.deflicker.MatchCache`, so every pass after the first refines the
    fields the last one found instead of searching from scratch (about 3x faster per pass, and
    slightly better: 0.2-0.3 dB on carphone and bikes, BENCHMARKS.md). Self-guided passes (no
    guide video: the frames guide themselves and change every pass) search from scratch. A guide
    in pageable host memory is staged once in pinned memory (up to ``STAGE_BYTES``) when CUDA is
    there, since every pass sends it to the GPU again. ``matches``: the cache to start from (a run
    continued from step k with the fields saved at step k, ``fn.matches.state_dict()``, gives the
    uninterrupted run's frames); ``None``: an empty one. It is ``fn.matches`` of the returned F."""
    from ..blend.deflicker import MatchCache

    matches = MatchCache() if matches is None else matches
    staged: list = [None, None]  # (the guide, its pinned copy)

    def deflicker_fn(frames, guide, window, **kwargs):
        if guide is not None and guide.device.type == "cpu" and not guide.is_pinned() and torch.cuda.is_available():
            # every pass reads the guide again: stage it once in pinned memory (as the control frames)
            if staged[0] is not guide:
                nbytes = guide.numel() * 4
                staged[:] = [guide, guide.to(torch.float32).pin_memory() if nbytes <= STAGE_BYTES else guide]
            guide = staged[1]
        return default_deflicker(frames, guide, window, matches=None if guide is None else matches,
                                 **{**patchmatch_options, **kwargs})

    deflicker_fn.matches = matches
    return deflicker_fn


def peak_headroom(device) -> int:
    """Half the bytes between ``device``'s peak allocated GPU memory so far and what is allocated now
    (0 off CUDA): what a step can use without raising the peak."""
    device = torch.device(device)
    if device.type != "cuda":
        return 0
    return max(0, (torch.cuda.max_memory_allocated(device) - torch.cuda.memory_allocated(device)) // 2)


@dataclass
class ControlNetUnit:
    """One ControlNet: the model, its control frames ``(T, 3, H, W)`` in [0, 1], its scale, the
    fraction of the denoising steps ``[start, end]`` during which it acts, and whether it acts on the
    conditional branch of classifier-free guidance only (``cond_only``: the shuffle ControlNet's
    style must not reach the unconditional prediction, or guidance would cancel it)."""

    model: torch.nn.Module
    images: torch.Tensor
    scale: float = 1.0
    start: float = 0.0
    end: float = 1.0
    cond_only: bool = False


@dataclass
class AdapterUnit(ControlNetUnit):
    """One T2I-Adapter (diffusers ``T2IAdapter``), with the fields of :class:`ControlNetUnit`. Its
    features are added inside the UNet's down blocks (``down_intrablock_additional_residuals``), as
    diffusers' StableDiffusionAdapterPipeline does.

    The features depend on the control frame only (not on x_t, t or the prompt), so each frame's are
    computed once and kept in host memory, unscaled, up to ``cache_bytes`` (about 4.7 MB per frame
    for SD 1.5 at 512x512 in fp16; the default holds ~400 such frames); frames past the budget are
    recomputed at every step, which costs an adapter pass (a small fraction of a UNet pass) instead of
    memory. Host memory rather than the GPU's, so that GPU memory does not grow with T; moving a
    batch's features to the GPU each step is cheap next to the UNet."""

    cache_bytes: int = 2 << 30
    _cache: dict = field(default_factory=dict, init=False, repr=False)
    _cached: int = field(default=0, init=False, repr=False)

    def features(self, ids: Sequence[int], device, dtype) -> list[torch.Tensor]:
        """The unscaled features of video frames ``ids``: one ``(len(ids), C_k, h_k, w_k)`` tensor per
        UNet down block, on ``device`` in ``dtype``."""
        fresh: dict[int, list[torch.Tensor]] = {}
        missing = [i for i in dict.fromkeys(ids) if i not in self._cache]
        if missing:
            p = next(self.model.parameters())
            img = self.images[missing].to(p.device, p.dtype)
            if self.model.config.in_channels == 1 and img.shape[1] != 1:  # grey adapters (canny, sketch)
                img = img.mean(1, keepdim=True)
            feats = self.model(img)
            for r, i in enumerate(missing):
                one = [f[r : r + 1] for f in feats]
                size = sum(f.numel() * f.element_size() for f in one)
                if self._cached + size <= self.cache_bytes:
                    one = [f.to("cpu", copy=True) for f in one]  # a copy: not a view pinning the batch
                    self._cache[i] = one
                    self._cached += size
                fresh[i] = one
        per = [fresh[i] if i in fresh else self._cache[i] for i in ids]
        return [torch.cat([f[k] for f in per]).to(device, dtype) for k in range(len(per[0]))]


STAGE_BYTES = 1 << 30  # per ControlNet: control frames staged in pinned host memory up to this size


def _repeat_output(module, inputs, output):
    times = getattr(module, "_flickerless_times", 1)
    return output if times == 1 else output.repeat(times, *([1] * (output.ndim - 1)))


def _share_cond_embedding(model) -> bool:
    """Let a diffusers ControlNet embed a control image once for both classifier-free-guidance
    branches: a forward hook on its ``controlnet_cond_embedding`` (a stack of convolutions at the
    image's full size) repeats the embedding along the batch while ``_flickerless_times`` is 2. The
    model's modules and state dict are unchanged. False for models without that embedding."""
    emb = getattr(model, "controlnet_cond_embedding", None)
    if not isinstance(emb, torch.nn.Module):
        return False
    if not getattr(emb, "_flickerless_hooked", False):
        emb.register_forward_hook(_repeat_output)
        emb._flickerless_hooked = True
    return True


@contextmanager
def _embedded_once(model, groups: int):
    """While inside, ``model`` (a ControlNet called on ``groups`` CFG branches) repeats its control
    image's embedding for every branch; yields whether it does (else the caller repeats the image)."""
    shared = groups > 1 and _share_cond_embedding(model)
    if not shared:
        yield False
        return
    model.controlnet_cond_embedding._flickerless_times = groups
    try:
        yield True
    finally:
        model.controlnet_cond_embedding._flickerless_times = 1


def fixed_noise(num_frames: int, shape: Sequence[int], seed: int, device="cpu", dtype=torch.float32) -> torch.Tensor:
    """The same Gaussian noise for every frame: ``(T, *shape)``, from a seeded CPU generator."""
    g = torch.Generator("cpu").manual_seed(int(seed))
    one = torch.randn(tuple(shape), generator=g, dtype=torch.float32)
    return one.unsqueeze(0).expand(num_frames, *shape).to(device, dtype).contiguous()


@dataclass
class Clip:
    """Frames ``[start, end)`` of the video denoised as one short video (temporal co-denoising).

    prompt_embeds / negative_embeds: ``(1 or T, L, D)`` (a ``T``-row tensor is indexed by video
    frame), ``None``: the denoiser's own. weights: ``(end - start,)`` the share of this clip's
    prediction in each of its frames (normalised across clips by the caller so that they sum to one
    per frame); ``None``: the clip's prediction is written as is (clips must then not overlap)."""

    start: int
    end: int
    prompt_embeds: torch.Tensor | None = None
    negative_embeds: torch.Tensor | None = None
    weights: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.end - self.start


@dataclass
class Denoiser:
    """UNet + ControlNets + T2I-Adapters + classifier-free guidance, run over a video in batches of frames.

    prompt_embeds / negative_embeds: ``(1 or T, L, D)``. With cross-frame attention a batch also
    carries the frames its frames attend to (first, neighbours), whose outputs are dropped.

    Called with ``clips`` (:class:`Clip`), it predicts each clip as a short video of its own (its
    prompt; cross-frame attention within the clip) and returns the weighted sum of the clips'
    predictions per frame. Frames of all clips are packed into the same batches of ``batch_size``,
    so memory does not depend on the clip layout; only the ``(T, ...)`` output accumulator is kept.
    """

    unet: torch.nn.Module
    prompt_embeds: torch.Tensor
    negative_embeds: torch.Tensor | None = None
    guidance_scale: float = 7.5
    controlnets: list[ControlNetUnit] = field(default_factory=list)
    batch_size: int = 8
    cross_frame: CrossFrameAttention | None = None
    adapters: list[AdapterUnit] = field(default_factory=list)
    _staged: dict = field(default_factory=dict, init=False, repr=False)

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

    def _batch_embeds(self, clips: list[Clip], keys: list[tuple[int, int]], negative: bool) -> torch.Tensor:
        """Embeddings for batch positions ``keys`` = (clip, frame in clip), sorted by clip."""
        parts = []
        for c in sorted({c for c, _ in keys}):
            frames = [clips[c].start + k for cc, k in keys if cc == c]
            own = clips[c].negative_embeds if negative else clips[c].prompt_embeds
            e = own if own is not None else (self.negative_embeds if negative else self.prompt_embeds)
            parts.append(self._embeds(e, frames))
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def _control_frames(self, unit: ControlNetUnit, ids: list[int]) -> torch.Tensor:
        """Control frames ``ids`` of ``unit`` on the device in the model's dtype.

        Every step moves every control frame to the GPU again (two ControlNets, 64 frames at
        512x960: 750 MB of float32 a step), so the frames are staged once per unit in the model's
        dtype, in pinned host memory when that copy fits ``STAGE_BYTES``, and sent as slices of
        consecutive frames (no gathered copy on the host)."""
        staged = self._staged.get(id(unit))
        if staged is None or staged[0] is not unit.images:
            src = unit.images
            nbytes = src[:1].numel() * src.shape[0] * torch.finfo(self.dtype).bits // 8
            if src.device.type == "cpu" and self.device.type == "cuda" and nbytes <= STAGE_BYTES:
                src = src.to(self.dtype).pin_memory()
            elif src.device == self.device:
                src = src.to(self.dtype)
            staged = (unit.images, src)
            self._staged[id(unit)] = staged
        return consecutive_runs(staged[1], ids, self.device).to(self.dtype)

    def _predict(self, latents, t, scheduler, fraction: float, clips: list[Clip], own: list, cfg: bool):
        """The model's prediction for the batch positions ``own`` (and the frames they attend to):
        ``(keys, pred)``, row r of ``pred`` being position ``keys[r]``."""
        keys = own
        if self.cross_frame is not None:
            need = {(c, f) for c, k in own for f in pattern_frames(k, len(clips[c]), self.cross_frame.pattern)}
            keys = sorted(need | set(own))
        ids = [clips[c].start + k for c, k in keys]  # video frames of the batch positions
        x = latents[ids].to(self.device, self.dtype)
        x = scheduler.scale_model_input(x, t)
        emb = self._batch_embeds(clips, keys, negative=False)
        groups = 1
        if cfg:
            x = torch.cat([x, x])
            emb = torch.cat([self._batch_embeds(clips, keys, negative=True), emb])
            groups = 2
        emb = emb.to(self.device, self.dtype)
        if self.cross_frame is not None:
            self.cross_frame.set_positions([(c, k, len(clips[c])) for c, k in keys], groups)
        down, mid = None, None
        for unit in self.controlnets:
            if not unit.start <= fraction <= unit.end or unit.scale == 0:
                continue
            img = self._control_frames(unit, ids)
            if groups == 2 and unit.cond_only:  # zero residuals on the unconditional half
                half = len(ids)
                with self.cross_frame.one_group() if self.cross_frame is not None else nullcontext():
                    d, m = unit.model(x[half:], t, encoder_hidden_states=emb[half:], controlnet_cond=img,
                                      conditioning_scale=unit.scale, return_dict=False)
                d = [torch.cat([torch.zeros_like(r), r]) for r in d]
                m = torch.cat([torch.zeros_like(m), m])
            else:
                with _embedded_once(unit.model, groups) as shared:  # both CFG branches: one image
                    if groups == 2 and not shared:
                        img = torch.cat([img, img])
                    d, m = unit.model(x, t, encoder_hidden_states=emb, controlnet_cond=img,
                                      conditioning_scale=unit.scale, return_dict=False)
            down = d if down is None else [p + q for p, q in zip(down, d)]
            mid = m if mid is None else mid + m
        intra = None  # T2I-Adapter features of the batch's frames, summed over adapters
        for unit in self.adapters:
            if not unit.start <= fraction <= unit.end or unit.scale == 0:
                continue
            feats = unit.features(ids, self.device, self.dtype)
            if tuple(feats[0].shape[-2:]) != tuple(x.shape[-2:]):
                raise InputError(
                    f"T2I-Adapter features are {tuple(feats[0].shape[-2:])} for latents {tuple(x.shape[-2:])}: "
                    "give control frames at the image size, and an adapter whose downscale_factor is the VAE's")
            feats = [f * unit.scale for f in feats]
            if groups == 2:  # both CFG branches, or zeros on the unconditional one
                feats = [torch.cat([torch.zeros_like(f) if unit.cond_only else f, f]) for f in feats]
            intra = feats if intra is None else [p + q for p, q in zip(intra, feats)]
        pred = self.unet(x, t, encoder_hidden_states=emb, down_block_additional_residuals=down,
                         mid_block_additional_residual=mid,
                         # the UNet pops from this list: a new list every call
                         down_intrablock_additional_residuals=None if intra is None else list(intra),
                         return_dict=False)[0].float()
        if cfg:
            un, co = pred.chunk(2)
            pred = un + self.guidance_scale * (co - un)
        return keys, pred

    @torch.no_grad()
    def __call__(self, latents: torch.Tensor, t, scheduler, fraction: float,
                 clips: Sequence[Clip] | None = None) -> torch.Tensor:
        """Model prediction for every frame (the model's own parameterisation), on ``latents.device``.
        ``clips``: see the class doc; ``None`` is one clip spanning the video."""
        n = latents.shape[0]
        clips = [Clip(0, n)] if clips is None else list(clips)
        for c in clips:
            if not 0 <= c.start < c.end <= n:
                raise InputError(f"clip [{c.start}, {c.end}) is outside the video's {n} frames")
        out = torch.zeros_like(latents, dtype=torch.float32)
        cfg = self.negative_embeds is not None and self.guidance_scale != 1.0
        positions = [(c, k) for c, clip in enumerate(clips) for k in range(len(clip))]

        def step(a, b):
            own = positions[a:b]
            keys, pred = self._predict(latents, t, scheduler, fraction, clips, own, cfg)
            row = {key: r for r, key in enumerate(keys)}
            for c in sorted({c for c, _ in own}):  # own positions of a clip are consecutive frames
                ks = [k for cc, k in own if cc == c]
                clip, f0, f1 = clips[c], clips[c].start + ks[0], clips[c].start + ks[-1] + 1
                p = pred[[row[(c, k)] for k in ks]].to(out.device)
                if clip.weights is None:
                    out[f0:f1] = p
                else:
                    w = clip.weights[ks[0] : ks[-1] + 1].to(out.device, out.dtype)
                    out[f0:f1] += w.view(-1, *[1] * (p.ndim - 1)) * p

        # a batch that does not fit the GPU is halved (and stays so for the steps after)
        try:
            self.batch_size = in_batches(len(positions), self.batch_size, step, "UNet",
                                         "--set sampling.batch_size={}")
        finally:  # also after an error or a stop: no layout of this batch left for the models' next caller
            if self.cross_frame is not None:
                self.cross_frame.clear()
        return out


# x_t = sqrt(a) x0 + sqrt(1 - a) eps with a = alphas_cumprod[t]
_BY_T = ("DDIMScheduler", "DDPMScheduler")
# the same, but a from the scheduler's own sigmas (Karras sigmas are not alphas_cumprod at the rounded t)
_BY_SIGMA = ("DPMSolverMultistepScheduler", "UniPCMultistepScheduler")
# x_t = x0 + sigma eps: the model sees x_t / sqrt(1 + sigma^2), the latent of the two above
_UNSCALED = ("EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler", "LMSDiscreteScheduler")
SCHEDULERS = _BY_T + _BY_SIGMA + _UNSCALED


def _family(scheduler) -> str | None:
    names = {c.__name__ for c in type(scheduler).__mro__}
    for family in (_BY_T, _BY_SIGMA, _UNSCALED):
        if names & set(family):
            return family[0]
    return None


def check_scheduler(scheduler) -> None:
    """Refuse a scheduler whose noise level the deflicker (eqs 2, 6) or the loop does not know: it ran,
    into wrong x0-hat (Euler-type taken as DDIM) or the wrong number of steps (PNDM, Heun)."""
    if _family(scheduler) is None:
        names = ", ".join(n.replace("Scheduler", "") for n in SCHEDULERS)
        raise InputError(f"{type(scheduler).__name__} is not supported by the video engine: use one of {names}")
    kind = scheduler.config.prediction_type
    if kind not in ("epsilon", "v_prediction", "sample"):
        raise InputError(f"prediction_type {kind!r} is not supported (epsilon, v_prediction, sample)")


def _step_index(scheduler, t) -> int:
    """The index in ``scheduler.sigmas`` of the step at ``t``, as the scheduler's ``step`` will take it."""
    if scheduler.step_index is not None:
        return int(scheduler.step_index)
    if scheduler.begin_index is not None:
        return int(scheduler.begin_index)
    return int(scheduler.index_for_timestep(t))


def _alphas(scheduler, t, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | float]:
    """(sqrt(a), sqrt(1 - a), c) of this step: c x_t = sqrt(a) x0 + sqrt(1 - a) eps."""
    check_scheduler(scheduler)
    family = _family(scheduler)
    if family in _BY_T:
        a = scheduler.alphas_cumprod[int(t)].to(like.device, torch.float64)
        return a.sqrt().float(), (1 - a).sqrt().float(), 1.0
    sigma = scheduler.sigmas[_step_index(scheduler, t)].to(like.device, torch.float64)
    sa = (1 + sigma * sigma).rsqrt()
    return sa.float(), (sigma * sa).float(), (sa.float() if family in _UNSCALED else 1.0)


def split_prediction(pred: torch.Tensor, x_t: torch.Tensor, t, scheduler) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0_hat, eps) from a model prediction of the scheduler's ``prediction_type`` (eq 2)."""
    sa, sb, c = _alphas(scheduler, t, x_t)
    z = x_t * c
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return (z - sb * pred) / sa, pred
    if kind == "v_prediction":
        return sa * z - sb * pred, sa * pred + sb * z
    return pred, (z - sa * pred) / sb


def join_prediction(x0: torch.Tensor, x_t: torch.Tensor, t, scheduler) -> torch.Tensor:
    """The model prediction that yields ``x0`` at ``x_t`` (eq 6, in the scheduler's parameterisation)."""
    sa, sb, c = _alphas(scheduler, t, x_t)
    eps = (x_t * c - sa * x0) / sb
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return eps
    if kind == "v_prediction":
        return sa * eps - sb * x0
    return x0


def _step_noise(scheduler, latents: torch.Tensor, seed: int, step: int) -> dict:
    """``generator=`` for ``scheduler.step``: one generator per frame, all seeded alike from (seed, step),
    so that the noise DDPM, Euler-Ancestral or an SDE solver adds is the same on every frame (as the
    initial noise) and the same again when a run is continued from this step (the multistep solvers'
    history of earlier steps is not carried into a new call: a continued DPM-Solver, UniPC or LMS run
    differs from the uninterrupted one)."""
    if "generator" not in inspect.signature(scheduler.step).parameters:
        return {}
    s = (int(seed) * 6364136223846793005 + step + 1) % (1 << 64)
    return {"generator": [torch.Generator("cpu").manual_seed(s) for _ in range(latents.shape[0])]}


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
    step_offset: int = 0,
    total_steps: int | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """Denoise ``latents`` ``(T, 4, h, w)`` over ``timesteps``, deflickering at the scheduled steps.

    denoiser(latents, t, scheduler, fraction) -> model prediction (a :class:`Denoiser`, or a
    :class:`~.codenoise.CoDenoiser` whose merged prediction of overlapping clips is then what gets
    deflickered); codec: ``encode``/``decode`` between ``(T, 3, H, W)`` frames in [0, 1] and
    latents (:class:`~.codec.VAECodec`).

    To run a part of a longer schedule (stop at step k, or continue from a fused latent at step k),
    pass that part's ``timesteps`` with ``step_offset`` = the number of steps before it and
    ``total_steps`` = the whole schedule's length: deflicker steps, ControlNet ranges and
    ``on_step`` numbers then count in the whole schedule. ``seed``: of the noise that stochastic
    schedulers add at each step.
    """
    check_scheduler(scheduler)
    schedule = schedule or DeflickerSchedule(frequency=None)
    steps = list(timesteps)
    total = total_steps if total_steps is not None else step_offset + len(steps)
    it = steps
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(steps, desc="sampling", unit="step", dynamic_ncols=True)
    for s, t in enumerate(it, start=step_offset):
        pred = denoiser(latents, t, scheduler, s / max(1, total - 1))
        if deflicker is not None and schedule.at(s + 1):
            x0, _ = split_prediction(pred, latents, t, scheduler)  # eq 2
            frames = codec.decode(x0)  # eq 3
            frames = deflicker(frames, guide, schedule.window)  # eq 4
            x0_bar = codec.encode(frames, out_device=latents.device)  # eq 5
            pred = join_prediction(x0_bar, latents, t, scheduler)  # eq 6
        try:
            latents = scheduler.step(pred, t, latents, return_dict=False, **_step_noise(scheduler, latents, seed, s))[0]  # eq 7
        except NotImplementedError as e:  # a combination the scheduler lacks (Euler-Ancestral with "sample")
            raise InputError(f"{type(scheduler).__name__} cannot step a model of prediction_type "
                             f"{scheduler.config.prediction_type!r} ({e}): choose another scheduler") from e
        if on_step is not None:
            on_step(s + 1, latents)
    return latents
