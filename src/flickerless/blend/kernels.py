"""Fused Triton kernels for PatchMatch on CUDA: one launch per iteration, one per vote.

They run the same passes as the torch functions in :mod:`.patchmatch` (cost on sampled patch
offsets with border clamping, Jacobi propagation from 4 neighbours, random search with radii
halving to 1 driven by the same counter-based hash, patch voting) but read pixels straight from
the images instead of materialising descriptors, and keep the per-pixel loop in registers. The torch
path was launch-bound on the GPU (BENCHMARKS.md); this is the fix.

Imported only on CUDA; :func:`available` says whether Triton can compile here.
"""

from __future__ import annotations

from typing import Sequence

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None

# the launch shape: pixels per program and warps per program. One warp of 32 pixels ran 5-7% faster than
# Triton's default of 4 warps over 128 (H100: 1080p, 4K and 640x480; benchmarks/explore/triton_blocks.py,
# BENCHMARKS.md "Session 22"); with the packed layout of session 23, one warp of 64 pixels ran 1.6% (1080p)
# and 4% (640x480) faster again. Keep BLOCK >= 32 x NUM_WARPS: each thread then holds whole pixels, and the
# frames are the same on every such shape; with more threads than pixels (128 over 8 warps) a pixel's
# channels are summed across threads in another order, and the frames differ in their last bits.
BLOCK = 64
NUM_WARPS = 1
# Triton's jit code below spells the hash constants of patchmatch (_MASK, _MUL, _GOLD) as literals:
# 0x7FFFFFFF, 0x45D9F3B, 0x9E3779B. tests/test_kernels.py checks they agree.


def available() -> bool:
    return triton is not None and torch.cuda.is_available()


