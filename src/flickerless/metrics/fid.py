"""Fréchet distance between the frames of two sets of videos (FID-style appearance similarity).

Features (``features=``):

- ``"clip"`` (default here, works offline with the CLIP weights the CLIP score uses): "CLIP-FID",
  the Fréchet distance between Gaussians fitted to the L2-normalised projected CLIP image embeddings
  (:func:`flickerless.metrics.clip.image_embeddings`, 768-d for ViT-L/14), as proposed by Kynkäänniemi
  et al. 2023 ("The Role of ImageNet Classes in Fréchet Inception Distance"). Its numbers are on another
  scale than Inception FID and are comparable only with CLIP-FID of the same CLIP model.
- ``"inception"``: the standard FID features, the 2048-d pool3 layer of the TF-ported Inception-v3 of
  ``pytorch-fid`` (Heusel et al. 2017; the FID of DiffSynth's Table 4). Needs ``pip install pytorch-fid``
  (which needs torchvision) and its weights ``pt_inception-2015-12-05-6726825d.pth`` in torch's hub
  cache (``$TORCH_HOME/hub/checkpoints``; pytorch-fid downloads them once when online).
- any callable ``f(frames (N, H, W, 3) uint8) -> (N, D)`` features.

The distance is ``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))`` with ``scipy.linalg.sqrtm``. With
fewer frames than feature dimensions the covariances are singular; the square root is then taken of
``(S1 + eps I)(S2 + eps I)`` as in pytorch-fid, and the estimate is biased upwards: compare FIDs over
equal numbers of frames only.
"""

from __future__ import annotations

import logging

import numpy as np

from ..errors import InputError, ModelNotFoundError, in_batches
from .frames import _array, as_uint8

__all__ = ["frechet_distance", "gaussian_stats", "fid", "inception_features"]

log = logging.getLogger("flickerless")


