"""ComfyUI nodes: the deflicker tool inside a ComfyUI graph (the ui layer: thin, no logic of its own).

Two nodes, under the ``flickerless`` category:

- **Deflicker (flickerless)**: ``guide`` (the original frames) and ``style`` (the same frames stylised one
  by one, e.g. by a KSampler over a batch) -> the style without its flicker: :func:`flickerless.deflicker`
  in table or window mode.
- **Keyframes (flickerless)**: ``guide`` and a few stylised ``keyframes`` with their frame ``indices`` ->
  every frame rendered from its bracketing keyframes (EbSynth's way).

Each takes an optional ``MASK`` beside its stylised images (a background remover's matte per frame, which
flickers as the colour does) and gives back a ``MASK`` blended through the same matches: Deflicker's
``style_mask``, Keyframes' ``keyframe_masks``.

ComfyUI's ``IMAGE`` is a float tensor ``(B, H, W, C)`` in [0, 1]; the nodes hand it to :func:`deflicker`
as ``(T, C, H, W)`` and give back the same layout, on the input's device. They run on ComfyUI's own
device (``auto``, what ``--cpu`` or ``--cuda-device`` chose) or the one picked, show progress in
ComfyUI's bar and stop at its Cancel button.

Installing, with the Python that runs ComfyUI: ``python -m pip install CHECKOUT`` (flickerless's folder, or
``git+URL``), then ``python -m flickerless comfyui ComfyUI/`` writes ``custom_nodes/flickerless_nodes.py``,
one import of this module (:func:`install`); restart ComfyUI.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from .errors import InputError, OutputError

log = logging.getLogger(__name__)

CATEGORY = "flickerless"
QUALITIES = ("full", "balanced", "fast", "draft")
SHIM_NAME = "flickerless_nodes.py"
SHIM = (
    '"""flickerless\'s ComfyUI nodes (Deflicker, Keyframes); written by `flickerless comfyui`."""\n'
    "from flickerless.comfyui import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: F401\n"
)


def _comfy(name: str):
    """ComfyUI's module ``comfy.<name>``, or None outside ComfyUI."""
    import importlib

    try:
        return importlib.import_module(f"comfy.{name}")
    except ImportError:
        return None


def _devices() -> list[str]:
    import torch

    names = ["auto", "cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        names.append("mps")
    return names


def _device(choice: str):
    """``auto``: the device ComfyUI runs its models on, where flickerless can run on it (else the CPU,
    said); outside ComfyUI, :func:`flickerless.deflicker`'s own choice."""
    if choice != "auto":
        return choice
    mm = _comfy("model_management")
    if mm is None:
        return None
    import torch

    dev = torch.device(mm.get_torch_device())
    if dev.type not in ("cpu", "cuda", "mps"):
        log.warning("ComfyUI runs on %s, which flickerless does not: deflickering on the CPU", dev)
        return "cpu"
    return dev


def _progress():
    """``progress(done, total)`` for :func:`deflicker`: ComfyUI's bar, and its Cancel, between batches."""
    utils, mm = _comfy("utils"), _comfy("model_management")
    if utils is None and mm is None:
        return False
    bar = None

    def report(done: int, total: int) -> None:
        nonlocal bar
        if mm is not None:
            mm.throw_exception_if_processing_interrupted()
        if utils is not None and total:
            if bar is None:
                bar = utils.ProgressBar(total)
            bar.update_absolute(done, total)

    return report


def _frames(images, name: str):
    """A ComfyUI ``IMAGE`` ``(B, H, W, C)`` as ``(B, C, H, W)``, with what is wrong said in its terms."""
    import torch

    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[-1] not in (3, 4):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise InputError(f"{name}: expected an IMAGE batch (B, H, W, 3), or RGBA (B, H, W, 4), got {shape}")
    if not len(images):
        raise InputError(f"{name}: the IMAGE batch is empty")
    return images.permute(0, 3, 1, 2)


def _same_size(a, b, names: tuple[str, str]) -> None:
    if tuple(a.shape[1:3]) != tuple(b.shape[1:3]):
        (ha, wa), (hb, wb) = a.shape[1:3], b.shape[1:3]
        raise InputError(f"{names[0]} is {wa}x{ha} but {names[1]} is {wb}x{hb}: bring them to one size "
                         f"(an Upscale Image node on the {names[1]}, to {wa}x{ha})")


def _with_mask(frames, mask, name: str):
    """``(B, C, H, W)`` frames with a ComfyUI ``MASK`` (``(B, H, W)``, or one ``(H, W)`` / ``(1, H, W)`` for
    every frame) as one more channel, which :func:`deflicker` blends as it blends an alpha: through the same
    matches and weights, linearly, so a mask of either sense (Load Image's is 1 where the image is transparent)
    comes out in that sense. ``mask`` None: the frames as they are."""
    import torch

    if mask is None:
        return frames
    if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3):
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise InputError(f"{name}: expected a MASK (B, H, W), got {shape}")
    if mask.dtype == torch.bool:
        mask = mask.float()
    elif not mask.is_floating_point():
        if mask.numel() and (int(mask.min()) < 0 or int(mask.max()) > 1):
            raise InputError(f"{name}: an integer mask holding values from {int(mask.min())} to {int(mask.max())}; "
                             "a MASK is floats in [0, 1] (divide a 0-255 mask by 255)")
        mask = mask.float()
    elif mask.numel():
        if not bool(torch.isfinite(mask).all()):
            raise InputError(f"{name} holds NaN or infinite values: replace them")
        lo, hi = (float(v) for v in torch.aminmax(mask.float()))
        if lo < -0.1 or hi > 1.25:  # a resampler's overshoot is let through, as the images' is, and clamped
            hint = " (divide a 0-255 mask by 255)" if hi > 20 else ""
            raise InputError(f"{name}: a MASK is floats in [0, 1], this one ranges from {lo:.4g} to {hi:.4g}{hint}")
        mask = mask.clamp(0, 1)
    if mask.ndim == 2:
        mask = mask[None]
    b, _, h, w = frames.shape
    if tuple(mask.shape[1:]) != (h, w):
        raise InputError(f"{name} is {mask.shape[2]}x{mask.shape[1]} but its images are {w}x{h}: give a mask of their "
                         "size")
    if mask.shape[0] not in (1, b):
        raise InputError(f"{name} has {mask.shape[0]} masks for {b} images: give one per image, or one for all")
    if frames.shape[1] == 4:
        raise InputError(f"{name}: its images carry alpha already (4 channels); give the mask or the alpha, not both")
    if not frames.is_floating_point():  # uint8 images (not ComfyUI's own, which are floats): the mask in 0-255
        mask = mask.mul(255).round_()
    mask = mask.to(device=frames.device, dtype=frames.dtype).expand(b, h, w)
    return torch.cat([frames, mask[:, None]], 1)


