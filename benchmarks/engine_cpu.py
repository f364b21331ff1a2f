#!/usr/bin/env python3
"""Engine hot path on the CPU (usage: PYTHONPATH=src python benchmarks/engine_cpu.py tests/fixtures/tiny_sd): the tiny trained model, 16 carphone frames, 20 DDIM steps, CFG,
Canny ControlNet, cross-frame attention, no deflicker (the sampler + UNet + ControlNet + VAE only)."""
import sys, time, json
import numpy as np, torch
torch.set_num_threads(2)
from flickerless.diffusion import VideoPipeline, DeflickerSchedule
from flickerless.demo import load_clip, registry_clip
import cv2
model = sys.argv[1]
clip, _ = load_clip(registry_clip("carphone_pristine.mp4"), 16)
clip = np.stack([cv2.resize(f, (160, 128), interpolation=cv2.INTER_AREA) for f in clip])
video = torch.from_numpy(clip).permute(0, 3, 1, 2).float() / 255
edges = torch.from_numpy(np.stack([cv2.Canny(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), 100, 200) for f in clip]))
edges = edges[:, None].expand(-1, 3, -1, -1).float() / 255
pipe = VideoPipeline.from_pretrained(model, controlnets=[model + "/controlnet"], device="cpu", batch_size=16)
best = []
for rep in range(3):
    t = time.perf_counter()
    out = pipe(video, prompt="cartoon", steps=20, guidance_scale=3.0, strength=0.8, controls=[edges],
               schedule=DeflickerSchedule(frequency=None), final_window=0, seed=0)
    best.append(time.perf_counter() - t)
print(json.dumps({"s_per_frame_min": round(min(best) / 16, 4), "runs": [round(b, 2) for b in best],
                  "checksum": float(out.double().sum())}))
