"""Guided detail restoration: give back a blended frame the fine detail its remaps lost.

Blending remapped neighbours removes flicker but also blurs: integer patch offsets cannot follow
sub-pixel motion, so every remapped frame is slightly off at edges, and the mean of many such
frames is soft (BENCHMARKS.md: on carphone even the truth, blended this way, is only 36 dB from
itself). The frame's own style image has that detail exactly, but it also has the flicker.

Which one to trust, per pixel, is decided by the guide. The guide is blended through the very same
remaps and weights (its blend ``guide_blend``), so ``guide - guide_blend`` is what blending lost
there, known exactly. In the fine band (``x - gaussian(x, sigma)``):

- ``style - blend`` holds the style's remap loss *and* the style frame's own fine flicker;
- ``guide - guide_blend`` holds only the remap loss (the guide does not flicker).

With ``e_s`` and ``e_g`` their local energies, the fine band of the style frame is added back with
the gain ``k = clamp(e_g / e_s, 0, 1)``: the share of the difference the remaps explain (a Wiener
gain, taking the style's remap loss as large as the guide's). Where the remaps were exact (static
areas) ``e_g`` is ~0 and the blend is kept, fine flicker averaged away; at moving edges the frame's
own sharp detail comes back. Coarse flicker (colour jumps, blotches) lies below the band and is
never restored. Measured (BENCHMARKS.md, "Guided detail restoration"): it helps with smooth flicker
and changes nothing for the worse when the flicker is fine-grained texture.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import InputError

__all__ = ["restore_detail", "resolve_detail", "DETAIL_SIGMA", "DETAIL_RADIUS"]

# pixel scales, tied to the remap's patches (5x5 vote), not to the frame size: remap loss is a
# pixel-scale error whatever the resolution
DETAIL_SIGMA = 2.0  # the fine band: what a gaussian of this sigma (pixels) removes
DETAIL_RADIUS = 4  # energies are means over (2r+1)^2 windows


def resolve_detail(detail, mode: str) -> bool:
    """``"auto"``: on in window and table modes (the blends that have a style frame per output
    frame); ``True``/``False`` as given (``True`` in keyframes mode is an error)."""
    if isinstance(detail, str):
        if detail != "auto":
            raise InputError(f"detail must be True, False or 'auto', got {detail!r}")
        return mode in ("window", "table")
    if detail and mode == "keyframes":
        raise InputError("detail restoration needs a stylised frame per output frame: not in keyframes mode")
    return bool(detail)


def _gaussian(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = max(1, math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-t * t / (2 * sigma * sigma))
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (r, r, r, r), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _fine(x: torch.Tensor, sigma: float) -> torch.Tensor:
    return x - _gaussian(x, sigma)


def restore_detail(
    blend: torch.Tensor,
    guide_blend: torch.Tensor,
    style: torch.Tensor,
    guide: torch.Tensor,
    sigma: float = DETAIL_SIGMA,
    radius: int = DETAIL_RADIUS,
) -> torch.Tensor:
    """``blend`` with the style frame's fine detail added back where the remaps lost it.

    All ``(C, H, W)`` or ``(B, C, H, W)`` float on one device: the blended frame, the guide blended
    the same way (3 channels), the frame's own style image and its guide frame (3). Returns the shape
    of ``blend``. A style with alpha (C 4): the gain is the colour's, and the alpha's detail comes back
    with it.
    """
    if not sigma > 0 or isinstance(radius, bool) or not isinstance(radius, int) or radius < 0:
        raise InputError(f"restore_detail needs sigma > 0 and an integer radius >= 0, got sigma {sigma!r}, "
                         f"radius {radius!r}")
    if not all(t.is_floating_point() for t in (blend, guide_blend, style, guide)):
        raise InputError("restore_detail takes float images in [0, 1] (uint8 would wrap around): pass x.float() / 255")
    squeeze = blend.dim() == 3
    if squeeze:
        blend, guide_blend, style, guide = (t.unsqueeze(0) for t in (blend, guide_blend, style, guide))
    b, c = blend.shape[:2]
    if c == guide.shape[1]:
        fine = _fine(torch.cat([style - blend, guide - guide_blend]).float(), sigma)
        colour = fine
    else:  # RGBA: the gain from the colour channels and the guide, the detail of every channel
        fine = _fine((style - blend).float(), sigma)
        colour = torch.cat([fine[:, :3], _fine((guide - guide_blend).float(), sigma)])
    energy = F.avg_pool2d(colour.square().mean(1, keepdim=True), 2 * radius + 1, 1, radius, count_include_pad=False)
    e_s, e_g = energy[:b], energy[b:]
    gain = (e_g / e_s.clamp_min(1e-10)).clamp_(0, 1)
    out = (blend + gain * fine[:b]).to(blend.dtype)
    return out[0] if squeeze else out
