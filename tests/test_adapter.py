"""T2I-Adapter conditioning: features computed once per frame, added inside the UNet's down blocks as
diffusers does, with CFG, cond_only, cross-frame batches, co-denoising, ControlNets, templates and jobs."""

import numpy as np
import pytest
import torch
from diffusers import T2IAdapter

from flickerless.diffusion import VideoPipeline, load_adapter
from flickerless.diffusion.attention import CrossFrameAttention, enable_cross_frame_attention
from flickerless.diffusion.codenoise import CoDenoiser, merge_weights, plan_clips
from flickerless.diffusion.models import Components, check_adapter_fits
from flickerless.diffusion.sampler import AdapterUnit, ControlNetUnit, Denoiser
from flickerless.errors import InputError, ModelNotFoundError

from . import tiny_models as tiny

T, H, W = 5, 8, 12  # latent size (non-square); the tiny VAE's factor is 2, so control frames are 16x24


def tiny_adapter(seed=7, channels=(16, 32), downscale_factor=2, in_channels=3, adapter_type="full_adapter"):
    """A random T2I-Adapter whose features fit tests/tiny_models.unet (block_out_channels (16, 32))."""
    torch.manual_seed(seed)
    return T2IAdapter(in_channels=in_channels, channels=list(channels), num_res_blocks=1,
                      downscale_factor=downscale_factor, adapter_type=adapter_type).eval()


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(11)
    return dict(unet=tiny.unet(), x=torch.randn(T, 4, H, W, generator=g),
                imgs=torch.rand(T, 3, 2 * H, 2 * W, generator=g),  # a different control frame per frame
                emb=torch.randn(1, 7, 16, generator=g), neg=torch.randn(1, 7, 16, generator=g),
                sched=_sched())


def _sched():
    s = tiny.scheduler()
    s.set_timesteps(3)
    return s


def _den(s, guidance=1.0, adapters=(), controlnets=(), batch=8, cross=None):
    neg = s["neg"] if guidance != 1.0 else None
    return Denoiser(s["unet"], s["emb"], neg, guidance, list(controlnets), batch, cross, list(adapters))


def test_residuals_reach_the_unet_as_diffusers_passes_them(setup):
    s, ad = setup, tiny_adapter()
    unet, x, imgs, sched = s["unet"], s["x"], s["imgs"], s["sched"]
    t = sched.timesteps[0]
    base = _den(s)(x, t, sched, 0.0)
    zero = _den(s, adapters=[AdapterUnit(ad, imgs, 0.0)])(x, t, sched, 0.0)
    torch.testing.assert_close(zero, base, rtol=0, atol=0)  # scale 0: no adapter
    got = _den(s, adapters=[AdapterUnit(ad, imgs, 0.7)])(x, t, sched, 0.0)
    assert (got - base).abs().max() > 1e-3  # the adapter changes the prediction
    # diffusers' StableDiffusionAdapterPipeline: features * scale, a fresh list per UNet call
    with torch.no_grad():
        feats = ad(imgs)
        want = unet(sched.scale_model_input(x, t), t, encoder_hidden_states=s["emb"].expand(T, -1, -1),
                    down_intrablock_additional_residuals=[f * 0.7 for f in feats]).sample
        # and with classifier-free guidance: the features duplicated for both branches
        g = 6.0
        both = torch.cat([x, x])
        embs = torch.cat([s["neg"].expand(T, -1, -1), s["emb"].expand(T, -1, -1)])
        un, co = unet(both, t, encoder_hidden_states=embs,
                      down_intrablock_additional_residuals=[torch.cat([f * 0.7] * 2) for f in feats]).sample.chunk(2)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    cfg = _den(s, guidance=g, adapters=[AdapterUnit(ad, imgs, 0.7)])(x, t, sched, 0.0)
    torch.testing.assert_close(cfg, un + g * (co - un), rtol=1e-4, atol=1e-5)
    # outside its [start, end] an adapter does nothing
    late = _den(s, adapters=[AdapterUnit(ad, imgs, 0.7, start=0.5)])(x, t, sched, 0.2)
    torch.testing.assert_close(late, base, rtol=0, atol=0)


