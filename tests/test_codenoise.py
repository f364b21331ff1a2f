import pytest
import torch

from flickerless.diffusion import VideoPipeline
from flickerless.diffusion.attention import CrossFrameAttention, enable_cross_frame_attention
from flickerless.diffusion.codenoise import (CoDenoiser, clip_prompts, clip_weights, frame_prompts, merge_weights,
                                             plan_clips)
from flickerless.diffusion.fusion import average_fusion, latent_masks
from flickerless.diffusion.models import Components
from flickerless.diffusion.sampler import ControlNetUnit, DeflickerSchedule, Denoiser, sample
from flickerless.errors import InputError

from . import tiny_models as tiny

H, W = 8, 8  # latent size
SMOOTH = lambda f, g, w: (f + f.mean(0, keepdim=True)) / 2  # noqa: E731  a cheap deflicker F


class ExactCodec:
    def decode(self, z, out_device=None):
        return z * 0.25 + 0.5

    def encode(self, x, out_device=None):
        return (x - 0.5) * 4


def _embeds(seed=5, n=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 7, 16, generator=g), torch.randn(1, 7, 16, generator=g)


# --- clip layout and weights ---------------------------------------------------------------------

CASES = [(t, k, s) for t in (1, 2, 5, 7, 16, 33) for k in (1, 2, 3, 4, 8, 16, 40) for s in range(1, min(k, 9) + 1)]


@pytest.mark.parametrize("t,k,s", CASES)
def test_every_frame_is_covered(t, k, s):
    plan = plan_clips(t, k, s)
    covered = torch.zeros(t, dtype=torch.int64)
    for a, b in plan.spans:
        assert b - a == min(k, t)
        covered[a:b] += 1
    assert (covered > 0).all()
    assert plan.starts[0] == 0 and plan.spans[-1][1] == t  # the last clip is aligned to the end
    gaps = [b - a for a, b in zip(plan.starts, plan.starts[1:])]
    assert all(g == s for g in gaps[:-1]) and all(0 < g <= s for g in gaps)  # stride S, the last one shorter
    if k >= t:
        assert plan.spans == [(0, t)]
    for merge in ("flat", "pyramid"):
        total = torch.zeros(t, dtype=torch.float64)
        for (a, b), w in zip(plan.spans, merge_weights(plan, merge)):
            assert (w > 0).all()
            total[a:b] += w.double()
        torch.testing.assert_close(total, torch.ones(t, dtype=torch.float64), atol=1e-6, rtol=0)


@pytest.mark.parametrize("t,k,s", [(10, 4, 5), (10, 1, 2), (3, 8, 9)])
def test_stride_larger_than_clip_is_rejected(t, k, s):
    with pytest.raises(InputError, match=f"clip_stride {s} is larger than clip_length {k}"):
        plan_clips(t, k, s)


def test_k_merge_weights_are_taken_for_a_video_shorter_than_a_clip():
    """The README's "K numbers": with T = 3 < K = 4, [1, 2, 2, 1] was refused as "must be 3 numbers"."""
    plan = plan_clips(3, 4)
    assert [w.tolist() for w in merge_weights(plan, [1, 2, 2, 1])] == [[1, 1, 1]]  # one clip: plain sampling
    with pytest.raises(InputError, match="must be 4 positive numbers"):
        merge_weights(plan, [1, 2, 1])


@pytest.mark.parametrize("bad", [dict(length=0), dict(length=4, stride=0), dict(length=4, stride=-1), dict(length=2.5)])
def test_bad_clip_arguments(bad):
    with pytest.raises(InputError):
        plan_clips(10, **bad)