if triton is not None:

    @triton.jit
    def _mix(z):
        z = z & 0x7FFFFFFF
        z = ((z ^ (z >> 16)) * 0x45D9F3B) & 0x7FFFFFFF
        z = ((z ^ (z >> 16)) * 0x45D9F3B) & 0x7FFFFFFF
        return z ^ (z >> 16)

    @triton.jit
    def _cost(tg, te, sg, ss, b, py, px, qy, qx, H, W, Hs, Ws, offs_ptr, S, gw, mask, bound,
              CP: tl.constexpr, PS: tl.constexpr, BLOCK: tl.constexpr):
        """Mean patch cost per pixel. A lane stops reading once its mean can no longer fall below
        ``bound`` (the terms are not negative): its value is then >= ``bound``, so a caller keeping a
        candidate only where the cost is < ``bound`` decides as with the full sum, with fewer loads."""
        ch = tl.arange(0, CP)
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for s in range(S):
            live = mask & (acc / S < bound)
            dy = tl.load(offs_ptr + 2 * s)
            dx = tl.load(offs_ptr + 2 * s + 1)
            ty = tl.minimum(tl.maximum(py + dy, 0), H - 1)
            tx = tl.minimum(tl.maximum(px + dx, 0), W - 1)
            sy = tl.minimum(tl.maximum(qy + dy, 0), Hs - 1)
            sx = tl.minimum(tl.maximum(qx + dx, 0), Ws - 1)
            # channel-last images padded with zeros to CP channels: a pixel is one vector load. PS is the
            # pixels' stride: 2 x CP, as a level lays each pixel's guide and style side by side (Level)
            tpix = ((b * H + ty).to(tl.int64) * W + tx) * PS
            spix = ((b * Hs + sy).to(tl.int64) * Ws + sx) * PS
            m = live[:, None] & (ch < CP)[None, :]
            a = tl.load(tg + tpix[:, None] + ch[None, :], mask=m, other=0.0)
            d = tl.load(sg + spix[:, None] + ch[None, :], mask=m, other=0.0)
            acc += gw * tl.sum((a - d) * (a - d), axis=1)
            a = tl.load(te + tpix[:, None] + ch[None, :], mask=m, other=0.0)
            d = tl.load(ss + spix[:, None] + ch[None, :], mask=m, other=0.0)
            acc += tl.sum((a - d) * (a - d), axis=1)
        return acc / S

    @triton.jit
    def _pixels(W, HW, BLOCK: tl.constexpr):
        """This program's block of pixels of batch item ``program_id(1)``: (b, p, mask, py, px)."""
        b = tl.program_id(1)
        p = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        return b, p, p < HW, p // W, p % W

    @triton.jit
    def _consider(tg, te, sg, ss, b, py, px, qy, qx, best, cy, cx, H, W, Hs, Ws, offs_ptr, S, gw, mask,
                  CP: tl.constexpr, PS: tl.constexpr, BLOCK: tl.constexpr):
        """Clamp candidate (cy, cx) into the source, keep it where its cost beats ``best``. Lanes whose
        candidate is their current match (a tie at best) read nothing."""
        cy = tl.minimum(tl.maximum(cy, 0), Hs - 1)
        cx = tl.minimum(tl.maximum(cx, 0), Ws - 1)
        new = mask & ((cy != qy) | (cx != qx))
        c = _cost(tg, te, sg, ss, b, py, px, cy, cx, H, W, Hs, Ws, offs_ptr, S, gw, new, best, CP, PS, BLOCK)
        better = new & (c < best)
        return tl.where(better, cy, qy), tl.where(better, cx, qx), tl.where(better, c, best)

    @triton.jit
    def _neighbour(tg, te, sg, ss, nnf_in, base, b, py, px, qy, qx, best, ey: tl.constexpr, ex: tl.constexpr,
                   H, W, Hs, Ws, offs_ptr, S, gw, mask,
                   CP: tl.constexpr, PS: tl.constexpr, BLOCK: tl.constexpr):
        """Consider the match of neighbour (y + ey, x + ex), shifted back by (ey, ex)."""
        n = base + tl.minimum(tl.maximum(py + ey, 0), H - 1) * W + tl.minimum(tl.maximum(px + ex, 0), W - 1)
        cy = tl.load(nnf_in + n, mask=mask, other=0).to(tl.int32) - ey
        cx = tl.load(nnf_in + H * W + n, mask=mask, other=0).to(tl.int32) - ex
        return _consider(tg, te, sg, ss, b, py, px, qy, qx, best, cy, cx, H, W, Hs, Ws,
                         offs_ptr, S, gw, mask, CP, PS, BLOCK)

    # sizes, radii and salts change between pyramid levels and iterations: not specialised on, so one
    # compile per channel layout serves all of them (each specialisation is another JIT compile)
    @triton.jit(do_not_specialize=["H", "W", "Hs", "Ws", "S", "gw", "radius", "salt64"])
    def _iteration_kernel(tg, te, sg, ss, nnf_in, nnf_out, cost_out, keys, offs_ptr,
                          H, W, Hs, Ws, S, gw, radius, salt64,
                          CP: tl.constexpr, PS: tl.constexpr, BLOCK: tl.constexpr):
        HW = H * W
        b, p, mask, py, px = _pixels(W, HW, BLOCK)
        base = b.to(tl.int64) * 2 * HW
        qy = tl.load(nnf_in + base + p, mask=mask, other=0).to(tl.int32)
        qx = tl.load(nnf_in + base + HW + p, mask=mask, other=0).to(tl.int32)
        best = _cost(tg, te, sg, ss, b, py, px, qy, qx, H, W, Hs, Ws, offs_ptr, S, gw, mask, float("inf"),
                     CP, PS, BLOCK)
        # propagation: the 4 neighbours' matches shifted back, read from the incoming field (Jacobi),
        # in the order of patchmatch._DIRECTIONS: (0, 1), (0, -1), (1, 0), (-1, 0)
        qy, qx, best = _neighbour(tg, te, sg, ss, nnf_in, base, b, py, px, qy, qx, best, 0, 1, H, W, Hs, Ws,
                                  offs_ptr, S, gw, mask, CP, PS, BLOCK)
        qy, qx, best = _neighbour(tg, te, sg, ss, nnf_in, base, b, py, px, qy, qx, best, 0, -1, H, W, Hs, Ws,
                                  offs_ptr, S, gw, mask, CP, PS, BLOCK)
        qy, qx, best = _neighbour(tg, te, sg, ss, nnf_in, base, b, py, px, qy, qx, best, 1, 0, H, W, Hs, Ws,
                                  offs_ptr, S, gw, mask, CP, PS, BLOCK)
        qy, qx, best = _neighbour(tg, te, sg, ss, nnf_in, base, b, py, px, qy, qx, best, -1, 0, H, W, Hs, Ws,
                                  offs_ptr, S, gw, mask, CP, PS, BLOCK)
        # random search, radius halving to 1; same hash as patchmatch._hash_ints
        kmix = _mix(tl.load(keys + b))
        s64 = salt64.to(tl.int64)
        r = radius
        i = 0
        while r >= 1:
            h0 = _mix((kmix + (s64 + i) * 0x9E3779B) & 0x7FFFFFFF)
            span = 2 * r + 1
            cy = qy + (_mix(h0 + p.to(tl.int64)) % span).to(tl.int32) - r
            cx = qx + (_mix(h0 + HW + p.to(tl.int64)) % span).to(tl.int32) - r
            qy, qx, best = _consider(tg, te, sg, ss, b, py, px, qy, qx, best, cy, cx, H, W, Hs, Ws,
                                     offs_ptr, S, gw, mask, CP, PS, BLOCK)
            r = r // 2
            i += 1
        tl.store(nnf_out + base + p, qy.to(tl.int64), mask=mask)
        tl.store(nnf_out + base + HW + p, qx.to(tl.int64), mask=mask)
        tl.store(cost_out + b.to(tl.int64) * HW + p, best, mask=mask)

    @triton.jit(do_not_specialize=["H", "W", "Hs", "Ws", "S"])
    def _vote_kernel(src, nnf, out, offs_ptr, H, W, Hs, Ws, S,
                     C: tl.constexpr, CP: tl.constexpr, LAST: tl.constexpr, BLOCK: tl.constexpr,
                     SPS: tl.constexpr, OPS: tl.constexpr):
        """Patch voting from a channel-last source whose pixels lie SPS floats apart (CP, or 2 x CP in a
        level's packed source, ``src`` then pointing at its style). LAST: into a channel-last ``out``
        whose pixels lie OPS floats apart (a level's packed target, pointing at the estimate's place),
        else channel-first (B, C, H, W)."""
        HW = H * W
        b, p, mask, py, px = _pixels(W, HW, BLOCK)
        ch = tl.arange(0, CP)
        base = b.to(tl.int64) * 2 * HW
        acc = tl.zeros([BLOCK, CP], dtype=tl.float32)
        cnt = tl.zeros([BLOCK], dtype=tl.float32)
        for s in range(S):
            dy = tl.load(offs_ptr + 2 * s)
            dx = tl.load(offs_ptr + 2 * s + 1)
            cy = py - dy
            cx = px - dx
            valid = mask & (cy >= 0) & (cy < H) & (cx >= 0) & (cx < W)
            cyc = tl.minimum(tl.maximum(cy, 0), H - 1)
            cxc = tl.minimum(tl.maximum(cx, 0), W - 1)
            qy = tl.load(nnf + base + cyc * W + cxc, mask=mask, other=0).to(tl.int32) + dy
            qx = tl.load(nnf + base + HW + cyc * W + cxc, mask=mask, other=0).to(tl.int32) + dx
            qy = tl.minimum(tl.maximum(qy, 0), Hs - 1)
            qx = tl.minimum(tl.maximum(qx, 0), Ws - 1)
            spix = ((b * Hs + qy).to(tl.int64) * Ws + qx) * SPS  # channel-last, zero-padded: one vector load
            m = valid[:, None] & (ch < CP)[None, :]
            v = tl.load(src + spix[:, None] + ch[None, :], mask=m, other=0.0)
            acc += v
            cnt += valid.to(tl.float32)
        res = acc / tl.maximum(cnt, 1.0)[:, None]
        if LAST:  # channel-last, zero-padded as the source is: what the iteration kernel reads
            optr = out + (b.to(tl.int64) * HW + p[:, None]) * OPS + ch[None, :]
            tl.store(optr, res, mask=mask[:, None] & (ch < CP)[None, :])
        else:
            optr = out + (b * C + ch[None, :]).to(tl.int64) * HW + p[:, None]
            tl.store(optr, res, mask=mask[:, None] & (ch < C)[None, :])


