"""``VideoPipeline``: an image diffusion model turned into a video pipeline (DiffSynth).

Built from components (or ``from_pretrained``), called with the input video (or none), prompts,
control frames per ControlNet and per T2I-Adapter, the deflicker schedule, steps, guidance, seed and size; returns the
frames ``(T, 3, H, W)`` float in [0, 1] on the CPU.
"""

from __future__ import annotations

import logging
import os
from typing import Sequence

import torch
import torch.nn.functional as F

from ..errors import InputError, check_unit_range
from . import layout
from .attention import PATTERN, CrossFrameAttention, bind_cross_frame_attention, enable_cross_frame_attention
from .codec import VAECodec
from .codenoise import CoDenoiser, Merge, PromptRanges, clip_prompts, frame_prompts, plan_clips
from .fusion import average_fusion
from .models import Components, check_adapter_fits, expand_embedding_tokens, load_components
from .sampler import (AdapterUnit, ControlNetUnit, DeflickerSchedule, Denoiser, check_scheduler, default_deflicker,
                      fixed_noise, remembering_deflicker, sample)

log = logging.getLogger("flickerless")

__all__ = ["VideoPipeline", "check_size"]


def check_size(height: int, width: int, multiple: int) -> None:
    """Raise an error naming the nearest valid size when ``height``/``width`` are not multiples."""
    if height % multiple or width % multiple or height <= 0 or width <= 0:
        near = lambda v: max(multiple, int(round(v / multiple)) * multiple)  # noqa: E731
        raise InputError(
            f"size {width}x{height} is not a multiple of {multiple} in both sides; nearest valid size: "
            f"{near(width)}x{near(height)}"
        )


def _sharpen(frames: torch.Tensor, amount: float) -> torch.Tensor:
    if amount <= 0:
        return frames
    k = torch.tensor([1.0, 2.0, 1.0])
    k = (k[:, None] * k[None, :] / 16).to(frames).expand(3, 1, 3, 3)
    blur = F.conv2d(F.pad(frames, (1, 1, 1, 1), mode="replicate"), k, groups=3)
    return (frames + amount * (frames - blur)).clamp(0, 1)


def _contrast(frames: torch.Tensor, amount: float) -> torch.Tensor:
    if amount == 1.0:
        return frames
    mean = frames.mean(dim=(1, 2, 3), keepdim=True)
    return ((frames - mean) * amount + mean).clamp(0, 1)


def denoising_steps(steps: int, strength: float = 1.0) -> int:
    """How many of ``steps`` an img2img run at ``strength`` takes (all of them at strength 1)."""
    return steps if strength >= 1.0 else steps - min(steps - 1, int(round(steps * (1 - strength))))


def check_deflicker_steps(at, steps: int, strength: float = 1.0) -> None:
    """Explicit deflicker steps ``at`` (1-based) past the steps a run takes would never run, without a
    word: an :class:`InputError` that says how many it takes."""
    total = denoising_steps(steps, strength)
    past = sorted(k for k in (at or ()) if k > total)
    if past:
        raise InputError(f"deflicker steps {', '.join(map(str, past))} are past the {total} denoising steps this run "
                         f"takes ({steps} steps" + (f" at strength {strength:g}" if total < steps else "")
                         + f"): give deflicker steps up to {total} (--set deflicker.steps=[...])")


