"""Channels-last models (diffusion.layout) and the codec's layout-keeping attention output. The
Triton kernel itself is checked on CUDA only."""

import pytest
import torch
import torch.nn.functional as F

from flickerless.diffusion import VAECodec, layout
from flickerless.diffusion.layout import ChannelsLastGroupNorm, to_channels_last

from . import tiny_models as tiny

cuda_triton = pytest.mark.skipif(not layout.available(), reason="needs CUDA and Triton")


def _gn(groups, channels, seed=0):
    torch.manual_seed(seed)
    gn = torch.nn.GroupNorm(groups, channels)
    with torch.no_grad():
        gn.weight.normal_(1, 0.3)
        gn.bias.normal_(0, 0.3)
    return gn


def test_groupnorm_falls_back_to_torch_off_cuda():
    gn = _gn(4, 12)
    cl = ChannelsLastGroupNorm.from_module(gn)
    assert cl.weight is gn.weight and cl.bias is gn.bias  # shares the parameters
    x = torch.randn(2, 12, 5, 7).contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(cl(x), gn(x))
    silu = ChannelsLastGroupNorm.from_module(gn, act=True)
    torch.testing.assert_close(silu(x), F.silu(gn(x)))


def test_to_channels_last_keeps_the_vae_and_unet_outputs():
    vae, ref_vae = tiny.vae(), tiny.vae()
    norms = sum(type(m) is torch.nn.GroupNorm for m in vae.modules())
    assert to_channels_last(vae) == norms > 0
    assert not any(type(m) is torch.nn.GroupNorm for m in vae.modules())
    assert vae.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    z = torch.randn(2, 4, 8, 8)
    torch.testing.assert_close(VAECodec(vae).decode(z), VAECodec(ref_vae).decode(z), atol=1e-5, rtol=1e-5)
    unet, ref_unet = tiny.unet(), tiny.unet()
    to_channels_last(unet)
    x, emb = torch.randn(2, 4, 8, 8), torch.randn(2, 3, 16)
    with torch.no_grad():
        torch.testing.assert_close(unet(x, 10, emb).sample, ref_unet(x, 10, emb).sample, atol=1e-5, rtol=1e-5)


def test_silu_fused_only_where_the_norm_feeds_it_directly():
    from diffusers.models.resnet import ResnetBlock2D

    from flickerless.diffusion.layout import SiLUOnce

    for tnorm in ("default", "scale_shift"):
        torch.manual_seed(0)
        block = ResnetBlock2D(in_channels=16, out_channels=32, temb_channels=8, groups=4,
                              time_embedding_norm=tnorm).eval()
        ref = ResnetBlock2D(in_channels=16, out_channels=32, temb_channels=8, groups=4, time_embedding_norm=tnorm).eval()
        ref.load_state_dict(block.state_dict())
        to_channels_last(block)
        assert isinstance(block.nonlinearity, SiLUOnce) and block.norm1.act
        assert block.norm2.act == (tnorm == "default")  # a scale-shift sits between norm2 and its SiLU
        x, temb = torch.randn(2, 16, 6, 5), torch.randn(2, 8)
        with torch.no_grad():
            torch.testing.assert_close(block(x, temb), ref(x, temb), atol=1e-5, rtol=1e-5)
    vae = tiny.vae()
    to_channels_last(vae)
    assert vae.decoder.conv_norm_out.act and isinstance(vae.decoder.conv_act, SiLUOnce)
    plain = tiny.vae()
    to_channels_last(plain, fuse_silu=False)
    assert not any(getattr(m, "act", False) for m in plain.modules())
    assert not any(isinstance(m, SiLUOnce) for m in plain.modules())


def test_codec_attention_output_keeps_the_input_layout():
    """A channels-last VAE's attention hands back channels-last (no copy to NCHW); an NCHW VAE's, NCHW."""
    for convert in (False, True):
        vae = tiny.vae()
        if convert:
            to_channels_last(vae)
        codec = VAECodec(vae)
        seen = []
        hooks = [m.register_forward_pre_hook(lambda m, i: seen.append(i[0])) for m in vae.decoder.modules()
                 if isinstance(m, torch.nn.GroupNorm)]
        codec.decode(torch.randn(2, 4, 8, 8))
        for h in hooks:
            h.remove()
        # channels innermost everywhere (4-D channels-last, and the attention's (N, C, L) view), or NCHW
        assert seen and all(layout.channels_inner(x) if convert else x.is_contiguous() for x in seen)
        assert convert == all(layout.channels_inner(x) for x in seen)


