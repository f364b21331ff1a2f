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
                         beta_end=0.012, clip_sample=False, set_alpha_to_one=True, steps_offset=1,
                         prediction_type=prediction_type)


def tokenizer(folder):
    """A CLIP tokenizer with a tiny character-level vocabulary, written to ``folder``."""
    import json
    import os

    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in "abcdefghijklmnopqrstuvwxyz":
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "vocab.json"), "w") as f:
        json.dump(vocab, f)
    with open(os.path.join(folder, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n")
    return CLIPTokenizer(os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt"), model_max_length=12)


def text_encoder(seed=3):
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    cfg = CLIPTextConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=12, projection_dim=16)
    return CLIPTextModel(cfg).eval()


def save_pipeline(folder):
    """A tiny Stable-Diffusion-shaped pipeline saved as a local diffusers folder."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=vae(), text_encoder=text_encoder(), tokenizer=tokenizer(str(folder) + "_tok"), unet=unet(),
        scheduler=scheduler(), safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    return folder


def save_sam(folder, seed=4, image_size=64):
    """A tiny random SAM (``SamModel`` + ``SamProcessor`` at ``image_size``) saved to ``folder``."""
    from transformers import SamConfig, SamImageProcessor, SamModel, SamProcessor

    torch.manual_seed(seed)
    cfg = SamConfig(
        vision_config=dict(hidden_size=16, output_channels=8, num_hidden_layers=2, num_attention_heads=2,
                           image_size=image_size, patch_size=8, window_size=4, global_attn_indexes=[1], mlp_dim=32,
                           num_pos_feats=4),
        prompt_encoder_config=dict(hidden_size=8, image_size=image_size, patch_size=8, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=8, mlp_dim=16, num_hidden_layers=1, num_attention_heads=2,
                                 iou_head_hidden_dim=8),
    )
    model = SamModel(cfg).eval()
    for p in model.parameters():  # SAM's own init is ~0 for the vision tower: masks would ignore image and prompt
        if p.ndim >= 2:
            torch.nn.init.normal_(p, std=0.3)
    model.save_pretrained(folder)
    processor = SamImageProcessor(size={"longest_edge": image_size}, pad_size={"height": image_size, "width": image_size},
                                  mask_size={"longest_edge": image_size // 4},
                                  mask_pad_size={"height": image_size // 4, "width": image_size // 4})
    SamProcessor(processor).save_pretrained(folder)
    return folder


def save_lora(model_dir, folder, rank=4, std=0.2, seed=0):
    """A random (non-zero) LoRA for the UNet of the tiny pipeline in ``model_dir``, saved in diffusers'
    format under ``folder``; returns the path of its ``pytorch_lora_weights.safetensors``."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = UNet2DConditionModel.from_pretrained(str(model_dir), subfolder="unet")
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    torch.manual_seed(seed)
    for name, p in unet.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=std)
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=get_peft_model_state_dict(unet))
    return str(folder) + "/pytorch_lora_weights.safetensors"
