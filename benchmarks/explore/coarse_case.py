"""Session 20: the case the coarse-band scripts share: a registry clip, optionally darkened linearly to
FADE of its brightness over its frames (a lighting change), the benchmark's truth and flickering style,
optionally with texture-localised grain. Not run on its own."""
import numpy as np
from flickerless.demo import load_clip, registry_clip
from flickerless.synthetic import add_grain, flickering_pair


def make_case(name: str, frames: int, width: int | None, fade: float = 1.0, grain: float = 0.0):
    """(clip, truth, flickering style), each (T, H, W, 3) uint8."""
    clip, _ = load_clip(registry_clip(name), frames, width)
    if fade != 1.0:
        ramp = np.linspace(1.0, fade, len(clip))[:, None, None, None]
        clip = np.clip(np.round(clip * ramp), 0, 255).astype(np.uint8)
    truth, flick = flickering_pair(clip)
    if grain:
        flick = add_grain(flick, grain, texture=True)
    return clip, truth, flick
