"""Foreground masks per frame with Segment Anything (SAM, through transformers).

The long-video framework (eq 9) splits each generated frame into foreground (the person) and
background with SAM; the masks then drive average fusion (eq 11) and the foreground/background
fine-tuning losses (eqs 15-16). SAM is prompted per frame by a point, a box, or the person's pose
keypoints (the visible keypoints as foreground points plus the box around them).

All coordinates are normalised: ``x / width``, ``y / height`` in [0, 1]. Masks are ``(T, H, W)``
float in {0, 1} at frame size, computed in batches of frames and cached on disk per (video,
prompt, model, settings), so a second run over the same video and prompt does not load SAM at all.

The model is a Hugging Face repo id (default ``facebook/sam-vit-base``; from the local cache when
``HF_HUB_OFFLINE=1`` or the hub is unreachable) or a local folder holding a ``SamModel`` and its
``SamProcessor`` (``save_pretrained``); a model that cannot be found raises
:class:`~flickerless.errors.ModelNotFoundError` naming the id, the places looked in and how to
supply it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import InputError, ModelNotFoundError, in_batches
from .metrics.frames import as_uint8
from .weights import local_only, not_found

log = logging.getLogger("flickerless")

__all__ = ["DEFAULT_SAM", "SamPrompt", "Segmenter", "load_sam", "segment", "default_cache_dir"]

DEFAULT_SAM = "facebook/sam-vit-base"
_CACHE_VERSION = "sam-masks-1"
PAD_LABEL = -10  # SAM: a padding point, ignored by the prompt encoder


def default_cache_dir() -> Path:
    """``$FLICKERLESS_CACHE/masks``, else ``~/.cache/flickerless/masks``."""
    root = os.environ.get("FLICKERLESS_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "flickerless")
    return Path(root) / "masks"


def _not_found(model: str, err: Exception) -> ModelNotFoundError:
    from .weights import download_hint

    return not_found("SAM model", model, "Supply a local folder holding a SamModel and its SamProcessor "
                     f"(save_pretrained){download_hint(model)}", err)


# --- prompts -------------------------------------------------------------------------------------


@dataclass
class SamPrompt:
    """Per-frame SAM prompts in normalised coordinates: ``points (T, P, 2)`` with ``labels (T, P)``
    (1 foreground, 0 background, ``PAD_LABEL`` padding) and/or ``boxes (T, 4)`` (x0, y0, x1, y1);
    ``valid (T,)`` False where a frame has no prompt (its mask is empty)."""

    points: np.ndarray | None
    labels: np.ndarray | None
    boxes: np.ndarray | None
    valid: np.ndarray

    @classmethod
    def build(cls, num_frames: int, point=None, box=None, keypoints=None, visibility: float = 0.5,
              pose_box: bool = True, pose_margin: float = 0.1) -> "SamPrompt":
        """point: ``(2,)`` for every frame, ``(T, 2)`` one per frame or ``(T, P, 2)`` several per frame;
        box: ``(4,)`` or ``(T, 4)``; keypoints: ``(T, K, 3)`` x, y, visibility (a pose annotator's
        output): the keypoints with visibility > ``visibility`` become foreground points, and with
        ``pose_box`` their bounding box grown by ``pose_margin`` of its size on each side."""
        if sum(p is not None for p in (point, box, keypoints)) == 0:
            raise InputError("give SAM a prompt: point=(x, y), box=(x0, y0, x1, y1) or keypoints (T, K, 3), normalised to [0, 1]")
        if keypoints is not None and (point is not None or box is not None):
            raise InputError("give SAM either keypoints or a point/box, not both")
        t = num_frames
        valid = np.ones(t, dtype=bool)
        points = labels = boxes = None
        if keypoints is not None:
            kp = np.asarray(keypoints, dtype=np.float64)
            if kp.ndim != 3 or kp.shape[0] != t or kp.shape[2] != 3:
                raise InputError(f"keypoints must be (T={t}, K, 3) with x, y normalised and a visibility, got {kp.shape}")
            vis = (kp[..., 2] > visibility) & np.isfinite(kp[..., :2]).all(-1)
            # a pose annotator places landmarks it infers past the frame's edge (a person cut off at the
            # shoulders) outside [0, 1]: they shape the box but are no points; far outside, the keypoints
            # are in pixels, not fractions of the frame
            _check_unit("keypoints", (np.where(vis[..., None], kp[..., :2], 0.5) + 1) / 3,
                        shown=np.where(vis[..., None], kp[..., :2], 0.5), allowed="[-1, 2] (off the frame's edge)")
            inside = vis & ((kp[..., :2] >= 0) & (kp[..., :2] <= 1)).all(-1)
            valid = inside.any(1)
            n = max(1, int(inside.sum(1).max()))
            points = np.zeros((t, n, 2))
            labels = np.full((t, n), PAD_LABEL, dtype=np.int64)
            boxes = np.zeros((t, 4)) if pose_box else None
            for i in range(t):
                xy = kp[i, inside[i], :2]
                points[i, : len(xy)] = xy
                labels[i, : len(xy)] = 1
                if pose_box and len(xy):
                    every = kp[i, vis[i], :2]
                    lo, hi = every.min(0), every.max(0)
                    grow = pose_margin * (hi - lo).max()
                    boxes[i] = np.clip(np.concatenate([lo - grow, hi + grow]), 0, 1)
            return cls(points, labels, boxes, valid)
        if point is not None:
            p = np.asarray(point, dtype=np.float64)
            if p.shape == (2,):
                p = np.broadcast_to(p, (t, 1, 2))
            elif p.shape == (t, 2):
                p = p[:, None]
            elif not (p.ndim == 3 and p.shape[0] == t and p.shape[2] == 2):
                raise InputError(f"point must be (2,), (T={t}, 2) or (T, P, 2) normalised (x, y), got shape {p.shape}")
            _check_unit("point", p)
            points = np.ascontiguousarray(p)
            labels = np.ones(p.shape[:2], dtype=np.int64)
        if box is not None:
            b = np.asarray(box, dtype=np.float64)
            if b.shape == (4,):
                b = np.broadcast_to(b, (t, 4))
            elif b.shape != (t, 4):
                raise InputError(f"box must be (4,) or (T={t}, 4) normalised (x0, y0, x1, y1), got shape {b.shape}")
            _check_unit("box", b)
            if (b[:, 2] < b[:, 0]).any() or (b[:, 3] < b[:, 1]).any():
                raise InputError("box must be (x0, y0, x1, y1) with x0 <= x1 and y0 <= y1")
            boxes = np.ascontiguousarray(b)
        return cls(points, labels, boxes, valid)

    def digest(self) -> bytes:
        h = hashlib.sha256()
        for a in (self.points, self.labels, self.boxes, self.valid):
            h.update(b"none" if a is None else np.ascontiguousarray(a).tobytes() + str(a.shape).encode())
        return h.digest()


def _check_unit(name: str, a: np.ndarray, shown: np.ndarray | None = None, allowed: str = "[0, 1]") -> None:
    """``a`` within [0, 1] (``shown``: the values to name, when ``a`` is them rescaled to ``allowed``)."""
    if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
        shown = a if shown is None else shown
        raise InputError(f"{name} coordinates must be normalised (x / width, y / height) within {allowed}; got values "
                         f"in [{np.nanmin(shown):.3g}, {np.nanmax(shown):.3g}]")


# --- model ---------------------------------------------------------------------------------------


def load_sam(model: str = DEFAULT_SAM, device=None, dtype=None):
    """``(SamModel, SamProcessor)`` from a repo id or a local folder, on ``device`` in ``dtype``
    (default fp32: SAM's masks are thresholded logits and cheap next to the diffusion model)."""
    from transformers import SamModel, SamProcessor

    path = Path(model)
    src = str(path) if path.exists() else model
    local = local_only() or path.exists()
    try:
        sam = SamModel.from_pretrained(src, local_files_only=local)
    except (OSError, ValueError) as e:  # transformers raises these for missing folders, repos and files
        raise _not_found(model, e) from e
    try:
        processor = SamProcessor.from_pretrained(src, local_files_only=local)
    except (OSError, ValueError) as e:
        raise _not_found(model, e) from e
    from .blend.deflicker import resolve_device

    dev = resolve_device(device) if device is not None else torch.device("cpu")
    return sam.to(dev, dtype or torch.float32).eval(), processor


def _model_key(model: str) -> bytes:
    """What identifies the weights: a local folder's files (name, size, mtime), else the repo id."""
    from .weights import weights_identity

    return hashlib.sha256(weights_identity(model).encode()).digest()


def _size(d, key: str) -> int:
    return int(d[key] if isinstance(d, dict) else getattr(d, key))


class Segmenter:
    """A loaded SAM: ``Segmenter(model_id_or_folder)(frames, point=..., box=..., keypoints=...)``."""

    def __init__(self, model: str = DEFAULT_SAM, device=None, dtype=None, batch_size: int = 8):
        self.model_id = model
        self.sam, self.processor = load_sam(model, device, dtype)
        self.batch_size = max(1, int(batch_size))

    @property
    def device(self):
        return next(self.sam.parameters()).device

    @torch.no_grad()
    def __call__(self, frames, prompt: SamPrompt | None = None, progress: bool = False, say_empty: bool = True,
                 **prompt_kw) -> torch.Tensor:
        """frames: ``(T, 3, H, W)`` float in [0, 1] (or uint8 ``(T, H, W, 3)``); the prompt as a
        :class:`SamPrompt` or its ``build`` arguments. Returns masks ``(T, H, W)`` float in {0, 1}.
        ``say_empty``: warn of frames without a prompt (:func:`segment` says it itself, cache hits too)."""
        images = as_uint8(frames, "frames")  # either layout of uint8, floats in [0, 1] checked
        t, h, w = images.shape[:3]
        prompt = prompt or SamPrompt.build(t, **prompt_kw)
        masks = torch.zeros(t, h, w)
        todo = np.flatnonzero(prompt.valid)
        if say_empty:
            _say_empty(prompt)
        ip = self.processor.image_processor
        pad = (_size(ip.pad_size, "height"), _size(ip.pad_size, "width"))
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(todo), desc="segmenting", unit="frame", dynamic_ncols=True)
        dt = next(self.sam.parameters()).dtype

        def step(a, b):
            ids = todo[a:b]
            enc = self.processor(images=[images[i] for i in ids], return_tensors="pt")
            rh, rw = (int(v) for v in enc["reshaped_input_sizes"][0])  # all frames share one size
            scale = torch.tensor([rw, rh], dtype=torch.float32)
            kw = {}
            if prompt.points is not None:
                kw["input_points"] = (torch.from_numpy(prompt.points[ids]).float() * scale)[:, None].to(self.device, dt)
                kw["input_labels"] = torch.from_numpy(prompt.labels[ids])[:, None].to(self.device)
            if prompt.boxes is not None:
                kw["input_boxes"] = (torch.from_numpy(prompt.boxes[ids]).float() * scale.repeat(2))[:, None].to(self.device, dt)
            out = self.sam(pixel_values=enc["pixel_values"].to(self.device, dt), multimask_output=True, **kw)
            best = out.iou_scores[:, 0].argmax(-1)  # (B,) the mask SAM rates highest
            low = out.pred_masks[:, 0][torch.arange(len(ids)), best].float()  # (B, h', w') logits
            up = F.interpolate(low[:, None], size=pad, mode="bilinear", align_corners=False)[..., :rh, :rw]
            full = F.interpolate(up, size=(h, w), mode="bilinear", align_corners=False)[:, 0]
            masks[torch.from_numpy(ids)] = (full > 0).float().cpu()
            if bar is not None:
                bar.update(len(ids))

        try:  # a batch that does not fit the GPU is halved, and stays so
            self.batch_size = in_batches(len(todo), self.batch_size, step, "SAM")
        finally:
            if bar is not None:
                bar.close()
        return masks