def test_weight_shapes_and_values():
    assert clip_weights(5, "pyramid").tolist() == [1, 2, 3, 2, 1]
    assert clip_weights(4, "pyramid").tolist() == [1, 2, 2, 1]
    assert clip_weights(3, "flat").tolist() == [1, 1, 1]
    plan = plan_clips(7, 4, 3)  # clips [0, 4) and [3, 7) share frame 3
    flat, pyr = merge_weights(plan, "flat"), merge_weights(plan, "pyramid")
    assert flat[0].tolist() == [1, 1, 1, 0.5] and flat[1].tolist() == [0.5, 1, 1, 1]
    assert pyr[0].tolist() == [1, 1, 1, 0.5]  # frame 3 is the edge of both clips: 1 / (1 + 1)
    plan = plan_clips(6, 4, 2)  # [0, 4), [2, 6): frames 2, 3 shared
    pyr = merge_weights(plan, "pyramid")  # raw 1 2 2 1 / 1 2 2 1 -> frame 2: 2/(2+1), frame 3: 1/(1+2)
    torch.testing.assert_close(pyr[0], torch.tensor([1, 1, 2 / 3, 1 / 3]))
    custom = merge_weights(plan, [1, 3, 3, 1])
    torch.testing.assert_close(custom[1], torch.tensor([1 / 4, 3 / 4, 1, 1]))
    with pytest.raises(InputError, match="merge"):
        merge_weights(plan, "gauss")
    with pytest.raises(InputError, match="4 positive"):
        merge_weights(plan, [1, 0, 1, 1])


def test_prompt_ranges_and_clip_prompts():
    assert frame_prompts(5, "x", [(1, 3, "a"), (3, None, "b")]) == ["x", "a", "a", "b", "b"]
    assert frame_prompts(3, ["p", "q", "r"]) == ["p", "q", "r"]
    with pytest.raises(InputError, match="overlap at frame 2"):
        frame_prompts(5, "x", [(0, 3, "a"), (2, 4, "b")])
    with pytest.raises(InputError, match="0 <= start < end <= 5"):
        frame_prompts(5, "x", [(3, 9, "a")])
    with pytest.raises(InputError, match="2 prompts for 5 frames"):
        frame_prompts(5, ["a", "b"])
    plan = plan_clips(10, 4, 3)  # [0,4) [3,7) [6,10)
    prompts = frame_prompts(10, "x", [(0, 4, "a"), (4, None, "b")])
    assert clip_prompts(prompts, plan) == ["a", "b", "b"]  # clip 1 holds 1 "a" and 3 "b"
    assert clip_prompts(["a", "a", "b", "b"], plan_clips(4, 4)) == ["a"]  # a tie: the first


# --- the co-denoiser -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def unet_cf():
    """Tiny UNet with cross-frame attention reading ("first", "self"): frame 0 of a clip reads only
    itself, so batching is exact and a clip's result can be compared with the clip run alone."""
    unet = tiny.unet()
    state = CrossFrameAttention(("first", "self"))
    enable_cross_frame_attention(unet, state)
    return unet, state


def test_single_clip_equals_plain_sampling(unet_cf):
    unet, state = unet_cf
    t = 4
    cond, neg = _embeds()
    sched = tiny.scheduler()
    sched.set_timesteps(2)
    x = torch.randn(t, 4, H, W, generator=torch.Generator().manual_seed(0))
    every = DeflickerSchedule(frequency=1)
    identity = lambda f, g, w: f  # noqa: E731
    den = Denoiser(unet, cond, neg, 7.5, [], 2, state)
    plain = sample(den, sched, ExactCodec(), x, sched.timesteps, every, identity)
    for k, merge in ((t, "flat"), (t + 3, "pyramid")):
        co = CoDenoiser(den, plan_clips(t, k, 1), merge)
        got = sample(co, sched, ExactCodec(), x, sched.timesteps, every, identity)
        assert torch.equal(got, plain)
    assert (plain - x).abs().max() > 0.1


