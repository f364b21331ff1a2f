"""Edge annotators: softedge (HED), canny, lineart. All give white edges on black, ``(T, H, W, 3)`` uint8.

softedge, ``method="hed"`` (default): the Apache-2.0 HED network that ControlNet 1.1 ships as
``ControlNetHED.pth`` in ``lllyasviel/Annotators`` (RGB input in 0..255, a learned mean ``norm``,
five VGG-like blocks of 2, 2, 3, 3, 3 convolutions with 64, 128, 256, 512, 512 channels, max-pooling
between blocks and a 1x1 side output per block; the edge map is the sigmoid of the mean of the five
side outputs resized to the frame). :class:`ControlNetHED` is written here with the same parameter
names (``norm``, ``block{1..5}.convs.{i}.weight/bias``, ``block{1..5}.projection.weight/bias``) so
the public file loads into it strictly. ``model`` is that file, a folder holding it (an
``Annotators`` checkout), or a Hugging Face repo id (default ``lllyasviel/Annotators``, from the
local cache when offline). Missing weights raise ModelNotFoundError, unless ``fallback=True``,
which logs a warning and uses the weight-free ``sobel`` method instead.

softedge, ``method="sobel"``: weight-free soft edges: Sobel gradient magnitude of the grey frame at
three scales (Gaussian sigma 1, 2, 4), each mapped through ``1 - exp(-m / 0.5)`` with fixed
constants (no per-frame normalisation, so nothing flickers from it) and averaged. A stand-in for
HED when its weights are absent, not a replacement: edges are thinner and texture shows more.
(PidiNet is not implemented.)

canny: ``cv2.Canny`` on the grey frame with ``low``/``high`` thresholds (ControlNet's 100/200).

lineart: weight-free. Dark strokes are where the grey frame is darker than its Gaussian-blurred
surroundings (sigma ``sigma``): ``clip((blur - grey) / contrast, 0, 1)``, white lines on black as the
lineart ControlNet expects. It approximates the look of the lineart annotator (a learned
image-to-sketch net, not implemented here) cheaply and deterministically.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelNotFoundError
from .base import Annotator, check, check_choice, check_local_model, default_device, gray3

log = logging.getLogger("flickerless")

__all__ = ["ControlNetHED", "load_hed", "hed_edges", "sobel_edges", "SoftEdgeAnnotator", "CannyAnnotator",
           "LineartAnnotator", "HED_FILE", "HED_REPO"]

HED_REPO = "lllyasviel/Annotators"
HED_FILE = "ControlNetHED.pth"


class _SideBlock(nn.Module):
    """``layers`` 3x3 convolutions with ReLU (after an optional 2x2 max-pool) and a 1x1 side output."""

    def __init__(self, cin: int, cout: int, layers: int):
        super().__init__()
        self.convs = nn.Sequential(*[nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1) for i in range(layers)])
        self.projection = nn.Conv2d(cout, 1, 1)

    def forward(self, x, pool: bool = False):
        if pool:
            x = F.max_pool2d(x, 2, 2)
        for conv in self.convs:
            x = F.relu(conv(x))
        return x, self.projection(x)


class ControlNetHED(nn.Module):
    """HED edge network (ControlNet 1.1's Apache-2.0 version), randomly initialised; see the module
    docstring. ``forward(x)``: ``(B, 3, H, W)`` RGB float in 0..255 -> five side-output logits
    ``(B, 1, H / 2**k, W / 2**k)``, k = 0..4."""

    LAYOUT = ((3, 64, 2), (64, 128, 2), (128, 256, 3), (256, 512, 3), (512, 512, 3))

    def __init__(self):
        super().__init__()
        self.norm = nn.Parameter(torch.zeros(1, 3, 1, 1))
        for i, (cin, cout, n) in enumerate(self.LAYOUT, 1):
            setattr(self, f"block{i}", _SideBlock(cin, cout, n))

    def forward(self, x):
        h = x - self.norm
        sides = []
        for i in range(1, 6):
            h, side = getattr(self, f"block{i}")(h, pool=i > 1)
            sides.append(side)
        return sides


def _hed_remedy() -> str:
    from ..weights import hub_cli

    return (f"Pass softedge model=<path to {HED_FILE}, or a folder holding it such as a clone of "
            f"https://huggingface.co/{HED_REPO}>, or download it once with `{hub_cli()} download {HED_REPO} "
            f"{HED_FILE}`; or use the weight-free method='sobel' (or fallback=True to use it whenever the weights "
            "are missing).")


def _find_hed(model: str = HED_REPO) -> Path:
    """The HED weights file of ``model`` (file, folder or repo id); raises ModelNotFoundError."""
    from ..weights import find_file

    check_local_model(model, "HED softedge weights", HED_FILE, _hed_remedy())
    return find_file(str(model), HED_FILE, "HED softedge weights", _hed_remedy())


def load_hed(model: str = HED_REPO, device="cpu"):
    """The HED network with weights from ``model`` (file, folder or repo id); raises ModelNotFoundError."""
    path = _find_hed(model)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelNotFoundError(f"HED softedge weights {path}: cannot be read ({type(e).__name__}: {e}). {_hed_remedy()}") from e
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    sd = {k[7:] if k.startswith("module.") else k: v for k, v in sd.items()}
    net = ControlNetHED()
    missing, unexpected = [], []
    own = net.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    wrong = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        raise ModelNotFoundError(
            f"{path} is not a ControlNetHED state dict (missing {missing[:3]}, unexpected {unexpected[:3]}, "
            f"wrong shape {wrong[:3]}). {_hed_remedy()}")
    net.load_state_dict(sd, strict=True)
    return net.to(device).eval()


def hed_edges(net, batch: np.ndarray) -> np.ndarray:
    """``(B, H, W, 3)`` uint8 -> soft edges ``(B, H, W)`` float in [0, 1]."""
    p = next(net.parameters())
    x = torch.from_numpy(np.ascontiguousarray(batch)).to(p.device).permute(0, 3, 1, 2).to(p.dtype)
    h, w = batch.shape[1:3]
    # the network pools by 2 four times: a side under 16 pixels left nothing to pool ("Output size is too
    # small"); such a frame is run with its edge pixels repeated out to 16, and the edges cropped back
    ph, pw = max(0, _HED_MIN - h), max(0, _HED_MIN - w)
    if ph or pw:
        x = F.pad(x.float(), (0, pw, 0, ph), mode="replicate").to(p.dtype)
    with torch.inference_mode():
        sides = net(x)
        up = [F.interpolate(s.float(), size=(h + ph, w + pw), mode="bilinear", align_corners=False) for s in sides]
        edge = torch.sigmoid(torch.stack(up).mean(0))[:, 0, :h, :w]
    return edge.cpu().numpy()


_HED_MIN = 16  # the smallest side HED's four poolings take


def sobel_edges(batch: np.ndarray, scales=(1.0, 2.0, 4.0), k: float = 0.5) -> np.ndarray:
    """Weight-free soft edges ``(B, H, W)`` float in [0, 1] (see the module docstring)."""
    import cv2

    out = np.empty(batch.shape[:3], np.float32)
    for i, f in enumerate(batch):
        g = cv2.cvtColor(f, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
        acc = np.zeros_like(g)
        for s in scales:
            b = cv2.GaussianBlur(g, (0, 0), s)
            gx = cv2.Sobel(b, cv2.CV_32F, 1, 0, ksize=3)
            gy = cv2.Sobel(b, cv2.CV_32F, 0, 1, ksize=3)
            # a blurred step of height c has a peak gradient ~ c / (sigma * sqrt(2 pi)): scale it back
            m = np.sqrt(gx * gx + gy * gy) * s * 0.63
            acc += 1.0 - np.exp(-m / k)
        out[i] = acc / len(scales)
    return out


@dataclasses.dataclass
class SoftEdgeAnnotator(Annotator):
    """Soft edges: HED network (weights needed) or weight-free multi-scale Sobel."""

    name: ClassVar[str] = "softedge"
    description: ClassVar[str] = "soft edges: HED (ControlNetHED.pth) or weight-free multi-scale Sobel (method='sobel')"
    runtime_settings: ClassVar[tuple[str, ...]] = ("device", "batch_size", "progress", "fallback")

    method: str = "hed"
    model: str = HED_REPO
    fallback: bool = False
    safe: bool = False
    device: str | None = None
    batch_size: int = 4
    progress: bool = True

    def __post_init__(self):
        check_choice("method", self.method, ("hed", "sobel"))
        check(self.batch_size >= 1, "batch_size", "must be at least 1")
        self._net = None
        self._path = None

    def cache_settings(self):
        s = super().cache_settings()
        if s["method"] == "sobel":
            s.pop("model")
        return s

    def prepare(self, frames=None):
        """Find the HED weights file (or fall back to Sobel, logged) without loading the network."""
        if self.method == "hed" and self._path is None:
            try:
                self._path = _find_hed(self.model)
            except ModelNotFoundError as e:
                if not self.fallback:
                    raise
                log.warning("softedge: HED weights not found (%s); using the weight-free Sobel soft edges instead", e)
                self.method = "sobel"

    def _load(self):
        self.prepare()
        if self._net is None and self.method == "hed":
            self._net = load_hed(str(self._path), self.device or default_device())
        return self._net

    def process(self, batch):
        net = self._load()
        e = hed_edges(net, batch) if self.method == "hed" else sobel_edges(batch)
        if self.safe:  # ControlNet's "safe" HED: quantise to a few levels, less texture detail
            e = np.minimum(np.floor(e * 4.0 + 0.5) / 4.0, 1.0)
        return gray3(e)


@dataclasses.dataclass
class CannyAnnotator(Annotator):
    name: ClassVar[str] = "canny"
    description: ClassVar[str] = "Canny edges (cv2.Canny, thresholds low/high)"

    low: int = 100
    high: int = 200
    device: str | None = None
    batch_size: int = 32
    progress: bool = True

    def __post_init__(self):
        check(0 <= self.low <= self.high, "low", f"need 0 <= low <= high, got low={self.low}, high={self.high}")
        check(self.batch_size >= 1, "batch_size", "must be at least 1")

    def process(self, batch):
        import cv2

        out = np.empty(batch.shape, np.uint8)
        for i, f in enumerate(batch):
            e = cv2.Canny(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), self.low, self.high)
            out[i] = e[..., None]
        return out


@dataclasses.dataclass
class LineartAnnotator(Annotator):
    name: ClassVar[str] = "lineart"
    description: ClassVar[str] = "line art, weight-free (dark strokes vs blurred surroundings), white on black"

    sigma: float = 3.0
    contrast: float = 0.08
    device: str | None = None
    batch_size: int = 32
    progress: bool = True

    def __post_init__(self):
        check(self.sigma > 0, "sigma", "must be positive")
        check(self.contrast > 0, "contrast", "must be positive")
        check(self.batch_size >= 1, "batch_size", "must be at least 1")

    def process(self, batch):
        import cv2

        out = np.empty(batch.shape[:3], np.float32)
        for i, f in enumerate(batch):
            g = cv2.cvtColor(f, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
            g = cv2.GaussianBlur(g, (0, 0), 0.7)  # drop sensor noise before differencing
            bg = cv2.GaussianBlur(g, (0, 0), self.sigma)
            out[i] = np.clip((bg - g) / self.contrast, 0.0, 1.0)
        return gray3(out)
