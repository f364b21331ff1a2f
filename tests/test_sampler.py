import pytest
import torch
from diffusers.models.attention_processor import Attention

from flickerless.diffusion.attention import (PATTERN, CrossFrameAttention, CrossFrameAttnProcessor, enable_cross_frame_attention,
                                             pattern_frames)
from flickerless.diffusion.codec import VAECodec
from flickerless.errors import InputError
from flickerless.diffusion.sampler import (ControlNetUnit, DeflickerSchedule, Denoiser, fixed_noise, sample,
                                           split_prediction, join_prediction)

from . import tiny_models as tiny

T, H, W = 5, 8, 12  # latent size: non-square


class ExactCodec:
    """decode/encode exact inverses, so that F = identity must leave sampling unchanged."""

    def decode(self, z, out_device=None):
        return z * 0.25 + 0.5

    def encode(self, x, out_device=None):
        return (x - 0.5) * 4


def _denoiser(unet, cross=None, batch=8, controlnets=(), guidance=7.5):
    torch.manual_seed(5)
    emb = torch.randn(1, 7, 16)
    neg = torch.randn(1, 7, 16)
    return Denoiser(unet, emb, neg, guidance, list(controlnets), batch, cross)


def _run(den, sched, codec, deflicker, schedule, steps=6, seed=3):  # noqa: PLR0913
    sched.set_timesteps(steps)
    x = fixed_noise(T, (4, H, W), seed) * sched.init_noise_sigma
    return sample(den, sched, codec, x, sched.timesteps, schedule, deflicker)


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction"])
def test_identity_deflicker_reproduces_plain_ddim(kind):
    unet = tiny.unet()
    every = DeflickerSchedule(frequency=1)
    plain = _run(_denoiser(unet), tiny.scheduler(kind), ExactCodec(), None, every)
    looped = _run(_denoiser(unet), tiny.scheduler(kind), ExactCodec(), lambda f, g, w: f, every)
    torch.testing.assert_close(looped, plain, atol=1e-4, rtol=1e-4)
    assert plain.abs().sum() > 0


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
def test_split_and_join_are_inverse(kind):
    sched = tiny.scheduler(kind)
    x_t, pred = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    x0, _ = split_prediction(pred, x_t, 500, sched)
    torch.testing.assert_close(join_prediction(x0, x_t, 500, sched), pred, atol=1e-4, rtol=1e-4)


def test_mean_deflicker_makes_all_frames_identical():
    unet, vae = tiny.unet(), tiny.vae()
    # frames differ at the start: a different noise per frame
    sched = tiny.scheduler()
    sched.set_timesteps(4)
    x = torch.randn(T, 4, H, W, generator=torch.Generator().manual_seed(0))
    mean = lambda f, g, w: f.mean(0, keepdim=True).expand_as(f)  # noqa: E731
    out = sample(_denoiser(unet), sched, VAECodec(vae), x, sched.timesteps, DeflickerSchedule(frequency=1), mean)
    assert (out - out[:1]).abs().max() < 1e-4
    assert (x - x[:1]).abs().max() > 1


def test_schedule_steps():
    assert DeflickerSchedule(frequency=5).deflicker_steps(20) == [1, 6, 11, 16]
    assert DeflickerSchedule(steps=[2, 9]).deflicker_steps(10) == [2, 9]
    assert DeflickerSchedule(frequency=None).deflicker_steps(10) == []


def test_seeded_and_fixed_noise():
    a, b = fixed_noise(T, (4, H, W), 11), fixed_noise(T, (4, H, W), 11)
    assert torch.equal(a, b) and torch.equal(a[0], a[-1])
    assert not torch.equal(a, fixed_noise(T, (4, H, W), 12))
    unet = tiny.unet()
    r1 = _run(_denoiser(unet), tiny.scheduler(), ExactCodec(), None, None, seed=4)
    r2 = _run(_denoiser(unet), tiny.scheduler(), ExactCodec(), None, None, seed=4)
    assert torch.equal(r1, r2)


