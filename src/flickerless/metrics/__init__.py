"""Metrics of the DiffSynth paper (Tables 3 and 4) and a few more, for comparing settings and tools.

Public entry point: :func:`evaluate`. The pieces: :mod:`.temporal` (Pixel-MSE, warping error; flows in
:mod:`.flow`), :mod:`.clip` (CLIP score, CLIP frame consistency, aesthetic score), :mod:`.fid`,
:mod:`.pose` (Pose-MSE), :mod:`.report` (self-contained HTML report).
"""

from .clip import (AestheticPredictor, ClipModel, aesthetic_score, clip_consistency, clip_score, image_embeddings,
                   load_aesthetic, load_clip, text_embeddings)
from .evaluate import METRICS, EvalResult, evaluate, parse_metrics
from .fid import fid, frechet_distance, gaussian_stats
from .flow import dis_flow, get_flow, occlusion_mask, warp
from .pose import mediapipe_pose, pose_error, pose_mse
from .report import write_report
from .temporal import pixel_mse, warp_error

__all__ = [
    "evaluate", "EvalResult", "METRICS", "parse_metrics", "write_report",
    "pixel_mse", "warp_error", "warp", "occlusion_mask", "dis_flow", "get_flow",
    "clip_score", "clip_consistency", "aesthetic_score", "AestheticPredictor", "load_aesthetic", "load_clip",
    "ClipModel", "image_embeddings", "text_embeddings",
    "fid", "frechet_distance", "gaussian_stats",
    "pose_mse", "pose_error", "mediapipe_pose",
]