def test_features_are_computed_once_per_frame_across_steps(setup):
    s, ad = setup, tiny_adapter()
    seen = []
    hook = ad.register_forward_hook(lambda m, inp, out: seen.append(inp[0].shape[0]))
    try:
        unit = AdapterUnit(ad, s["imgs"], 1.0)
        den = _den(s, guidance=5.0, adapters=[unit], batch=2)
        first = den(s["x"], s["sched"].timesteps[0], s["sched"], 0.0)
        again = den(s["x"], s["sched"].timesteps[0], s["sched"], 0.5)  # the next step: from the cache
        assert sum(seen) == T and len(seen) == 3  # three batches of frames, each frame once
        assert torch.equal(first, again)  # the UNet popped its list, not the cached features
        # no memory budget: recomputed at every call, with the same result
        seen.clear()
        nocache = AdapterUnit(ad, s["imgs"], 1.0, cache_bytes=0)
        out = _den(s, guidance=5.0, adapters=[nocache], batch=2)
        r1 = out(s["x"], s["sched"].timesteps[0], s["sched"], 0.0)
        r2 = out(s["x"], s["sched"].timesteps[0], s["sched"], 0.0)
        assert sum(seen) == 2 * T and not nocache._cache
        torch.testing.assert_close(r1, first, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(r2, first, rtol=1e-5, atol=1e-6)
    finally:
        hook.remove()


def test_cond_only_adapter_leaves_the_unconditional_branch_untouched(setup):
    s, ad = setup, tiny_adapter()
    x, imgs, sched = s["x"], s["imgs"], s["sched"]
    t, g = sched.timesteps[1], 7.5
    cfg = _den(s, guidance=g, adapters=[AdapterUnit(ad, imgs, 1.0, cond_only=True)])(x, t, sched, 0.0)
    # the two branches separately, without guidance: the unconditional one without the adapter
    un = Denoiser(s["unet"], s["neg"], None, 1.0, [], 8, None)(x, t, sched, 0.0)
    co = Denoiser(s["unet"], s["emb"], None, 1.0, [], 8, None, [AdapterUnit(ad, imgs, 1.0)])(x, t, sched, 0.0)
    torch.testing.assert_close(cfg, un + g * (co - un), rtol=1e-4, atol=1e-5)
    both = _den(s, guidance=g, adapters=[AdapterUnit(ad, imgs, 1.0)])(x, t, sched, 0.0)
    assert (both - (un + g * (co - un))).abs().max() > 1e-4  # without cond_only the uncond branch moves too


def test_several_adapters_sum_and_combine_with_a_controlnet(setup):
    s, a1, a2, cn = setup, tiny_adapter(7), tiny_adapter(8), tiny.controlnet(1)
    for p in list(cn.controlnet_down_blocks.parameters()) + list(cn.controlnet_mid_block.parameters()):
        torch.nn.init.normal_(p, std=0.02)  # ControlNets start as zero convolutions
    unet, x, imgs, sched = s["unet"], s["x"], s["imgs"], s["sched"]
    t = sched.timesteps[0]
    cimg = torch.rand(T, 3, 2 * H, 2 * W, generator=torch.Generator().manual_seed(3))
    units = [AdapterUnit(a1, imgs, 1.0), AdapterUnit(a2, cimg, 0.5)]
    got = _den(s, adapters=units, controlnets=[ControlNetUnit(cn, cimg, 0.8)])(x, t, sched, 0.0)
    with torch.no_grad():
        e = s["emb"].expand(T, -1, -1)
        down, mid = cn(x, t, encoder_hidden_states=e, controlnet_cond=cimg, conditioning_scale=0.8, return_dict=False)
        feats = [f + 0.5 * h for f, h in zip(a1(imgs), a2(cimg))]
        want = unet(x, t, encoder_hidden_states=e, down_block_additional_residuals=down,
                    mid_block_additional_residual=mid, down_intrablock_additional_residuals=feats).sample
        only_cn = unet(x, t, encoder_hidden_states=e, down_block_additional_residuals=down,
                       mid_block_additional_residual=mid).sample
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert (got - only_cn).abs().max() > 1e-3 and (only_cn - _den(s)(x, t, sched, 0.0)).abs().max() > 1e-4


def test_cross_frame_batches_take_each_frames_own_features():
    unet, ad = tiny.unet(), tiny_adapter()
    # [first, self]: a frame's batch holds it and frame 0, which reads only itself, so batching is exact
    # (with [first, prev, self, next] a batch-edge context frame sees fewer neighbours; see attention.py)
    state = CrossFrameAttention(("first", "self"))
    enable_cross_frame_attention(unet, state)
    g = torch.Generator().manual_seed(5)
    x, imgs = torch.randn(T, 4, H, W, generator=g), torch.rand(T, 3, 2 * H, 2 * W, generator=g)
    emb, neg = torch.randn(1, 7, 16, generator=g), torch.randn(1, 7, 16, generator=g)
    sched = _sched()
    t = sched.timesteps[0]
    run = lambda b, a: Denoiser(unet, emb, neg, 5.0, [], b, state, a)(x, t, sched, 0.0)  # noqa: E731
    whole = run(T, [AdapterUnit(ad, imgs, 1.0)])
    one = run(1, [AdapterUnit(ad, imgs, 1.0)])  # each batch: one frame and frame 0 as context
    torch.testing.assert_close(one, whole, rtol=1e-4, atol=1e-5)
    assert (whole - run(T, [])).abs().max() > 1e-3
    # the context frame carries its own features: frame 0's control changes frame 3's output
    other = imgs.clone()
    other[0] = torch.rand(3, 2 * H, 2 * W, generator=g)
    moved = run(1, [AdapterUnit(ad, other, 1.0)])
    assert (moved[3] - one[3]).abs().max() > 1e-4
    # the default pattern: frames 2, 3 form one batch with frames 0, 1, 4 as context, each with its features
    state2 = CrossFrameAttention()
    enable_cross_frame_attention(unet, state2)
    pieces = Denoiser(unet, emb, None, 1.0, [], 2, state2, [AdapterUnit(ad, imgs, 0.8)])(x, t, sched, 0.0)
    state2.set_frames(list(range(T)), T)
    with torch.no_grad():
        ref = unet(x, t, encoder_hidden_states=emb.expand(T, -1, -1),
                   down_intrablock_additional_residuals=[0.8 * f for f in ad(imgs)]).sample
    torch.testing.assert_close(pieces[2:4], ref[2:4], rtol=1e-4, atol=1e-5)


def test_co_denoising_takes_features_by_video_frame():
    unet, ad = tiny.unet(), tiny_adapter()
    state = CrossFrameAttention(("first", "self"))  # exact batching: a clip can be compared with itself alone
    enable_cross_frame_attention(unet, state)
    g = torch.Generator().manual_seed(6)
    n, k, stride = 7, 4, 3  # clips [0, 4) and [3, 7)
    x, imgs = torch.randn(n, 4, H, W, generator=g), torch.rand(n, 3, 2 * H, 2 * W, generator=g)
    emb, neg = torch.randn(1, 7, 16, generator=g), torch.randn(1, 7, 16, generator=g)
    sched = _sched()
    t = sched.timesteps[1]
    plan = plan_clips(n, k, stride)
    merged = CoDenoiser(Denoiser(unet, emb, neg, 5.0, [], 3, state, [AdapterUnit(ad, imgs, 1.0)]), plan, "pyramid")(
        x, t, sched, 0.3)
    want = torch.zeros_like(x)
    for (a, b), w in zip(plan.spans, merge_weights(plan, "pyramid")):  # each clip alone, as a short video
        alone = Denoiser(unet, emb, neg, 5.0, [], k, state, [AdapterUnit(ad, imgs[a:b], 1.0)])(x[a:b], t, sched, 0.3)
        want[a:b] += w.view(-1, 1, 1, 1) * alone
    torch.testing.assert_close(merged, want, rtol=1e-4, atol=1e-5)
    plain = CoDenoiser(Denoiser(unet, emb, neg, 5.0, [], 3, state), plan, "pyramid")(x, t, sched, 0.3)
    assert (merged - plain).abs().max() > 1e-3


def test_grey_adapter_takes_the_luminance_of_the_control(setup):
    s, ad = setup, tiny_adapter(in_channels=1)
    grey = s["imgs"].mean(1, keepdim=True)
    got = AdapterUnit(ad, s["imgs"], 1.0).features(list(range(T)), "cpu", torch.float32)
    with torch.no_grad():
        want = ad(grey)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_misfit_adapters_are_refused_with_a_clear_message(setup, tmp_path):
    unet = setup["unet"]
    check_adapter_fits(unet, tiny_adapter(), vae_factor=2)  # fits: no error
    with pytest.raises(InputError, match=r"'wide' does not fit the base model \(feature channels: base model "
                                         r"\(16, 32\) \(block_out_channels\), adapter \(32, 64\)\)"):
        check_adapter_fits(unet, tiny_adapter(channels=(32, 64)), "wide")
    with pytest.raises(InputError, match="downscale factor: base model's VAE 2, adapter 8"):
        check_adapter_fits(unet, tiny_adapter(downscale_factor=8), vae_factor=2)
    with pytest.raises(InputError, match="SDXL"):
        check_adapter_fits(unet, tiny_adapter(channels=(16, 32, 32), adapter_type="full_adapter_xl"))
    # a light adapter adds one more block at its last width: (16,) gives (16, 16), not (16, 32)
    with pytest.raises(InputError, match=r"adapter \(16, 16\)"):
        check_adapter_fits(unet, tiny_adapter(channels=(16,), adapter_type="light_adapter"))
    comps = Components(unet, tiny.vae(), tiny.text_encoder(), tiny.tokenizer(str(tmp_path / "tok")), tiny.scheduler(),
                       adapters=[tiny_adapter(channels=(32, 64))])
    with pytest.raises(InputError, match="T2I-Adapter 'adapter 0' does not fit"):
        VideoPipeline(comps, cross_frame=None)


def test_an_adapter_whose_features_land_at_other_sizes_is_refused(setup):
    """A UNet whose first down block is a plain DownBlock2D (the project's tiny_sd) halves the latents
    before diffusers adds the first feature: an adapter of matching channels and downscale factor passed
    the check, and sampling failed with torch's "The size of tensor a (4) must match ..." traceback."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, cross_attention_dim=16,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=8, **tiny.BLOCKS).eval()
    ad = tiny_adapter()
    with pytest.raises(InputError, match=r"'pose' does not fit the base model \(feature sizes, of the latents': the "
                                         r"down blocks \(DownBlock2D, CrossAttnDownBlock2D\) take them at 1/2, 1/2, "
                                         r"the adapter makes 1, 1/2\): no T2I-Adapter fits this UNet; condition "
                                         r'through a ControlNet instead \(a unit of kind "controlnet"\)'):
        check_adapter_fits(unet, ad, "pose", vae_factor=2)
    x, emb = setup["x"][:1], setup["emb"]
    with torch.no_grad(), pytest.raises(RuntimeError, match="must match the size"):  # what the check spares
        unet(x, 10, emb, down_intrablock_additional_residuals=list(ad(setup["imgs"][:1])))
    check_adapter_fits(setup["unet"], ad, "pose", vae_factor=2)  # CrossAttn first, as SD 1.x: it fits


def test_load_adapter_from_a_folder_and_offline_errors(setup, tmp_path):
    ad = tiny_adapter()
    ad.save_pretrained(tmp_path / "adapter")
    back = load_adapter(str(tmp_path / "adapter"))
    imgs = setup["imgs"][:2]
    with torch.no_grad():
        for a, b in zip(ad(imgs), back(imgs)):
            assert torch.equal(a, b)
    with pytest.raises(ModelNotFoundError, match="T2I-Adapter"):
        load_adapter(str(tmp_path / "nowhere"))
    (tmp_path / "one.safetensors").write_bytes(b"")
    with pytest.raises(InputError, match="diffusers folder"):
        load_adapter(str(tmp_path / "one.safetensors"))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapter_models")
    tiny.save_pipeline(root / "tiny-sd")
    tiny.controlnet(seed=10).save_pretrained(root / "cn")
    tiny_adapter().save_pretrained(root / "adapter")
    tiny_adapter(channels=(32, 64)).save_pretrained(root / "wide")
    return root


def test_pipeline_checks_adapter_controls(models):
    pipe = VideoPipeline.from_pretrained(str(models / "tiny-sd"), adapters=[str(models / "adapter")], cross_frame=None)
    video = torch.rand(2, 3, 16, 24)
    with pytest.raises(InputError, match="1 T2I-Adapters loaded but 0 adapter control videos"):
        pipe(video, steps=1)
    with pytest.raises(InputError, match=r"adapter control video 0 is \(2, 3, 8, 8\)"):
        pipe(video, steps=1, adapter_controls=[torch.rand(2, 3, 8, 8)])
    with pytest.raises(InputError, match="does not fit"):
        VideoPipeline.from_pretrained(str(models / "tiny-sd"), adapters=[str(models / "wide")])


def test_run_job_with_a_t2i_adapter_unit_end_to_end(models, tmp_path):
    from flickerless.demo import registry_clip
    from flickerless.pipelines import job_folder, run_job
    from flickerless.pipelines.templates import dumps, load_template
    from flickerless.video import read

    from .test_run import QUICK

    clip = str(registry_clip("carphone_pristine.mp4"))
    # a template whose pose-like unit is a T2I-Adapter (canny here, to stay fast), next to a ControlNet
    tpl = load_template("stylize")
    tpl["controlnets"] = [{"annotator": "canny", "model": "TencentARC/t2iadapter_canny_sd14v1", "kind": "t2i_adapter",
                           "scale": 1.0},
                          {"annotator": "softedge", "model": str(models / "cn"), "scale": 0.5}]
    tpl.setdefault("annotators", {})["softedge"] = {"method": "sobel"}
    template = tmp_path / "adapter.toml"
    template.write_text(dumps(tpl))
    sets = QUICK + ["deflicker.final_window=0"]
    kw = dict(model=str(models / "tiny-sd"), frames="0:3", cache_dir=tmp_path / "cache", progress=False)
    out = tmp_path / "adapter.mp4"
    # --controlnet canny=ID names the model of the canny unit, whatever its kind
    run_job(str(template), clip, out, "a cat", controlnets={"canny": str(models / "adapter")}, overrides=sets, **kw)
    frames = read(out)[0]
    assert frames.shape == (3, 24, 32, 3)
    job = job_folder(out)
    assert 'kind = "t2i_adapter"' in (job / "settings.toml").read_text()
    assert sorted(p.name for p in (job / "controls").iterdir()) == ["0_canny", "1_softedge"]
    # the adapter acts: at scale 0 the frames differ
    off = tmp_path / "off.mp4"
    run_job(str(template), clip, off, "a cat", controlnets={"canny": str(models / "adapter")},
            overrides=sets + ["controlnets.0.scale=0.0"], **kw)
    pngs = lambda o: np.stack([np.asarray(__import__("PIL.Image").Image.open(p)).astype(int)  # noqa: E731
                               for p in sorted((job_folder(o) / "frames").glob("*.png"))])
    assert np.abs(pngs(out) - pngs(off)).max() > 0
    # an unknown kind is refused naming the valid ones
    with pytest.raises(InputError, match="controlnet or t2i_adapter"):
        run_job(str(template), clip, tmp_path / "bad.mp4", "a cat", overrides=sets + ['controlnets.0.kind="lora"'], **kw)
