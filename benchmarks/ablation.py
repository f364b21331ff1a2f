"""The DiffSynth ablation, measured on the tiny model trained here (issue 7, part 3).

Text-guided stylisation of a clip the model never saw (carphone_pristine.mp4, 176x144) with the
committed tests/fixtures/tiny_sd and its Canny ControlNet, img2img at ``--strength``, four ways:

(a) every frame on its own: its own noise (seed = frame index), no cross-frame attention;
(b) the same noise on every frame + cross-frame attention [first, i-1, i, i+1], no deflicker;
(c) (b) + latent in-iteration deflickering (table mode, whole video, every ``--frequency`` steps
    from step 1: the paper's schedule);
(d) (c) + a final deflicker pass on the decoded frames (whole video).

Reported per variant: Pixel-MSE (flickerless.metrics.pixel_mse: flow from the source, 0-255 scale),
style fidelity (MSE on [0, 1] to what the style word's training filter makes of each input frame;
lower is nearer), sharpness (mean Sobel gradient magnitude, to see whether deflickering blurs),
structure (correlation of the output's gradients with the Canny control), and s/frame.

    python benchmarks/ablation.py --frames 32 --style cartoon --out out/ablation
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from flickerless.demo import load_clip, registry_clip, side_by_side
from flickerless.diffusion import DeflickerSchedule, VideoPipeline
from flickerless.metrics.temporal import pixel_mse
from flickerless.video import write

ROOT = Path(__file__).resolve().parents[1]


def _train_script():
    spec = importlib.util.spec_from_file_location("train_tiny_sd", ROOT / "benchmarks" / "train_tiny_sd.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def sharpness(frames: torch.Tensor) -> float:
    g = frames.mean(1, keepdim=True)
    k = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]])[None, None]
    return float((F.conv2d(g, k, padding=1) ** 2 + F.conv2d(g, k.transpose(-1, -2), padding=1) ** 2).sqrt().mean())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(ROOT / "tests" / "fixtures" / "tiny_sd"))
    p.add_argument("--clip", default="carphone_pristine.mp4")
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--style", default="cartoon")
    p.add_argument("--strength", type=float, default=0.8)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--frequency", type=int, default=5)
    p.add_argument("--variants", default="a,b,c,d")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default="out/ablation")
    a = p.parse_args(argv)
    tts = _train_script()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    clip, fps = load_clip(registry_clip(a.clip), a.frames)
    T = len(clip)
    t_ = lambda x: torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float() / 255  # noqa: E731
    video = t_(clip)
    ctl = t_(np.stack([tts.canny(f) for f in clip]))
    target = t_(np.stack([tts.stylise(f, a.style) for f in clip]))
    photo = t_(np.stack([tts.stylise(f, "photo") for f in clip]))
    model = Path(a.model)
    kw = dict(controlnets=[str(model / "controlnet")], device=a.device, dtype=torch.float32)
    pipes = {"independent": VideoPipeline.from_pretrained(str(model), cross_frame=None, **kw),
             "cross": VideoPipeline.from_pretrained(str(model), **kw)}
    common = dict(prompt=a.style, steps=a.steps, guidance_scale=a.guidance, strength=a.strength)
    results, videos = {}, {}
    for v in a.variants.split(","):
        if a.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.time()
        if v == "a":
            o = torch.cat([pipes["independent"](video[i : i + 1], seed=i, controls=[ctl[i : i + 1]], **common)
                           for i in range(T)])
        elif v in ("b", "c", "d"):
            sched = None if v == "b" else DeflickerSchedule(frequency=a.frequency, window=None)
            o = pipes["cross"](video, seed=0, controls=[ctl], schedule=sched, final_window=None if v == "d" else 0,
                               **common)
        else:
            p.error(f"unknown variant {v!r}")
        dt = time.time() - t0
        u8 = (o.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
        videos[v] = u8
        results[v] = dict(
            pixel_mse=round(pixel_mse(u8, clip).value, 2),
            style_mse=round(float(F.mse_loss(o, target)), 4),
            photo_mse=round(float(F.mse_loss(o, photo)), 4),
            sharpness=round(sharpness(o), 4),
            edge_corr=round(tts.edge_corr(o, ctl), 3),
            s_per_frame=round(dt / T, 3),
        )
        print(v, results[v], flush=True)
    results["source"] = dict(pixel_mse=round(pixel_mse(clip, clip).value, 2), sharpness=round(sharpness(video), 4))
    results["settings"] = dict(vars(a), T=T, device_name=(torch.cuda.get_device_name() if a.device.startswith("cuda")
                                                          else "cpu"))
    (out / "ablation.json").write_text(json.dumps(results, indent=1))
    rows = [clip] + [videos[v] for v in a.variants.split(",")]
    import cv2

    cv2.imwrite(str(out / "contact_sheet.jpg"), side_by_side(rows, [0, T // 3, 2 * T // 3, T - 1])[..., ::-1],
                [cv2.IMWRITE_JPEG_QUALITY, 90])
    write(out / "side_by_side.mp4", np.concatenate(rows, axis=2), fps)
    print("| variant | Pixel-MSE | style MSE | MSE to input | sharpness | edge corr | s/frame |")
    print("|---|---|---|---|---|---|---|")
    for v in a.variants.split(","):
        r = results[v]
        print(f"| {v} | {r['pixel_mse']} | {r['style_mse']} | {r['photo_mse']} | {r['sharpness']} | {r['edge_corr']} "
              f"| {r['s_per_frame']} |")
    print(f"| source | {results['source']['pixel_mse']} | | | {results['source']['sharpness']} | | |")


if __name__ == "__main__":
    main()