_OFFSETS: dict[tuple, torch.Tensor] = {}


def _offsets_tensor(offsets: Sequence[tuple[int, int]], device) -> torch.Tensor:
    """The patch offsets on ``device``, made once per (offsets, device): a tensor built from a list
    is copied from pageable memory, which waits for the GPU's queue to drain, and there is one per
    launch (the CPU then cannot run ahead of the GPU: 16.6 of 44.6 s of a 1080p run, BENCHMARKS.md)."""
    key = (tuple(map(tuple, offsets)), torch.device(device))
    t = _OFFSETS.get(key)
    if t is None:
        t = _OFFSETS[key] = torch.tensor(offsets, dtype=torch.int32, device=device).reshape(-1).contiguous()
    return t


def _cp(c: int) -> int:
    return max(2, triton.next_power_of_2(c))


def _last(*parts: torch.Tensor | None, cp: int) -> torch.Tensor:
    """(B, C, H, W) images -> one float32 (B, H, W, len(parts) x cp): channel-last, each part zero-padded
    to ``cp`` channels, side by side; a part given as None is left zero (a place the vote kernel fills).
    The iteration kernel gathers a pixel's channels with one vector load instead of one load per channel
    plane (the padding adds (0 - 0)^2 terms, as the masked loads of the channel-first layout did), and a
    level's guide and style side by side (:class:`Level`) put a candidate's two reads in one 32-byte
    sector rather than in two arrays."""
    first = next(t for t in parts if t is not None)
    b, _, h, w = first.shape
    out = first.new_zeros((b, h, w, len(parts) * cp), dtype=torch.float32)
    for k, t in enumerate(parts):
        if t is not None:
            out[..., k * cp:k * cp + t.shape[1]] = t.permute(0, 2, 3, 1)
    return out


