"""The video diffusion engine: sampling with latent in-iteration deflickering (DiffSynth eqs 2-7),
cross-frame attention, deterministic VAE codec, fixed noise; temporal co-denoising of overlapping clips
and average fusion for long videos. Imports diffusers; not imported by
``import flickerless`` so that the deflicker tool stays light."""

from .attention import CrossFrameAttention, CrossFrameAttnProcessor, enable_cross_frame_attention
from .codec import VAECodec
from .codenoise import ClipPlan, CoDenoiser, clip_prompts, clip_weights, frame_prompts, merge_weights, plan_clips
from .fusion import average_fusion, latent_masks
from .models import Components, load_adapter, load_components, load_controlnet
from .pipeline import VideoPipeline, check_size
from .sampler import AdapterUnit, Clip, ControlNetUnit, DeflickerSchedule, Denoiser, default_deflicker, fixed_noise, sample

__all__ = [
    "CrossFrameAttention", "CrossFrameAttnProcessor", "enable_cross_frame_attention", "VAECodec",
    "Components", "load_components", "load_controlnet", "load_adapter", "VideoPipeline", "check_size",
    "ControlNetUnit", "AdapterUnit", "DeflickerSchedule", "Denoiser", "default_deflicker", "fixed_noise", "sample",
    "Clip", "ClipPlan", "CoDenoiser", "plan_clips", "clip_weights", "merge_weights", "frame_prompts", "clip_prompts",
    "average_fusion", "latent_masks",
]