def test_merged_prediction_is_the_weighted_mean_of_clips_run_alone(unet_cf):
    unet, state = unet_cf
    t, k, s = 7, 4, 3  # clips [0, 4) and [3, 7)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(t, 4, H, W, generator=g)
    per_frame, neg = _embeds(6, n=t)  # per-frame embeddings are taken by video frame
    clip_emb = [torch.randn(1, 7, 16, generator=g), None]  # clip 0 has its own prompt, clip 1 the default
    sched = tiny.scheduler()
    sched.set_timesteps(3)
    ts = sched.timesteps[1]
    plan = plan_clips(t, k, s)
    for batch in (3, 16):  # 3: a batch holds the end of clip 0 and the start of clip 1 (frame 3 twice)
        den = Denoiser(unet, per_frame, neg, 5.0, [], batch, state)
        merged = CoDenoiser(den, plan, "pyramid", clip_emb)(x, ts, sched, 0.3)
        alone0 = Denoiser(unet, clip_emb[0], neg, 5.0, [], k, state)(x[0:4], ts, sched, 0.3)
        alone1 = Denoiser(unet, per_frame[3:7], neg, 5.0, [], k, state)(x[3:7], ts, sched, 0.3)
        w0, w1 = merge_weights(plan, "pyramid")
        want = torch.zeros_like(x)
        want[0:4] += w0.view(-1, 1, 1, 1) * alone0
        want[3:7] += w1.view(-1, 1, 1, 1) * alone1
        torch.testing.assert_close(merged, want, atol=1e-5, rtol=1e-5)
    # clip 1's "first" is video frame 3, not 0: the whole-video prediction differs there
    whole = Denoiser(unet, per_frame, neg, 5.0, [], t, state)(x, ts, sched, 0.3)
    assert (whole[4:] - merged[4:]).abs().max() > 1e-3


def test_deflicker_runs_on_the_merged_video(unet_cf):
    unet, state = unet_cf
    t = 5
    cond, neg = _embeds()
    sched = tiny.scheduler()
    sched.set_timesteps(2)
    x = torch.randn(t, 4, H, W, generator=torch.Generator().manual_seed(2))
    seen = []

    def mean(frames, guide, window):
        seen.append(frames.shape[0])
        return frames.mean(0, keepdim=True).expand_as(frames)

    co = CoDenoiser(Denoiser(unet, cond, neg, 7.5, [], 4, state), plan_clips(t, 3, 2), "flat")
    out = sample(co, sched, ExactCodec(), x, sched.timesteps, DeflickerSchedule(frequency=1), mean)
    assert seen == [t, t]  # F sees the whole merged video at each deflicker step
    assert (out - out[:1]).abs().max() < 1e-4 and (x - x[:1]).abs().max() > 1


# --- pipeline ------------------------------------------------------------------------------------


class RecordingUNet(torch.nn.Module):
    """Predicts zero noise and records (video frame, text embedding) of every batch position; the
    latents of frame f are all f, so a position's frame is read off its input."""

    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(1))
        self.seen = []

    def forward(self, x, t, encoder_hidden_states=None, return_dict=False, **kw):
        self.seen.append([(round(x[i].mean().item()), encoder_hidden_states[i].clone()) for i in range(x.shape[0])])
        return (torch.zeros_like(x),)


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tok")
    return dict(vae=tiny.vae(), text_encoder=tiny.text_encoder(), tokenizer=tiny.tokenizer(str(folder)))


