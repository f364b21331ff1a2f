"""Channels-last models on CUDA: the convolutions' own layout, with a GroupNorm that keeps it.

On Hopper, cuDNN's convolution kernels work in NHWC. A model kept in PyTorch's default NCHW layout
pays for two layout conversions around every convolution (``nchwToNhwcKernel`` /
``nhwcToNchwKernel``): 18% of the GPU time of an SD VAE decode at 512x960 and 4% of a UNet step
(benchmarks/attention_kernels.py, benchmarks/profile_engine.py). Moving the model to channels-last
removes them, but PyTorch's CUDA GroupNorm has no channels-last kernel: it copies every input back
to NCHW and returns NCHW, which undoes the gain (BENCHMARKS.md, 2026-11-22: channels-last alone
"gave nothing").

:class:`ChannelsLastGroupNorm` is a drop-in ``nn.GroupNorm`` that, for a CUDA tensor in
channels-last memory, normalises in place of layout with two Triton kernels:

1. statistics: each program reduces a run of pixels for a block of channels to per-channel
   (mean, M2), merging row blocks with Chan's parallel formula in fp32; the per-chunk results are
   combined into per-group statistics in torch (deterministic, no atomics);
2. normalise: ``y = x * a[n, c] + b[n, c]`` with the per-(sample, channel) scale and shift folded
   from the group statistics and the affine parameters, optionally followed by SiLU (``act``).

Anything else (CPU, NCHW input, no Triton) takes ``nn.GroupNorm``'s own path (so does anything
that needs gradients: the kernels have no backward), so the module is always correct; :func:`to_channels_last` converts a model and swaps its GroupNorms. It also
runs 1x1 convolutions as matrix products with the bias fused (:class:`PointwiseConv`) and lets
diffusers' Transformer2DModel hand its channels-last output on without a copy to NCHW.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import nn

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None

__all__ = ["ChannelsLastGroupNorm", "to_channels_last", "group_norm_nhwc", "available"]

STAT_ROWS = 1024  # pixels per statistics program
BLOCK_HW = 64
BLOCK_C = 64


def available() -> bool:
    return triton is not None and torch.cuda.is_available()


if triton is not None:

    # sizes that vary with the frame size are not specialised on: one compile serves every resolution
    @triton.jit(do_not_specialize=["HW", "n_chunks"])
    def _stats_kernel(x_ptr, cnt_ptr, mean_ptr, m2_ptr, HW, C, n_chunks,
                      ROWS: tl.constexpr, BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr):
        n = tl.program_id(0)
        chunk = tl.program_id(1)
        cb = tl.program_id(2)
        cols = cb * BLOCK_C + tl.arange(0, BLOCK_C)
        cmask = cols < C
        base = x_ptr + n.to(tl.int64) * HW * C
        count = tl.zeros([BLOCK_C], dtype=tl.float32)
        mean = tl.zeros([BLOCK_C], dtype=tl.float32)
        m2 = tl.zeros([BLOCK_C], dtype=tl.float32)
        for r0 in range(0, ROWS, BLOCK_HW):
            rows = chunk * ROWS + r0 + tl.arange(0, BLOCK_HW)
            rmask = rows < HW
            mask = rmask[:, None] & cmask[None, :]
            x = tl.load(base + rows[:, None].to(tl.int64) * C + cols[None, :], mask=mask, other=0.0).to(tl.float32)
            nb = tl.sum(rmask.to(tl.float32), axis=0)
            bmean = tl.sum(x, axis=0) / tl.maximum(nb, 1.0)
            d = tl.where(mask, x - bmean[None, :], 0.0)
            bm2 = tl.sum(d * d, axis=0)
            tot = count + nb
            delta = bmean - mean
            share = tl.where(tot > 0, nb / tl.maximum(tot, 1.0), 0.0)
            mean = mean + delta * share
            m2 = m2 + bm2 + delta * delta * count * share
            count = tot
        out = (n * n_chunks + chunk) * C + cols
        tl.store(mean_ptr + out, mean, mask=cmask)
        tl.store(m2_ptr + out, m2, mask=cmask)
        tl.store(cnt_ptr + n * n_chunks + chunk, tl.max(count, axis=0), mask=cb == 0)

    @triton.jit(do_not_specialize=["HW"])
    def _apply_kernel(x_ptr, y_ptr, a_ptr, b_ptr, HW, C, ACT: tl.constexpr,
                      BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr):
        n = tl.program_id(0)
        rb = tl.program_id(1)
        cb = tl.program_id(2)
        rows = rb * BLOCK_HW + tl.arange(0, BLOCK_HW)
        cols = cb * BLOCK_C + tl.arange(0, BLOCK_C)
        cmask = cols < C
        mask = (rows < HW)[:, None] & cmask[None, :]
        off = n.to(tl.int64) * HW * C + rows[:, None].to(tl.int64) * C + cols[None, :]
        x = tl.load(x_ptr + off, mask=mask, other=0.0).to(tl.float32)
        a = tl.load(a_ptr + n * C + cols, mask=cmask, other=0.0)
        b = tl.load(b_ptr + n * C + cols, mask=cmask, other=0.0)
        y = x * a[None, :] + b[None, :]
        if ACT:
            y = y / (1.0 + tl.exp(-y))
        tl.store(y_ptr + off, y.to(y_ptr.dtype.element_ty), mask=mask)


def _retyped(m: nn.Module, cls: type) -> nn.Module:
    """A module of subclass ``cls`` sharing ``m``'s parameters, buffers and hooks (``m`` is left as is)."""
    new = cls.__new__(cls)
    new.__dict__.update(m.__dict__)
    return new