@cuda_triton
@pytest.mark.parametrize("shape", [(2, 64, 32, 48, 32), (3, 96, 17, 23, 3), (1, 320, 9, 15, 32),
                                   (2, 1280, 8, 15, 32), (1, 128, 130, 70, 32)])
def test_triton_groupnorm_matches_fp32_reference(shape):
    n, c, h, w, g = shape
    gn = _gn(g, c).cuda().half()
    x = (torch.randn(n, c, h, w, device="cuda") * 3 + 5).half().contiguous(memory_format=torch.channels_last)
    ref = F.group_norm(x.float(), g, gn.weight.float(), gn.bias.float(), gn.eps)
    with torch.no_grad():
        for act in (False, True):
            y = ChannelsLastGroupNorm.from_module(gn, act=act)(x)
            assert y.dtype == torch.half and y.is_contiguous(memory_format=torch.channels_last)
            want = F.silu(ref) if act else ref
            torch_err = (F.group_norm(x, g, gn.weight, gn.bias, gn.eps).float() - ref).abs().max()
            err = (y.float() - want).abs().max()
            assert err <= max(2 * torch_err, 4e-3), (act, float(err), float(torch_err))


@cuda_triton
def test_triton_groupnorm_on_the_attention_view():
    """(N, C, L) with channels innermost, as a channels-last VAE's attention hands it over."""
    gn = _gn(8, 64).cuda().half()
    x = torch.randn(2, 300, 64, device="cuda").half().transpose(1, 2)  # (2, 64, 300), channels innermost
    ref = F.group_norm(x.float(), 8, gn.weight.float(), gn.bias.float(), gn.eps)
    with torch.no_grad():
        y = ChannelsLastGroupNorm.from_module(gn)(x)
    assert y.stride() == x.stride()
    assert (y.float() - ref).abs().max() <= 4e-3


@cuda_triton
def test_triton_groupnorm_leaves_gradients_to_torch():
    gn = _gn(4, 16).cuda()
    cl = ChannelsLastGroupNorm.from_module(gn)
    x = torch.randn(2, 16, 8, 8, device="cuda", requires_grad=True)
    y = cl(x.contiguous(memory_format=torch.channels_last))
    y.square().sum().backward()  # torch's path: differentiable
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_pointwise_convs_and_transformer_output_keep_values_and_layout():
    from flickerless.diffusion.layout import PointwiseConv

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(12, 20, 1)
    pw = PointwiseConv.from_module(conv)
    assert PointwiseConv.fits(conv) and not PointwiseConv.fits(torch.nn.Conv2d(12, 20, 3))
    x = torch.randn(2, 12, 5, 7)
    y = pw(x.contiguous(memory_format=torch.channels_last))
    assert y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, conv(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pw(x), conv(x))  # NCHW input: the convolution itself
    unet = tiny.unet()
    to_channels_last(unet)
    assert any(isinstance(m, PointwiseConv) for m in unet.modules())
    blocks = [m for m in unet.modules() if type(m).__name__ == "Transformer2DModel"]
    assert blocks
    seen = []
    hooks = [b.register_forward_hook(lambda m, i, o: seen.append(o[0])) for b in blocks]
    with torch.no_grad():
        unet(torch.randn(2, 4, 8, 8), 10, torch.randn(2, 3, 16))
    for h in hooks:
        h.remove()
    assert seen and all(o.is_contiguous(memory_format=torch.channels_last) and not o.is_contiguous() for o in seen)


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_triton_groupnorm_on_a_second_gpu():
    if not layout.available():
        pytest.skip("Triton not importable")
    dev = torch.device("cuda", torch.cuda.device_count() - 1)
    gn = _gn(8, 64).to(dev).half()
    x = torch.randn(2, 64, 16, 24, device=dev).half().contiguous(memory_format=torch.channels_last)
    ref = F.group_norm(x.float(), 8, gn.weight.float(), gn.bias.float(), gn.eps)
    with torch.no_grad():
        y = ChannelsLastGroupNorm.from_module(gn)(x)
    assert y.device == dev and (y.float() - ref).abs().max() < 4e-2