def test_prompt_ranges_reach_the_right_clips(parts):
    rec = RecordingUNet()
    pipe = VideoPipeline(Components(rec, scheduler=tiny.scheduler(), **parts), device="cpu", cross_frame=None, batch_size=5)
    t = 10
    lat = torch.arange(t, dtype=torch.float32).view(t, 1, 1, 1).expand(t, 4, 2, 2).contiguous()
    pipe(None, prompt="x", num_frames=t, height=4, width=4, steps=1, guidance_scale=1.0, latents=lat,
         prompt_ranges=[(0, 4, "abc"), (4, None, "def")], clip_length=4, clip_stride=3, schedule=DeflickerSchedule(None))
    emb = {p: pipe.encode_prompt(p, 1)[0] for p in ("abc", "def")}
    assert not torch.allclose(emb["abc"], emb["def"])
    got = []
    for batch in rec.seen:
        for frame, e in batch:
            names = [p for p, ref in emb.items() if torch.allclose(e, ref)]
            assert len(names) == 1
            got.append((frame, names[0]))
    # clips [0, 4) "abc", [3, 7) "def" (3 of its 4 frames), [6, 10) "def"
    want = [(f, "abc") for f in range(0, 4)] + [(f, "def") for f in range(3, 7)] + [(f, "def") for f in range(6, 10)]
    assert got == want
    assert [len(b) for b in rec.seen] == [5, 5, 2]  # 12 clip frames packed into batches of 5


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    model_dir = tiny.save_pipeline(tmp_path_factory.mktemp("m") / "tiny-sd")
    return VideoPipeline.from_pretrained(str(model_dir), device="cpu", batch_size=3)


def test_pipeline_single_clip_equals_plain_and_clips_change_the_video(pipe):
    kw = dict(num_frames=4, height=16, width=16, steps=2, schedule=DeflickerSchedule(frequency=1), seed=3, prompt="a cat",
              deflicker=SMOOTH)
    plain = pipe(None, **kw)
    assert torch.equal(pipe(None, clip_length=9, clip_stride=2, merge="flat", **kw), plain)
    clipped = pipe(None, clip_length=3, clip_stride=1, **kw)
    assert clipped.shape == plain.shape and not torch.equal(clipped, plain)  # clips [0, 3), [1, 4) attend within


def test_partial_runs_continue_exactly(pipe, carphone):
    video = torch.from_numpy(carphone[:3, :16, :24]).permute(0, 3, 1, 2).float() / 255
    kw = dict(prompt="a dog", steps=5, strength=0.8, schedule=DeflickerSchedule(frequency=2), seed=1, deflicker=SMOOTH)
    full = pipe(video, **kw)
    half = pipe(video, end_step=2, output_type="latents", **kw)
    assert half.shape == (3, 4, 8, 12)
    torch.testing.assert_close(pipe(video, latents=half, start_step=2, **kw), full, atol=1e-5, rtol=1e-5)
    with pytest.raises(InputError, match="start_step 2 needs the latents"):
        pipe(video, start_step=2, **kw)


# --- average fusion (eq 11) ----------------------------------------------------------------------


def test_average_fusion_by_hand():
    cands = torch.stack([torch.full((2, 4, 2, 2), v) for v in (1.0, 2.0, 6.0)])  # n=3, T=2, latents 2x2
    ones, zeros = torch.ones(2, 16, 16), torch.zeros(2, 16, 16)  # at image size (8x the latents)
    torch.testing.assert_close(average_fusion(cands, ones, chosen=1), cands[1])
    torch.testing.assert_close(average_fusion(cands, zeros, chosen=1, w1=0.5), torch.full((2, 4, 2, 2), 1.5))  # 0.5 * 3
    half = zeros.clone()
    half[:, :, :8] = 1  # the left half is foreground
    got = average_fusion(cands, half, chosen=2, w1=0.5, w2=1.0)
    assert (got[..., 0] == 6.0).all() and (got[..., 1] == 1.5).all()  # left: candidate 2, right: 0.5 * mean 3
    quarter = zeros.clone()
    quarter[:, :4, :4] = 1  # a quarter of the top-left latent pixel is foreground
    got = average_fusion(cands, quarter, chosen=0)
    assert got[0, 0, 0, 0].item() == pytest.approx(0.75 * 3 + 0.25 * 1)
    assert got[0, 0, 1, 1].item() == pytest.approx(3)
    per_cand = torch.stack([ones, zeros, zeros])  # candidate 0 all person: its background is empty
    torch.testing.assert_close(average_fusion(cands, per_cand, chosen=1), torch.full((2, 4, 2, 2), (2 + 6) / 3))
    # a list, as n pipeline calls give (it failed on the list's .ndim)
    torch.testing.assert_close(average_fusion(list(cands), per_cand, chosen=1), torch.full((2, 4, 2, 2), (2 + 6) / 3))
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        latent_masks(ones * 2, (2, 2))
    with pytest.raises(InputError, match="chosen"):
        average_fusion(cands, ones, chosen=3)