class Level:
    """One pyramid level's images, laid out once (:func:`_last`) for all of its iterations: the
    target guide, the source guide and the source style do not change between iterations, and each
    vote's estimate is written by the vote kernel itself into its place beside the target guide."""

    def __init__(self, tg: torch.Tensor, sg: torch.Tensor, ss: torch.Tensor):
        self.c2 = ss.shape[1]
        self.cp = _cp(max(tg.shape[1], self.c2))
        self.tgt, self.src = _last(tg, None, cp=self.cp), _last(sg, ss, cp=self.cp)

    def iteration(self, nnf, keys, offsets, guide_weight: float, radius: int, salt: int):
        """As :func:`iteration` with this level's images; the estimate is voted from their style."""
        cp = self.cp
        _vote(self.src[..., cp:], self.c2, cp, nnf, offsets, out=self.tgt[..., cp:])
        return _iterate(self.tgt, self.src, cp, nnf, keys, offsets, guide_weight, radius, salt)


def _iterate(tgt, src, cp, nnf, keys, offsets, guide_weight, radius, salt):
    """One iteration over a level's images, each pixel's guide and style side by side (:func:`_last`)."""
    b, h, w = tgt.shape[:3]
    hs, ws = src.shape[1:3]
    nnf = nnf.contiguous()
    out = torch.empty_like(nnf)
    cost = torch.empty(b, h, w, device=tgt.device, dtype=torch.float32)
    offs = _offsets_tensor(offsets, tgt.device)
    grid = (triton.cdiv(h * w, BLOCK), b)
    # Triton launches on the current device, which is per thread (a new thread's is cuda:0): make it
    # the tensors' (a range of a clip on cuda:1 in a thread of its own)
    with torch.cuda.device(tgt.device):
        _iteration_kernel[grid](
            tgt, tgt[..., cp:], src, src[..., cp:], nnf, out, cost, keys.contiguous(), offs, h, w, hs, ws,
            len(offsets), float(guide_weight), int(radius), int(salt) * 64,
            CP=cp, PS=2 * cp, BLOCK=BLOCK, num_warps=NUM_WARPS,
        )
    return out, cost


def iteration(tg, est, sg, ss, nnf, keys, offsets, guide_weight: float, radius: int, salt: int):
    """One PatchMatch iteration (cost, propagation, random search) against the estimate ``est``.
    Returns (nnf, cost)."""
    cp = _cp(max(tg.shape[1], est.shape[1]))
    return _iterate(_last(tg, est, cp=cp), _last(sg, ss, cp=cp), cp, nnf, keys, offsets, guide_weight, radius, salt)


def _vote(source: torch.Tensor, c: int, cp: int, nnf: torch.Tensor, offsets, out: torch.Tensor | None = None):
    """Vote the ``c`` channels of a channel-last ``source`` (its last dimension's stride the pixels'
    stride: a :func:`_last` image, or the style half of a level's source) into ``out``, the estimate's
    half of a level's target, or into a new channel-first (B, c, H, W) tensor."""
    b, hs, ws = source.shape[:3]
    h, w = nnf.shape[-2:]
    last = out is not None
    if not last:
        out = torch.empty(b, c, h, w, device=source.device, dtype=torch.float32)
    offs = _offsets_tensor(offsets, source.device)
    grid = (triton.cdiv(h * w, BLOCK), b)
    with torch.cuda.device(source.device):  # see _iterate()
        _vote_kernel[grid](source, nnf.contiguous(), out, offs, h, w, hs, ws, len(offsets),
                           C=c, CP=cp, LAST=last, BLOCK=BLOCK, SPS=source.stride(2),
                           OPS=out.stride(2) if last else cp, num_warps=NUM_WARPS)
    return out


def vote(source: torch.Tensor, nnf: torch.Tensor, offsets) -> torch.Tensor:
    """Patch voting, as :func:`flickerless.blend.patchmatch.vote`."""
    c = source.shape[1]
    return _vote(_last(source, cp=_cp(c)), c, _cp(c), nnf, offsets)
