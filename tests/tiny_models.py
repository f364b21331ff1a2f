"""Tiny randomly initialised diffusers models built from configs: no downloads."""

import torch
from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, UNet2DConditionModel

BLOCKS = dict(block_out_channels=(16, 32), norm_num_groups=8)


def unet(seed=0):
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16, attention_head_dim=8, **BLOCKS,
    ).eval()


def controlnet(seed=1):
    torch.manual_seed(seed)
    return ControlNetModel(
        in_channels=4, layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        cross_attention_dim=16, attention_head_dim=8, conditioning_embedding_out_channels=(8, 16), **BLOCKS,
    ).eval()


def vae(seed=2):
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, **BLOCKS,
    ).eval()


def scheduler(prediction_type="epsilon"):
    return DDIMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                         beta_end=0.012, clip_sample=False, set_alpha_to_one=True, prediction_type=prediction_type)