def test_pipeline_average_fusion(pipe):
    kw = dict(num_frames=2, height=16, width=16, steps=3, prompt="a cat", schedule=DeflickerSchedule(frequency=None))
    fg = torch.ones(2, 16, 16)
    got = pipe.average_fusion(fg, seeds=[1, 2], fusion_step=2, chosen=1, **kw)  # all foreground: seed 2 as it is
    torch.testing.assert_close(got, pipe(None, seed=2, **kw), atol=1e-5, rtol=1e-5)
    bg = pipe.average_fusion(fg * 0, seeds=[1, 2], fusion_step=2, **kw)  # all background: the mean of both
    lat = [pipe(None, seed=s, end_step=2, output_type="latents", **kw) for s in (1, 2)]
    want = pipe(None, latents=(lat[0] + lat[1]) / 2, start_step=2, **kw)
    torch.testing.assert_close(bg, want, atol=1e-5, rtol=1e-5)


def test_controlnet_frames_follow_their_clip(unet_cf):
    unet, state = unet_cf
    cn = tiny.controlnet(1)
    enable_cross_frame_attention(cn, state)
    for p in list(cn.controlnet_down_blocks.parameters()) + list(cn.controlnet_mid_block.parameters()):
        torch.nn.init.normal_(p, std=0.02, generator=torch.Generator().manual_seed(0))  # not zero convolutions
    t = 5
    g = torch.Generator().manual_seed(3)
    x, imgs = torch.randn(t, 4, H, W, generator=g), torch.rand(t, 3, 2 * H, 2 * W, generator=g)
    cond, neg = _embeds()
    sched = tiny.scheduler()
    sched.set_timesteps(2)
    ts = sched.timesteps[0]
    plan = plan_clips(t, 3, 2)  # [0, 3), [2, 5)
    merged = CoDenoiser(Denoiser(unet, cond, neg, 3.0, [ControlNetUnit(cn, imgs)], 2, state), plan, "flat")(x, ts, sched, 0.0)
    alone = [Denoiser(unet, cond, neg, 3.0, [ControlNetUnit(cn, imgs[a:b])], 3, state)(x[a:b], ts, sched, 0.0)
             for a, b in plan.spans]
    want = torch.cat([alone[0][:2], (alone[0][2:] + alone[1][:1]) / 2, alone[1][1:]])
    torch.testing.assert_close(merged, want, atol=1e-5, rtol=1e-5)
    plain = Denoiser(unet, cond, neg, 3.0, [], 2, state)(x, ts, sched, 0.0)
    assert (plain - Denoiser(unet, cond, neg, 3.0, [ControlNetUnit(cn, imgs)], 2, state)(x, ts, sched, 0.0)).abs().max() > 1e-4


def test_prompt_ranges_over_every_frame_say_the_prompt_is_unused_from_python(caplog):
    """Only `flickerless run` said it; the README says it is said (a fine-tune's instance token dropped)."""
    with caplog.at_level("WARNING", logger="flickerless"):
        assert frame_prompts(5, "a photo of qqx man", [(0, 2, "cartoon"), (2, None, "sketch")])[0] == "cartoon"
        frame_prompts(5, "a photo of qqx man", [(0, 2, "cartoon"), (2, None, "sketch")])  # said once
        frame_prompts(5, "a photo of qqx man", [(0, 2, "cartoon")])  # frames 2-4 keep the prompt
        frame_prompts(5, "", [(0, None, "cartoon")])
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "'a photo of qqx man' is used for no frame" in said[0]
    assert "'a photo of qqx man cartoon'" in said[0]
