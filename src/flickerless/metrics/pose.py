"""Pose error (Pose-MSE, DiffSynth Table 4): the same pose estimator on the output and the source video,
keypoints compared in coordinates normalised by the frame size, only where visible in both.

Keypoint tracks are arrays ``(T, K, 3)``: ``x / width``, ``y / height`` (so the frame spans [0, 1] on
both axes whatever its size) and a visibility or confidence in [0, 1]. Any estimator works as long as
both videos go through the same one: a callable ``frames (T, H, W, 3) uint8 -> (T, K, 3)``. The default,
:func:`mediapipe_pose`, runs MediaPipe Pose (BlazePose, 33 landmarks; the model ships inside the
mediapipe wheel, so it works offline). The paper used OpenPose; values from different estimators and
keypoint sets are not comparable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError, ModelNotFoundError
from .frames import _array, as_uint8

__all__ = ["PoseScore", "pose_mse", "mediapipe_pose", "pose_error", "normalize_keypoints"]


@dataclass
class PoseScore:
    """``value``: mean squared keypoint distance over all (frame, keypoint) visible in both tracks
    (NaN if there is none); ``per_frame[t]``: the same over frame t; ``count``: how many entered;
    ``shown``: how many the source shows. An output that loses the person scores only the keypoints it
    keeps (better than one that keeps it in a worse pose), so ``count`` of ``shown`` belongs with it."""

    value: float
    per_frame: list[float] = field(default_factory=list)
    count: int = 0
    shown: int = 0


def normalize_keypoints(kp, size: tuple[int, int]) -> np.ndarray:
    """Pixel keypoints (T, K, 3) -> coordinates divided by the frame's width (x) and height (y).
    ``size=(H, W)``."""
    kp = np.array(kp, np.float64)
    h, w = size
    kp[..., 0] /= w
    kp[..., 1] /= h
    return kp


def pose_mse(kp_output, kp_source, threshold: float = 0.5) -> PoseScore:
    """Pose-MSE of two tracks (T, K, 3) of normalised keypoints (x, y, visibility): the mean over every
    frame t and keypoint k visible in both (visibility > ``threshold``) of the squared Euclidean
    distance ``(x_o - x_s)^2 + (y_o - y_s)^2`` (a keypoint with NaN coordinates counts as not seen). Frames with no common keypoint count as NaN per frame
    and do not enter the mean."""
    a, b = _track(kp_output, "output"), _track(kp_source, "source")
    if a.shape != b.shape or a.ndim != 3 or a.shape[-1] != 3:
        raise InputError(f"pose tracks must both be (T, K, 3) (x, y, visibility); got {a.shape} and {b.shape}")
    # a keypoint not seen may have NaN coordinates (a common convention of estimators): it is left out,
    # and also one marked visible without finite coordinates
    seen = lambda k: (k[..., 2] > threshold) & np.isfinite(k[..., :2]).all(-1)  # noqa: E731
    both = seen(a) & seen(b)
    d2 = np.where(both, ((a[..., :2] - b[..., :2]) ** 2).sum(-1), 0.0)
    n = both.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per = np.where(n > 0, d2.sum(1) / np.maximum(n, 1), np.nan)
    total = int(both.sum())
    value = float(d2.sum() / total) if total else float("nan")
    return PoseScore(value, per.tolist(), total, int(seen(b).sum()))


def _track(kp, name: str) -> np.ndarray:
    """Keypoints as float64: a torch tensor in any dtype (bfloat16, with autograd history) as the frames
    are read; a ragged list or text is said, not numpy's ValueError."""
    try:
        return np.asarray(_array(kp), np.float64)
    except (TypeError, ValueError) as e:
        raise InputError(f"the {name}'s pose track is not an array of numbers ({e}): give (T, K, 3) keypoints "
                         "(x, y, visibility)") from None


def mediapipe_pose(frames, model_complexity: int = 1, min_confidence: float = 0.5, tracking: bool = False) -> np.ndarray:
    """MediaPipe Pose on a video: (T, H, W, 3) uint8 -> (T, 33, 3) float (x/W, y/H, visibility); frames
    where no person is found get visibility 0. Each frame is detected on its own, so Pose-MSE is a
    function of each frame pair: in tracking mode (``tracking=True``) a frame's keypoints depend on the
    frames before, and frames identical to the source scored above 0 after a few without the person."""
    import os

    os.environ.setdefault("GLOG_minloglevel", "2")  # mediapipe's C++ info/warning lines on stderr
    try:
        from mediapipe.python.solutions import pose as mp_pose
    except ImportError as e:
        # "flickerless[pose]" with flickerless installed takes the extra's requirements from the installed
        # metadata, so it works for a checkout's install and a wheel's alike (".[pose]" only in the checkout),
        # though flickerless is not on PyPI; quoted, as zsh takes an unquoted [pose] as a pattern. An
        # estimator of one's own is an option of the Python API only, said as such
        raise ModelNotFoundError(
            f"Pose-MSE's default estimator needs mediapipe 0.10.21 ({e}; wheels for Python 3.9-3.12): "
            "`pip install --no-deps mediapipe==0.10.21` then `pip install \"flickerless[pose]\"` (its pose model "
            "ships in the wheel); from Python, evaluate(pose_estimator=...) takes another estimator"
        ) from e
    import contextlib

    from ..control.pose import _without_native_noise

    frames = as_uint8(frames)
    out = np.zeros((len(frames), 33, 3), np.float32)
    seen = False
    with mp_pose.Pose(static_image_mode=not tracking, model_complexity=model_complexity, smooth_landmarks=False,
                      min_detection_confidence=min_confidence, min_tracking_confidence=min_confidence) as est:
        for t, f in enumerate(frames):
            # its C++ side's lines on stderr as its models first run (as the pose annotator hides them)
            with contextlib.nullcontext() if seen else _without_native_noise():
                res = est.process(np.ascontiguousarray(f))
            if res.pose_landmarks is not None:
                seen = True
                out[t] = [(lm.x, lm.y, lm.visibility) for lm in res.pose_landmarks.landmark]
    return out


def pose_error(output, source, estimator=None, threshold: float = 0.5) -> tuple[PoseScore, np.ndarray, np.ndarray]:
    """Run ``estimator`` (default :func:`mediapipe_pose`) on both videos and compare with :func:`pose_mse`.
    Returns (score, output keypoints, source keypoints)."""
    est = estimator or mediapipe_pose
    out, src = as_uint8(output, "output"), as_uint8(source, "source")
    if len(out) != len(src):
        raise InputError(f"the output has {len(out)} frames but the source has {len(src)}: Pose-MSE compares "
                         "them frame for frame")
    ko, ks = np.asarray(est(out)), np.asarray(est(src))
    for name, kp in (("output", ko), ("source", ks)):
        if kp.ndim != 3 or kp.shape[0] != len(out) or kp.shape[2] != 3:
            raise InputError(f"the pose estimator gave {kp.shape} for the {name}'s {len(out)} frames: it must return "
                             "(T, K, 3) keypoints, one row per frame")
    return pose_mse(ko, ks, threshold), ko, ks