def test_cross_frame_pattern_is_first_prev_self_next_clamped_to_the_clip():
    """The README's [first, i-1, i, i+1], written out: neighbours past either end fall back to the
    edge frame, and clips of one or two frames still give four entries."""
    assert PATTERN == ("first", "prev", "self", "next")
    assert pattern_frames(2, 5) == [0, 1, 2, 3]
    assert pattern_frames(0, 5) == [0, 0, 0, 1]  # no i-1 before the first frame
    assert pattern_frames(1, 5) == [0, 0, 1, 2]
    assert pattern_frames(4, 5) == [0, 3, 4, 4]  # no i+1 after the last frame
    assert pattern_frames(0, 1) == [0, 0, 0, 0]
    assert pattern_frames(0, 2) == [0, 0, 0, 1]
    assert pattern_frames(1, 2) == [0, 0, 1, 1]
    assert pattern_frames(3, 5, ("last", "next", "prev")) == [4, 4, 2]
    with pytest.raises(ValueError, match="unknown cross-frame pattern"):
        pattern_frames(0, 3, ("prev", "middle"))


def test_cross_frame_attention_matches_naive_reference():
    torch.manual_seed(0)
    attn = Attention(query_dim=16, heads=2, dim_head=8).eval()
    frames, tokens = 4, 6
    h = torch.randn(2 * frames, tokens, 16)  # two CFG groups of 4 frames
    state = CrossFrameAttention()
    state.set_frames(list(range(frames)), frames, groups=2)
    attn.set_processor(CrossFrameAttnProcessor(state))
    got = attn(h)
    want = torch.empty_like(got)
    # [first, i-1, i, i+1] clamped to the 4 frames, by hand: not from pattern_frames, which the
    # processor itself uses
    reads = {0: [0, 0, 0, 1], 1: [0, 0, 1, 2], 2: [0, 1, 2, 3], 3: [0, 2, 3, 3]}
    for g in range(2):
        for i in range(frames):
            ctx = torch.cat([h[g * frames + j] for j in reads[i]])  # (4 * tokens, C)
            q = attn.to_q(h[g * frames + i]).view(tokens, 2, 8).transpose(0, 1)
            k = attn.to_k(ctx).view(-1, 2, 8).transpose(0, 1)
            v = attn.to_v(ctx).view(-1, 2, 8).transpose(0, 1)
            a = torch.softmax(q @ k.transpose(1, 2) / 8**0.5, -1) @ v
            want[g * frames + i] = attn.to_out[0](a.transpose(0, 1).reshape(tokens, 16))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # the pattern ('self',) is plain self-attention
    state2 = CrossFrameAttention(("self",))
    state2.set_frames(list(range(frames)), frames, groups=2)
    attn.set_processor(CrossFrameAttnProcessor(state2))
    plain = Attention(query_dim=16, heads=2, dim_head=8).eval()
    plain.load_state_dict(attn.state_dict())
    torch.testing.assert_close(attn(h), plain(h), atol=1e-5, rtol=1e-5)


def test_frame_batches_carry_their_context_frames():
    unet = tiny.unet()
    state = CrossFrameAttention()
    self_attn = [n for n in unet.attn_processors if n.endswith("attn1.processor")]
    assert enable_cross_frame_attention(unet, state) == len(self_attn) > 0
    assert all(isinstance(p, CrossFrameAttnProcessor) == n.endswith("attn1.processor") for n, p in unet.attn_processors.items())
    sched = tiny.scheduler()
    sched.set_timesteps(3)
    x = torch.randn(T, 4, H, W, generator=torch.Generator().manual_seed(1))
    t = sched.timesteps[0]
    den = _denoiser(unet, state, batch=2, guidance=1.0)
    den.negative_embeds = None
    pieces = den(x, t, sched, 0.0)
    # frames 2, 3 form one batch; it must also hold frames 0 (first), 1 and 4 (neighbours)
    ids = [0, 1, 2, 3, 4]
    state.set_frames(ids, T)
    ref = unet(x[ids], t, encoder_hidden_states=den.prompt_embeds.expand(5, -1, -1)).sample
    torch.testing.assert_close(pieces[2:4], ref[2:4], atol=1e-5, rtol=1e-5)
    # the last batch (frame 4) holds 0, 3, 4
    state.set_frames([0, 3, 4], T)
    ref = unet(x[[0, 3, 4]], t, encoder_hidden_states=den.prompt_embeds.expand(3, -1, -1)).sample
    torch.testing.assert_close(pieces[4:], ref[2:], atol=1e-5, rtol=1e-5)
    # cross-frame attention changes the prediction
    state.clear()
    assert (unet(x, t, encoder_hidden_states=den.prompt_embeds.expand(T, -1, -1)).sample - _denoiser(unet, state, batch=T, guidance=1.0)(x, t, sched, 0.0)).abs().max() > 1e-4


