"""Deterministic test material: a consistent stylisation of a real clip, and diffusion-like flicker.

Used by the demo, the benchmark and the tests. :func:`stylize` is a per-pixel function of the
frame (posterised colour grade with darkened edges), so it is exactly as temporally consistent as
the source clip: it is the ground truth. :func:`add_flicker` adds what per-frame image diffusion
adds: a colour jump of the whole frame and smooth blotches, both drawn anew for every frame.
"""

from __future__ import annotations

import numpy as np

__all__ = ["stylize", "add_flicker", "add_grain", "flickering_pair", "psnr", "temporal_error"]


def _blur(x: np.ndarray, k: int) -> np.ndarray:
    """Separable box blur of an (H, W[, C]) float array, edge-replicated."""
    if k <= 1:
        return x
    r = k // 2
    pad = [(r, r), (r, r)] + [(0, 0)] * (x.ndim - 2)
    p = np.pad(x, pad, mode="edge")
    c = np.cumsum(p, axis=0)
    c = np.concatenate([np.zeros_like(c[:1]), c], 0)
    p = (c[k:] - c[:-k]) / k
    c = np.cumsum(p, axis=1)
    c = np.concatenate([np.zeros_like(c[:, :1]), c], 1)
    return (c[:, k:] - c[:, :-k]) / k


def stylize(frame: np.ndarray, levels: int = 6) -> np.ndarray:
    """A consistent "painted" look: smoothed, colour-graded, posterised, dark edges. uint8 -> uint8."""
    x = frame.astype(np.float32) / 255.0
    x = _blur(x, 3)
    grade = np.array([[1.15, 0.10, -0.05], [0.05, 0.95, 0.05], [-0.10, 0.15, 0.80]], np.float32)
    x = np.clip(x @ grade.T + np.array([0.03, 0.0, 0.05], np.float32), 0, 1)
    x = np.round(x * (levels - 1)) / (levels - 1)
    x = _blur(x, 3)
    g = frame.astype(np.float32).mean(-1) / 255.0
    gy, gx = np.gradient(_blur(g, 3))
    edge = np.clip(np.hypot(gx, gy) * 6.0, 0, 0.6)
    x = x * (1.0 - edge[..., None])
    return np.clip(np.round(x * 255), 0, 255).astype(np.uint8)


def add_flicker(frames: np.ndarray, seed: int = 0, strength: float = 1.0) -> np.ndarray:
    """Per-frame colour jumps and smooth blotches, new every frame. (T, H, W, 3) uint8 -> same."""
    rng = np.random.default_rng(seed)
    t, h, w, _ = frames.shape
    out = np.empty_like(frames)
    scale = max(4, min(h, w) // 6)
    for i in range(t):
        x = frames[i].astype(np.float32) / 255.0
        gain = 1.0 + strength * rng.normal(0, 0.08, 3).astype(np.float32)
        bias = strength * rng.normal(0, 0.04, 3).astype(np.float32)
        noise = rng.normal(0, 1, (h // scale + 2, w // scale + 2, 3)).astype(np.float32)
        # smooth blotches: coarse noise upsampled bilinearly then blurred
        ys = np.linspace(0, noise.shape[0] - 1.001, h)
        xs = np.linspace(0, noise.shape[1] - 1.001, w)
        y0, x0 = ys.astype(int), xs.astype(int)
        fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
        n00 = noise[y0][:, x0]
        n01 = noise[y0][:, x0 + 1]
        n10 = noise[y0 + 1][:, x0]
        n11 = noise[y0 + 1][:, x0 + 1]
        blot = (n00 * (1 - fy) * (1 - fx) + n01 * (1 - fy) * fx + n10 * fy * (1 - fx) + n11 * fy * fx)
        blot = _blur(blot, max(3, scale // 2) | 1)
        x = x * gain + bias + strength * 0.07 * blot
        out[i] = np.clip(np.round(x * 255), 0, 255).astype(np.uint8)
    return out


def add_grain(frames: np.ndarray, sd: float, seed: int = 1, texture: bool = False) -> np.ndarray:
    """Fine-grained flicker on top of ``frames`` (T, H, W, 3) uint8: unit-variance noise, 3x3
    box-blurred, scaled to ``sd`` (0-1 scale), new every frame.

    texture: the amplitude follows each frame's local fine detail (mean 1, at most 3) instead of
    being uniform: the texture jitter of per-frame diffusion, which re-draws hair, foliage and fabric
    every frame but leaves flat areas alone. A restoration that estimates the noise level where the
    image is flat would miss it; :func:`flickerless.blend.restore_detail` is tested against it.
    """
    rng = np.random.default_rng(seed)
    out = np.empty_like(frames)
    for i, f in enumerate(frames):
        z = _blur(rng.normal(0, 1, f.shape).astype(np.float32), 3)
        z /= z.std()
        if texture:
            y = f.astype(np.float32).mean(-1)
            e = np.sqrt(_blur((y - _blur(y, 5)) ** 2, 9))
            z *= np.clip(e / max(float(e.mean()), 1e-6), 0, 3)[..., None]
        out[i] = np.clip(np.round(f + 255 * sd * z), 0, 255).astype(np.uint8)
    return out


def flickering_pair(frames: np.ndarray, seed: int = 0, strength: float = 1.0):
    """(ground truth, flickering) stylised versions of ``frames`` (T, H, W, 3) uint8."""
    truth = np.stack([stylize(f) for f in frames])
    return truth, add_flicker(truth, seed=seed, strength=strength)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB over whole arrays of uint8 (0-255) values."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def temporal_error(out: np.ndarray, truth: np.ndarray) -> float:
    """Mean over t of the squared difference between the output's frame-to-frame change and the
    ground truth's, 0-255 scale. 0 when the output changes exactly as the truth does."""
    do = np.diff(out.astype(np.float32), axis=0)
    dt = np.diff(truth.astype(np.float32), axis=0)
    return float(np.mean((do - dt) ** 2))
