"""OpenPose-style pose control frames: mediapipe keypoints -> COCO-18 -> smoothed over time -> drawn.

Keypoints (:func:`extract_keypoints`): mediapipe's pose landmarker (the BlazePose model that ships
inside the mediapipe 0.10.21 wheel, so it works offline), run in tracking mode over the clip, one
person. Its 33 landmarks are mapped to OpenPose's 18 body keypoints in COCO order
(:data:`OPENPOSE_KEYPOINTS`: nose, neck, right shoulder/elbow/wrist, left shoulder/elbow/wrist,
right hip/knee/ankle, left hip/knee/ankle, right eye, left eye, right ear, left ear; "right" is the
person's right). The neck, which mediapipe lacks, is the midpoint of the shoulders. Result:
``(T, 18, 3)`` float32 of ``x, y`` as fractions of the frame's width and height (a landmark the model
places off the frame, a hand outside the picture, falls outside [0, 1], with a low confidence) and a
confidence in [0, 1] (mediapipe's visibility; the neck takes the lower of the two shoulders). A frame
with no detection has confidence 0 everywhere (and x = y = 0).

Smoothing (:func:`smooth_keypoints`): per keypoint and coordinate, a Savitzky-Golay filter over
time (``window`` frames, odd; polynomial ``order`` < window). Before it, gaps where a keypoint is
missing (confidence < ``min_confidence``) for at most ``max_gap`` frames between two detections are
bridged by linear interpolation; longer gaps and the ends of the clip stay missing, so nothing is
smoothed into zero or invented. Each run of present frames is filtered on its own, with the window
shortened to the run's length (runs shorter than ``order + 2`` frames are left as they are).

Drawing (:func:`draw_pose`): the way ControlNet 1.1's openpose annotator draws a body (the images
the OpenPose ControlNets were trained on): black background, the 17 limbs as filled ellipses of
half-width 4 in the 18 standard colours at 60 % brightness, then a circle of radius 4 in the
keypoint's colour on each joint; sizes are for a 512-pixel image and scale with the shorter side.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
from typing import ClassVar

import numpy as np

from ..errors import InputError
from .base import Annotator, as_source, check, check_choice, default_device

log = logging.getLogger("flickerless")

__all__ = ["OPENPOSE_KEYPOINTS", "LIMBS", "COLORS", "MEDIAPIPE_TO_OPENPOSE", "extract_keypoints",
           "smooth_keypoints", "pose_keypoints", "draw_pose", "PoseAnnotator"]

OPENPOSE_KEYPOINTS = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
    "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear",
)

# OpenPose index -> mediapipe landmark index (the neck, 1, is the mean of the shoulders 11 and 12)
MEDIAPIPE_TO_OPENPOSE = (0, None, 12, 14, 16, 11, 13, 15, 24, 26, 28, 23, 25, 27, 5, 2, 8, 7)

# limbs as pairs of OpenPose indices (0-based), in the order their colours go; the first 17 are drawn
LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12),
         (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17))

COLORS = ((255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
          (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
          (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85))


_NO_MEDIAPIPE = ("the pose annotator needs mediapipe 0.10.21 (wheels for Python 3.9-3.12): `pip install --no-deps "
                 "mediapipe==0.10.21` then `pip install \"flickerless[pose]\"` (what it imports: its own requirements "
                 "pin numpy<2); or backend=\"openpose\" with controlnet_aux and its weights")


def _mediapipe_pose(model_complexity: int, min_detection: float):
    try:
        import mediapipe as mp
    except ImportError as e:  # pragma: no cover - depends on the install
        raise InputError(_NO_MEDIAPIPE) from e
    return mp.solutions.pose.Pose(static_image_mode=False, model_complexity=model_complexity,
                                  smooth_landmarks=True, enable_segmentation=False,
                                  min_detection_confidence=min_detection, min_tracking_confidence=0.5)


# what mediapipe's C++ side writes straight to stderr as its models first run: noise to a user, and no
# setting of mediapipe's (nor GLOG_minloglevel, TF_CPP_MIN_LOG_LEVEL, ABSL_MIN_LOG_LEVEL) turns it off
_MEDIAPIPE_NOISE = ("Created TensorFlow Lite XNNPACK delegate", "before absl::InitializeLog()",
                    "inference_feedback_manager.cc", "landmark_projection_calculator.cc")


@contextlib.contextmanager
def _without_native_noise(noise=_MEDIAPIPE_NOISE):
    """Around a run of a mediapipe model (until it has found a person once), the process's stderr
    (file descriptor 2) goes to a temporary file; what it holds comes back afterwards, without the
    lines of ``noise`` (anything else, an error of mediapipe's or a line of another thread, is kept)."""
    import sys
    import tempfile

    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no file descriptor 2 to borrow: left as it is
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [line for line in tmp.read().splitlines(keepends=True)
                    if not any(n.encode() in line for n in noise)]
            if kept:
                os.write(2, b"".join(kept))


def _landmarks_to_openpose(lms) -> np.ndarray:
    mp = np.array([(p.x, p.y, p.visibility) for p in lms], np.float32)  # (33, 3)
    out = np.zeros((18, 3), np.float32)
    for k, j in enumerate(MEDIAPIPE_TO_OPENPOSE):
        if j is not None:
            out[k] = mp[j]
    out[1, :2] = (mp[11, :2] + mp[12, :2]) / 2
    out[1, 2] = min(mp[11, 2], mp[12, 2])
    out[:, 2] = np.clip(out[:, 2], 0.0, 1.0)
    return out


def extract_keypoints(frames, model_complexity: int = 1, min_detection: float = 0.5, chunk: int = 32,
                      progress: bool = False) -> np.ndarray:
    """OpenPose COCO-18 keypoints of one person per frame: ``(T, 18, 3)`` float32 (x, y as fractions of the frame, outside [0, 1] for a landmark placed off it;
    confidence).

    frames: anything :func:`flickerless.control.base.as_source` takes (``(T, H, W, 3)`` uint8, ...).
    Frames go through mediapipe in order (tracking mode), one chunk in memory at a time.
    """
    from tqdm.auto import tqdm

    if model_complexity not in (0, 1, 2):
        raise InputError(f"setting 'model_complexity': {model_complexity!r} is not one of 0, 1, 2")
    src = as_source(frames)
    out = np.zeros((len(src), 18, 3), np.float32)
    with _mediapipe_pose(model_complexity, min_detection) as pose, \
            tqdm(total=len(src), desc="pose keypoints", unit="frame", disable=not progress, leave=False) as bar:
        seen = False  # mediapipe's native noise comes with its first run and its first person found
        for start, part in src.chunks(chunk):
            for i, f in enumerate(part):
                with contextlib.nullcontext() if seen else _without_native_noise():
                    res = pose.process(np.ascontiguousarray(f))
                if res.pose_landmarks is not None:
                    seen = True
                    out[start + i] = _landmarks_to_openpose(res.pose_landmarks.landmark)
            bar.update(len(part))
    found = int((out[:, :, 2].max(axis=1) > 0).sum())
    log.info("pose: a person found in %d of %d frames", found, len(src))
    return out


def _check_smoothing(window: int, order: int, max_gap: int) -> None:
    if not isinstance(window, (int, np.integer)) or window < 1 or window % 2 == 0:
        raise InputError(f"setting 'window': the Savitzky-Golay window must be an odd number of frames >= 1, got {window!r}"
                         + (f" (try {window + 1})" if isinstance(window, (int, np.integer)) and window > 0 else ""))
    if not isinstance(order, (int, np.integer)) or order < 0 or (window > 1 and order >= window):
        raise InputError(f"setting 'order': the polynomial order must be an integer >= 0 and below window={window}, got {order!r}")
    if not isinstance(max_gap, (int, np.integer)) or max_gap < 0:
        raise InputError(f"setting 'max_gap': must be an integer >= 0 (frames), got {max_gap!r}")


def _runs(mask: np.ndarray):
    """(start, end) of each run of True in a 1-D bool array."""
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1)))