class VideoPipeline:
    def __init__(self, components: Components, device=None, cross_frame: Sequence[str] | None = PATTERN,
                 batch_size: int = 8, vae_batch_size: int = 4, channels_last: bool | None = None):
        """``channels_last``: run the UNet, ControlNets and VAE in channels-last memory with the
        Triton GroupNorm of :mod:`.layout` (same values to fp16 rounding, faster on CUDA); ``None``:
        on CUDA when Triton is there."""
        self.c = components
        if device is not None:
            from ..blend.deflicker import resolve_device

            device = resolve_device(device)  # one that is not there: said here, not deep in the first call
        self.device = device if device is not None else next(components.unet.parameters()).device
        self.batch_size = batch_size
        if channels_last is None:
            channels_last = self.device.type == "cuda" and layout.available()
        if channels_last:
            for m in [components.unet, *components.controlnets, components.vae]:
                layout.to_channels_last(m)
        self.codec = VAECodec(components.vae, vae_batch_size)
        for k, ad in enumerate(components.adapters):
            check_adapter_fits(components.unet, ad, f"adapter {k}", vae_factor=self.codec.factor)
        self.cross_frame = None
        if cross_frame:
            self.cross_frame = CrossFrameAttention(cross_frame)
            for m in [components.unet, *components.controlnets]:
                enable_cross_frame_attention(m, self.cross_frame)

    @classmethod
    def from_pretrained(cls, model: str, controlnets: Sequence[str] = (), device=None, dtype=None,
                        adapters: Sequence[str] = (), **kw):
        """``controlnets`` / ``adapters``: ControlNet and T2I-Adapter repo ids or folders (one may be given
        alone). A misspelt argument, or a ControlNet or T2I-Adapter that loading would not find, is said
        before the base model loads (after it, tens of seconds on a real model; the keyword was said to
        be ``__init__``'s)."""
        import inspect

        from ..errors import unknown_options
        from ..weights import check_available

        loading = ("lora", "textual_inversion", "config")
        load_kw = {k: kw.pop(k) for k in loading if k in kw}
        init = set(inspect.signature(cls.__init__).parameters) - {"self", "components"}
        own = set(inspect.signature(cls.from_pretrained).parameters) - {"kw"}
        unknown_options(kw, init | own | set(loading), "argument")
        # one path was read a character at a time
        controlnets, adapters = ([m] if isinstance(m, (str, os.PathLike)) else list(m) for m in (controlnets, adapters))
        for what, names in (("ControlNet", controlnets), ("T2I-Adapter", adapters)):
            for m in names:
                check_available(str(m), what, f"Give a {what} repo id or a local diffusers folder (config.json and "
                                "weights)", index_file="config.json")
        return cls(load_components(model, [str(m) for m in controlnets], device=device, dtype=dtype,
                                   adapters=[str(m) for m in adapters],
                                   **load_kw), device, **kw)

    @property
    def size_multiple(self) -> int:
        return self.codec.factor

    @torch.no_grad()
    def encode_prompt(self, prompt, num_frames: int) -> torch.Tensor:
        """``(1 or T, L, D)`` text embeddings for one prompt or one per frame."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if len(prompts) not in (1, num_frames):
            raise InputError(f"{len(prompts)} prompts for {num_frames} frames: give one prompt or one per frame")
        prompts = [expand_embedding_tokens(p, self.c.tokenizer) for p in prompts]
        tok = self.c.tokenizer(prompts, padding="max_length", max_length=self.c.tokenizer.model_max_length,
                               truncation=True, return_tensors="pt")
        return self.c.text_encoder(tok.input_ids.to(self.device))[0]

    @torch.no_grad()
    def __call__(
        self,
        video: torch.Tensor | None = None,
        prompt="",
        negative_prompt="",
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        steps: int = 20,
        guidance_scale: float = 7.5,
        strength: float = 1.0,
        seed: int = 0,
        controls: Sequence[torch.Tensor] = (),
        control_scales: Sequence[float] | None = None,
        control_ranges: Sequence[tuple[float, float]] | None = None,
        schedule: DeflickerSchedule | None = None,
        deflicker=default_deflicker,
        final_window: int | None = 0,
        contrast: float = 1.0,
        sharpen: float = 0.0,
        progress: bool = False,
        on_frame=None,
        prompt_ranges: PromptRanges | None = None,
        clip_length: int | None = None,
        clip_stride: int | None = None,
        merge: Merge = "pyramid",
        latents: torch.Tensor | None = None,
        start_step: int = 0,
        end_step: int | None = None,
        output_type: str = "frames",
        control_cond_only: Sequence[bool] | None = None,
        on_step=None,
        adapter_controls: Sequence[torch.Tensor] = (),
        adapter_scales: Sequence[float] | None = None,
        adapter_ranges: Sequence[tuple[float, float]] | None = None,
        adapter_cond_only: Sequence[bool] | None = None,
    ) -> torch.Tensor:
        """video: ``(T, 3, H, W)`` in [0, 1] or None (then ``num_frames``, ``height``, ``width``).
        controls: one ``(T, 3, H, W)`` tensor in [0, 1] per ControlNet. ``final_window``: window of a
        last deflicker pass on the decoded frames (0: none, None: whole video). ``on_frame(i, frame)``
        receives each finished frame ``(3, H, W)`` in order, as soon as it is final (as it is decoded
        when there is no final pass), e.g. to write it to disk.

        Long videos: ``prompt_ranges`` ``[(start, end, text), ...]`` (frames, end exclusive, ``None``:
        to the end) set the prompt of time ranges (other frames keep ``prompt``). ``clip_length`` K
        turns on temporal co-denoising (:mod:`.codenoise`): overlapping clips of K frames every
        ``clip_stride`` S frames (default K // 2; the last clip ends at the last frame), each clip
        denoised as a short video with one prompt (the prompt of most of its frames) and cross-frame
        attention within the clip, merged every step with ``merge`` weights ("pyramid", "flat" or K
        numbers); the deflicker schedule then runs on the merged video.

        Partial runs (average fusion): ``end_step`` k stops after k of this run's denoising steps
        (those left after ``strength``) and ``output_type="latents"`` returns the latents
        ``(T, 4, h, w)`` on the CPU instead of frames; ``latents`` with ``start_step`` k continues
        from step-k latents (e.g. :func:`.fusion.average_fusion`'s) through the remaining steps.

        ``control_cond_only``: per ControlNet, whether its residuals reach the conditional branch of
        classifier-free guidance only (the shuffle ControlNet). ``on_step(step, latents)`` sees the
        latents after every step (numbered in the whole run), e.g. to save them: a run continued
        with ``latents`` and ``start_step`` from there gives the same frames (DDIM), given the
        deflicker's state at that step too. The default F refines the PatchMatch fields of its last
        pass, kept in a :class:`~flickerless.blend.deflicker.MatchCache` that each call starts empty;
        to continue exactly, run with ``deflicker=F = remembering_deflicker()``, save
        ``F.matches.state_dict()`` with the latents, and continue with
        ``deflicker=remembering_deflicker(matches=cache)``, ``cache`` a ``MatchCache`` loaded with
        ``load_state_dict`` (what ``flickerless run --resume`` does with matches.pt).

        T2I-Adapters (``adapters=`` of :meth:`from_pretrained`): ``adapter_controls`` one ``(T, 3, H, W)``
        tensor in [0, 1] per adapter, ``adapter_scales``, ``adapter_ranges`` and ``adapter_cond_only`` as
        for ControlNets. Their features are computed once per frame and added inside the UNet's down
        blocks (:class:`.sampler.AdapterUnit`); several adapters sum, and they combine with ControlNets."""
        check_scheduler(self.c.scheduler)
        video = _frames_in(video, "video")
        controls = [_frames_in(c, f"control video {k}") for k, c in enumerate(controls)]
        adapter_controls = [_frames_in(c, f"adapter control video {k}") for k, c in enumerate(adapter_controls)]
        _check_call(num_frames=num_frames, height=height, width=width, steps=steps, seed=seed, prompt=prompt,
                    guidance_scale=guidance_scale, contrast=contrast, sharpen=sharpen, final_window=final_window)
        for name, given, n in (("control_scales", control_scales, len(controls)),
                               ("control_ranges", control_ranges, len(controls)),
                               ("control_cond_only", control_cond_only, len(controls)),
                               ("adapter_scales", adapter_scales, len(adapter_controls)),
                               ("adapter_ranges", adapter_ranges, len(adapter_controls)),
                               ("adapter_cond_only", adapter_cond_only, len(adapter_controls))):
            if given is not None and len(given) != n:  # zip dropped the extra, [] fell back to the defaults
                raise InputError(f"{name}: {len(given)} given for {n} control videos: one each")
        for name, ranges_ in (("control_ranges", control_ranges), ("adapter_ranges", adapter_ranges)):
            for k, (a, b) in enumerate(ranges_ or ()):
                if not 0 <= a <= b <= 1:
                    raise InputError(f"{name}[{k}] = ({a}, {b}): a range is (start, end) fractions of the run, "
                                     "0 <= start <= end <= 1 (else it never applies)")
        prompt = "" if prompt is None else prompt
        negative_prompt = "" if negative_prompt is None else negative_prompt  # as prompt: it was a TypeError
        if video is not None:
            num_frames, _, height, width = video.shape
        if not num_frames or not height or not width:
            raise InputError("give a video, or num_frames, height and width")
        check_size(height, width, self.size_multiple)
        if len(controls) != len(self.c.controlnets):
            raise InputError(f"{len(self.c.controlnets)} ControlNets loaded but {len(controls)} control videos given")
        for k, ctl in enumerate(controls):
            if tuple(ctl.shape) != (num_frames, 3, height, width):
                raise InputError(f"control video {k} is {tuple(ctl.shape)}, expected {(num_frames, 3, height, width)}")
        if len(adapter_controls) != len(self.c.adapters):
            raise InputError(f"{len(self.c.adapters)} T2I-Adapters loaded but {len(adapter_controls)} adapter control "
                             "videos given (adapter_controls=...)")
        for k, ctl in enumerate(adapter_controls):
            if tuple(ctl.shape) != (num_frames, 3, height, width):
                raise InputError(f"adapter control video {k} is {tuple(ctl.shape)}, expected "
                                 f"{(num_frames, 3, height, width)}")
        if not 0 < strength <= 1:
            raise InputError(f"strength must be in (0, 1], got {strength}")
        scales = list(control_scales or [1.0] * len(controls))
        ranges = list(control_ranges or [(0.0, 1.0)] * len(controls))
        cond_only = list(control_cond_only or [False] * len(controls))
        units = [ControlNetUnit(m, c, s, a, b, o)
                 for m, c, s, (a, b), o in zip(self.c.controlnets, controls, scales, ranges, cond_only)]
        n = len(adapter_controls)
        adapters = [AdapterUnit(m, c, s, a, b, o) for m, c, s, (a, b), o in zip(
            self.c.adapters, adapter_controls, list(adapter_scales or [1.0] * n),
            list(adapter_ranges or [(0.0, 1.0)] * n), list(adapter_cond_only or [False] * n))]
        if output_type not in ("frames", "latents"):
            raise InputError(f"output_type must be 'frames' or 'latents', got {output_type!r}")
        co = clip_length is not None
        prompts = frame_prompts(num_frames, prompt, prompt_ranges) if (co or prompt_ranges) else prompt
        clip_embeds = None
        if co:
            plan = plan_clips(num_frames, clip_length, clip_stride)
            per_clip = clip_prompts(prompts, plan)
            unique = list(dict.fromkeys(per_clip))
            embs = self.encode_prompt(unique, len(unique))
            clip_embeds = [embs[unique.index(p)].unsqueeze(0) for p in per_clip]
            cond = clip_embeds[0]
            log.info("co-denoising %d frames as %d clips of %d (stride %d, %s merge)", num_frames, len(plan),
                     plan.length, plan.stride, merge if isinstance(merge, str) else "custom")
        else:
            cond = self.encode_prompt(prompts, num_frames)
        uncond = self.encode_prompt(negative_prompt, num_frames) if guidance_scale != 1.0 else None
        for m in [self.c.unet, *self.c.controlnets]:  # another pipeline on these models may have rebound them
            bind_cross_frame_attention(m, self.cross_frame)
        den = Denoiser(self.c.unet, cond, uncond, guidance_scale, units, self.batch_size, self.cross_frame, adapters)
        if co:
            den = CoDenoiser(den, plan, merge, clip_embeds)
        sched = self.c.scheduler
        trained = sched.config.num_train_timesteps
        if not 1 <= steps <= trained:  # diffusers' ValueError came after the annotation
            raise InputError(f"steps must be 1 to {trained} (the noise levels the model was trained on), got {steps}: "
                             "--set sampling.steps=N")
        sched.set_timesteps(steps)
        timesteps = sched.timesteps
        if len(timesteps) != steps:  # the loop takes one model call per step
            # (the supported schedulers take one model call a step: this is their spacing's rounding at this
            # count, e.g. DDIM with timestep_spacing "trailing" at 61 steps; it advised DDIM to a DDIM run)
            spacing = getattr(sched.config, "timestep_spacing", None)
            raise InputError(f"{type(sched).__name__} made {len(timesteps)} timesteps for {steps} steps (its timestep "
                             f"spacing {spacing!r} at this count): choose another number of steps, e.g. "
                             f"--set sampling.steps={steps - 1}")
        f = self.size_multiple
        total = denoising_steps(steps, strength if video is not None else 1.0)
        timesteps = timesteps[steps - total:]
        check_deflicker_steps(schedule.steps if schedule is not None else None, steps, strength if video is not None else 1.0)
        end = total if end_step is None else end_step
        if not 0 <= start_step <= end <= total:
            raise InputError(f"need 0 <= start_step ({start_step}) <= end_step ({end_step}) <= {total} (the steps of this run)")
        if hasattr(sched, "set_begin_index"):  # where sigma-based schedulers start (img2img, a continued run)
            sched.set_begin_index(steps - total + start_step)
        shape = (num_frames, 4, height // f, width // f)
        if latents is not None:
            if tuple(latents.shape) != shape:
                raise InputError(f"latents are {tuple(latents.shape)}, expected {shape}")
            latents = latents.float()
        elif start_step:
            raise InputError(f"start_step {start_step} needs the latents at that step (latents=...)")
        else:
            noise = fixed_noise(num_frames, shape[1:], seed)
            if video is None or strength >= 1.0:
                latents = noise * sched.init_noise_sigma
            else:
                x0 = self.codec.encode(video.float(), out_device="cpu")
                latents = sched.add_noise(x0, noise, timesteps[:1])  # the same noise on every frame
        if deflicker is default_deflicker:  # this call's passes share their PatchMatch fields
            deflicker = remembering_deflicker()
        latents = sample(den, sched, self.codec, latents, timesteps[start_step:end], schedule, deflicker, video,
                         progress, on_step=on_step, step_offset=start_step, total_steps=total, seed=seed)
        _check_latents(latents, guidance_scale, self.dtype)
        if output_type == "latents":
            return latents.cpu()
        final_pass = final_window != 0 and deflicker is not None
        finish = lambda x: _sharpen(_contrast(x, contrast), sharpen)  # noqa: E731
        out = []
        for a in range(0, num_frames, self.codec.batch_size):
            part = self.codec.decode(latents[a : a + self.codec.batch_size], out_device="cpu")
            _check_latents(part, guidance_scale, self.dtype, "decoding", first=a)  # finite but huge latents overflow here
            if not final_pass:
                part = finish(part)
                for k, fr in enumerate(part):
                    if on_frame is not None:
                        on_frame(a + k, fr)
            out.append(part)
        frames = torch.cat(out)
        if final_pass:
            frames = finish(deflicker(frames, video, final_window))
            for i, fr in enumerate(frames):
                if on_frame is not None:
                    on_frame(i, fr)
        return frames

    @property
    def dtype(self) -> torch.dtype:
        return next(self.c.unet.parameters()).dtype

    @torch.no_grad()
    def average_fusion(self, masks: torch.Tensor, seeds: Sequence[int], fusion_step: int, chosen: int = 0,
                       w1: float = 1.0, w2: float = 1.0, **kw) -> torch.Tensor:
        """Average fusion (long-video framework eqs 10-12): denoise one candidate per seed to step
        ``fusion_step`` k, fuse them by eq 11 (:func:`.fusion.average_fusion`: the background areas
        averaged, ``seeds[chosen]``'s foreground kept, weights ``w1``, ``w2``) and denoise the fused
        latents through the remaining steps. masks: foreground ``(T, H, W)`` or ``(n, T, H, W)`` in
        [0, 1] at image size (e.g. from :func:`flickerless.segment.segment`). ``kw``: as for
        :meth:`__call__` (video, prompt, steps, co-denoising, ...). Returns frames ``(T, 3, H, W)``."""
        seeds = list(seeds)
        if not seeds:
            raise InputError("average fusion needs at least one seed")
        for key in ("seed", "latents", "start_step", "end_step", "output_type"):
            if key in kw:
                raise InputError(f"average_fusion sets {key!r} itself; do not pass it")
        candidates = torch.stack([self(seed=s, end_step=fusion_step, output_type="latents", **kw) for s in seeds])
        fused = average_fusion(candidates, masks, chosen, w1, w2)
        return self(seed=seeds[chosen], latents=fused, start_step=fusion_step, **kw)


def _frames_in(x, name: str):
    """A video or control video as ``(T, 3, H, W)`` float in [0, 1]: a uint8 tensor or a ``(T, H, W, 3)``
    uint8 (or [0, 1] float) array is converted; other layouts, types, values off [0, 1] (0-255 or [-1, 1]
    floats) and NaN are refused (they ran, into NaN or washed-out frames, or failed deep inside)."""
    import numpy as np

    if x is None:
        return None
    if isinstance(x, np.ndarray):
        if x.ndim != 4 or x.shape[-1] != 3:
            raise InputError(f"{name}: a numpy video is (T, H, W, 3), got shape {x.shape}")
        x = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{name}: expected a (T, 3, H, W) tensor in [0, 1], got {type(x).__name__}")
    if x.ndim != 4 or x.shape[1] != 3:
        raise InputError(f"{name}: expected (T, 3, H, W) with 3 colour channels, got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x.float() / 255
    if not x.is_floating_point():
        raise InputError(f"{name}: frames are floats in [0, 1] (or uint8), got {x.dtype}")
    if x.numel():
        lo, hi = (float(v) for v in torch.aminmax(x.detach()))
        check_unit_range(lo, hi, name)
        if lo < 0 or hi > 1:  # a resampler's overshoot
            x = x.clamp(0, 1)
    return x


def _check_call(**kw) -> None:
    """Arguments of :meth:`VideoPipeline.__call__` that failed deep inside (torch's TypeErrors, an
    overflow) or silently ran with NaN: said in one line."""
    import math
    import numbers

    def whole(v):
        return isinstance(v, numbers.Integral) and not isinstance(v, bool)

    for name in ("num_frames", "height", "width"):
        v = kw[name]
        if v is not None and not (whole(v) and v >= 1):
            raise InputError(f"{name} must be an integer >= 1, got {v!r}")
    if not (whole(kw["steps"]) and kw["steps"] >= 1):
        raise InputError(f"steps must be an integer >= 1, got {kw['steps']!r}")
    if not (whole(kw["seed"]) and -(2**63) <= kw["seed"] < 2**64):
        raise InputError(f"seed must be an integer from -2**63 to 2**64 - 1, got {kw['seed']!r}")
    p = kw["prompt"]
    if p is not None and not isinstance(p, str) and not (isinstance(p, (list, tuple)) and all(isinstance(t, str) for t in p)):
        raise InputError(f"prompt must be a string or a list of strings (one per frame), got {type(p).__name__}")
    def number(v):
        return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)

    for name, ok, what in (("guidance_scale", number(kw["guidance_scale"]), "a finite number"),
                           ("contrast", number(kw["contrast"]) and kw["contrast"] > 0, "a finite number > 0"),
                           ("sharpen", number(kw["sharpen"]) and kw["sharpen"] >= 0, "a finite number >= 0")):
        if not ok:
            raise InputError(f"{name} must be {what}, got {kw[name]!r}")
    if kw["final_window"] is not None:  # a bad one was found by the final pass, after all the sampling
        from ..blend.deflicker import normalize_window

        try:
            normalize_window(kw["final_window"])
        except InputError as e:
            raise InputError(f"final_{e}") from None


def _check_latents(latents: torch.Tensor, guidance_scale: float, dtype: torch.dtype, what: str = "denoising",
                   first: int = 0) -> None:
    """Latents that went NaN or infinite in the denoising (a guidance or ControlNet scale far too
    large, an fp16 overflow) decode to black frames, which were written as the output: said instead."""
    bad = ~torch.isfinite(latents.reshape(len(latents), -1).sum(1, dtype=torch.float32))
    if bool(bad.any()):
        frames = [first + i for i in bad.nonzero()[:, 0].tolist()]
        which = f"frames {frames[0]}..{frames[-1]}" if len(frames) > 1 else f"frame {frames[0]}"
        raise InputError(f"the {what} went NaN or infinite ({which}; guidance_scale "
                         f"{guidance_scale:g}, {str(dtype).replace('torch.', '')}): lower the guidance or ControlNet "
                         "scales, or run in float32 (--set 'model.dtype=\"float32\"')")
