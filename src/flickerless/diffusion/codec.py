"""Deterministic VAE codec: images <-> latents in batches (DiffSynth: encode with the mean, eq 5).

frames: ``(T, 3, H, W)`` float in [0, 1]; latents: ``(T, 4, H/8, W/8)`` scaled by the VAE's
scaling factor, as the UNet sees them. Batches go through the VAE ``batch_size`` frames at a time
on the VAE's device; results come back on ``out_device`` (the host for long videos).

Two things keep the VAE fast on a GPU (measured in benchmarks/profile_engine.py, BENCHMARKS.md):

- diffusers' attention on 4-D inputs (the VAE's mid-block) returns a transposed, channels-last
  strided tensor; every decoder layer after it then runs on that layout and each GroupNorm first
  copies its input back to contiguous (a quarter of the decode's GPU time at 512x960). The codec
  gives the VAE's attention layers a processor that returns a contiguous tensor: same values.
- decoded frames bound for the host are copied into one pinned buffer (up to ``pin_bytes``)
  asynchronously, instead of through pageable memory (about 1 GB/s).
"""

from __future__ import annotations

import contextlib
import math

import torch

from ..errors import in_batches

_VAE_BATCH = "--set sampling.vae_batch_size={}"  # the template setting that starts a run at a batch

__all__ = ["VAECodec"]


class ContiguousOutput:
    """Attention processor wrapper: the wrapped processor's output, made contiguous in the memory
    format of its input (channels-last for a channels-last VAE, see :mod:`.layout`)."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        out = self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)
        nhwc = (hidden_states.ndim == 4 and not hidden_states.is_contiguous()
                and hidden_states.is_contiguous(memory_format=torch.channels_last))
        return out.contiguous(memory_format=torch.channels_last if nhwc else torch.contiguous_format)


def contiguous_attention(model) -> None:
    """Wrap every attention processor of ``model`` (a VAE) in :class:`ContiguousOutput`, once."""
    procs = getattr(model, "attn_processors", None)
    if not procs or all(isinstance(p, ContiguousOutput) for p in procs.values()):
        return
    model.set_attn_processor({n: p if isinstance(p, ContiguousOutput) else ContiguousOutput(p) for n, p in procs.items()})


class VAECodec:
    def __init__(self, vae, batch_size: int = 8, tile_above: int | None = 1024 * 1024, pin_bytes: int = 1 << 30):
        self.vae = vae
        contiguous_attention(vae)
        self.pin_bytes = pin_bytes
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

    @contextlib.contextmanager
    def _tiling(self, h: int, w: int):
        """The VAE tiled for frames of ``h x w`` over ``tile_above`` pixels, for this call only: left on, a
        1080p call made every later small one tiled (other frames). Tiling the user turned on stays on."""
        was = getattr(self.vae, "use_tiling", False)
        tile = (self.tile_above is not None and h * w > self.tile_above and not was
                and hasattr(self.vae, "enable_tiling"))
        if tile:
            self.vae.enable_tiling()
        try:
            yield
        finally:
            if tile:
                self.vae.disable_tiling()

    @torch.no_grad()
    def encode(self, frames: torch.Tensor, out_device=None) -> torch.Tensor:
        """Latents of ``frames`` from the mean of the posterior (no sampling noise)."""
        out = []

        def step(a, b):
            x = frames[a:b].to(self.device, self.dtype) * 2 - 1
            mean = self.vae.encode(x).latent_dist.mean
            out.append(((mean - self.shift) * self.scale).to(out_device or frames.device, torch.float32))

        with self._tiling(*frames.shape[-2:]):
            self.batch_size = in_batches(frames.shape[0], self.batch_size, step, "VAE", _VAE_BATCH)
        return torch.cat(out)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, out_device=None) -> torch.Tensor:
        """Frames ``(T, 3, H, W)`` in [0, 1] from latents."""
        if latents.shape[0] == 0:
            raise ValueError("no latents to decode")
        dst_dev = torch.device(out_device) if out_device is not None else latents.device
        dst = None
        n = latents.shape[0]

        def step(a, b):
            nonlocal dst
            z = latents[a:b].to(self.device, self.dtype) / self.scale + self.shift
            img = ((self.vae.decode(z).sample.float() + 1) / 2).clamp(0, 1)
            if dst is None:
                shape = (n, *img.shape[1:])
                pin = (dst_dev.type == "cpu" and img.device.type == "cuda"
                       and math.prod(shape) * 4 <= self.pin_bytes)
                dst = torch.empty(shape, dtype=torch.float32, device=dst_dev, pin_memory=pin)
            dst[a:b].copy_(img, non_blocking=True)

        with self._tiling(latents.shape[-2] * self.factor, latents.shape[-1] * self.factor):
            self.batch_size = in_batches(n, self.batch_size, step, "VAE", _VAE_BATCH)
        if dst is not None and dst.is_pinned():
            torch.cuda.current_stream(self.device).synchronize()  # the copies were asynchronous
        return dst