def channels_inner(x: torch.Tensor) -> bool:
    """Whether ``x`` ``(N, C, *spatial)`` holds its channels innermost: channels-last for 4-D, and
    the ``(N, C, L)`` transposed view a channels-last VAE's attention hands its GroupNorm."""
    return x.ndim >= 3 and x.movedim(1, -1).is_contiguous()


def group_norm_nhwc(x: torch.Tensor, groups: int, weight: torch.Tensor | None, bias: torch.Tensor | None,
                    eps: float, act: bool = False) -> torch.Tensor:
    """GroupNorm (+ SiLU when ``act``) of a CUDA tensor ``(N, C, *spatial)`` with its channels
    innermost in memory (:func:`channels_inner`); the result has the same layout. Statistics in fp32."""
    N, C = x.shape[:2]
    HW = x.numel() // max(1, N * C)
    n_chunks = triton.cdiv(HW, STAT_ROWS)
    cb = triton.cdiv(C, BLOCK_C)
    cnt = torch.empty(N, n_chunks, device=x.device, dtype=torch.float32)
    mean = torch.empty(N, n_chunks, C, device=x.device, dtype=torch.float32)
    m2 = torch.empty_like(mean)
    with torch.cuda.device(x.device):  # Triton launches on the current device, which is per thread
        _stats_kernel[(N, n_chunks, cb)](x, cnt, mean, m2, HW, C, n_chunks, ROWS=STAT_ROWS, BLOCK_HW=BLOCK_HW,
                                         BLOCK_C=BLOCK_C)
    # combine chunks and the channels of a group: Chan's formula over (chunk, channel) parts
    cg = C // groups
    mean = mean.view(N, n_chunks, groups, cg)
    m2 = m2.view(N, n_chunks, groups, cg)
    w = cnt.view(N, n_chunks, 1, 1)
    total = float(HW * cg)
    gmean = (mean * w).sum((1, 3)) / total  # (N, G)
    gm2 = (m2 + w * (mean - gmean[:, None, :, None]) ** 2).sum((1, 3))
    rstd = torch.rsqrt(gm2 / total + eps)  # (N, G)
    a = rstd.repeat_interleave(cg, dim=1)  # (N, C)
    b = -gmean.repeat_interleave(cg, dim=1) * a
    if weight is not None:
        a = a * weight.float()
        b = b * weight.float()
    if bias is not None:
        b = b + bias.float()
    y = torch.empty_like(x)  # the layout of x (dense: its strides are kept)
    with torch.cuda.device(x.device):
        _apply_kernel[(N, triton.cdiv(HW, BLOCK_HW), cb)](x, y, a.contiguous(), b.contiguous(), HW, C, ACT=act,
                                                          BLOCK_HW=BLOCK_HW, BLOCK_C=BLOCK_C)
    return y


class ChannelsLastGroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` that keeps a channels-last CUDA input channels-last (Triton); any other input
    takes ``nn.GroupNorm``'s path. ``act=True`` applies SiLU after the norm."""

    act: bool = False

    @classmethod
    def from_module(cls, m: nn.GroupNorm, act: bool = False) -> "ChannelsLastGroupNorm":
        new = _retyped(m, cls)
        new.act = act
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._norm(x)
        if self.act:
            y._flickerless_silu = True  # noqa: SLF001 - read by the SiLUOnce that follows
        return y

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        grads = torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters()))
        if triton is not None and x.is_cuda and channels_inner(x) and not grads:  # the kernels have no backward
            return group_norm_nhwc(x, self.num_groups, self.weight, self.bias, self.eps, self.act)
        y = super().forward(x)
        return F.silu(y) if self.act else y


class SiLUOnce(nn.SiLU):
    """SiLU that passes through a tensor a fused ``ChannelsLastGroupNorm(act=True)`` already activated."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if getattr(x, "_flickerless_silu", False) else super().forward(x)


def _fuse_pairs(module: nn.Module) -> list[tuple[str, str]]:
    """(norm, activation) attribute pairs of ``module`` whose forward feeds the norm's output straight
    into the activation: diffusers' ResnetBlock2D (norm1; norm2 unless a scale-shift sits between)
    and the UNet's / VAE coders' output head (conv_norm_out -> conv_act)."""
    kind = type(module).__name__
    if kind == "ResnetBlock2D":
        return [("norm1", "nonlinearity")] + ([("norm2", "nonlinearity")]
                                              if getattr(module, "time_embedding_norm", None) == "default" else [])
    if kind in ("UNet2DConditionModel", "Encoder", "Decoder"):
        return [("conv_norm_out", "conv_act")]
    return []


class PointwiseConv(nn.Conv2d):
    """A 1x1 ``nn.Conv2d`` that, on an input with its channels innermost, runs as a matrix product
    over the pixels with the bias in the same call (cuDNN's convolution adds the bias in a separate
    pass over the output); the output is channels-last. Other inputs take the convolution."""

    @classmethod
    def from_module(cls, m: nn.Conv2d) -> "PointwiseConv":
        return _retyped(m, cls)

    @staticmethod
    def fits(m: nn.Module) -> bool:
        return (type(m) is nn.Conv2d and m.kernel_size == (1, 1) and m.stride == (1, 1) and m.padding in ((0, 0), 0)
                and m.dilation == (1, 1) and m.groups == 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4 and channels_inner(x) and x.shape[1] == self.in_channels:
            y = F.linear(x.permute(0, 2, 3, 1), self.weight.view(self.out_channels, self.in_channels), self.bias)
            return y.permute(0, 3, 1, 2)
        return super().forward(x)


def _continuous_output(self, hidden_states, residual, batch_size, height, width, inner_dim):
    """diffusers' Transformer2DModel output, without its ``.contiguous()`` to NCHW: the tokens
    ``(B, H*W, C)`` viewed as ``(B, C, H, W)`` are channels-last already (no copy), and a
    :class:`PointwiseConv` ``proj_out`` reads them as they are."""
    if not self.use_linear_projection:
        hidden_states = self.proj_out(hidden_states.reshape(batch_size, height, width, inner_dim).permute(0, 3, 1, 2))
    else:
        hidden_states = self.proj_out(hidden_states).reshape(batch_size, height, width, inner_dim).permute(0, 3, 1, 2)
    return hidden_states + residual


def to_channels_last(model: nn.Module, fuse_silu: bool = True) -> int:
    """Move ``model`` to channels-last memory and give it :class:`ChannelsLastGroupNorm` in place of
    every ``nn.GroupNorm`` (same parameters). With ``fuse_silu``, a GroupNorm that diffusers follows
    directly with SiLU (ResNet blocks, output heads) applies the SiLU itself and the SiLU module
    passes its output through (:class:`SiLUOnce`): one pass over the tensor fewer. 1x1
    convolutions become :class:`PointwiseConv`, and Transformer2DModel blocks return their output
    without a copy to NCHW. Returns how many norms were swapped."""
    model.to(memory_format=torch.channels_last)
    swapped = 0
    for parent in model.modules():
        fused = {}
        if fuse_silu:
            for norm, act in _fuse_pairs(parent):
                if type(getattr(parent, norm, None)) is nn.GroupNorm and type(getattr(parent, act, None)) is nn.SiLU:
                    fused[norm] = act
        for name, child in list(parent.named_children()):
            if type(child) is nn.GroupNorm:
                setattr(parent, name, ChannelsLastGroupNorm.from_module(child, act=name in fused))
                swapped += 1
            elif PointwiseConv.fits(child):
                setattr(parent, name, PointwiseConv.from_module(child))
        for act in set(fused.values()):
            setattr(parent, act, SiLUOnce())
        if type(parent).__name__ == "Transformer2DModel" and hasattr(parent, "_get_output_for_continuous_inputs"):
            parent._get_output_for_continuous_inputs = types.MethodType(_continuous_output, parent)
    return swapped
