"""Randomly initialised models of Stable Diffusion 1.5's shapes for the GPU benchmarks (weights do
not change the time): UNet (cross-attention 768), ControlNets, the VAE, and SD's DDIM scheduler."""

import torch
from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, UNet2DConditionModel


def models(dev, dtype, controlnets: int = 2, seed: int = 0):
    """(unet, [controlnet, ...], vae), on ``dev`` in ``dtype``, in eval mode."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(cross_attention_dim=768, attention_head_dim=8, sample_size=64).to(dev, dtype).eval()
    cns = [ControlNetModel(cross_attention_dim=768, attention_head_dim=8).to(dev, dtype).eval() for _ in range(controlnets)]
    return unet, cns, vae(dev, dtype)


def vae(dev, dtype):
    return AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2,
                         latent_channels=4).to(dev, dtype).eval()


def ddim():
    return DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                         set_alpha_to_one=False, steps_offset=1)
