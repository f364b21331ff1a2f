"""Fine-tuning speed and GPU memory on SD1.5-shaped random weights (no downloads).

    python benchmarks/train.py --device cuda --runs lora:bf16:1,lora:bf16:4,full:bf16:1 --steps 20

Each run: ``mode:precision:batch[:gc]`` (gc = gradient checkpointing) at --resolution; prints s/step
(median of the steps after the first 3) and peak GPU memory. --oom checks that running out of GPU
memory ends in a DeviceError naming the last checkpoint.
"""

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def sd15_folder(folder: Path) -> Path:
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.tiny_models import tokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(cross_attention_dim=768, attention_head_dim=8, sample_size=64)
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, layers_per_block=2, sample_size=512)
    te = CLIPTextModel(CLIPTextConfig(vocab_size=64, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                      num_attention_heads=12, max_position_embeddings=77))
    tok = tokenizer(str(folder) + "_tok")
    tok.model_max_length = 77
    sched = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                          set_alpha_to_one=False, steps_offset=1)
    StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=unet, scheduler=sched, safety_checker=None,
                            feature_extractor=None, requires_safety_checker=False).save_pretrained(folder)
    return folder


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--runs", default="lora:bf16:1,lora:bf16:4,full:bf16:1")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--resolution", default="512")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--oom", action="store_true")
    a = ap.parse_args()

    from flickerless.demo import load_clip, registry_clip
    from flickerless.errors import DeviceError
    from flickerless.train import TrainConfig, Trainer

    tmp = Path(tempfile.mkdtemp())
    model = sd15_folder(tmp / "sd15")
    clip, _ = load_clip(registry_clip("carphone_pristine.mp4"), a.frames)
    print(f"device {torch.cuda.get_device_name() if a.device.startswith('cuda') else 'cpu'}, torch {torch.__version__}, "
          f"{a.frames} frames of carphone at {a.resolution}")
    for spec in a.runs.split(","):
        mode, prec, batch, *gc = spec.split(":")
        cfg = TrainConfig(model=str(model), prompt="a photo of sks man", output=str(tmp / spec.replace(":", "_")),
                          mode=mode, precision=prec, batch=int(batch), resolution=a.resolution, steps=a.steps,
                          checkpoint_every=0, device=a.device, gradient_checkpointing=bool(gc))
        tr = Trainer(cfg, clip)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()  # training memory, not the one-off VAE encoding
        times = []
        before = tr.evaluate(16)
        while tr.step < cfg.steps:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            tr.train_step()
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        after = tr.evaluate(16)
        t0 = time.perf_counter()
        tr.save_checkpoint()
        ck = time.perf_counter() - t0
        print(f"{spec:>16}: {np.median(times[3:]):.3f} s/step (batch {batch}), peak in training {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB, "
              f"loss on fixed draws {before.total:.4f} -> {after.total:.4f}, checkpoint {ck:.1f} s")
        del tr
        shutil.rmtree(cfg.output, ignore_errors=True)
        torch.cuda.empty_cache()
    if a.oom:
        cfg = TrainConfig(model=str(model), prompt="a man", output=str(tmp / "oom"), mode="full", precision="fp32",
                          batch=16, resolution="768", steps=4, checkpoint_every=1, device=a.device)
        tr = Trainer(cfg, clip)
        tr.cfg.batch = 1
        tr.fit(progress=False)  # 4 steps at batch 1 -> checkpoints
        tr.cfg.steps, tr.cfg.batch = 8, 64
        try:
            tr.fit(progress=False)
            print("oom: no error?")
        except DeviceError as e:
            print("oom ->", e)


if __name__ == "__main__":
    main()