def smooth_keypoints(keypoints: np.ndarray, window: int = 7, order: int = 2, max_gap: int = 5,
                     min_confidence: float = 0.3) -> np.ndarray:
    """Bridge short gaps and Savitzky-Golay-smooth keypoint tracks over time (see the module docstring).

    keypoints: ``(T, K, 3)`` (x, y, confidence). Returns a new ``(T, K, 3)`` array: present and
    bridged points smoothed (bridged ones get the lower confidence of the two ends), the rest unchanged.
    ``window=1`` bridges gaps only.
    """
    from scipy.signal import savgol_filter

    _check_smoothing(window, order, max_gap)
    kp = np.asarray(keypoints, np.float32)
    if kp.ndim != 3 or kp.shape[2] != 3:
        raise InputError(f"keypoints must be (T, K, 3), got {kp.shape}")
    out = kp.copy()
    t_all = np.arange(len(kp))
    for k in range(kp.shape[1]):
        present = kp[:, k, 2] >= min_confidence
        if not present.any():
            continue
        track = kp[:, k].copy()
        idx = np.flatnonzero(present)
        for a, b in zip(idx[:-1], idx[1:]):  # bridge short gaps between two detections
            if 1 < b - a <= max_gap + 1:
                t = t_all[a + 1 : b]
                for c in (0, 1):
                    track[a + 1 : b, c] = np.interp(t, [a, b], [track[a, c], track[b, c]])
                track[a + 1 : b, 2] = min(track[a, 2], track[b, 2])
                present[a + 1 : b] = True
        for s, e in _runs(present):
            n = e - s
            w = min(window, n if n % 2 else n - 1)
            if window > 1 and w > order and w >= 3:
                for c in (0, 1):
                    track[s:e, c] = savgol_filter(track[s:e, c], w, order, mode="interp")
        out[present, k] = track[present]
    return out


