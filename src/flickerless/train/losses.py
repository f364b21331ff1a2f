"""Training losses of the combined tuning module (long-video paper, eqs 14-16 and 20).

``L`` is the plain noise-prediction MSE (eq 14, eq 6 of DDPM); ``L_fg`` and ``L_bg`` apply the
foreground / background masks to the prediction error as a Hadamard product before squaring
(eqs 15-16): ``L_fg = mean((M_fg * (target - pred))**2)``. All three are means over the same
elements, so with masks of all ones ``L_fg == L_bg == L``, and with a binary foreground mask and
``M_bg = 1 - M_fg``, ``L_fg + L_bg == L``. The total is ``l1*L + l2*L_fg + l3*L_bg`` (eq 20).

Shapes: predictions and targets ``(B, C, h, w)`` at latent resolution; masks ``(B, 1, h, w)`` in
[0, 1] at latent resolution (:func:`latent_masks` brings pixel masks there).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

__all__ = ["Losses", "masked_losses", "combined_loss", "diffusion_target", "latent_masks"]


class Losses(NamedTuple):
    total: torch.Tensor
    plain: torch.Tensor
    fg: torch.Tensor
    bg: torch.Tensor


def masked_losses(pred: torch.Tensor, target: torch.Tensor, fg: torch.Tensor | None = None,
                  bg: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(L, L_fg, L_bg)``: mean squared error, and the mean squared masked error (eqs 14-16).

    pred, target: ``(B, C, h, w)``; fg, bg: ``(B, 1, h, w)`` (or broadcastable) in [0, 1]. ``bg``
    defaults to ``1 - fg``; with no masks at all, ``L_fg = L_bg = L``. Computed in fp32.
    """
    err = target.float() - pred.float()
    plain = err.pow(2).mean()
    if fg is None and bg is None:
        return plain, plain, plain
    if fg is None:
        fg = 1 - bg
    if bg is None:
        bg = 1 - fg
    l_fg = (fg.to(err) * err).pow(2).mean()
    l_bg = (bg.to(err) * err).pow(2).mean()
    return plain, l_fg, l_bg


def combined_loss(pred: torch.Tensor, target: torch.Tensor, weights=(1.0, 0.0, 0.0),
                  fg: torch.Tensor | None = None, bg: torch.Tensor | None = None) -> Losses:
    """``L_total = l1*L + l2*L_fg + l3*L_bg`` (eq 20) with its three parts; ``weights = (l1, l2, l3)``."""
    l1, l2, l3 = (float(w) for w in weights)
    plain, l_fg, l_bg = masked_losses(pred, target, fg, bg)
    total = l1 * plain
    if l2:
        total = total + l2 * l_fg
    if l3:
        total = total + l3 * l_bg
    return Losses(total, plain, l_fg, l_bg)


def diffusion_target(scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What the UNet is trained to predict, from ``scheduler.config.prediction_type``: the noise
    (``epsilon``), the velocity ``sqrt(a)*noise - sqrt(1-a)*x0`` (``v_prediction``) or ``x0`` (``sample``)."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    if kind == "sample":
        return latents
    raise ValueError(f"unknown prediction_type {kind!r} in the scheduler config (epsilon, v_prediction or sample)")


def latent_masks(masks: torch.Tensor, factor: int) -> torch.Tensor:
    """Pixel masks ``(T, 1, H, W)`` (or ``(T, H, W)``) in [0, 1] -> ``(T, 1, H/f, W/f)`` by area
    averaging, so a latent cell's weight is the fraction of its pixels inside the mask."""
    if masks.dim() == 3:
        masks = masks[:, None]
    masks = masks.float()
    if factor == 1:
        return masks
    h, w = masks.shape[-2] // factor, masks.shape[-1] // factor
    return F.interpolate(masks, size=(h, w), mode="area")
