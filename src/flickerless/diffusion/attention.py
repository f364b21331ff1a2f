"""Cross-frame attention (DiffSynth "Other Modifications"): frame i's self-attention reads the keys
and values of frames [first, i-1, i, i+1] (pattern configurable), so frames share appearance.

The processor changes only where keys and values come from: it projects keys and values of every
frame in the UNet batch once, then gathers, for every frame, those of its pattern frames along the
token axis, and calls ``torch.nn.functional.scaled_dot_product_attention`` (flash / memory-efficient /
cuDNN kernels, as torch picks). No Python loop over frames.

The sampler tells the processors which video frame each batch position holds
(:meth:`CrossFrameAttention.set_frames`); frames a position needs but that are not in the batch fall
back to the position's own frame, so the sampler adds them to the batch as context.

Batching is exact only when a batch holds the whole video: attention layers chain frames (frame i
reads i-1 at every layer, and i-1 read i-2 at the layer before), so a context frame at the edge of a
batch sees fewer neighbours than it would in a whole-video pass. With one ring of context frames per
batch the difference is confined to the deeper layers of the batch-edge frames; larger batches
shrink it, and ``batch_size >= T`` removes it.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Sequence

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import AttnProcessor2_0

__all__ = ["CrossFrameAttention", "enable_cross_frame_attention", "pattern_frames"]

PATTERN = ("first", "prev", "self", "next")


def pattern_frames(i: int, num_frames: int, pattern: Sequence[str] = PATTERN) -> list[int]:
    """Video frames whose keys/values frame ``i`` attends to, clamped to the video."""
    pick = {"first": 0, "prev": max(0, i - 1), "self": i, "next": min(num_frames - 1, i + 1), "last": num_frames - 1}
    unknown = [p for p in pattern if p not in pick]
    if unknown:
        raise ValueError(f"unknown cross-frame pattern entries {unknown}; valid: {sorted(pick)}")
    return [pick[p] for p in pattern]


class CrossFrameAttention:
    """Shared state of the cross-frame processors of one model: the frame layout of the batch."""

    def __init__(self, pattern: Sequence[str] = PATTERN):
        pattern_frames(0, 1, pattern)  # validate
        self.pattern = tuple(pattern)
        self.index: torch.Tensor | None = None  # (B, K) batch positions whose tokens each position reads

    def set_frames(self, frame_ids: Sequence[int], num_frames: int, groups: int = 1) -> None:
        """The batch holds ``groups`` copies (CFG branches) of video frames ``frame_ids``, in order."""
        self.set_positions([(0, f, num_frames) for f in frame_ids], groups)

    def set_positions(self, positions: Sequence[tuple[int, int, int]], groups: int = 1) -> None:
        """The batch holds ``groups`` copies of ``positions``: ``(clip, frame in the clip, clip length)``.

        Each clip is a short video of its own (temporal co-denoising): a position reads the pattern
        frames of its own clip, indexed within the clip ("first" is the clip's first frame), so one
        batch may hold several clips, and the same video frame twice under two clips."""
        pos = {(c, f): k for k, (c, f, _) in enumerate(positions)}
        per_group = [[pos.get((c, f), k) for f in pattern_frames(i, n, self.pattern)] for k, (c, i, n) in enumerate(positions)]
        m = len(positions)
        rows = [[g * m + p for p in row] for g in range(groups) for row in per_group]
        self.index = torch.tensor(rows, dtype=torch.int64)
        self.group_size = m

    @contextmanager
    def one_group(self):
        """While inside, the batch holds one group of the positions (a model called on the conditional
        CFG branch alone: a cond-only ControlNet), not all of them."""
        full = self.index
        if full is not None:
            self.index = full[: self.group_size]
        try:
            yield
        finally:
            self.index = full

    def clear(self) -> None:
        self.index = None


class CrossFrameAttnProcessor:
    """Attention processor: cross-frame for self-attention, plain SDPA otherwise.

    Keys and values are projected once per batch position and then gathered for the pattern
    frames, rather than gathering the hidden states and projecting the pattern's K times as many
    tokens (the projections are per token, so the two are equal; this costs 1/K of the matmuls)."""

    def __init__(self, state: CrossFrameAttention):
        self.state = state
        self.sdpa = AttnProcessor2_0()

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        index = self.state.index
        plain = (
            encoder_hidden_states is not None
            or attention_mask is not None
            or index is None
            or hidden_states.ndim != 3
            or attn.group_norm is not None
            or attn.spatial_norm is not None
        )
        if not plain and index.shape[0] != hidden_states.shape[0]:
            # it fell back to plain attention without a word (a cond-only ControlNet ran so)
            raise RuntimeError(f"cross-frame layout of {index.shape[0]} batch positions for a batch of "
                               f"{hidden_states.shape[0]}: the caller set the wrong layout")
        if plain:
            return self.sdpa(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        b, n, _ = hidden_states.shape
        idx = index.to(hidden_states.device)
        heads = attn.heads

        def split(x):  # (b, n, heads * d) -> (b, heads, n, d)
            return x.view(b, n, heads, -1).transpose(1, 2)

        def gather(x):  # (b, heads, n, d) -> (b, heads, K * n, d): the pattern frames' tokens in a row
            g = x[idx.reshape(-1)].view(b, idx.shape[1], heads, n, -1)
            return g.transpose(1, 2).reshape(b, heads, idx.shape[1] * n, -1)

        q = split(attn.to_q(hidden_states))
        k = split(attn.to_k(hidden_states))
        v = split(attn.to_v(hidden_states))
        if attn.norm_q is not None:
            q = attn.norm_q(q)
        if attn.norm_k is not None:
            k = attn.norm_k(k)
        out = F.scaled_dot_product_attention(q, gather(k), gather(v), dropout_p=0.0, is_causal=False)
        out = out.transpose(1, 2).reshape(b, n, -1).to(q.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


def bind_cross_frame_attention(model, state: CrossFrameAttention | None) -> None:
    """Make ``model``'s self-attention layers read ``state`` (None: plain attention), changing only what
    differs. Pipelines built on one set of models each bind theirs before they run: the last one built had
    taken the layers, and an earlier one ran without cross-frame attention."""
    procs = getattr(model, "attn_processors", None)
    if procs is None:  # a model without diffusers' attention processors (a stand-in, a wrapper): as it is
        return
    attn1 = {n: p for n, p in procs.items() if n.endswith("attn1.processor")}
    if state is not None:
        if all(isinstance(p, CrossFrameAttnProcessor) and p.state is state for p in attn1.values()):
            return
        enable_cross_frame_attention(model, state)
    elif any(isinstance(p, CrossFrameAttnProcessor) for p in attn1.values()):
        model.set_attn_processor({n: (AttnProcessor2_0() if n in attn1 else p) for n, p in procs.items()})


def enable_cross_frame_attention(model, state: CrossFrameAttention) -> int:
    """Give every self-attention (``attn1``) layer of a UNet or ControlNet the cross-frame processor.
    Returns how many layers were changed."""
    procs = {}
    changed = 0
    for name, proc in model.attn_processors.items():
        if name.endswith("attn1.processor"):
            procs[name] = CrossFrameAttnProcessor(state)
            changed += 1
        else:
            procs[name] = proc
    model.set_attn_processor(procs)
    return changed