def test_multiple_controlnets():
    unet, c1, c2 = tiny.unet(), tiny.controlnet(1), tiny.controlnet(2)
    for m in (unet, c1, c2):
        enable_cross_frame_attention(m, CrossFrameAttention())
    imgs = torch.rand(T, 3, 2 * H, 2 * W)
    sched = tiny.scheduler()
    sched.set_timesteps(3)
    x = torch.randn(T, 4, H, W, generator=torch.Generator().manual_seed(2))
    t = sched.timesteps[0]
    base = _denoiser(unet)(x, t, sched, 0.0)
    zero = _denoiser(unet, controlnets=[ControlNetUnit(c1, imgs, 0.0)])(x, t, sched, 0.0)
    torch.testing.assert_close(zero, base)
    # ControlNets start as zero convolutions: give them non-zero outputs to see their effect
    for c in (c1, c2):
        for p in list(c.controlnet_down_blocks.parameters()) + list(c.controlnet_mid_block.parameters()):
            torch.nn.init.normal_(p, std=0.02)
    one = _denoiser(unet, controlnets=[ControlNetUnit(c1, imgs, 1.0)])(x, t, sched, 0.0)
    two = _denoiser(unet, controlnets=[ControlNetUnit(c1, imgs, 1.0), ControlNetUnit(c2, imgs, 0.5)])(x, t, sched, 0.0)
    late = _denoiser(unet, controlnets=[ControlNetUnit(c1, imgs, 1.0, start=0.5)])(x, t, sched, 0.0)
    assert (one - base).abs().max() > 1e-4 and (two - one).abs().max() > 1e-4
    torch.testing.assert_close(late, base)  # outside its [start, end] a ControlNet does nothing


def test_vae_codec_is_deterministic_and_batched():
    codec = VAECodec(tiny.vae(), batch_size=2)
    frames = torch.rand(T, 3, 2 * H, 2 * W)
    z1, z2 = codec.encode(frames), VAECodec(codec.vae, batch_size=T).encode(frames)
    assert z1.shape == (T, 4, H, W)
    torch.testing.assert_close(z1, z2, atol=1e-5, rtol=1e-5)
    assert torch.equal(codec.encode(frames), z1)  # posterior mean: no sampling noise
    img = codec.decode(z1)
    assert img.shape == frames.shape and 0 <= img.min() and img.max() <= 1


def test_vae_tiling_is_for_the_large_call_alone():
    """One large frame turned the VAE's tiling on for good: later small calls came out tiled (other frames)."""
    codec = VAECodec(tiny.vae(), tile_above=40 * 40)
    small = torch.rand(2, 3, 16, 16)
    want = codec.encode(small)
    seen = []
    real = codec.vae.encode
    codec.vae.encode = lambda x: seen.append(codec.vae.use_tiling) or real(x)
    codec.encode(torch.rand(1, 3, 48, 48))
    codec.decode(torch.zeros(1, 4, 24, 24))
    assert seen == [True] and not codec.vae.use_tiling
    assert torch.equal(codec.encode(small), want)
    codec.vae.enable_tiling()  # the user's own choice stays
    codec.encode(torch.rand(1, 3, 48, 48))
    assert codec.vae.use_tiling


def test_vae_codec_keeps_the_decoder_contiguous():
    """diffusers' 4-D attention returns a channels-last view; the codec's VAE must not, or every
    later GroupNorm copies its input (a quarter of the decode time at 512x960 on an H100)."""
    plain = tiny.vae()
    vae = tiny.vae()
    codec = VAECodec(vae)
    VAECodec(vae)  # wrapping twice is a no-op
    assert all(type(p).__name__ == "ContiguousOutput" and type(p.inner).__name__ != "ContiguousOutput"
               for p in vae.attn_processors.values())
    seen = []
    hooks = [m.register_forward_pre_hook(lambda m, i: seen.append(i[0].is_contiguous()))
             for m in vae.decoder.modules() if isinstance(m, torch.nn.GroupNorm)]
    z = torch.randn(2, 4, H, W)
    img = codec.decode(z)
    for hk in hooks:
        hk.remove()
    assert seen and all(seen)
    # the plain VAE does hand GroupNorm a non-contiguous tensor after its attention: the test bites
    seen.clear()
    hooks = [m.register_forward_pre_hook(lambda m, i: seen.append(i[0].is_contiguous()))
             for m in plain.decoder.modules() if isinstance(m, torch.nn.GroupNorm)]
    with torch.no_grad():
        ref = plain.decode(z / codec.scale).sample
    assert not all(seen)
    torch.testing.assert_close(img, ((ref + 1) / 2).clamp(0, 1), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError):
        codec.decode(z[:0])