OPENPOSE_REPO = "lllyasviel/Annotators"


_OPENPOSE_WEIGHTS = "OpenPose weights (body_pose_model.pth, hand_pose_model.pth, facenet.pth)"
_OPENPOSE_REMEDY = "Pass openpose_model=<Hugging Face id, or a local folder holding those three files>"


def _openpose_detector():
    """controlnet_aux's OpenposeDetector class; InputError without controlnet_aux."""
    try:
        from controlnet_aux.open_pose import OpenposeDetector
    except Exception as e:  # noqa: BLE001 - ImportError, or a torchvision built for another torch
        from ..weights import torchvision_install

        raise InputError(f"the OpenPose pose backend needs controlnet_aux and the torchvision made for your torch "
                         f"({type(e).__name__}: {e}): {torchvision_install('controlnet_aux')}; or use "
                         "backend=\"mediapipe\"") from e
    return OpenposeDetector


def load_openpose(model: str = OPENPOSE_REPO, device=None):
    """controlnet_aux's OpenPose body estimator (``body_pose_model.pth``; controlnet_aux's loader also
    wants ``hand_pose_model.pth`` and ``facenet.pth`` beside it) from a repo id (the local Hugging Face
    cache when offline) or a folder. Raises InputError without controlnet_aux, ModelNotFoundError
    without the weights."""
    detector = _openpose_detector()
    import torch

    from ..weights import load_transformers

    def loader(name, local_files_only=False):
        return detector.from_pretrained(name, local_files_only=local_files_only)

    det = load_transformers(loader, model, _OPENPOSE_WEIGHTS, "openpose_model", _OPENPOSE_REMEDY)
    det.body_estimation.to(torch.device(device or default_device()))  # only the body model is used
    return det


def openpose_available(model: str = OPENPOSE_REPO) -> bool:
    """Whether the OpenPose backend can run without downloading: controlnet_aux imports and
    ``body_pose_model.pth`` is in the folder ``model`` or in the local Hugging Face cache."""
    from pathlib import Path

    try:
        import controlnet_aux.open_pose  # noqa: F401
    except Exception:  # noqa: BLE001 - not installed, or a torchvision built for another torch
        return False
    if Path(model).is_dir():
        return (Path(model) / "body_pose_model.pth").is_file() or (Path(model) / "annotator/ckpts/body_pose_model.pth").is_file()
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(model, "body_pose_model.pth"), str)
    except Exception:  # noqa: BLE001 - not a repo id
        return False


