"""Fused numba kernels for PatchMatch on the CPU: the same passes as the torch path, one loop.

The torch path materialises a gathered copy of the patch descriptors for every candidate, which on
the CPU is memory-bound (BENCHMARKS.md). These kernels run the per-pixel loop instead (cost on the
sampled patch offsets with border clamping, Jacobi propagation from 4 neighbours in the order of
``patchmatch._DIRECTIONS``, random search driven by the same counter-based hash, patch voting),
parallel over rows of all pairs. Results match the torch path (``tests/test_kernels.py``).

:func:`available` is False when numba is not installed; the torch path is used then.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

try:
    import numba as nb
except ImportError:  # pragma: no cover - depends on the install
    nb = None
except OSError as e:
    # llvmlite says "Could not find/load shared object file 'libllvmlite.so' ... the permissions are incorrect"
    # for any failure; the loader's own reason, "failed to map segment from shared object", is what a memory
    # limit (ulimit -v, as login nodes set) gives: said as that
    if "failed to map segment" not in str(e.__context__):
        raise
    raise MemoryError("numba could not map its LLVM library (libllvmlite.so: failed to map segment from shared "
                      "object): possibly out of memory") from e

from .patchmatch import _GOLD, _MASK, _MUL  # the hash must match the torch path


def available() -> bool:
    return nb is not None


class _threads:
    """Around a parallel loop: run it on as many threads as torch runs (``torch.set_num_threads``,
    ``OMP_NUM_THREADS``), and leave torch's count as it was. Numba's OpenMP layer sets the thread count of
    the process's OpenMP, which is torch's too, to every CPU when it starts: a run held to one thread ran
    its later torch work (the engine's VAE) on all of them, and a job resumed in a new process, whose
    first loop came at another step, decoded with other rounding (1 level in 47 values) than the
    uninterrupted run."""

    def __enter__(self):
        self.torch = torch.get_num_threads()
        n = max(1, min(self.torch, nb.config.NUMBA_NUM_THREADS))
        if nb.get_num_threads() != n:
            nb.set_num_threads(n)

    def __exit__(self, *exc):
        if torch.get_num_threads() != self.torch:
            torch.set_num_threads(self.torch)


def _njit(**options):
    """``nb.njit`` keeping the compiled kernels on disk (``cache=True``: compiling them all takes seconds),
    or compiling them in each process where numba finds nowhere to keep them: an install this user cannot
    write with a HOME it cannot write either (a Docker image run as another user) made numba raise at
    import, which ended every CPU deflicker. The kernels run as fast either way; said once."""

    def wrap(f):
        try:
            return nb.njit(cache=True, **options)(f)
        except RuntimeError as e:  # "cannot cache function ...: no locator available"
            if "cannot cache" not in str(e):
                raise
            global _uncached
            if not _uncached:
                _uncached = True
                logging.getLogger("flickerless").info(
                    "numba has no writable folder to keep its compiled CPU kernels in (beside %s, or under HOME): "
                    "they are compiled again in every run (10 s or more); set NUMBA_CACHE_DIR to a writable "
                    "folder to keep them", Path(__file__).parent)
            return nb.njit(**options)(f)

    return wrap


_uncached = False  # whether a kernel was compiled without numba's cache (said once)


if nb is not None:

    @_njit(inline="always")
    def _mix(z):
        z = z & _MASK
        z = ((z ^ (z >> 16)) * _MUL) & _MASK
        z = ((z ^ (z >> 16)) * _MUL) & _MASK
        return z ^ (z >> 16)

    @_njit(inline="always")
    def _clamp(v, hi):
        return 0 if v < 0 else (hi - 1 if v >= hi else v)

    @_njit(inline="always")
    def _target_patch(tgt, b, y, x, offs, tp):
        """The target's packed guide and estimate (:func:`_pack`) at the patch's sampled offsets around
        (y, x), clamped, into ``tp`` (S, K): read once per pixel for all of its candidates, not once
        for each (the same values, so the same sums)."""
        H, W = tgt.shape[1], tgt.shape[2]
        for s in range(offs.shape[0]):
            ty, tx = _clamp(y + offs[s, 0], H), _clamp(x + offs[s, 1], W)
            for c in range(tp.shape[1]):
                tp[s, c] = tgt[b, ty, tx, c]

    @_njit(inline="always")
    def _add3(acc, tp, src, s, b, sy, sx, gw):
        """``acc`` plus sample ``s``'s cost against source pixel (sy, sx), three guide and three style
        channels, unrolled (the one order of the sums, wherever it is taken)."""
        d0 = tp[s, 0] - src[b, sy, sx, 0]
        d1 = tp[s, 1] - src[b, sy, sx, 1]
        d2 = tp[s, 2] - src[b, sy, sx, 2]
        acc += gw * (d0 * d0 + d1 * d1 + d2 * d2)
        e0 = tp[s, 3] - src[b, sy, sx, 3]
        e1 = tp[s, 4] - src[b, sy, sx, 4]
        e2 = tp[s, 5] - src[b, sy, sx, 5]
        acc += e0 * e0
        acc += e1 * e1
        acc += e2 * e2
        return acc

    @_njit(inline="always")
    def _cost_inside(tp, src, b, qy, qx, offs, gw, bound):
        """:func:`_cost` of a match whose whole patch lies inside the source (no clamping to do), three
        guide and three style channels: the same sums, a quarter faster."""
        acc = np.float32(0.0)
        n = offs.shape[0]
        bn = np.float64(bound) * n
        for s in range(n):
            acc = _add3(acc, tp, src, s, b, qy + offs[s, 0], qx + offs[s, 1], gw)
            if acc >= bn and acc / n >= bound:
                return acc / n
        return acc / n

    @_njit(inline="always")
    def _match_cost(tp, src, C, C2, b, qy, qx, offs, gw, bound, reach):
        """:func:`_cost`, without the clamping where the match's patch (``reach``: the largest offset, or -1
        for other channel counts than 3 and 3) lies inside the source."""
        Hs, Ws = src.shape[1], src.shape[2]
        if reach >= 0 and reach <= qy < Hs - reach and reach <= qx < Ws - reach:
            return _cost_inside(tp, src, b, qy, qx, offs, gw, bound)
        return _cost(tp, src, C, C2, b, qy, qx, offs, gw, bound)

    @_njit()
    def _cost(tp, src, C, C2, b, qy, qx, offs, gw, bound):
        """Mean patch cost of source match (qy, qx) against the target patch ``tp``
        (:func:`_target_patch`): guide_weight x the guide's SSD (channels ``0..C``) plus the style's
        (``C..C+C2``). Images are packed channel-last, (B, H, W, K) holding a pixel's guide and style
        side by side (:func:`_pack`), so a candidate's values share a cache line; three guide and three
        style channels, the usual case, are summed unrolled (about a quarter faster, the same sums in
        the same order as the loops).

        Stops early once the mean cost can no longer fall below ``bound`` (the terms are not
        negative, so the partial sum only grows): the value returned is then >= ``bound``, and a
        caller that keeps a candidate only when its cost is < ``bound`` decides as with the full sum.
        """
        Hs, Ws = src.shape[1], src.shape[2]
        acc = np.float32(0.0)
        n = offs.shape[0]
        # the early stop's test without a division per offset: sum >= bound x n first (where it says
        # no, the mean is below bound but for rounding: summing on only makes the result larger, so the
        # candidate is dropped as before), then the exact test of the mean before stopping
        bn = np.float64(bound) * n
        three = C == 3 and C2 == 3
        for s in range(n):
            sy, sx = _clamp(qy + offs[s, 0], Hs), _clamp(qx + offs[s, 1], Ws)
            if three:
                acc = _add3(acc, tp, src, s, b, sy, sx, gw)
            else:
                g = np.float32(0.0)
                for c in range(C):
                    d = tp[s, c] - src[b, sy, sx, c]
                    g += d * d
                acc += gw * g
                for c in range(C, C + C2):
                    d = tp[s, c] - src[b, sy, sx, c]
                    acc += d * d
            if acc >= bn and acc / n >= bound:
                return acc / n
        return acc / n

    @_njit(parallel=True)
    def _iteration(tgt, src, C, C2, nnf_in, nnf_out, cost_out, keys, offs, gw, radius, salt):
        B, H, W = tgt.shape[0], tgt.shape[1], tgt.shape[2]
        Hs, Ws = src.shape[1], src.shape[2]
        HW = H * W
        gw = np.float32(gw)
        reach = 0  # how far a patch reaches from its centre; -1: no unclamped path (other channel counts)
        for s in range(offs.shape[0]):
            reach = max(reach, abs(offs[s, 0]), abs(offs[s, 1]))
        if not (C == 3 and C2 == 3):
            reach = -1
        for row in nb.prange(B * H):
            b = row // H
            y = row % H
            kmix = _mix(keys[b])
            tp = np.empty((offs.shape[0], tgt.shape[3]), np.float32)  # the pixel's target patch (one per row)
            for x in range(W):
                _target_patch(tgt, b, y, x, offs, tp)
                qy, qx = nnf_in[b, 0, y, x], nnf_in[b, 1, y, x]
                best = _match_cost(tp, src, C, C2, b, qy, qx, offs, gw, np.inf, reach)
                for k in range(4):  # (0, 1), (0, -1), (1, 0), (-1, 0): patchmatch._DIRECTIONS
                    ey = (k // 2) * (5 - 2 * k)
                    ex = (1 - k // 2) * (1 - 2 * k)
                    ny, nx = _clamp(y + ey, H), _clamp(x + ex, W)
                    cy = _clamp(nnf_in[b, 0, ny, nx] - ey, Hs)
                    cx = _clamp(nnf_in[b, 1, ny, nx] - ex, Ws)
                    if cy == qy and cx == qx:  # the current match again: its cost would tie
                        continue
                    c = _match_cost(tp, src, C, C2, b, cy, cx, offs, gw, best, reach)
                    if c < best:
                        qy, qx, best = cy, cx, c
                r = radius
                i = 0
                p = y * W + x
                while r >= 1:
                    h0 = _mix((kmix + (salt * 64 + i) * _GOLD) & _MASK)
                    span = 2 * r + 1
                    cy = _clamp(qy + _mix(h0 + p) % span - r, Hs)
                    cx = _clamp(qx + _mix(h0 + HW + p) % span - r, Ws)
                    if cy != qy or cx != qx:
                        c = _match_cost(tp, src, C, C2, b, cy, cx, offs, gw, best, reach)
                        if c < best:
                            qy, qx, best = cy, cx, c
                    r //= 2
                    i += 1
                nnf_out[b, 0, y, x] = qy
                nnf_out[b, 1, y, x] = qx
                cost_out[b, y, x] = best

    @_njit(inline="always")
    def _voter(nnf, b, y, x, dy, dx, Hs, Ws):
        """The source pixel with which the patch centred at (y - dy, x - dx) votes for pixel (y, x), or
        (-1, -1) where that centre is off the frame (no vote)."""
        H, W = nnf.shape[2], nnf.shape[3]
        cy, cx = y - dy, x - dx
        if cy < 0 or cy >= H or cx < 0 or cx >= W:
            return -1, -1
        return _clamp(nnf[b, 0, cy, cx] + dy, Hs), _clamp(nnf[b, 1, cy, cx] + dx, Ws)

    @_njit(inline="always")
    def _vote_pixel(src, c0, acc, nnf, b, y, x, offs):
        """The sums of pixel (y, x)'s votes from channels ``c0..`` of a channel-last ``src`` (B, Hs, Ws,
        K) into ``acc`` (its length: the channels voted), and their count."""
        Hs, Ws = src.shape[1], src.shape[2]
        for c in range(acc.shape[0]):
            acc[c] = 0.0
        cnt = 0
        for s in range(offs.shape[0]):
            qy, qx = _voter(nnf, b, y, x, offs[s, 0], offs[s, 1], Hs, Ws)
            if qy < 0:
                continue
            for c in range(acc.shape[0]):
                acc[c] += src[b, qy, qx, c0 + c]
            cnt += 1
        return cnt

    @_njit(inline="always")
    def _vote_pixel3(src, c0, nnf, b, y, x, offs):
        """:func:`_vote_pixel` of three channels, summed in three scalars (held in registers, where the
        array's sums go through memory: the estimate's vote before each iteration, faster; BENCHMARKS.md,
        Session 39), each in the same order. Returns the sums and the count."""
        Hs, Ws = src.shape[1], src.shape[2]
        a0 = a1 = a2 = np.float32(0.0)
        cnt = 0
        for s in range(offs.shape[0]):
            qy, qx = _voter(nnf, b, y, x, offs[s, 0], offs[s, 1], Hs, Ws)
            if qy < 0:
                continue
            a0 += src[b, qy, qx, c0]
            a1 += src[b, qy, qx, c0 + 1]
            a2 += src[b, qy, qx, c0 + 2]
            cnt += 1
        return a0, a1, a2, cnt

    @_njit(parallel=True)
    def _vote(src, nnf, out, offs):
        """Patch voting from a channel-last ``src`` (B, Hs, Ws, C), so a vote's channels are read from
        one cache line, into a channel-first ``out`` (B, C, H, W) (a remap's result, for torch)."""
        B, H, W = nnf.shape[0], nnf.shape[2], nnf.shape[3]
        for row in nb.prange(B * H):
            b = row // H
            y = row % H
            acc = np.empty(out.shape[1], np.float32)  # a pixel's sums, in registers rather than in ``out``
            for x in range(W):
                cnt = _vote_pixel(src, 0, acc, nnf, b, y, x, offs)
                for c in range(acc.shape[0]):
                    out[b, c, y, x] = acc[c] / cnt

    @_njit(parallel=True)
    def _vote_last(src, c0, C, nnf, out, o0, offs):
        """As :func:`_vote`, from channels ``c0..c0+C`` of ``src`` into channels ``o0..o0+C`` of a
        channel-last ``out`` (B, H, W, K): the estimate, written straight into a packed target
        (:func:`_pack`)."""
        B, H, W = nnf.shape[0], nnf.shape[2], nnf.shape[3]
        for row in nb.prange(B * H):
            b = row // H
            y = row % H
            acc = np.empty(C, np.float32)
            for x in range(W):
                if C == 3:
                    a0, a1, a2, cnt = _vote_pixel3(src, c0, nnf, b, y, x, offs)
                    out[b, y, x, o0] = a0 / cnt
                    out[b, y, x, o0 + 1] = a1 / cnt
                    out[b, y, x, o0 + 2] = a2 / cnt
                    continue
                cnt = _vote_pixel(src, c0, acc, nnf, b, y, x, offs)
                for c in range(C):
                    out[b, y, x, o0 + c] = acc[c] / cnt


def _np(t: torch.Tensor, dtype) -> np.ndarray:
    return t.detach().to("cpu", dtype).contiguous().numpy()


def _np_last(t: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) -> channel-last float32 (B, H, W, C)."""
    return t.detach().to("cpu", torch.float32).permute(0, 2, 3, 1).contiguous().numpy()


def _offsets(offsets: Sequence[tuple[int, int]]) -> np.ndarray:
    return np.asarray(offsets, dtype=np.int64).reshape(-1, 2)


def _pack(a: torch.Tensor, b: torch.Tensor | None, c2: int) -> np.ndarray:
    """(B, C, H, W) guide and (B, C2, H, W) style (or None: room for the estimate, filled by the vote)
    -> one channel-last float32 (B, H, W, K), the guide in channels 0..C and the style in C..C+C2,
    K rounded up to a multiple of 4 (a pixel's values in one 16- or 32-byte run)."""
    n, c, h, w = a.shape
    k = -(-(c + c2) // 4) * 4
    out = np.zeros((n, h, w, k), np.float32)
    out[..., :c] = _np_last(a)
    if b is not None:
        out[..., c:c + c2] = _np_last(b)
    return out


class Level:
    """One pyramid level's images, packed once for all of its iterations (as
    :class:`flickerless.blend.kernels.Level`): the source's guide and style side by side, the target's
    guide beside the room each iteration's estimate is voted into."""

    def __init__(self, tg: torch.Tensor, sg: torch.Tensor, ss: torch.Tensor):
        self.c, self.c2 = tg.shape[1], ss.shape[1]
        self.src = _pack(sg, ss, self.c2)
        self.tgt = _pack(tg, None, self.c2)

    def iteration(self, nnf, keys, offsets, guide_weight: float, radius: int, salt: int):
        """As :func:`iteration` with this level's images; the estimate is voted from their style."""
        nnf_in = _np(nnf, torch.int64)
        with _threads():
            _vote_last(self.src, self.c, self.c2, nnf_in, self.tgt, self.c, _offsets(offsets))
        return _iterate(self.tgt, self.src, self.c, self.c2, nnf_in, keys, offsets, guide_weight, radius, salt)


def _iterate(tgt, src, c, c2, nnf_in, keys, offsets, guide_weight, radius, salt):
    b, h, w = tgt.shape[:3]
    out = np.empty_like(nnf_in)
    cost = np.empty((b, h, w), dtype=np.float32)
    with _threads():
        _iteration(tgt, src, int(c), int(c2), nnf_in, out, cost, _np(keys, torch.int64), _offsets(offsets),
                   float(guide_weight), int(radius), int(salt))
    return torch.from_numpy(out), torch.from_numpy(cost)


def iteration(tg, est, sg, ss, nnf, keys, offsets, guide_weight: float, radius: int, salt: int):
    """One PatchMatch iteration (cost, propagation, random search) against the estimate ``est``.
    Returns (nnf, cost)."""
    c2 = ss.shape[1]
    return _iterate(_pack(tg, est, c2), _pack(sg, ss, c2), tg.shape[1], c2, _np(nnf, torch.int64), keys, offsets,
                    guide_weight, radius, salt)


def _vote_np(src: np.ndarray, nnf: np.ndarray, offsets) -> np.ndarray:
    """Vote from a channel-last ``(B, Hs, Ws, C)`` source; ``(B, C, H, W)`` out."""
    b, c = src.shape[0], src.shape[3]
    h, w = nnf.shape[-2:]
    out = np.empty((b, c, h, w), dtype=np.float32)
    with _threads():
        _vote(src, nnf, out, _offsets(offsets))
    return out


def vote(source: torch.Tensor, nnf: torch.Tensor, offsets) -> torch.Tensor:
    """Patch voting, as :func:`flickerless.blend.patchmatch.vote`."""
    return torch.from_numpy(_vote_np(_np_last(source), _np(nnf, torch.int64), offsets))