def test_default_deflicker_runs_in_the_loop():
    unet, vae = tiny.unet(), tiny.vae()
    sched = tiny.scheduler()
    sched.set_timesteps(3)
    x = fixed_noise(3, (4, H, W), 0)
    guide = torch.rand(3, 3, 2 * H, 2 * W)
    calls = []

    def spy(frames, g, w):
        from flickerless.diffusion.sampler import default_deflicker

        calls.append(w)
        return default_deflicker(frames, g, w)

    out = sample(_denoiser(unet), sched, VAECodec(vae), x, sched.timesteps, DeflickerSchedule(frequency=2, window=1), spy, guide)
    assert calls == [1, 1] and out.shape == x.shape and torch.isfinite(out).all()


def test_other_schedulers_identity_deflicker_reproduces_plain_sampling():
    from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler

    unet = tiny.unet()
    every = DeflickerSchedule(frequency=1)
    for cls in (DPMSolverMultistepScheduler, UniPCMultistepScheduler):
        make = lambda: cls.from_config(tiny.scheduler().config)  # noqa: E731
        plain = _run(_denoiser(unet), make(), ExactCodec(), None, every, steps=5)
        looped = _run(_denoiser(unet), make(), ExactCodec(), lambda f, g, w: f, every, steps=5)
        torch.testing.assert_close(looped, plain, atol=1e-4, rtol=1e-4)


def test_cond_only_controlnet_acts_on_the_conditional_branch_only():
    unet, cn = tiny.unet(), tiny.controlnet(1)
    for p in list(cn.controlnet_down_blocks.parameters()) + list(cn.controlnet_mid_block.parameters()):
        torch.nn.init.normal_(p, std=0.02)
    imgs = torch.rand(T, 3, 2 * H, 2 * W)
    sched = tiny.scheduler()
    sched.set_timesteps(3)
    x = torch.randn(T, 4, H, W, generator=torch.Generator().manual_seed(4))
    t = sched.timesteps[0]
    g = 7.5
    cfg = _denoiser(unet, controlnets=[ControlNetUnit(cn, imgs, 1.0, cond_only=True)], guidance=g)
    # the two branches computed separately, without guidance: uncond without the ControlNet
    un = Denoiser(unet, cfg.negative_embeds, None, 1.0, [], 8, None)(x, t, sched, 0.0)
    co = Denoiser(unet, cfg.prompt_embeds, None, 1.0, [ControlNetUnit(cn, imgs, 1.0)], 8, None)(x, t, sched, 0.0)
    torch.testing.assert_close(cfg(x, t, sched, 0.0), un + g * (co - un), rtol=1e-4, atol=1e-5)
    both = _denoiser(unet, controlnets=[ControlNetUnit(cn, imgs, 1.0)], guidance=g)(x, t, sched, 0.0)
    assert (both - (un + g * (co - un))).abs().max() > 1e-4  # without cond_only the uncond branch moves too


def test_control_frames_are_sent_as_runs_of_the_requested_frames():
    unet, c1 = tiny.unet(), tiny.controlnet(1)
    imgs = torch.rand(T + 4, 3, 2 * H, 2 * W)
    den = _denoiser(unet, controlnets=[ControlNetUnit(c1, imgs, 1.0)])
    unit = den.controlnets[0]
    for ids in ([0, 1, 2], [0, 3, 4, 5, 8], [4], [2, 3, 2, 3]):  # co-denoising clips may repeat frames
        assert torch.equal(den._control_frames(unit, ids), imgs[ids])
    unit.images = imgs.flip(0)  # new frames for the same unit are staged anew
    assert torch.equal(den._control_frames(unit, [1, 2]), imgs.flip(0)[[1, 2]])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="staging in pinned memory needs CUDA")