def _outputs(frames, masked: bool):
    """:func:`deflicker`'s ``(T, C, H, W)`` result as an ``IMAGE`` and a ``MASK``: the blended mask where one
    was given (the 4th channel); for RGBA images, their blended alpha beside the RGBA; else zeros, as Load
    Image gives for an image without alpha."""
    import torch

    if frames.shape[1] == 4:  # (a mask given was joined on as the 4th channel, and is taken off again)
        image = frames[:, :3] if masked else frames
        return image.permute(0, 2, 3, 1).contiguous(), frames[:, 3].contiguous()
    t, _, h, w = frames.shape
    mask = torch.zeros(t, h, w, dtype=frames.dtype, device=frames.device)
    return frames.permute(0, 2, 3, 1).contiguous(), mask


def _release() -> None:
    mm = _comfy("model_management")
    if mm is not None:
        mm.soft_empty_cache()


def parse_indices(text: str, frames: int, keyframes: int) -> list[int]:
    """Keyframe indices as a user types them: ``"0, 12, 24"`` (0-based frames of the guide batch, any
    separators), one per keyframe image, in the keyframes' order."""
    tokens = [t for t in re.split(r"[\s,;]+", str(text).strip()) if t]
    bad = [t for t in tokens if not re.fullmatch(r"\d+", t)]
    if bad:
        raise InputError(f"indices: {bad[0]!r} is not a frame number; give the keyframes' 0-based frame numbers in "
                         f"the guide batch, one per keyframe image, e.g. \"0, 12, 24\"")
    idx = [int(t) for t in tokens]
    if len(idx) != keyframes:
        raise InputError(f"indices: {len(idx)} frame numbers for {keyframes} keyframe image"
                         f"{'s' if keyframes != 1 else ''}: give one per keyframe, in the batch's order")
    past = [i for i in idx if i >= frames]
    if past:
        raise InputError(f"indices: frame {past[0]} is past the guide's last frame, {frames - 1} (numbers start at 0)")
    twice = sorted({i for i in idx if idx.count(i) > 1})
    if twice:
        raise InputError(f"indices: frame {twice[0]} is given twice; each keyframe needs its own frame")
    return idx


class _Node:
    """What the two nodes share: their outputs, and a run of :func:`deflicker` on ComfyUI's device, with its
    progress bar and Cancel, the GPU cache given back after."""

    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("images", "mask")
    FUNCTION = "run"
    CATEGORY = CATEGORY

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        cls.DESCRIPTION = cls.__doc__  # ComfyUI's node info

    @staticmethod
    def _optional(mask: str, mask_tip: str, cuts_tip: str) -> dict:
        return {
            mask: ("MASK", {"tooltip": mask_tip}),
            "device": (_devices(), {"default": "auto", "tooltip": "auto: the device ComfyUI runs on"}),
            "split_at_cuts": ("BOOLEAN", {"default": True, "tooltip": cuts_tip}),
            "exposure_match": ("BOOLEAN", {"default": False, "tooltip":
                               "for fades and lights going on or off, with a style that follows the light: "
                               "frames matched across the change of level (costs with a posterised or false-"
                               "colour look)"}),
        }

    @staticmethod
    def _deflicker(guide, style, masked: bool, device: str, split_at_cuts: bool, exposure_match: bool, **kwargs):
        from .blend.deflicker import deflicker

        try:
            out = deflicker(guide, style, device=_device(device), cuts=bool(split_at_cuts), progress=_progress(),
                            exposure_match=bool(exposure_match), **kwargs)
        finally:
            _release()
        return _outputs(out, masked)


