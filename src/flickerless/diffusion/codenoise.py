"""Temporal co-denoising of overlapping clips (Gen-L-Video; long-video framework eqs 17-19).

The video ``v_t`` of T frames is seen as N short clips of K frames, ``P_i(v_t) = v_t[S*i : S*i + K]``
(eq 18), the last clip aligned to the end of the video so that no frame is left out; each clip is
denoised as a short video of its own, with its own prompt ``h^i`` and cross-frame attention within
the clip, and the clips are merged every step by the solution of eq 19,

    v_{t-1}[j] = sum_i W_i[j] v_{t-1}^i[j] / sum_i W_i[j]      (over the clips i that hold frame j)

with per-frame weights W_i (flat, or a pyramid that favours the middle of a clip).

What is merged: the model predictions (eps, v or x0, whichever the model gives). All clips share the
same ``x_t``, and a scheduler step is linear in the model prediction with coefficients that depend
only on the timestep (DDIM with eta = 0, and the multistep solvers, whose histories are then the
merged histories), so the weighted mean of the predictions stepped once equals the weighted mean of
the clips' own ``v_{t-1}^i``, i.e. eq 19 exactly; since x0-hat and eps are both affine in the
prediction at fixed ``x_t``, it is also the merge of x0-hat. Merging before the step keeps one
scheduler state for the video, and lets the DiffSynth in-iteration deflicker (eqs 2-7) run on the
merged prediction at its steps: :func:`~.sampler.sample` takes a :class:`CoDenoiser` wherever it
takes a :class:`~.sampler.Denoiser`.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Sequence, Union

import torch

from ..errors import InputError
from .sampler import Clip, Denoiser

log = logging.getLogger("flickerless")

__all__ = ["ClipPlan", "plan_clips", "clip_weights", "merge_weights", "frame_prompts", "clip_prompts", "CoDenoiser"]

Merge = Union[str, Sequence[float], torch.Tensor]
PromptRanges = Sequence[tuple[int, "int | None", str]]


@dataclass(frozen=True)
class ClipPlan:
    """The clips of a video: ``starts[i]`` is clip i's first frame; every clip has ``length`` frames
    (``min(K, T)``); ``clip_length``: the K asked for (``None``: ``length``)."""

    num_frames: int
    length: int
    stride: int
    starts: tuple[int, ...]
    clip_length: int | None = None

    @property
    def spans(self) -> list[tuple[int, int]]:
        """``[(start, end), ...]``, end exclusive."""
        return [(s, s + self.length) for s in self.starts]

    def __len__(self) -> int:
        return len(self.starts)


def plan_clips(num_frames: int, length: int, stride: int | None = None) -> ClipPlan:
    """Clips of ``length`` K frames every ``stride`` S frames (eq 18), the last one aligned to the end
    of the video so that every frame is covered; K >= T gives one clip. S defaults to K // 2.
    S > K would leave frames between clips uncovered and is an error."""
    for name, v in (("num_frames", num_frames), ("clip_length", length)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise InputError(f"{name} must be a positive integer, got {v!r}")
    if stride is None:
        stride = max(1, length // 2)
    if not isinstance(stride, int) or isinstance(stride, bool) or stride < 1:
        raise InputError(f"clip_stride must be a positive integer, got {stride!r}")
    if stride > length:
        raise InputError(
            f"clip_stride {stride} is larger than clip_length {length}: frames between clips would not be "
            f"denoised; use a stride <= {length} (a stride < the length makes the clips overlap)"
        )
    k = min(length, num_frames)
    starts = list(range(0, num_frames - k, stride)) + [num_frames - k]
    return ClipPlan(num_frames, k, stride, tuple(starts), length)


def clip_weights(length: int, merge: Merge = "pyramid") -> torch.Tensor:
    """Unnormalised weights ``(length,)`` of a clip's frames: ``"flat"`` (all 1), ``"pyramid"``
    (1, 2, ..., peak, ..., 2, 1: a clip's middle frames count more than its edges, so the seams
    between clips blend), or explicit positive weights (one per frame of a clip)."""
    if isinstance(merge, str):
        if merge == "flat":
            return torch.ones(length, dtype=torch.float64)
        if merge == "pyramid":
            k = torch.arange(length, dtype=torch.float64)
            return torch.minimum(k + 1, length - k)
        raise InputError(f"merge must be 'flat', 'pyramid' or {length} weights, got {merge!r}")
    w = torch.as_tensor(merge, dtype=torch.float64).flatten()
    if w.numel() != length or not torch.isfinite(w).all() or (w <= 0).any():
        raise InputError(f"merge weights must be {length} positive numbers (one per frame of a clip), got {merge!r}")
    return w


def merge_weights(plan: ClipPlan, merge: Merge = "pyramid") -> list[torch.Tensor]:
    """Each clip's weights ``(K,)`` float32, normalised so that the weights of all clips holding a
    frame sum to one for that frame (eq 19's denominator)."""
    # K weights for the K asked for: a video shorter than a clip is one clip of its T frames, which
    # takes the first T (any weights give one per frame there); they were refused as not T numbers
    w = clip_weights(plan.clip_length or plan.length, merge)[: plan.length]
    total = torch.zeros(plan.num_frames, dtype=torch.float64)
    for s, e in plan.spans:
        total[s:e] += w
    return [(w / total[s:e]).float() for s, e in plan.spans]


def frame_prompts(num_frames: int, prompt: str | Sequence[str] = "", prompt_ranges: PromptRanges | None = None) -> list[str]:
    """One prompt per frame from a prompt (or one per frame) and optional ranges
    ``[(start, end, text), ...]`` (frame indices, end exclusive, ``None``: the end of the video);
    frames outside every range keep ``prompt``. Overlapping ranges are an error."""
    base = [prompt] * num_frames if isinstance(prompt, str) else list(prompt)
    if len(base) != num_frames:
        raise InputError(f"{len(base)} prompts for {num_frames} frames: give one prompt or one per frame")
    if not prompt_ranges:
        return base
    owner = [None] * num_frames
    for r, item in enumerate(prompt_ranges):
        try:
            start, end, text = item
        except (TypeError, ValueError):
            raise InputError(f"prompt range {item!r} is not (start, end, text)") from None
        end = num_frames if end is None else end
        if not (isinstance(text, str) and isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= num_frames):
            raise InputError(f"prompt range {item!r} must be (start, end, text) with 0 <= start < end <= {num_frames}")
        for f in range(start, end):
            if owner[f] is not None:
                raise InputError(f"prompt ranges {prompt_ranges[owner[f]]!r} and {item!r} overlap at frame {f}")
            owner[f] = r
            base[f] = text
    if isinstance(prompt, str):
        say_unused_prompt(prompt, prompt_ranges, num_frames)
    return base


_SAID: set = set()  # (prompt, ranges, frames) already said: the CLI says it before the pipeline, fusion calls it n times


def say_unused_prompt(prompt: str, ranges, num_frames: int, where: str = "") -> None:
    """A range's text replaces the prompt for its frames: ranges over every frame dropped a given
    prompt (a fine-tune's instance token, "sks man") without a word. Said once for each prompt and
    ranges ``[(start, end or None, text), ...]``; ``where``: a prefix naming the settings."""
    ranges = [(a, num_frames if b is None else b, text) for a, b, text in ranges or ()]
    covered = set()
    for a, b, _ in ranges:
        covered.update(range(a, b))
    key = (prompt, tuple(ranges), num_frames)
    if prompt and ranges and len(covered) >= num_frames and key not in _SAID:
        _SAID.add(key)
        log.warning("%sthe prompt %r is used for no frame: prompt_ranges cover every frame, and a range's text "
                    "replaces the prompt; write the whole prompt in each range (e.g. %r)", where, prompt,
                    f"{prompt} {ranges[0][2]}")


def clip_prompts(prompts: Sequence[str], plan: ClipPlan) -> list[str]:
    """One prompt per clip (Gen-L-Video's h^i): the prompt of most of the clip's frames (ties: the
    one that comes first in the clip)."""
    out = []
    for s, e in plan.spans:
        counts = Counter(prompts[s:e])
        best = max(counts.values())
        out.append(next(p for p in prompts[s:e] if counts[p] == best))
    return out


class CoDenoiser:
    """A denoiser over overlapping clips: called like a :class:`~.sampler.Denoiser`
    (``latents (T, 4, h, w), t, scheduler, fraction -> prediction``), it predicts every clip with its
    own prompt embeddings and returns the per-frame weighted mean of the clips' predictions.

    clip_embeds: per clip ``(1, L, D)`` prompt embeddings (``None`` entries, or no list: the
    denoiser's own). The denoiser's negative embeddings, ControlNets, batch size and cross-frame
    attention apply to every clip; ControlNet frames and per-frame embeddings are taken by video
    frame. Only the latents and one ``(T, 4, h, w)`` accumulator exist per step; the clips' frames
    go through the UNet in the denoiser's batches.
    """

    def __init__(self, denoiser: Denoiser, plan: ClipPlan, merge: Merge = "pyramid",
                 clip_embeds: Sequence[torch.Tensor | None] | None = None):
        if clip_embeds is not None and len(clip_embeds) != len(plan):
            raise InputError(f"{len(clip_embeds)} clip prompt embeddings for {len(plan)} clips")
        self.denoiser = denoiser
        self.plan = plan
        embeds = list(clip_embeds) if clip_embeds is not None else [None] * len(plan)
        self.clips = [Clip(s, e, prompt_embeds=emb, weights=w)
                      for (s, e), emb, w in zip(plan.spans, embeds, merge_weights(plan, merge))]

    def __call__(self, latents: torch.Tensor, t, scheduler, fraction: float) -> torch.Tensor:
        if latents.shape[0] != self.plan.num_frames:
            raise InputError(f"{latents.shape[0]} latent frames for a clip plan of {self.plan.num_frames} frames")
        return self.denoiser(latents, t, scheduler, fraction, clips=self.clips)