def test_control_frames_staged_in_pinned_memory_give_the_same_prediction():
    unet, c1 = tiny.unet().cuda(), tiny.controlnet(1).cuda()
    imgs = torch.rand(T, 3, 2 * H, 2 * W)
    sched = tiny.scheduler()
    sched.set_timesteps(3)
    x = torch.randn(T, 4, H, W, generator=torch.Generator().manual_seed(2))
    host = _denoiser(unet, controlnets=[ControlNetUnit(c1, imgs, 1.0)], batch=3)
    dev = _denoiser(unet, controlnets=[ControlNetUnit(c1, imgs.cuda(), 1.0)], batch=3)
    a, b = host(x, sched.timesteps[0], sched, 0.0), dev(x, sched.timesteps[0], sched, 0.0)
    torch.testing.assert_close(a, b)
    staged = next(iter(host._staged.values()))[1]
    assert staged.is_pinned() and staged.dtype == torch.float32


def test_controlnet_embeds_its_control_image_once_for_both_cfg_branches(monkeypatch):
    from flickerless.diffusion import sampler

    unet, cn = tiny.unet(), tiny.controlnet(1)
    for p in list(cn.controlnet_down_blocks.parameters()) + list(cn.controlnet_mid_block.parameters()):
        torch.nn.init.normal_(p, std=0.02)
    keys = set(cn.state_dict())
    imgs = torch.rand(T, 3, 2 * H, 2 * W)
    sched = tiny.scheduler()
    sched.set_timesteps(3)
    x = torch.randn(T, 4, H, W, generator=torch.Generator().manual_seed(2))
    t = sched.timesteps[0]
    seen = []
    cn.controlnet_cond_embedding.register_forward_pre_hook(lambda m, i: seen.append(i[0].shape[0]))
    den = _denoiser(unet, controlnets=[ControlNetUnit(cn, imgs, 1.0)], guidance=7.5)
    assert den.negative_embeds is not None  # CFG: two branches per call
    shared = den(x, t, sched, 0.0)
    assert seen and all(n == T for n in seen)  # the image batch once, not twice
    assert set(cn.state_dict()) == keys
    monkeypatch.setattr(sampler, "_share_cond_embedding", lambda model: False)  # the plain path
    seen.clear()
    doubled = den(x, t, sched, 0.0)
    assert seen == [2 * T]
    torch.testing.assert_close(shared, doubled, atol=1e-5, rtol=1e-5)


def test_engine_deflicker_blends_with_the_plain_mean(small_clip):
    """The deflicker tool weights its blends and restores detail by default; the engine's passes keep
    the plain mean without restoration (measured steadier inside the sampling loop, BENCHMARKS.md)."""
    from flickerless import deflicker
    from flickerless.diffusion.sampler import default_deflicker
    from flickerless.synthetic import flickering_pair

    clip = small_clip
    _, flick = flickering_pair(clip, seed=0)
    g = torch.from_numpy(clip[:5]).permute(0, 3, 1, 2).float() / 255
    s = torch.from_numpy(flick[:5]).permute(0, 3, 1, 2).float() / 255
    fast = dict(patch_sizes=(7, 5), iterations=2, device="cpu")
    engine = default_deflicker(s, g, None, **fast)
    plain = deflicker(g, s, mode="table", window=None, error_sigma=None, detail=False, **fast)
    weighted = deflicker(g, s, mode="table", window=None, detail=False, **fast)
    restored = deflicker(g, s, mode="table", window=None, error_sigma=None, **fast)
    assert torch.equal(engine, plain) and not torch.equal(engine, weighted) and not torch.equal(engine, restored)


class _SmallGpu(torch.nn.Module):
    """A model that runs out of memory on batches of more than ``rows`` rows, as a big template batch
    on a small GPU does."""

    def __init__(self, model, rows: int):
        super().__init__()
        self.model, self.rows, self.sizes = model, rows, []

    def forward(self, x, *args, **kwargs):
        self.sizes.append(x.shape[0])
        if x.shape[0] > self.rows:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.model(x, *args, **kwargs)


