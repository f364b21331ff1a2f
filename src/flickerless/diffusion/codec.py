"""Deterministic VAE codec: images <-> latents in batches (DiffSynth: encode with the mean, eq 5).

frames: ``(T, 3, H, W)`` float in [0, 1]; latents: ``(T, 4, H/8, W/8)`` scaled by the VAE's
scaling factor, as the UNet sees them. Batches go through the VAE ``batch_size`` frames at a time
on the VAE's device; results come back on ``out_device`` (the host for long videos).
"""

from __future__ import annotations

import torch

__all__ = ["VAECodec"]


class VAECodec:
    def __init__(self, vae, batch_size: int = 8, tile_above: int | None = 1024 * 1024):
        self.vae = vae
        self.batch_size = max(1, int(batch_size))
        self.scale = float(getattr(vae.config, "scaling_factor", 0.18215))
        self.shift = float(getattr(vae.config, "shift_factor", None) or 0.0)
        self.tile_above = tile_above
        self.factor = 2 ** (len(vae.config.block_out_channels) - 1)

    @property
    def device(self):
        return next(self.vae.parameters()).device

    @property
    def dtype(self):
        return next(self.vae.parameters()).dtype

    def _maybe_tile(self, h: int, w: int) -> None:
        if self.tile_above is not None and h * w > self.tile_above and hasattr(self.vae, "enable_tiling"):
            self.vae.enable_tiling()

    @torch.no_grad()
    def encode(self, frames: torch.Tensor, out_device=None) -> torch.Tensor:
        """Latents of ``frames`` from the mean of the posterior (no sampling noise)."""
        self._maybe_tile(*frames.shape[-2:])
        out = []
        for a in range(0, frames.shape[0], self.batch_size):
            x = frames[a : a + self.batch_size].to(self.device, self.dtype) * 2 - 1
            mean = self.vae.encode(x).latent_dist.mean
            out.append(((mean - self.shift) * self.scale).to(out_device or frames.device, torch.float32))
        return torch.cat(out)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, out_device=None) -> torch.Tensor:
        """Frames ``(T, 3, H, W)`` in [0, 1] from latents."""
        out = []
        for a in range(0, latents.shape[0], self.batch_size):
            z = latents[a : a + self.batch_size].to(self.device, self.dtype) / self.scale + self.shift
            self._maybe_tile(z.shape[-2] * self.factor, z.shape[-1] * self.factor)
            img = self.vae.decode(z).sample
            out.append(((img.float() + 1) / 2).clamp(0, 1).to(out_device or latents.device))
        return torch.cat(out)
