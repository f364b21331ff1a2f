"""Content shuffle for the shuffle ControlNet (ControlNet 1.1's ContentShuffleDetector, reimplemented).

Each output pixel samples the input at a random but spatially smooth position: two noise fields
(uniform noise on a coarse grid of ``cell``-pixel cells, bicubic-upsampled, rescaled to [0, 1]) give
the source x and y over the whole image, and ``cv2.remap`` looks the colours up. Colours and local
textures survive; the layout does not, which is what lets the shuffle ControlNet carry a style
image's look without its composition.

Deterministic: the flow comes from ``numpy.random.default_rng(seed)`` and depends only on the seed,
the output size and ``cell``; every frame of a clip gets the same flow (a per-frame flow would make
the control signal flicker). ``size=(H, W)`` resizes the input first (to the video's size, when the
style image is of another size); ``cell`` defaults to half the shorter side (ControlNet: 256 at 512).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from .base import Annotator, as_source, check

__all__ = ["shuffle_flow", "content_shuffle", "ShuffleAnnotator"]


def _noise_field(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    import cv2

    coarse = rng.uniform(0.0, 1.0, size=(h // cell + 2, w // cell + 2))
    big = cv2.resize(coarse, (w + 2 * cell, h + 2 * cell), interpolation=cv2.INTER_CUBIC)
    f = big[cell : cell + h, cell : cell + w]
    f = f - f.min()
    return f / max(float(f.max()), 1e-12)


def shuffle_flow(height: int, width: int, seed: int = 0, cell: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Source coordinates ``(map_x, map_y)``, each ``(H, W)`` float32 in pixels, for :func:`content_shuffle`."""
    cell = int(cell or max(1, min(height, width) // 2))
    rng = np.random.default_rng(seed)
    mx = _noise_field(rng, height, width, cell) * float(width - 1)
    my = _noise_field(rng, height, width, cell) * float(height - 1)
    return mx.astype(np.float32), my.astype(np.float32)


def content_shuffle(image: np.ndarray, seed: int = 0, cell: int | None = None) -> np.ndarray:
    """Shuffle one ``(H, W, 3)`` uint8 image; same seed, same result."""
    import cv2

    mx, my = shuffle_flow(image.shape[0], image.shape[1], seed, cell)
    return cv2.remap(image, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


@dataclasses.dataclass
class ShuffleAnnotator(Annotator):
    name: ClassVar[str] = "shuffle"
    description: ClassVar[str] = "content shuffle of a style image (random smooth remap, seeded) for the shuffle ControlNet"

    seed: int = 0
    cell: int | None = None
    size: tuple[int, int] | None = None
    device: str | None = None
    batch_size: int = 32
    progress: bool = True

    def __post_init__(self):
        check(self.cell is None or int(self.cell) >= 1, "cell", "must be a positive number of pixels")
        check(self.seed >= 0, "seed", f"must be an integer >= 0 (a numpy seed), got {self.seed}")
        check(self.batch_size >= 1, "batch_size", "must be at least 1")
        if self.size is not None:
            check(isinstance(self.size, (list, tuple)) and len(self.size) == 2 and min(self.size) >= 1, "size",
                  f"must be (height, width), got {self.size!r}")
            self.size = (int(self.size[0]), int(self.size[1]))
        self._flow = None

    def run(self, frames, chunk: int = 32):
        src = as_source(frames)
        h, w = self.size or src.size
        self._flow = shuffle_flow(h, w, self.seed, self.cell)
        return super().run(src, chunk)

    def process(self, batch):
        import cv2

        from ..video import resize_frame

        out = []
        for f in batch:
            if self.size is not None and f.shape[:2] != self.size:
                f = resize_frame(f, self.size)
            if self._flow is None or self._flow[0].shape != f.shape[:2]:
                self._flow = shuffle_flow(f.shape[0], f.shape[1], self.seed, self.cell)
            out.append(cv2.remap(f, self._flow[0], self._flow[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT))
        return np.stack(out)