def test_a_batch_that_does_not_fit_the_gpu_is_halved_until_it_does(caplog):
    unet = tiny.unet()
    sched = tiny.scheduler()
    sched.set_timesteps(3)
    x = torch.randn(T, 4, H, W, generator=torch.Generator().manual_seed(4))
    t = sched.timesteps[0]
    small = _SmallGpu(unet, rows=4)  # CFG doubles the rows: batches of 2 frames fit
    den = _denoiser(small, batch=8)
    with caplog.at_level("WARNING", logger="flickerless"):
        got = den(x, t, sched, 0.0)
    assert small.sizes[:3] == [10, 8, 4] and max(small.sizes[3:]) == 4  # 5 frames, then 4, then 2 at a time
    assert den.batch_size == 2  # and so on for the steps after
    assert "UNet batches of 8: going on with 4" in caplog.text and "sampling.batch_size=2 starts there" in caplog.text
    assert torch.equal(got, _denoiser(unet, batch=2)(x, t, sched, 0.0))  # the same predictions
    with pytest.raises(torch.OutOfMemoryError):  # not even one frame fits: said by the caller (run_job)
        _denoiser(_SmallGpu(unet, rows=1), batch=8)(x, t, sched, 0.0)

    vae = tiny.vae()
    frames = torch.rand(T, 3, 2 * H, 2 * W)
    codec = VAECodec(vae, batch_size=4)
    plain_encode, plain_decode = vae.encode, vae.decode
    enc, dec = _SmallGpu(lambda v: plain_encode(v), 1), _SmallGpu(lambda v: plain_decode(v), 2)
    vae.encode, vae.decode = enc.forward, dec.forward
    z = codec.encode(frames)
    assert enc.sizes[:3] == [4, 2, 1] and codec.batch_size == 1
    codec.batch_size = 4
    img = codec.decode(z)
    assert dec.sizes[:2] == [4, 2] and codec.batch_size == 2
    vae.encode, vae.decode = plain_encode, plain_decode
    ref = VAECodec(vae, batch_size=1)
    assert torch.equal(z, ref.encode(frames)) and torch.equal(img, VAECodec(vae, batch_size=2).decode(z))


def _scheduler(name, **config):
    import diffusers

    return getattr(diffusers, name).from_config(tiny.scheduler().config, **config)


@pytest.mark.parametrize("name, config", [("EulerDiscreteScheduler", {}), ("EulerAncestralDiscreteScheduler", {}),
                                          ("LMSDiscreteScheduler", {}), ("EulerDiscreteScheduler", {"use_karras_sigmas": True}),
                                          ("DDPMScheduler", {}), ("EulerDiscreteScheduler", {"prediction_type": "v_prediction"})])
def test_x0_hat_is_the_schedulers_own_at_every_step(name, config):
    """Euler-type latents are x0 + sigma eps: taken as DDIM's, x0-hat was off by hundreds."""
    import copy

    sched = _scheduler(name, **config)
    sched.set_timesteps(6)
    gen = torch.Generator().manual_seed(0)
    noise = {"generator": gen} if name != "LMSDiscreteScheduler" else {}
    x = torch.randn(2, 4, 3, 3, generator=gen) * sched.init_noise_sigma
    for t in sched.timesteps:
        sched.scale_model_input(x, t)
        pred, z = torch.randn(2, 4, 3, 3, generator=gen), torch.randn(2, 4, 3, 3, generator=gen)
        x0, _ = split_prediction(pred, x, t, sched)
        own = copy.deepcopy(sched).step(pred, t, x, **noise).pred_original_sample
        torch.testing.assert_close(x0, own, atol=1e-4, rtol=1e-4)
        rebuilt = copy.deepcopy(sched).step(join_prediction(z, x, t, sched), t, x, **noise).pred_original_sample
        torch.testing.assert_close(rebuilt, z, atol=1e-4, rtol=1e-4)  # eq 6 gives the scheduler x0_bar back
        x = sched.step(pred, t, x, **noise).prev_sample


