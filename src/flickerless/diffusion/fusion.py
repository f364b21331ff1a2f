"""Average fusion (long-video framework, eq 11).

At an intermediate step k, n candidate generations of the same video (latents ``r_{i,k}``, e.g.
from different seeds) are fused: their background areas are averaged and the chosen candidate's
foreground is kept,

    r'_k = w1 / n * sum_i m_bg_i * r_{i,k}  +  w2 * m_fg * r_{chosen,k}                  (11)

with ``m_bg = 1 - m_fg``; denoising then continues from ``r'_k`` (eq 12;
:meth:`~.pipeline.VideoPipeline.average_fusion` does the whole round).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import InputError

__all__ = ["average_fusion", "latent_masks"]


def latent_masks(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Foreground masks ``(..., H, W)`` in [0, 1] at image resolution -> ``(..., h, w)`` at latent
    resolution ``size``, by area averaging (a latent pixel's share of foreground)."""
    m = torch.as_tensor(masks).float()
    if m.ndim < 2:
        raise InputError(f"masks must be (..., H, W), got shape {tuple(m.shape)}")
    if m.numel() and (m.min() < 0 or m.max() > 1):
        raise InputError(f"masks must be in [0, 1], got values in [{m.min().item():.3g}, {m.max().item():.3g}]")
    lead = m.shape[:-2]
    if tuple(m.shape[-2:]) == tuple(size):
        return m
    if m.shape[-2] < size[0] or m.shape[-1] < size[1]:
        raise InputError(f"masks of {tuple(m.shape[-2:])} are smaller than the latents' {tuple(size)}: give them at image size")
    out = F.interpolate(m.reshape(-1, 1, *m.shape[-2:]), size=tuple(size), mode="area")
    return out.reshape(*lead, *size)


def average_fusion(candidates: torch.Tensor | list[torch.Tensor], masks: torch.Tensor, chosen: int = 0,
                   w1: float = 1.0, w2: float = 1.0) -> torch.Tensor:
    """Eq 11. candidates: ``(n, T, C, h, w)`` latents at step k; masks: foreground ``(T, H, W)`` in
    [0, 1] (the chosen candidate's person, shared by all candidates), or ``(n, T, H, W)`` one per
    candidate (then candidate i's background is ``1 - masks[i]`` and the foreground is
    ``masks[chosen]``), at image or latent resolution. Returns the fused latents ``(T, C, h, w)``.

    All-foreground masks return ``w2 * candidates[chosen]``; all-background masks return
    ``w1 * candidates.mean(0)``."""
    if isinstance(candidates, (list, tuple)):  # n calls of a pipeline: stacked (it failed on the list's .ndim)
        candidates = torch.stack(list(candidates))
    if candidates.ndim != 5:
        raise InputError(f"candidates must be (n, T, C, h, w), got shape {tuple(candidates.shape)}")
    n, t = candidates.shape[:2]
    if not -n <= chosen < n:
        raise InputError(f"chosen candidate {chosen} out of range for {n} candidates")
    m = latent_masks(masks, tuple(candidates.shape[-2:])).to(candidates.device, candidates.dtype)
    if m.ndim == 3:
        m = m.unsqueeze(0).expand(n, *m.shape)
    if m.ndim != 4 or m.shape[:2] != (n, t):
        raise InputError(f"masks must be (T, H, W) or (n, T, H, W) with n={n}, T={t}; got shape {tuple(torch.as_tensor(masks).shape)}")
    m = m.unsqueeze(2)  # (n, T, 1, h, w)
    background = ((1 - m) * candidates).sum(0) * (w1 / n)
    return background + w2 * m[chosen] * candidates[chosen]
