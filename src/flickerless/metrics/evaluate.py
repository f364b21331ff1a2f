"""``evaluate``: every metric of a video in one call, sharing flows and CLIP embeddings between them.

A metric whose weights (or optional package) are missing is skipped with one line saying which weights
and how to supply them; the others are still computed.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError, ModelNotFoundError
from .clip import AESTHETIC_HELP, DEFAULT_CLIP
from .frames import _array, as_uint8, check_fit

__all__ = ["METRICS", "PAIRED", "EvalResult", "evaluate", "parse_metrics", "check_frame_counts"]

log = logging.getLogger("flickerless")

#: metric name -> (what it measures, which way is better, what it needs)
METRICS = {
    "pixel_mse": ("Pixel-MSE: output frame t warped by the source's flow vs frame t+1, 0-255 scale", "lower", "source"),
    "warp_error": ("warping error (Lai et al. 2018) with forward-backward occlusion mask, [0, 1] scale", "lower", "source"),
    "clip": ("CLIP score: 100 x cosine(frame, prompt), clipped at 0, mean over frames", "higher", "prompt"),
    "clip_consistency": ("CLIP frame consistency: mean cosine of consecutive frames' embeddings", "higher", ""),
    "aesthetic": ("LAION aesthetic score (1-10) of the frames' CLIP ViT-L/14 embeddings", "higher", ""),
    "fid": ("FID-style distance between the output's and the source's frames", "lower", "source"),
    "pose_mse": ("Pose-MSE: squared keypoint distance in frame-size units, keypoints visible in both", "lower", "source"),
}


#: the metrics that compare output frame t with source frame t, so need as many frames in each; FID
#: compares the two sets of frames (of any sizes) and the CLIP metrics do not use the source
PAIRED = ("pixel_mse", "warp_error", "pose_mse")


#: the fraction of the source's keypoints an output may miss before Pose-MSE's warning
POSE_MISSED = 0.25


def check_frame_counts(names, n_video: int, n_source: int, hint: str = "") -> None:
    """An InputError when the clips' frame counts differ and ``names`` holds a frame-paired metric
    (:data:`PAIRED`), naming those metrics: FID of an output against a source of another length was
    refused too, with a message that said FID paired its frames. ``hint``: what the caller offers to
    line the frames up."""
    paired = [n for n in names if n in PAIRED]
    if n_video == n_source or not paired:
        return
    others = ",".join(n for n in METRICS if n not in PAIRED)
    verb = ("compare", "need") if len(paired) > 1 else ("compares", "needs")
    raise InputError(f"the video has {n_video} frames but the source has {n_source}: {', '.join(paired)} {verb[0]} "
                     f"frame t of one with frame t of the other and {verb[1]} as many frames in each{hint}; fid and the "
                     f"CLIP metrics take clips of any lengths ({others} alone)")


def parse_metrics(metrics) -> tuple[list[str], bool]:
    """Names from a comma-separated string or a list; ``None`` means all. Returns (names, explicit)."""
    if metrics is None:
        return list(METRICS), False
    names = [m.strip() for m in (metrics.split(",") if isinstance(metrics, str) else metrics) if m.strip()]
    bad = [m for m in names if m not in METRICS]
    if bad or not names:
        raise InputError(f"unknown metric(s) {', '.join(bad) or '(none given)'}; choose from {','.join(METRICS)}")
    return list(dict.fromkeys(names)), True


@dataclass
class EvalResult:
    """``values``: metric -> number; ``per_frame``: metric -> list (per frame pair for the temporal
    metrics and clip_consistency, per frame otherwise); ``skipped``: metric -> why (one line);
    ``info``: how they were computed (frames, size, flow backend, models)."""

    values: dict = field(default_factory=dict)
    per_frame: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready (NaN becomes None)."""

        def clean(v):
            if isinstance(v, float) and not math.isfinite(v):
                return None
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            if isinstance(v, (list, tuple)):
                return [clean(x) for x in v]
            if isinstance(v, np.generic):
                return clean(v.item())
            if isinstance(v, np.ndarray) or hasattr(v, "detach"):  # a per-frame series given as an array
                return clean(np.asarray(_array(v)).tolist())
            return v

        return clean({"metrics": self.values, "per_frame": self.per_frame, "skipped": self.skipped, "info": self.info})