#: what a clip without any person is told to do, by default (``segment``'s ``if_empty`` says it for its caller)
PROMPT_INSTEAD = ("prompt SAM with a point or a box instead (flickerless segment --point X,Y or --box X0,Y0,X1,Y1; "
                  "segment(frames, point=..., box=...) in Python)")


def _say_empty(prompt: SamPrompt, if_empty: str = PROMPT_INSTEAD) -> None:
    """A warning for frames whose pose showed no person: their masks are empty. It was an info line, so
    a clip without a person gave all-black masks, exit 0, and under -q not a word. ``if_empty``: what to do
    where no frame has one (a run's longvideo fusion has no --point to give)."""
    t, empty = len(prompt.valid), int((~prompt.valid).sum())
    if empty:
        log.warning("SAM: no person was found in %d of %d frames (no visible pose keypoints): %s empty%s", empty, t,
                    "every mask is" if empty == t else "their masks are", f"; {if_empty}" if empty == t else "")


def segment(frames, point=None, box=None, keypoints=None, model: str = DEFAULT_SAM, device=None,
            batch_size: int = 8, cache: bool = True, cache_dir: str | os.PathLike | None = None,
            segmenter: Segmenter | None = None, progress: bool = False, if_empty: str = PROMPT_INSTEAD,
            **prompt_kw) -> torch.Tensor:
    """Foreground masks ``(T, H, W)`` float in {0, 1} of ``frames`` ``(T, 3, H, W)`` in [0, 1],
    SAM prompted by ``point``, ``box`` or pose ``keypoints`` ``(T, K, 3)`` (normalised; see
    :meth:`SamPrompt.build`). Cached in ``cache_dir`` (default :func:`default_cache_dir`) under a
    key of the video's pixels, the prompt, the model (id, or a local folder's files) and the
    settings; on a cache hit SAM is not loaded. ``segmenter``: an already loaded model to reuse. ``if_empty``:
    what the warning for a clip where pose found no person tells its caller to do."""
    # either layout of uint8, floats in [0, 1] checked: a (T, 3, H, W) uint8 tensor was clamped to 0 or 255
    images = as_uint8(frames, "frames")
    prompt = SamPrompt.build(images.shape[0], point=point, box=box, keypoints=keypoints, **prompt_kw)
    _say_empty(prompt, if_empty)  # before the cache: its masks are as empty
    model_id = segmenter.model_id if segmenter is not None else model
    path = None
    if cache:
        h = hashlib.sha256(_CACHE_VERSION.encode())
        h.update(str(images.shape).encode())
        h.update(images.tobytes())
        h.update(prompt.digest())
        h.update(_model_key(model_id))
        # the model's precision: bf16 masks were served for an fp32 request
        h.update(str(next(segmenter.sam.parameters()).dtype if segmenter is not None else torch.float32).encode())
        path = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        path = path / f"{h.hexdigest()[:32]}.npz"
        if path.is_file():
            try:
                with np.load(path) as z:
                    bits, shape = z["bits"], tuple(z["shape"])
                log.info("SAM masks from cache %s", path)
                return torch.from_numpy(np.unpackbits(bits, count=int(np.prod(shape))).reshape(shape).astype(np.float32))
            except (OSError, KeyError, ValueError) as e:
                log.warning("unreadable mask cache %s (%s); recomputing", path, e)
    seg = segmenter or Segmenter(model, device, batch_size=batch_size)
    masks = seg(images, prompt, progress=progress, say_empty=False)
    if path is not None:
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp.npz")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(tmp, bits=np.packbits(masks.numpy().astype(bool)), shape=np.array(masks.shape))
            os.replace(tmp, path)
        except OSError as e:  # a read-only HOME or a full disk lost every mask SAM had just computed
            with contextlib.suppress(OSError):  # (no folder to hold it, where that was what failed)
                tmp.unlink(missing_ok=True)
            from .control.cache import say_unwritable

            say_unwritable(path.parent, e, "mask cache", "the masks")
    return masks