@pytest.mark.parametrize("name", ["DPMSolverMultistepScheduler", "UniPCMultistepScheduler"])
def test_x0_hat_with_karras_sigmas_is_the_schedulers_own(name):
    """Their timesteps are rounded from the Karras sigmas: alphas_cumprod[t] was off by 0.05-0.08."""
    sched = _scheduler(name, use_karras_sigmas=True)
    sched.set_timesteps(6)
    gen = torch.Generator().manual_seed(1)
    x, pred = torch.randn(2, 4, 3, 3, generator=gen), torch.randn(2, 4, 3, 3, generator=gen)
    for i, t in enumerate(sched.timesteps):
        sched._step_index = i
        x0, _ = split_prediction(pred, x, t, sched)
        torch.testing.assert_close(x0, sched.convert_model_output(pred, sample=x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["PNDMScheduler", "HeunDiscreteScheduler", "KDPM2DiscreteScheduler"])
def test_schedulers_the_engine_does_not_know_are_refused(name):
    sched = _scheduler(name)
    sched.set_timesteps(4)
    x = torch.randn(2, 4, 3, 3)
    with pytest.raises(InputError, match="use one of DDIM, DDPM, .*EulerDiscrete"):
        sample(lambda x, t, s, f: x, sched, ExactCodec(), x, sched.timesteps, None, None)


@pytest.mark.parametrize("name", ["DDPMScheduler", "EulerAncestralDiscreteScheduler"])
def test_noise_added_at_each_step_is_seeded_and_the_same_on_every_frame(name):
    """DDPM and Euler-Ancestral drew fresh unseeded noise per frame every step: frames that start
    alike came apart, and the same seed gave another video."""
    def run(seed):
        sched = _scheduler(name)
        sched.set_timesteps(5)
        x = fixed_noise(3, (4, 3, 3), 7) * sched.init_noise_sigma
        return sample(lambda x, t, s, f: 0.3 * s.scale_model_input(x, t), sched, ExactCodec(), x, sched.timesteps,
                      seed=seed)

    a = run(0)
    assert torch.equal(a, run(0)) and not torch.equal(a, run(1))
    assert torch.equal(a[0], a[1]) and torch.equal(a[0], a[2])


@pytest.mark.parametrize("cond_only", [False, True])
def test_controlnet_self_attention_is_cross_frame_also_on_the_conditional_branch_alone(monkeypatch, cond_only):
    """A cond-only ControlNet sees one CFG branch while the layout held two: its self-attention fell
    back to plain attention without a word (the image_guided template's shuffle unit)."""
    unet, cn = tiny.unet(), tiny.controlnet(1)
    state = CrossFrameAttention()
    for m in (unet, cn):
        enable_cross_frame_attention(m, state)
    mine = {id(p) for p in cn.attn_processors.values() if isinstance(p, CrossFrameAttnProcessor)}
    calls = {"all": 0, "plain": 0}
    real_call = CrossFrameAttnProcessor.__call__

    def counting(self, attn, hidden_states, *a, **k):
        if id(self) in mine and k.get("encoder_hidden_states", a[0] if a else None) is None:
            calls["all"] += 1
        return real_call(self, attn, hidden_states, *a, **k)

    monkeypatch.setattr(CrossFrameAttnProcessor, "__call__", counting)
    for p in cn.attn_processors.values():
        if id(p) in mine:
            plain = p.sdpa
            p.sdpa = lambda *a, _plain=plain: calls.__setitem__("plain", calls["plain"] + 1) or _plain(*a)
    imgs = torch.rand(T, 3, 2 * H, 2 * W)
    sched = tiny.scheduler()
    sched.set_timesteps(3)
    x = torch.randn(T, 4, H, W, generator=torch.Generator().manual_seed(4))
    den = _denoiser(unet, state, controlnets=[ControlNetUnit(cn, imgs, 1.0, cond_only=cond_only)])
    den(x, sched.timesteps[0], sched, 0.0)
    assert calls["all"] > 0 and calls["plain"] == 0


def test_a_cross_frame_layout_that_does_not_fit_the_batch_is_an_error():
    attn = Attention(query_dim=16, heads=2, dim_head=8).eval()
    state = CrossFrameAttention()
    state.set_frames([0, 1, 2], 3, groups=2)
    attn.set_processor(CrossFrameAttnProcessor(state))
    with pytest.raises(RuntimeError, match="layout of 6 batch positions for a batch of 3"):
        attn(torch.randn(3, 5, 16))
    with state.one_group():
        assert attn(torch.randn(3, 5, 16)).shape == (3, 5, 16)
    assert state.index.shape[0] == 6