def _load_models(todo: list, skip, res: EvalResult, clip_model, aesthetic_weights, fid_features, device):
    """The CLIP and aesthetic models the metrics in ``todo`` need, loaded before any metric is computed,
    so that a predictor made for another CLIP is said before the flows rather than after them. Metrics
    whose weights are missing are skipped (and taken out of ``todo``). Returns (clip, predictor)."""
    predictor = None
    if "aesthetic" in todo:
        if aesthetic_weights is None:
            skip("aesthetic", f"needs {AESTHETIC_HELP}")
            todo.remove("aesthetic")
        else:
            from .clip import load_aesthetic

            try:
                predictor = load_aesthetic(aesthetic_weights, device)
                res.info["aesthetic_weights"] = str(aesthetic_weights)
            except ModelNotFoundError as e:
                skip("aesthetic", str(e))
                todo.remove("aesthetic")
    needs_clip = [n for n in todo if n in ("clip", "clip_consistency", "aesthetic") or (n == "fid" and fid_features == "clip")]
    if not needs_clip:
        return None, predictor
    from .clip import check_aesthetic_fits, load_clip

    try:
        clip = load_clip(clip_model, device)
    except ModelNotFoundError as e:
        for n in needs_clip:
            skip(n, str(e))
            todo.remove(n)
        return None, predictor
    res.info["clip_model"] = str(clip_model)
    if predictor is not None:
        check_aesthetic_fits(predictor, clip)
    return clip, predictor


#: a pair scoring this many times the median pair is said (a hard cut: the flow cannot follow it)
OUTLIER = 10.0


#: the least median a pair is measured against: a still clip's median pair scores 0, and frames held on
#: twos or threes (animation) score 0 between held frames (a few through an encoder), so that any motion pair
#: was said as a cut (10x of 1). Held motion scores 20-60 on the 0-255 scale and a cut thousands: the limit is
#: 10x of at least 30 (warp_error's like of it: 3 channels, [0, 1])
OUTLIER_FLOOR = {"pixel_mse": 30.0, "warp_error": 30 * 3 / 255**2}


def _say_outlier(name: str, per_pair) -> None:
    """A warning naming the pairs that score far above the others: at a hard cut in the source one pair's
    Pixel-MSE is ~150x the rest and lifts the clip's mean ~8x, without a word before. Every such pair is
    named and left out of the mean without them (with two cuts, one was left in); a still output's median
    pair scores 0, and its cut was not said at all."""
    v = np.asarray(per_pair, np.float64)
    ok = np.isfinite(v)
    if ok.sum() < 3:
        return
    med = float(np.median(v[ok]))
    limit = OUTLIER * max(med, OUTLIER_FLOOR.get(name, 0.0))
    if limit <= 0:
        return
    worst = np.flatnonzero(ok & (v >= limit))
    if not len(worst):
        return
    rest = v[ok & (v < limit)]
    without = float(np.mean(rest)) if len(rest) else math.nan
    vs = f"{v[worst].min() / med:.0f}x the median pair ({med:.4g})" if med > 0 else "while the median pair scores 0"
    if len(worst) == 1:
        said = f"pair {worst[0]}->{worst[0] + 1} (counted from the first frame scored) scores {v[worst[0]]:.4g}, {vs}"
    else:
        pairs = ", ".join(f"{i}->{i + 1} ({v[i]:.4g})" for i in worst[:5]) + (", ..." if len(worst) > 5 else "")
        said = f"pairs {pairs} (counted from the first frame scored) score {vs}{' or more' if med > 0 else ''}"
    log.warning("%s: %s: a cut in the source, or a flash in the output? The mean is %.4g with %s and %.4g without "
                "(per_frame in --json has every pair)", name, said, float(np.mean(v[ok])),
                "it" if len(worst) == 1 else "them", without)