def openpose_keypoints(frames, model: str = OPENPOSE_REPO, device=None, progress: bool = False) -> np.ndarray:
    """OpenPose (controlnet_aux) COCO-18 keypoints of the highest-scoring person per frame:
    ``(T, 18, 3)`` float32 (x, y in [0, 1], the part's confidence), as :func:`extract_keypoints`."""
    from tqdm.auto import tqdm

    det = load_openpose(model, device)
    src = as_source(frames)
    h, w = src.size
    out = np.zeros((len(src), 18, 3), np.float32)
    with tqdm(total=len(src), desc="pose keypoints (OpenPose)", unit="frame", disable=not progress, leave=False) as bar:
        for start, part in src.chunks(32):
            for i, f in enumerate(part):
                candidate, subset = det.body_estimation(np.ascontiguousarray(f[:, :, ::-1]))  # it takes BGR
                bodies = det.body_estimation.format_body_result(candidate, subset)
                if bodies:
                    best = max(bodies, key=lambda b: b.total_score)
                    for j, k in enumerate(best.keypoints[:18]):
                        if k is not None:
                            out[start + i, j] = (k.x / w, k.y / h, k.score)
            bar.update(len(part))
    found = int((out[:, :, 2].max(axis=1) > 0).sum())
    log.info("pose (OpenPose): a person found in %d of %d frames", found, len(src))
    return out


def pose_keypoints(frames, smooth: bool = True, window: int = 7, order: int = 2, max_gap: int = 5,
                   min_confidence: float = 0.3, model_complexity: int = 1, progress: bool = False,
                   backend: str = "mediapipe", openpose_model: str = OPENPOSE_REPO, device=None) -> np.ndarray:
    """Keypoints from ``backend`` (``"mediapipe"``: :func:`extract_keypoints`; ``"openpose"``:
    :func:`openpose_keypoints`; ``"auto"``: OpenPose when controlnet_aux and its weights are there,
    else mediapipe, said in the log), then (``smooth=True``) :func:`smooth_keypoints`: ``(T, 18, 3)``."""
    from ..errors import ModelNotFoundError

    if smooth:
        _check_smoothing(window, order, max_gap)  # fail before the slow part
    kp = None
    if backend in ("openpose", "auto"):
        try:
            kp = openpose_keypoints(frames, openpose_model, device, progress)
        except (InputError, ModelNotFoundError) as e:
            if backend == "openpose":
                raise
            log.info("pose: OpenPose not available (%s); using mediapipe", str(e).split(";")[0])
    if kp is None:
        kp = extract_keypoints(frames, model_complexity=model_complexity, progress=progress)
    return smooth_keypoints(kp, window, order, max_gap, min_confidence) if smooth else kp


def draw_pose(keypoints: np.ndarray, size: tuple[int, int], min_confidence: float = 0.3) -> np.ndarray:
    """One OpenPose body image ``(H, W, 3)`` uint8 from ``keypoints`` ``(18, 3)`` (x, y in [0, 1], confidence)."""
    import cv2

    h, w = size
    canvas = np.zeros((h, w, 3), np.uint8)
    f = min(h, w) / 512.0
    stick = max(1, int(round(4 * f)))
    radius = max(1, int(round(4 * f)))
    kp = np.asarray(keypoints, np.float64)
    ok = kp[:, 2] >= min_confidence
    for (a, b), color in zip(LIMBS, COLORS):
        if not (ok[a] and ok[b]):
            continue
        xa, ya, xb, yb = kp[a, 0] * w, kp[a, 1] * h, kp[b, 0] * w, kp[b, 1] * h
        length = math.hypot(xa - xb, ya - yb)
        angle = math.degrees(math.atan2(ya - yb, xa - xb))
        poly = cv2.ellipse2Poly((int((xa + xb) / 2), int((ya + yb) / 2)), (int(length / 2), stick), int(angle), 0, 360, 1)
        cv2.fillConvexPoly(canvas, poly, color)
    canvas = (canvas * 0.6).astype(np.uint8)
    for i in range(18):
        if ok[i]:
            cv2.circle(canvas, (int(kp[i, 0] * w), int(kp[i, 1] * h)), radius, COLORS[i], thickness=-1)
    return canvas


