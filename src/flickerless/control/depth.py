"""Depth control frames through transformers (Depth Anything, DPT/MiDaS, any ``AutoModelForDepthEstimation``).

``model``: a Hugging Face id (default ``depth-anything/Depth-Anything-V2-Small-hf``; ControlNet 1.0
used ``Intel/dpt-hybrid-midas``) or a local folder with ``config.json``, the weights and
``preprocessor_config.json``. Offline, ids come from the local Hugging Face cache; a model that is
not there raises ModelNotFoundError naming the id and how to supply it.

The model's relative output (inverse depth: near is large) becomes near = white, far = black, as the
depth ControlNets expect, resized to the frame's size (bilinear, so no overshoot).

Normalisation over time (``normalize="video"``, the default): one min/max over the whole clip, not
per frame. Per-frame min/max would rescale every frame by its own range, so a hand entering the
frame (a new near point) would darken everything else: a flicker that the diffusion model would
copy. The clip is gone through twice: the first pass stores the raw depth at the model's output
size in a temporary file (not in memory) and gathers the range, the second resizes and scales.
``normalize="frame"`` gives ControlNet's per-image behaviour.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from typing import ClassVar

import numpy as np

from ..errors import InputError, in_batches
from ..weights import transformers_remedy
from .base import Annotator, as_source, check, check_choice, check_local_model, default_device, gray3

log = logging.getLogger("flickerless")

__all__ = ["DepthAnnotator", "DEFAULT_DEPTH_MODEL"]

DEFAULT_DEPTH_MODEL = "depth-anything/Depth-Anything-V2-Small-hf"


@dataclasses.dataclass
class DepthAnnotator(Annotator):
    name: ClassVar[str] = "depth"
    description: ClassVar[str] = "depth (Depth Anything / DPT via transformers), one min/max over the whole clip"

    model: str = DEFAULT_DEPTH_MODEL
    normalize: str = "video"
    device: str | None = None
    dtype: str = "float32"  # float16 on a GPU is faster, but quantises depth into visible bands
    batch_size: int = 8
    progress: bool = True

    def __post_init__(self):
        check_choice("normalize", self.normalize, ("video", "frame"))
        check_choice("dtype", self.dtype, ("float32", "float16", "bfloat16"))
        check(self.batch_size >= 1, "batch_size", "must be at least 1")
        self._model = None
        self._processor = None

    def check_weights(self, size) -> None:
        from ..weights import check_available

        self._check_local()
        check_available(self.model, "depth model", transformers_remedy("model"), index_file="config.json")

    def _check_local(self) -> None:
        check_local_model(self.model, "depth model", "config.json, the weights and preprocessor_config.json",
                          transformers_remedy("model") + ".")

    def _load(self):
        if self._model is None:
            import torch
            from transformers import AutoImageProcessor, AutoModelForDepthEstimation

            from ..weights import load_transformers

            self._check_local()
            dev = torch.device(self.device or default_device())
            dtype = getattr(torch, self.dtype) if dev.type == "cuda" else torch.float32
            self._processor = load_transformers(AutoImageProcessor.from_pretrained, self.model,
                                                "depth model (image processor)", "model")
            self._model = load_transformers(AutoModelForDepthEstimation.from_pretrained, self.model,
                                            "depth model", "model", dtype=dtype).to(dev).eval()
        return self._model, self._processor

    def raw_depth(self, batch: np.ndarray) -> np.ndarray:
        """``(B, H, W, 3)`` uint8 -> the model's relative inverse depth ``(B, h, w)`` float32 at its output size."""
        import torch

        model, proc = self._load()
        p = next(model.parameters())
        try:
            inputs = proc(images=list(batch), return_tensors="pt", input_data_format="channels_last")
        except ValueError as e:  # resized to the model's input, a thin strip has a side of 0 pixels
            h, w = batch.shape[1:3]
            raise InputError(f"depth: frames of {w}x{h} are too small or too thin for the depth model's input "
                             f"({e}); resize the clip (--width/--height) or use another annotator") from None
        pix = inputs["pixel_values"].to(p.device, p.dtype)
        with torch.inference_mode():
            out = model(pixel_values=pix).predicted_depth
        if out.ndim == 4:
            out = out[:, 0]
        out = out.float().cpu().numpy()
        if not np.isfinite(out).all():
            raise InputError(f"depth model {self.model!r} gave non-finite depth (in {self.dtype} on {p.device}): "
                             "use annotators.depth.dtype=\"float32\"")
        return out

    def run(self, frames, chunk: int = 32):
        src = as_source(frames)
        h, w = src.size
        bs = self.batch_size
        fd, path = tempfile.mkstemp(prefix="flickerless-depth-", suffix=".f32")
        os.close(fd)
        try:
            from tqdm.auto import tqdm

            store, lo, hi = None, np.inf, -np.inf
            bar = tqdm(total=len(src), desc="depth (pass 1 of 2)", unit="frame", disable=not self.progress, leave=False)
            for start, part in src.chunks(chunk):  # pass 1: raw depth to disk, global range

                def step(a, b):
                    nonlocal store, lo, hi
                    d = self.raw_depth(part[a:b])
                    if store is None:
                        store = np.memmap(path, np.float32, "w+", shape=(len(src), *d.shape[1:]))
                    store[start + a : start + b] = d
                    for r in self._resized(d, (h, w)):  # the range of what will be shown
                        lo, hi = min(lo, float(r.min())), max(hi, float(r.max()))

                bs = in_batches(len(part), bs, step, "depth annotator",
                                "--set annotators.depth.batch_size={}")
                bar.update(len(part))
            bar.close()
            store.flush()
            log.info("depth: clip range %.4g..%.4g (%s normalisation)", lo, hi, self.normalize)
            yield from self._finish(store, (h, w), lo, hi, chunk)
            del store
        finally:
            os.unlink(path)

    @staticmethod
    def _resized(raw: np.ndarray, size):
        import cv2

        for d in raw:
            yield cv2.resize(d, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)

    def _finish(self, store: np.ndarray, size, lo: float, hi: float, chunk: int):
        h, w = size
        for s in range(0, len(store), chunk):
            raw = np.asarray(store[s : s + chunk])
            out = np.empty((len(raw), h, w), np.float32)
            for i, d in enumerate(self._resized(raw, size)):
                a, b = (lo, hi) if self.normalize == "video" else (float(d.min()), float(d.max()))
                out[i] = (d - a) / (b - a) if b > a else np.zeros_like(d)
            yield gray3(out)
