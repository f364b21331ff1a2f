"""Fine-tuning Stable Diffusion 1.x on the frames of a video: LoRA or full UNet, with the
foreground/background-weighted loss of the long-video paper's combined tuning module (eq 20).

Entry point: :func:`train` (``flickerless train`` on the command line)."""

from .data import crop_resize, load_frames, load_masks, parse_resolution
from .losses import Losses, combined_loss, diffusion_target, latent_masks, masked_losses
from .trainer import LORA_TARGETS, TrainConfig, Trainer, TrainResult, latest_checkpoint, train

__all__ = [
    "train", "TrainConfig", "Trainer", "TrainResult", "latest_checkpoint", "LORA_TARGETS",
    "Losses", "masked_losses", "combined_loss", "diffusion_target", "latent_masks",
    "load_frames", "load_masks", "crop_resize", "parse_resolution",
]