_SAID_MEDIAPIPE: set[str] = set()  # the OpenPose models whose "using mediapipe" this process has said


@dataclasses.dataclass
class PoseAnnotator(Annotator):
    name: ClassVar[str] = "pose"
    description: ClassVar[str] = "OpenPose skeletons from mediapipe keypoints (offline), Savitzky-Golay smoothed over time"

    smooth: bool = True
    window: int = 7
    order: int = 2
    max_gap: int = 5
    min_confidence: float = 0.3
    model_complexity: int = 1
    backend: str = "auto"  # auto: OpenPose (controlnet_aux) when it and its weights are there, else mediapipe
    openpose_model: str = OPENPOSE_REPO
    device: str | None = None
    batch_size: int = 32
    progress: bool = True

    def __post_init__(self):
        if self.smooth:
            _check_smoothing(self.window, self.order, self.max_gap)
        check(self.model_complexity in (0, 1, 2), "model_complexity", "must be 0, 1 or 2")
        check_choice("backend", self.backend, ("mediapipe", "openpose", "auto"))
        self._backend = None if self.backend == "auto" else self.backend  # resolved in prepare()
        check(0.0 <= self.min_confidence <= 1.0, "min_confidence", "must be in [0, 1]")
        self.keypoints: np.ndarray | None = None

    def prepare(self, frames=None) -> None:
        """Resolve ``backend="auto"`` (OpenPose if controlnet_aux imports and its weights are found
        locally, else mediapipe) before the cache key is taken; loads no model."""
        if self._backend is None:
            self._backend = "openpose" if openpose_available(self.openpose_model) else "mediapipe"
            # once a process: each PoseAnnotator said it, 2-4 times a run (the weights check, the annotation,
            # the fusion's keypoints)
            if self._backend == "mediapipe" and self.openpose_model not in _SAID_MEDIAPIPE:
                _SAID_MEDIAPIPE.add(self.openpose_model)
                log.info("pose: OpenPose (controlnet_aux + %s) not available here; using mediapipe", self.openpose_model)

    def check_weights(self, size) -> None:
        """The backend this annotator will run can: mediapipe installed, or controlnet_aux and the OpenPose
        weights (a local folder, or a repo id in the Hugging Face cache when offline)."""
        self.prepare()
        if self._backend == "mediapipe":
            import importlib.util

            if importlib.util.find_spec("mediapipe") is None:
                raise InputError(_NO_MEDIAPIPE)
            return
        from ..weights import check_available

        _openpose_detector()
        check_available(self.openpose_model, _OPENPOSE_WEIGHTS, _OPENPOSE_REMEDY, index_file="body_pose_model.pth")

    def cache_settings(self):
        self.prepare()
        s = super().cache_settings()
        s["backend"] = self._backend
        if self._backend == "mediapipe":
            s.pop("openpose_model")
        return s

    def compute_keypoints(self, frames) -> np.ndarray:
        """Keypoints ``(T, 18, 3)`` with this annotator's settings (no drawing, no cache)."""
        self.prepare()
        return pose_keypoints(frames, self.smooth, self.window, self.order, self.max_gap, self.min_confidence,
                              self.model_complexity, progress=self.progress, backend=self._backend,
                              openpose_model=self.openpose_model, device=self.device)

    def extras(self):
        return {} if self.keypoints is None else {"keypoints": self.keypoints}

    def run(self, frames, chunk: int = 32):
        src = as_source(frames)
        self.keypoints = self.compute_keypoints(src)
        for s in range(0, len(src), chunk):
            yield np.stack([draw_pose(k, src.size, self.min_confidence) for k in self.keypoints[s : s + chunk]])