class Deflicker(_Node):
    """Deflicker a stylised batch against its original frames (DiffSynth's patch blending)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "guide": ("IMAGE", {"tooltip": "the original frames, the batch the style was made from"}),
                "style": ("IMAGE", {"tooltip": "the same frames stylised one by one (as many, the same size)"}),
                "mode": (["table", "window"], {"default": "table", "tooltip":
                         "table: O(n log n), the default; window: each frame blended with its neighbours directly"}),
                "window": ("INT", {"default": 15, "min": 0, "max": 100000, "tooltip":
                           "frames on each side blended into each frame"}),
                "whole_video": ("BOOLEAN", {"default": False, "tooltip":
                                "blend each frame with every frame of its shot (window ignored)"}),
                "quality": (list(QUALITIES), {"default": "full", "tooltip":
                            "PatchMatch effort: draft is about 4.5x faster than full, about 1 dB less"}),
            },
            "optional": cls._optional("style_mask", "a matte per style frame (a background remover's, which "
                                      "flickers too): blended through the same matches, given back as mask",
                                      "deflicker each shot on its own, so nothing is blended across a hard cut"),
        }

    def run(self, guide, style, mode="table", window=15, whole_video=False, quality="full", style_mask=None,
            device="auto", split_at_cuts=True, exposure_match=False):
        g, s = _frames(guide, "guide"), _frames(style, "style")
        if g.shape[0] != s.shape[0]:
            raise InputError(f"guide has {g.shape[0]} frames but style has {s.shape[0]}: they must match frame for "
                             "frame (the style made from this guide batch)")
        _same_size(guide, style, ("guide", "style"))
        s = _with_mask(s, style_mask, "style_mask")
        return self._deflicker(g, s, style_mask is not None, device, split_at_cuts, exposure_match, mode=mode,
                               window=None if whole_video else window, quality=quality)


class Keyframes(_Node):
    """Render every frame from a few stylised keyframes and the original frames (EbSynth's way)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "guide": ("IMAGE", {"tooltip": "the original frames, all of them"}),
                "keyframes": ("IMAGE", {"tooltip": "the stylised keyframes, in the order of their indices"}),
                "indices": ("STRING", {"default": "0", "tooltip":
                            "each keyframe's frame in the guide batch, 0-based, e.g. \"0, 12, 24\""}),
                "quality": (list(QUALITIES), {"default": "full"}),
            },
            "optional": cls._optional("keyframe_masks", "a matte per keyframe: carried to every frame as mask",
                                      "render each shot from its own keyframes"),
        }

    def run(self, guide, keyframes, indices="0", quality="full", keyframe_masks=None, device="auto",
            split_at_cuts=True, exposure_match=False):
        g, k = _frames(guide, "guide"), _frames(keyframes, "keyframes")
        idx = parse_indices(indices, g.shape[0], k.shape[0])
        _same_size(guide, keyframes, ("guide", "keyframes"))
        k = _with_mask(k.to(dtype=g.dtype), keyframe_masks, "keyframe_masks")
        return self._deflicker(g, None, keyframe_masks is not None, device, split_at_cuts, exposure_match,
                               mode="keyframes", keyframes=dict(zip(idx, k)), quality=quality)


NODE_CLASS_MAPPINGS = {"FlickerlessDeflicker": Deflicker, "FlickerlessKeyframes": Keyframes}
NODE_DISPLAY_NAME_MAPPINGS = {"FlickerlessDeflicker": "Deflicker (flickerless)",
                              "FlickerlessKeyframes": "Keyframes (flickerless)"}


def install(comfyui: str | Path) -> Path:
    """Write the one-line custom node that loads these nodes into ComfyUI: ``comfyui`` is ComfyUI's folder
    (or its ``custom_nodes``). Returns the file written; one already there is replaced."""
    root = Path(comfyui).expanduser()
    if not root.is_dir():
        what = "a file, not a folder" if root.exists() else "no such folder"
        raise InputError(f"{root}: {what}; give ComfyUI's folder (the one with main.py and custom_nodes/)")
    nodes = root if root.resolve().name == "custom_nodes" else root / "custom_nodes"  # (a link to it too)
    if not nodes.is_dir():
        raise InputError(f"{root}: not a ComfyUI folder (it has no custom_nodes/); give the folder with main.py "
                         "and custom_nodes/, or custom_nodes/ itself")
    path = nodes / SHIM_NAME
    tmp = path.with_name(f".{SHIM_NAME}.tmp")
    try:
        tmp.write_text(SHIM)
        tmp.replace(path)
    except OSError as e:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:  # a read-only file system: nothing was written to remove
            pass
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from e
    return path