def gaussian_stats(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) (unbiased, float64) of features (N, D), N >= 2."""
    f = _numbers(features, "features")
    if f.ndim != 2:  # "at least 2 frames" was said of 6 frames' features given flat
        raise InputError(f"FID features must be (N, D), one row of D numbers per frame; got shape {f.shape}")
    if len(f) < 2:
        raise InputError(f"FID needs at least 2 frames in each set (got features of shape {f.shape})")
    return f.mean(0), np.cov(f, rowvar=False)


def _numbers(x, what: str) -> np.ndarray:
    """float64 from an array or a torch tensor (bfloat16, with autograd history: as the frames are read);
    NaN or infinite values are refused, as scipy's sqrtm fails on them with an internal error code."""
    try:
        a = np.asarray(_array(x), np.float64)
    except (TypeError, ValueError) as e:
        raise InputError(f"FID: the {what} are not an array of numbers ({e})") from None
    if not np.isfinite(a).all():
        raise InputError(f"FID: the {what} hold NaN or infinite values (of {int((~np.isfinite(a)).sum())} of "
                         f"{a.size} numbers); check the feature extractor")
    return a


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2):
    ``|mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr(sqrtm(sigma1 @ sigma2))``."""
    mu1, mu2 = (np.atleast_1d(_numbers(m, "means")) for m in (mu1, mu2))
    s1, s2 = (np.atleast_2d(_numbers(s, "covariances")) for s in (sigma1, sigma2))
    if mu1.shape != mu2.shape or s1.shape != s2.shape:
        raise InputError(f"FID: feature sizes differ ({mu1.shape} vs {mu2.shape})")
    if mu1.ndim != 1 or s1.shape != (len(mu1), len(mu1)):  # a 4-d mean with 3x3 covariances gave 0.0
        raise InputError(f"FID: means of shape {mu1.shape} need (D, D) covariances of the same D, got {s1.shape}")
    diff = mu1 - mu2
    covmean = _sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        off = np.eye(len(s1)) * eps
        log.info("FID: singular product of covariances; adding %g to their diagonals", eps)
        covmean = _sqrtm((s1 + off) @ (s2 + off))
    if np.iscomplexobj(covmean):
        imag = np.max(np.abs(np.diagonal(covmean).imag))
        if imag > 1e-3 * max(1.0, np.max(np.abs(np.diagonal(covmean).real))):
            raise ArithmeticError(f"FID: matrix square root has a large imaginary part ({imag:g})")
        covmean = covmean.real
    # a set against itself is 0, not the -1e-10 that rounding leaves
    return max(0.0, float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean)))


def _sqrtm(m: np.ndarray) -> np.ndarray:
    """``scipy.linalg.sqrtm`` without its LinAlgWarning on stderr (even with -q) for a singular matrix:
    the covariances of a still or black clip, or of fewer frames than feature dimensions, are singular
    by nature, and what comes of it (a non-finite root) is handled by the caller, as pytorch-fid does."""
    import warnings

    from scipy import linalg

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", linalg.LinAlgWarning)
        root = linalg.sqrtm(m)
    if any(issubclass(w.category, linalg.LinAlgWarning) for w in caught):
        log.info("FID: the product of the covariances is singular (a still clip, or fewer frames than feature "
                 "dimensions): compare FIDs over equal numbers of frames")
    for w in caught:  # any other warning is not ours to hide
        if not issubclass(w.category, linalg.LinAlgWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return root


def inception_features(frames, device=None, batch: int = 32) -> np.ndarray:
    """pytorch-fid's Inception-v3 pool3 features (N, 2048) of (N, H, W, 3) uint8 frames."""
    import torch

    try:
        from pytorch_fid.inception import InceptionV3
    except Exception as e:  # noqa: BLE001 - ImportError, or RuntimeError from a torchvision built for another torch
        from ..weights import torchvision_install

        raise ModelNotFoundError(
            f"Inception FID needs the pytorch-fid package and a torchvision that loads with this torch "
            f"({type(e).__name__}: {e}): {torchvision_install('pytorch-fid')} and its weights "
            "pt_inception-2015-12-05-6726825d.pth in torch's hub cache; or use --fid-features clip / fid_features=\"clip\""
        ) from e
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).to(dev).eval()
    except Exception as e:  # noqa: BLE001 - download failures come as URLError/OSError/RuntimeError
        raise ModelNotFoundError(
            "Inception FID weights pt_inception-2015-12-05-6726825d.pth are not in torch's hub cache "
            f"({torch.hub.get_dir()}/checkpoints) and could not be downloaded ({type(e).__name__}); put the file "
            "there, or use --fid-features clip / fid_features=\"clip\""
        ) from e
    out = []

    def step(a, b):
        x = torch.from_numpy(np.ascontiguousarray(frames[a:b])).permute(0, 3, 1, 2).float().div(255)
        out.append(model(x.to(dev))[0].flatten(1).cpu().numpy())

    with torch.inference_mode():
        in_batches(len(frames), batch, step, "Inception")
    return np.concatenate(out)


def _features(frames: np.ndarray, features, clip=None, device=None) -> np.ndarray:
    if callable(features):
        return _array(features(frames))
    if features == "clip":
        if clip is None:
            raise InputError("CLIP-FID needs a loaded CLIP model (clip=load_clip(...))")
        from .clip import image_embeddings

        return image_embeddings(clip, frames).numpy()
    if features == "inception":
        return inception_features(frames, device=device)
    raise InputError(f"unknown FID features {features!r}: use 'clip' or 'inception'")


def _videos_of(videos, name: str) -> list[np.ndarray]:
    """A list of (T, H, W, 3) uint8 videos from one video (array, tensor, path) or a list of them."""
    if isinstance(videos, (list, tuple)):
        return [as_uint8(v, f"{name}[{i}]") for i, v in enumerate(videos)]
    return [as_uint8(videos, name)]


def fid(set_a, set_b, features="clip", clip=None, device=None) -> float:
    """FID-style distance between all frames of ``set_a`` and all frames of ``set_b``.

    Each set: one video ((T, H, W, 3) uint8, (T, 3, H, W) float in [0, 1], or a path) or a list of them.
    ``features``: ``"clip"`` (needs ``clip``, a :class:`~flickerless.metrics.clip.ClipModel`),
    ``"inception"`` or a callable; see the module docstring for which layer each uses.
    """
    fa = np.concatenate([_features(v, features, clip, device) for v in _videos_of(set_a, "first FID set")])
    fb = np.concatenate([_features(v, features, clip, device) for v in _videos_of(set_b, "second FID set")])
    return frechet_distance(*gaussian_stats(fa), *gaussian_stats(fb))
