"""Tile control frames: super-resolve, then the (upscaled, resized) frame is the tile ControlNet's image.

Output size: ``size=(H, W)`` when given, else the frame's size times ``scale`` (default 1: the
video's size, for re-rendering at the same size; ``restore`` asks for the size it samples at).

Super-resolution (``sr``): ``"swin2sr"`` uses ``Swin2SRForImageSuperResolution`` through transformers
(``model``: a Hugging Face id, default ``caidas/swin2SR-classical-sr-x2-64``, or a local folder);
missing weights raise ModelNotFoundError. ``"auto"`` (default) uses Swin2SR when its weights are
present and Lanczos otherwise, saying so in the log. ``"lanczos"`` never loads a model. When the
output is no larger than the frame, no model runs (Lanczos/area resampling only). The model's
output (its own ``upscale`` factor, e.g. x2) is resampled to the output size with Lanczos; for a
target beyond its factor it runs again on its own output until the factor is reached (at most 3 times).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import ClassVar

import numpy as np

from ..errors import ModelNotFoundError
from .base import Annotator, as_source, check, check_choice, check_local_model, default_device

log = logging.getLogger("flickerless")

__all__ = ["TileAnnotator", "DEFAULT_SR_MODEL", "swin2sr_upscale"]

DEFAULT_SR_MODEL = "caidas/swin2SR-classical-sr-x2-64"


def swin2sr_upscale(model, batch: np.ndarray, window: int | None = None) -> np.ndarray:
    """``(B, H, W, 3)`` uint8 -> ``(B, H*s, W*s, 3)`` uint8 with a Swin2SR model (s = its ``upscale``).

    Frames are padded (reflect) to a multiple of the model's window size and the result cropped back.
    """
    import torch
    import torch.nn.functional as F

    cfg = model.config
    s = int(cfg.upscale)
    win = int(window or cfg.window_size)
    p = next(model.parameters())
    x = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).to(p.device, torch.float32) / 255.0
    h, w = x.shape[-2:]
    ph, pw = (-h) % win, (-w) % win
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="reflect" if min(h, w) > max(ph, pw) else "replicate")
    with torch.inference_mode():
        y = model(pixel_values=x.to(p.dtype)).reconstruction.float()
    y = y[..., : h * s, : w * s].clamp(0, 1)
    return (y.mul(255).round().byte().permute(0, 2, 3, 1).cpu().numpy())


@dataclasses.dataclass
class TileAnnotator(Annotator):
    name: ClassVar[str] = "tile"
    description: ClassVar[str] = "tile: super-resolution (Swin2SR via transformers, else Lanczos) then the resized frame"

    scale: float = 1.0
    size: tuple[int, int] | None = None
    sr: str = "auto"
    model: str = DEFAULT_SR_MODEL
    device: str | None = None
    batch_size: int = 2
    progress: bool = True

    def __post_init__(self):
        check_choice("sr", self.sr, ("auto", "swin2sr", "lanczos"))
        check(self.scale > 0, "scale", "must be positive")
        if self.size is not None:
            check(len(self.size) == 2 and min(self.size) >= 1, "size", "must be (height, width)")
            self.size = (int(self.size[0]), int(self.size[1]))
        self._model = None
        self._method = None  # resolved: "swin2sr" or "lanczos"
        self._resolved_for = None

    def cache_settings(self):
        s = super().cache_settings()
        s["sr"] = self._method or s["sr"]
        if s["sr"] == "lanczos":
            s.pop("model")
        return s

    def _resolve(self, in_size, out_size):
        if self._method is not None and self._resolved_for == (tuple(in_size), tuple(out_size)):
            return
        self._resolved_for = (tuple(in_size), tuple(out_size))
        if out_size[0] <= in_size[0] and out_size[1] <= in_size[1]:
            self._method = "lanczos"
            return
        if self.sr == "lanczos":
            self._method = "lanczos"
            return
        try:
            from ..weights import load_transformers

            from transformers import AutoConfig

            self._check_local()
            load_transformers(AutoConfig.from_pretrained, self.model, "Swin2SR super-resolution model", "model")
            self._method = "swin2sr"
        except ModelNotFoundError as e:
            if self.sr == "swin2sr":
                raise
            # (the error's remedy is the Python argument's, "Pass model=": wrong in `run`, where it is a setting)
            log.warning("tile: no super-resolution weights (%s); upscaling with Lanczos instead (the tile annotator's "
                        "model setting gives Swin2SR weights; sr=\"lanczos\" says this is meant)", str(e).split(";")[0])
            self._method = "lanczos"

    def _check_local(self) -> None:
        check_local_model(self.model, "Swin2SR super-resolution model", "config.json and the weights",
                          "Pass model=<Hugging Face id, or local folder with config.json and the weights>.")

    def out_size(self, in_size) -> tuple[int, int]:
        if self.size is not None:
            return self.size
        return max(1, int(round(in_size[0] * self.scale))), max(1, int(round(in_size[1] * self.scale)))

    def prepare(self, frames):
        """Decide Swin2SR or Lanczos (config present or not) before the cache key is taken."""
        src = as_source(frames)
        self._resolve(src.size, self.out_size(src.size))

    def check_weights(self, size) -> None:
        if self.sr == "swin2sr":  # "auto" falls back to Lanczos, said where it runs
            super().check_weights(size)

    def _load(self):
        if self._model is None:
            import torch
            from transformers import Swin2SRForImageSuperResolution

            from ..weights import load_transformers

            self._check_local()
            dev = torch.device(self.device or default_device())
            self._model = load_transformers(Swin2SRForImageSuperResolution.from_pretrained, self.model,
                                            "Swin2SR super-resolution model", "model").to(dev).eval()
        return self._model

    def process(self, batch):
        from ..video import resize_frame

        in_size = batch.shape[1:3]
        out = self.out_size(in_size)
        self._resolve(in_size, out)
        x = batch
        if self._method == "swin2sr":
            for _ in range(3):
                x = swin2sr_upscale(self._load(), x)
                if x.shape[1] >= out[0] and x.shape[2] >= out[1]:
                    break
        if x.shape[1:3] != tuple(out):
            if x.shape[1] >= out[0] and x.shape[2] >= out[1]:
                import cv2

                x = np.stack([cv2.resize(f, (out[1], out[0]), interpolation=cv2.INTER_AREA) for f in x])
            else:
                x = np.stack([resize_frame(f, out) for f in x])
        return np.ascontiguousarray(x)
