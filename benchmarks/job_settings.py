#!/usr/bin/env python3
"""Speed and steadiness of one task under several settings: `flickerless run` (run_job) per variant,
then Pixel-MSE against the source (flickerless.evaluate). Defaults: the tiny model's stylize template
on 16 frames of held-out carphone, PatchMatch effort of the deflicker passes varied.

    PYTHONPATH=src python benchmarks/job_settings.py --frames 16 \
        --variant default= --variant draft=deflicker.iterations=2,deflicker.patch_sizes=[7,5]
"""

import argparse
import json
import time
from pathlib import Path

from flickerless.demo import registry_clip, tiny_model_dir
from flickerless.metrics import evaluate
from flickerless.pipelines import run_job
from flickerless.pipelines.job import parse_frames, read_clip, resolve_settings
from flickerless.video import read

p = argparse.ArgumentParser()
p.add_argument("--template", help="default: the tiny model's stylize.toml")
p.add_argument("--model", help="default: tests/fixtures/tiny_sd")
p.add_argument("--video", help="default: carphone_pristine.mp4")
p.add_argument("--prompt", default="cartoon")
p.add_argument("--frames", type=int, default=16)
p.add_argument("--variant", action="append", default=[], metavar="NAME=KEY=VALUE,KEY=VALUE",
               help="a name and its --set overrides, comma-separated (values without commas)")
p.add_argument("--out", default="/tmp/job_settings")
p.add_argument("--device")
a = p.parse_args()
model = Path(a.model) if a.model else tiny_model_dir()
template = a.template or str(model / "stylize.toml")
video = a.video or registry_clip("carphone_pristine.mp4")
cn = {"canny": str(model / "controlnet")} if not a.model else None
rng = f"0:{a.frames}"
source = read_clip(video, parse_frames(rng), resolve_settings(template, str(model), cn)).frames
out = Path(a.out)
out.mkdir(parents=True, exist_ok=True)
for v in a.variant or ["default="]:
    name, _, sets = v.partition("=")
    overrides, depth, cur = [], 0, ""  # split on the commas outside brackets
    for ch in sets:
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            overrides.append(cur)
            cur = ""
        else:
            cur += ch
    if cur:
        overrides.append(cur)
    dst = out / f"{name}.mp4"
    t0 = time.perf_counter()
    run_job(template, video, dst, a.prompt, model=str(model), controlnets=cn, overrides=overrides, frames=rng,
            device=a.device, restart=True, progress=False)
    secs = time.perf_counter() - t0
    res = evaluate(read(dst)[0], source=source, metrics="pixel_mse", log_skips=False)
    print(json.dumps({"variant": name, "overrides": overrides, "frames": len(source),
                      "s_per_frame": round(secs / len(source), 3), "pixel_mse": round(res.values["pixel_mse"], 2)}),
          flush=True)