def evaluate(
    video,
    source=None,
    prompt=None,
    metrics=None,
    clip_model: str = DEFAULT_CLIP,
    aesthetic_weights: str | None = None,
    flow="dis",
    raft_weights: str | None = None,
    fid_features="clip",
    pose_estimator=None,
    device=None,
    log_skips: bool = True,
    fit: str | None = None,
    source_pixel_aspect: float = 1.0,
) -> EvalResult:
    """Compute ``metrics`` (default: all) of ``video`` against ``source`` and ``prompt``.

    video, source: (T, H, W, 3) uint8, (T, 3, H, W) float in [0, 1], or clip paths; the source is resized
    to the video's size for the flow metrics. prompt: a string or one per frame. metrics: names from
    :data:`METRICS` (list or comma-separated). When ``metrics`` is given, a metric that lacks its input
    (source, prompt) is an InputError; by default such metrics are skipped. Missing weights always skip.
    ``clip_model``: repo id or folder (CLIP score, consistency, aesthetic, CLIP-FID);
    ``aesthetic_weights``: the LAION predictor file; ``flow``: ``"dis"``, ``"raft"`` or a callable;
    ``fid_features``: ``"clip"``, ``"inception"`` or a callable; ``pose_estimator``: a callable
    (default MediaPipe Pose). ``log_skips``: log a warning line for each skipped metric (they are
    always in ``result.skipped``). ``fit``: ``"crop"`` or ``"stretch"``, how a source of another aspect
    ratio is fitted to the video for the frame-paired metrics (default crop, said in a warning; see
    :func:`~flickerless.metrics.frames.fit_source`); ``source_pixel_aspect``: the source's pixel shape
    (anamorphic video), which the CLI reads from the clip.
    """
    names, explicit = parse_metrics(metrics)
    check_fit(fit)
    if device is not None:  # checked as the CLI's --device is: a wrong one was torch's raw RuntimeError
        from ..blend.deflicker import resolve_device

        resolve_device(device)
    out = as_uint8(video, "video")
    src = as_uint8(source, "source") if source is not None else None
    if src is not None:
        check_frame_counts(names, len(out), len(src))
    res = EvalResult(info={"frames": int(len(out)), "height": int(out.shape[1]), "width": int(out.shape[2])})

    def skip(name, why):
        res.skipped[name] = why
        if log_skips:
            log.warning("%s: skipped: %s", name, why)

    todo = []
    for n in names:
        need = METRICS[n][2]
        missing = (need == "source" and src is None) or (need == "prompt" and not prompt)
        if n in ("pixel_mse", "warp_error", "clip_consistency", "fid") and len(out) < 2:
            missing = True
            need = "at least 2 frames"
        elif n == "fid" and src is not None and len(src) < 2:  # a source of any length now, but a set of 2 or more
            missing = True
            need = "a source of at least 2 frames"
        if missing:
            why = {"source": "needs the source video (--source / source=)", "prompt": "needs a prompt (--prompt / prompt=)"}.get(need, f"needs {need}")
            if explicit:
                raise InputError(f"metric {n} {why}")
            skip(n, why)
        else:
            todo.append(n)

    clip, predictor = _load_models(todo, skip, res, clip_model, aesthetic_weights, fid_features, device)
    fitted = src
    if src is not None and any(n in todo for n in PAIRED):  # FID takes the source's frames as they are
        from .frames import fit_source

        fitted, used = fit_source(src, out.shape[1:3], fit, source_pixel_aspect)
        if used:
            res.info["source_fit"] = used
    # temporal metrics: flows on the source (at the output's size), computed once
    temporal = [n for n in todo if n in ("pixel_mse", "warp_error")]
    if temporal:
        from .flow import get_flow
        from .temporal import _temporal_scores

        try:
            fn = get_flow(flow, raft_weights, device)
        except ModelNotFoundError as e:
            for n in temporal:
                skip(n, str(e))
        else:
            res.info["flow"] = flow if isinstance(flow, str) else getattr(flow, "__name__", "custom")
            res.info["flow_direction"] = "backward: flow(source[t+1], source[t]); output[t] sampled at p + flow[p]"
            log.info("optical flow on the source (%s, %d pairs)", res.info["flow"], len(src) - 1)
            # one pass, a pair's flows computed once for both metrics and dropped after it (a source
            # of another size resized a frame at a time)
            for name, r in _temporal_scores(out, fitted, fn, temporal).items():
                res.values[name], res.per_frame[name] = r.value, r.per_pair
                res.info[f"{name}_coverage"] = float(np.mean(r.coverage))
                _say_outlier(name, r.per_pair)

    emb = None
    if clip is not None:
        from .clip import image_embeddings

        log.info("CLIP image embeddings (%s, %d frames)", clip_model, len(out))
        emb = image_embeddings(clip, out)

    if "clip" in todo:
        from .clip import clip_score

        res.values["clip"], res.per_frame["clip"] = clip_score(out, prompt, clip, image_emb=emb)
    if "clip_consistency" in todo:
        from .clip import clip_consistency

        res.values["clip_consistency"], res.per_frame["clip_consistency"] = clip_consistency(out, clip, image_emb=emb)
    if "aesthetic" in todo:
        from .clip import aesthetic_score

        res.values["aesthetic"], res.per_frame["aesthetic"] = aesthetic_score(out, clip, predictor, image_emb=emb)
    if "fid" in todo:
        from .fid import _features, frechet_distance, gaussian_stats

        try:
            fa = emb.numpy() if fid_features == "clip" else _features(out, fid_features, clip, device)
            fb = _features(src, fid_features, clip, device)
        except ModelNotFoundError as e:
            skip("fid", str(e))
        else:
            res.values["fid"] = frechet_distance(*gaussian_stats(fa), *gaussian_stats(fb))
            res.info["fid_features"] = (fid_features if isinstance(fid_features, str) else "custom") + (
                f" ({clip_model}, L2-normalised projected image embeddings: CLIP-FID)" if fid_features == "clip"
                else " (pytorch-fid Inception-v3 pool3, 2048-d)" if fid_features == "inception" else "")
    if "pose_mse" in todo:
        from .pose import pose_error

        try:
            log.info("pose estimation on both videos")
            score, ko, ks = pose_error(out, fitted, estimator=pose_estimator)
        except ModelNotFoundError as e:
            skip("pose_mse", str(e))
        else:
            if score.count == 0:
                seen_src, seen_out = int((ks[..., 2] > 0.5).sum()), int((ko[..., 2] > 0.5).sum())
                skip("pose_mse", f"no keypoint was found visible in both videos (the source shows {seen_src}, the "
                                 f"output {seen_out}; is there a person in each?)")
            else:
                res.values["pose_mse"], res.per_frame["pose_mse"] = score.value, score.per_frame
                res.info["pose_keypoints_compared"] = score.count
                res.info["pose_keypoints_source"] = score.shown
                if score.count < (1 - POSE_MISSED) * score.shown:
                    log.warning("pose_mse: the output shows %d of the %d keypoints the source shows (frames where "
                                "it loses the person are not scored, and score better than a wrong pose): compare "
                                "the outputs' keypoint counts too", score.count, score.shown)
                res.info["pose_estimator"] = getattr(pose_estimator, "__name__", "custom") if pose_estimator else "mediapipe_pose"
    res.values = {n: res.values[n] for n in names if n in res.values}
    res.skipped = {n: res.skipped[n] for n in names if n in res.skipped}
    return res
