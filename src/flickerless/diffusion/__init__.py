"""The video diffusion engine: sampling with latent in-iteration deflickering (DiffSynth eqs 2-7),
cross-frame attention, deterministic VAE codec, fixed noise. Imports diffusers; not imported by
``import flickerless`` so that the deflicker tool stays light."""

from .attention import CrossFrameAttention, CrossFrameAttnProcessor, enable_cross_frame_attention
from .codec import VAECodec
from .models import Components, load_components, load_controlnet
from .pipeline import VideoPipeline, check_size
from .sampler import ControlNetUnit, DeflickerSchedule, Denoiser, default_deflicker, fixed_noise, sample

__all__ = [
    "CrossFrameAttention", "CrossFrameAttnProcessor", "enable_cross_frame_attention", "VAECodec",
    "Components", "load_components", "load_controlnet", "VideoPipeline", "check_size",
    "ControlNetUnit", "DeflickerSchedule", "Denoiser", "default_deflicker", "fixed_noise", "sample",
]
