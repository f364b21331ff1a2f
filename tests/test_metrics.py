"""flickerless.metrics: temporal metrics on exact warps of a real frame, CLIP/aesthetic on a tiny random
CLIP, FID against closed forms, Pose-MSE by hand and with MediaPipe on a real clip."""

import sys
import types

import numpy as np
import pytest
import torch

from flickerless.errors import InputError, ModelNotFoundError
from flickerless.metrics import (AestheticPredictor, aesthetic_score, clip_consistency, clip_score, evaluate, fid,
                                 frechet_distance, gaussian_stats, image_embeddings, load_aesthetic, load_clip,
                                 mediapipe_pose, occlusion_mask, pixel_mse, pose_mse, warp, warp_error)
from flickerless.metrics.flow import get_flow
from flickerless.synthetic import add_flicker, stylize
from tests.tiny_clip import save_clip

D = np.array([2, 1])  # translation per frame (dx, dy) in pixels


@pytest.fixture(scope="module")
def panning(carphone):
    """8 frames panning over carphone frame 0 by D pixels per frame: frame t+1 at p shows frame t at p + D."""
    base = carphone[0]
    return np.stack([base[10 + D[1] * t:10 + D[1] * t + 96, 10 + D[0] * t:10 + D[0] * t + 128] for t in range(8)])


def oracle(video, d):
    """The exact flow of a video translating by d per frame, in the metrics' convention a[p] = b[p + flow]."""
    index = {f.tobytes(): i for i, f in enumerate(video)}

    def flow(a, b):
        step = index[a.tobytes()] - index[b.tobytes()]
        return np.broadcast_to(np.asarray(d, np.float32) * step, a.shape[:2] + (2,)).copy()

    return flow


def test_warp_direction_and_borders():
    img = np.arange(5 * 6, dtype=np.float32).reshape(5, 6)
    flow = np.zeros((5, 6, 2), np.float32)
    flow[..., 0] = 2  # sample two pixels to the right
    out, valid = warp(img, flow)
    assert np.array_equal(out[:, :4], img[:, 2:])
    assert valid[:, :4].all() and not valid[:, 4:].any()  # samples past the right border are invalid


def test_temporal_metrics_zero_for_exact_warp_with_true_flow(panning):
    truth = oracle(panning, D)
    r = pixel_mse(panning, panning, flow=truth)
    assert r.value < 1e-9 and len(r.per_pair) == 7
    assert r.coverage == pytest.approx([(126 / 128) * (95 / 96)] * 7)  # samples past the border are left out
    assert warp_error(panning, panning, flow=truth).value < 1e-12
    # the opposite direction (forward flow used as backward) is wrong and the metric shows it
    assert pixel_mse(panning, panning, flow=oracle(panning, -D)).value > 100


def test_evaluate_computes_each_pair_s_flows_once_and_keeps_none(panning, monkeypatch):
    """evaluate() used to hold every pair's flows, both ways, before scoring: 33 GB for 1000 frames of
    1080p. It now scores pair by pair, computing each flow once for both metrics, with the same values
    as the metrics given all the flows up front."""
    import flickerless.metrics.flow as flow_mod
    from flickerless.metrics.flow import pair_flows

    flick = add_flicker(np.stack([stylize(f) for f in panning]), seed=1)
    bwd, fwd = pair_flows(panning, get_flow("dis"), forward=True)
    calls = []

    def dis(a, b):
        calls.append(1)
        return get_flow("dis")(a, b)

    def holds_all(*a, **k):
        raise AssertionError("evaluate() holds every pair's flows")

    monkeypatch.setattr(flow_mod, "pair_flows", holds_all)
    res = evaluate(flick, panning, metrics="pixel_mse,warp_error", flow=dis)
    assert len(calls) == 2 * (len(panning) - 1)  # one flow each way per pair, shared by both metrics
    p, w = pixel_mse(flick, panning, backward=bwd), warp_error(flick, panning, backward=bwd, forward=fwd)
    assert res.values["pixel_mse"] == p.value and res.per_frame["pixel_mse"] == p.per_pair
    assert res.values["warp_error"] == w.value and res.per_frame["warp_error"] == w.per_pair
    assert res.info["warp_error_coverage"] == float(np.mean(w.coverage))
    # flows of the wrong size or count are said (numpy's broadcasting error, an IndexError), and frames
    # from a generator are read as the list of them (they failed on len())
    with pytest.raises(InputError, match=r"backward flows: expected .*got \(\d+, 8, 8, 2\)"):
        pixel_mse(flick, panning, backward=bwd[:, :8, :8])
    with pytest.raises(InputError, match="forward flows"):
        warp_error(flick, panning, backward=bwd, forward=fwd[:1])
    assert pixel_mse((f for f in flick), panning, backward=bwd).value == p.value
    with pytest.raises(InputError, match="the frames are of 2 shapes"):
        pixel_mse([flick[0], flick[1][:8]], panning[:2])


def test_a_source_of_another_size_is_resized_a_frame_at_a_time(panning, monkeypatch):
    """A source larger than the output (a camera's original against a smaller stylisation) is resized
    to the output's size as its frames are used, not as a whole resized copy of the clip (1000 frames
    of 1080p: 6 GB), with the same values as the source resized up front."""
    import importlib

    import cv2

    import flickerless.metrics.frames as frames_mod
    import flickerless.metrics.temporal as temporal_mod
    from flickerless.metrics.frames import match_size

    flick = add_flicker(np.stack([stylize(f) for f in panning]), seed=1)
    big = np.stack([cv2.resize(f, (256, 192), interpolation=cv2.INTER_CUBIC) for f in panning])
    small = match_size(big, panning.shape[1:3])
    want = evaluate(flick, small, metrics="pixel_mse,warp_error")
    sizes = []

    def dis(a, b):
        sizes.append(a.shape[:2])
        return get_flow("dis")(a, b)

    def whole_copy(*a, **k):
        raise AssertionError("the whole source is resized at once")

    for mod in (frames_mod, temporal_mod, importlib.import_module("flickerless.metrics.evaluate")):
        monkeypatch.setattr(mod, "match_size", whole_copy, raising=False)
    got = evaluate(flick, big, metrics="pixel_mse,warp_error", flow=dis)
    assert set(sizes) == {panning.shape[1:3]}
    assert got.values == want.values and got.per_frame == want.per_frame


def test_a_source_of_another_aspect_ratio_is_cropped_as_run_crops(carphone, caplog):
    """An output centre-cropped from its source (`run` with video.resize = "crop") was scored against the
    source stretched to its size, without a word: Pixel-MSE about twice the right value. The source is now
    centre-cropped to the output's aspect ratio, said in a warning; fit="stretch" keeps the stretch."""
    crop = np.ascontiguousarray(carphone[:, :, 16:160])  # 144x144 of 176x144
    right = pixel_mse(crop, crop).value
    with caplog.at_level("WARNING", logger="flickerless"):
        got = pixel_mse(crop, carphone)
    assert got.value == pytest.approx(right, rel=1e-6)
    assert "144x144 and the source 176x144" in caplog.text and "--fit stretch" in caplog.text
    stretched = pixel_mse(crop, carphone, fit="stretch").value
    assert stretched > 1.3 * right
    res = evaluate(crop, carphone, metrics="pixel_mse,warp_error")
    assert res.values["pixel_mse"] == got.value and res.info["source_fit"] == "crop"
    assert evaluate(crop, carphone, metrics="pixel_mse", fit="stretch").values["pixel_mse"] == stretched
    # an anamorphic source (stored 144x144, shown 176x144) against an output at its shown shape
    import cv2

    squeezed = np.stack([cv2.resize(f, (144, 144), interpolation=cv2.INTER_AREA) for f in carphone])
    assert "source_fit" not in evaluate(carphone, squeezed, metrics="pixel_mse", source_pixel_aspect=176 / 144).info
    assert evaluate(carphone, squeezed, metrics="pixel_mse").info["source_fit"] == "crop"
    caplog.clear()
    with caplog.at_level("WARNING", logger="flickerless"):
        assert "source_fit" not in evaluate(carphone, carphone, metrics="pixel_mse").info
    assert not caplog.text
    with pytest.raises(InputError, match="choose crop or stretch"):
        evaluate(crop, carphone, metrics="pixel_mse", fit="pad")


def test_temporal_metrics_dis_near_zero_and_grow_with_flicker(panning):
    clean = np.stack([stylize(f) for f in panning])
    p0, w0 = pixel_mse(clean, panning).value, warp_error(clean, panning).value
    assert p0 < 8 and w0 < 1e-3  # DIS is sub-pixel accurate on this texture; 0-255 scale
    ps, ws = [p0], [w0]
    for s in (0.25, 0.5, 1.0, 2.0):
        flick = add_flicker(clean, seed=0, strength=s)
        ps.append(pixel_mse(flick, panning).value)
        ws.append(warp_error(flick, panning).value)
    assert all(a < b for a, b in zip(ps, ps[1:])), ps
    assert all(a < b for a, b in zip(ws, ws[1:])), ws
    assert ps[1] > 5 * p0 and ws[1] > 5 * w0


@pytest.mark.parametrize("h, w", [(8, 8), (10, 40), (40, 6)])
def test_dis_flow_takes_frames_smaller_than_opencv_s_minimum(carphone, h, w):
    """OpenCV's DIS refuses frames under 12 pixels a side (a traceback from `flickerless eval` on a
    thumbnail clip): the frames are padded out to its minimum and the flow cut back to their size; the
    metrics then measure such a clip, zero for a still one and more for a flickering one."""
    from flickerless.metrics import dis_flow

    still = np.stack([carphone[0][50:50 + h, 60:60 + w]] * 4)
    flow = dis_flow(still[0], still[1])
    assert flow.shape == (h, w, 2) and np.abs(flow).max() < 0.5
    assert pixel_mse(still, still).value < 1e-6
    assert pixel_mse(add_flicker(still, seed=0), still).value > 10


def test_a_hard_cut_s_pair_is_named(carphone, caplog):
    """At a hard cut one pair's Pixel-MSE is ~150x the others' and lifts the clip's mean ~8x: a warning
    now names that pair and gives the mean without it."""
    cut = np.concatenate([carphone[:6], carphone[6:, ::-1]])
    with caplog.at_level("WARNING", logger="flickerless"):
        res = evaluate(cut, cut, metrics="pixel_mse")
    per = res.per_frame["pixel_mse"]
    assert "pixel_mse: pair 5->6 (counted from the first frame scored) scores" in caplog.text
    assert f"and {np.mean(per[:5] + per[6:]):.4g} without" in caplog.text
    # two cuts: both named, the mean without either (one was left in it); a still clip (median pair 0):
    # its cut was not said at all
    two = np.concatenate([carphone[:4], carphone[4:8, ::-1], carphone[8:12, :, ::-1]])
    still = np.concatenate([np.repeat(carphone[:1], 6, 0), np.repeat(carphone[6:7, ::-1], 6, 0)])
    for clip, pairs, rest in [(two, ("3->4 (", "7->8 ("), [0, 1, 2, 4, 5, 6, 8, 9, 10]), (still, ("5->6",), None)]:
        caplog.clear()
        with caplog.at_level("WARNING", logger="flickerless"):
            per = evaluate(clip, clip, metrics="pixel_mse").per_frame["pixel_mse"]
        assert all(p in caplog.text for p in pairs), caplog.text
        if rest is not None:
            assert "pixel_mse: pairs 3->4" in caplog.text
            assert f"and {np.mean([per[i] for i in rest]):.4g} without" in caplog.text
        else:
            assert "while the median pair scores 0" in caplog.text
    # frames held on threes (animation): the pairs between held frames score 0, the motion pairs 20-60, which
    # were each said as a cut; a cut among them still is
    held = np.repeat(carphone[:8], 3, axis=0)
    for clip, said in ((held, False), (np.concatenate([held[:12], held[12:, ::-1]]), True)):
        caplog.clear()
        with caplog.at_level("WARNING", logger="flickerless"):
            evaluate(clip, clip, metrics="pixel_mse,warp_error")
        assert ("a cut in the source" in caplog.text) == said, caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="flickerless"):
        evaluate(carphone, add_flicker(carphone, seed=0, strength=1.0), metrics="pixel_mse,warp_error")
    assert "median pair" not in caplog.text


def test_occlusion_mask_excludes_disoccluded_pixels(carphone):
    """A square moving right by 4 px over a static textured background: the strip it uncovers in frame
    t+1 was not visible in frame t; the forward-backward check must flag exactly that strip."""
    bg = carphone[0, :64, :64].copy()
    fg = carphone[5, 70:86, 100:116].copy()
    frames = []
    for t in range(2):
        f = bg.copy()
        f[20:36, 10 + 4 * t:26 + 4 * t] = fg
        frames.append(f)
    frames = np.stack(frames)
    fwd = np.zeros((64, 64, 2), np.float32)
    fwd[20:36, 10:26, 0] = 4  # pixels of the square in frame 0 move +4 in x
    bwd = np.zeros((64, 64, 2), np.float32)
    bwd[20:36, 14:30, 0] = -4  # pixels of the square in frame 1 came from 4 px to the left
    mask = occlusion_mask(bwd, fwd)
    expect = np.ones((64, 64), bool)
    expect[20:36, 10:14] = False  # uncovered background
    assert np.array_equal(mask, expect)
    flows = {frames[1].tobytes(): bwd, frames[0].tobytes(): fwd}
    fn = lambda a, b: flows[a.tobytes()]  # noqa: E731
    assert pixel_mse(frames, frames, flow=fn).value > 10  # no mask: the uncovered strip counts
    assert warp_error(frames, frames, flow=fn).value < 1e-12  # masked: exactly consistent


def test_temporal_input_errors(panning):
    with pytest.raises(InputError, match="frames but the source has"):
        pixel_mse(panning, panning[:5])
    with pytest.raises(InputError, match="unknown flow backend"):
        get_flow("farneback")


class _BrokenModule(types.ModuleType):
    """Stands for a torchvision built for another torch: importing from it raises RuntimeError."""

    def __getattr__(self, name):
        raise RuntimeError("operator torchvision::nms does not exist")


@pytest.mark.parametrize("module, says", [(None, "is not installed"),
                                          (_BrokenModule("torchvision.models.optical_flow"), "does not load")])
def test_raft_backend_names_what_is_missing(monkeypatch, module, says):
    monkeypatch.setitem(sys.modules, "torchvision.models.optical_flow", module)
    with pytest.raises(ModelNotFoundError, match=f"RAFT flow backend needs torchvision, which {says}.*--flow dis"):
        get_flow("raft")


# ---- CLIP, aesthetic, FID on a tiny random CLIP ----

@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    folder = save_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")
    return folder, load_clip(folder, device="cpu")


def _reference_embeddings(clip, frames, texts):
    """Image and text embeddings straight from transformers' CLIPModel API."""
    m = clip.model
    with torch.no_grad():
        px = clip.processor(images=list(frames), return_tensors="pt")["pixel_values"]
        img = m.get_image_features(pixel_values=px)
        tok = clip.tokenizer(texts, padding=True, truncation=True, max_length=12, return_tensors="pt")
        txt = m.get_text_features(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"])
    img = img if isinstance(img, torch.Tensor) else img.pooler_output
    txt = txt if isinstance(txt, torch.Tensor) else txt.pooler_output
    return torch.nn.functional.normalize(img, dim=-1), torch.nn.functional.normalize(txt, dim=-1)


def test_clip_score_is_clipped_scaled_cosine(tiny_clip, carphone):
    _, clip = tiny_clip
    frames = carphone[:6]
    words = ["painting", "dog", "cat", "zebra", "a", "the", "sky", "tree", "house", "river"]
    img, txt = _reference_embeddings(clip, frames, words)
    cos = (img @ txt.T).mean(0)
    pos, neg = words[int(cos.argmax())], words[int(cos.argmin())]
    assert cos.max() > 0 > cos.min(), "need one word on each side of 0 to test the clipping"
    prompts = [pos, neg] * 3  # one prompt per frame
    mean, per = clip_score(frames, prompts, clip)
    ref = [100 * max(float(img[i] @ txt[words.index(p)]), 0.0) for i, p in enumerate(prompts)]
    assert per == pytest.approx(ref, abs=1e-3)
    assert mean == pytest.approx(np.mean(ref), abs=1e-3)
    assert all(0 <= v <= 100 for v in per) and per[1] == 0 and per[0] > 0
    single, _ = clip_score(frames, pos, clip)
    assert 0 < single <= 100
    with pytest.raises(InputError, match="one per frame"):
        clip_score(frames, ["a", "b"], clip)


def test_clip_consistency(tiny_clip, carphone):
    _, clip = tiny_clip
    same = np.repeat(carphone[:1], 4, axis=0)
    v, per = clip_consistency(same, clip)
    assert v == pytest.approx(1.0, abs=1e-5) and len(per) == 3
    noise = np.random.default_rng(0).integers(0, 256, (2,) + carphone.shape[1:], dtype=np.uint8)
    mixed = np.stack([carphone[0], noise[0], carphone[1], noise[1]])
    v2, _ = clip_consistency(mixed, clip)
    emb = image_embeddings(clip, mixed)
    assert v2 == pytest.approx(float(np.mean([emb[i] @ emb[i + 1] for i in range(3)])), abs=1e-6)
    assert -1 <= v2 < v


# the public sac+logos+ava1-l14-linearMSE.pth state dict
PUBLIC_AESTHETIC = {
    "layers.0.weight": (1024, 768), "layers.0.bias": (1024,), "layers.2.weight": (128, 1024), "layers.2.bias": (128,),
    "layers.4.weight": (64, 128), "layers.4.bias": (64,), "layers.6.weight": (16, 64), "layers.6.bias": (16,),
    "layers.7.weight": (1, 16), "layers.7.bias": (1,),
}


def test_aesthetic_mlp_has_the_public_layout(tmp_path):
    sd = AestheticPredictor(768).state_dict()
    assert {k: tuple(v.shape) for k, v in sd.items()} == PUBLIC_AESTHETIC
    torch.manual_seed(0)
    public_like = {k: torch.randn(s) for k, s in PUBLIC_AESTHETIC.items()}
    torch.save(public_like, tmp_path / "sac+logos+ava1-l14-linearMSE.pth")
    m = load_aesthetic(str(tmp_path / "sac+logos+ava1-l14-linearMSE.pth"), device="cpu")
    x = torch.nn.functional.normalize(torch.randn(3, 768), dim=-1)
    ref = x
    for i in (0, 2, 4, 6, 7):  # Linear layers only: the dropouts are inactive in eval, no activations
        ref = ref @ public_like[f"layers.{i}.weight"].T + public_like[f"layers.{i}.bias"]
    assert torch.allclose(m(x), ref, atol=1e-4)


def test_aesthetic_score_on_tiny_clip(tiny_clip, carphone, tmp_path):
    _, clip = tiny_clip
    torch.manual_seed(1)
    mlp = AestheticPredictor(clip.dim).eval()
    torch.save(mlp.state_dict(), tmp_path / "aesthetic.pth")
    pred = load_aesthetic(str(tmp_path / "aesthetic.pth"), device="cpu")
    frames = carphone[:4]
    mean, per = aesthetic_score(frames, clip, pred)
    img, _ = _reference_embeddings(clip, frames, ["a"])
    with torch.no_grad():
        ref = mlp(img).squeeze(-1)
    assert per == pytest.approx(ref.tolist(), abs=1e-4) and np.isfinite(mean)
    assert mean == pytest.approx(float(ref.mean()), abs=1e-4)
    with pytest.raises(InputError, match="768-d CLIP embeddings"):
        aesthetic_score(frames, clip, AestheticPredictor(768).eval())
    with pytest.raises(ModelNotFoundError, match="--aesthetic-weights"):
        load_aesthetic(str(tmp_path / "missing.pth"))


def test_aesthetic_weights_on_the_hub_are_not_asked_for_where_it_cannot_be_reached(monkeypatch):
    """OWNER/REPO/FILE asked the hub on a machine without network unless HF_HUB_OFFLINE was set: 25 s
    of retries and doubled noise lines before the skip. Now the cache alone, as the CLIP model."""
    import huggingface_hub

    from flickerless import weights

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(weights, "_hub_reachable", lambda: False)
    asked = []

    def download(repo, name, local_files_only=False, **kw):
        asked.append(local_files_only)
        raise huggingface_hub.utils.LocalEntryNotFoundError("not in the cache")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    with pytest.raises(ModelNotFoundError, match=r"foo/bar/baz.pth.*hub unreachable: not asked.*--aesthetic-weights"):
        load_aesthetic("foo/bar/baz.pth")
    assert asked == [True]


def test_aesthetic_weights_that_are_no_tensors_are_said_in_one_line(tmp_path):
    """A JSON file given as the weights printed torch's whole weights_only page, which advises loading it
    with weights_only=False (running whatever code the file holds)."""
    (tmp_path / "config.json").write_text('{"a": 1}')
    with pytest.raises(ModelNotFoundError) as e:
        load_aesthetic(str(tmp_path / "config.json"))
    assert "\n" not in str(e.value) and "weights_only" not in str(e.value)
    assert "config.json: cannot be read (not a file of tensors" in str(e.value)


def test_frechet_distance_closed_forms():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.5, 2, 5), rng.uniform(0.5, 2, 5)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    expect = np.sum((mu1 - mu2) ** 2) + np.sum(a + b - 2 * np.sqrt(a * b))
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expect, rel=1e-9)
    # non-commuting covariances: tr sqrt(S1 S2) = tr sqrt(S1^1/2 S2 S1^1/2), the latter by eigh
    x, y = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    s1, s2 = x @ x.T + 0.1 * np.eye(6), y @ y.T + 0.1 * np.eye(6)
    w, v = np.linalg.eigh(s1)
    r1 = v @ np.diag(np.sqrt(w)) @ v.T
    w2 = np.linalg.eigvalsh(r1 @ s2 @ r1)
    expect = np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(w2))
    assert frechet_distance(np.zeros(6), s1, np.zeros(6), s2) == pytest.approx(expect, rel=1e-8)


def test_frechet_distance_of_singular_covariances_writes_no_warning():
    """A still or black clip's covariances are singular: scipy's LinAlgWarning reached stderr (even with
    -q) although the case is handled."""
    import warnings

    feats = np.zeros((6, 4))
    feats[:, 0] = np.arange(6)  # rank 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert frechet_distance(*gaussian_stats(np.zeros((6, 4))), *gaussian_stats(np.zeros((6, 4)))) == 0.0
        assert frechet_distance(*gaussian_stats(feats), *gaussian_stats(feats)) == pytest.approx(0.0, abs=1e-6)


def test_fid_of_a_set_against_itself_is_zero(tiny_clip, carphone):
    _, clip = tiny_clip
    frames = np.concatenate([carphone, carphone[:, :, ::-1]])  # 24 frames > 16 feature dims
    assert 0 <= fid(frames, frames, clip=clip) < 1e-6  # never below 0 (rounding left -1e-10)
    assert 0 <= fid([frames[:12], frames[12:]], frames, clip=clip) < 1e-6  # a set of two videos
    other = add_flicker(frames, seed=1, strength=3.0)
    assert fid(frames, other, clip=clip) > 1e-3
    feats = lambda f: f.reshape(len(f), -1)[:, :8].astype(np.float64)  # noqa: E731 - custom features
    mu, s = gaussian_stats(feats(frames))
    assert s.shape == (8, 8) and mu.shape == (8,)
    # nearly collinear pixel features: cond(S1 S2) ~ cond(S)^2 bounds the precision of sqrtm
    assert 0 <= fid(frames, frames, features=feats) < 1e-6 * np.trace(s)


def test_fid_and_clip_metrics_take_a_source_of_another_length(tiny_clip, carphone):
    """FID is a distance between two sets of frames (the paper's source is the fine-tuning video), but
    evaluate refused a source of another length for any metric, saying they must match frame for frame."""
    folder, clip = tiny_clip
    res = evaluate(carphone, carphone[:6], metrics="fid,clip_consistency", clip_model=folder, device="cpu")
    # (on the CPU as the reference is: FID of near-alike sets is 1e-4, and a GPU's embeddings move it by 1%)
    assert res.values["fid"] == pytest.approx(fid(carphone, carphone[:6], clip=clip), rel=1e-6)
    assert set(res.values) == {"fid", "clip_consistency"}
    with pytest.raises(InputError, match=r"has 6: pixel_mse, pose_mse compare frame t of one with frame t") as e:
        evaluate(carphone, carphone[:6], metrics="fid,pixel_mse,pose_mse", clip_model=folder)
    assert "fid and the CLIP metrics take clips of any lengths" in str(e.value)
    # but a set of 2 or more (one frame has no spread): said as a one-frame output is
    with pytest.raises(InputError, match="metric fid needs a source of at least 2 frames"):
        evaluate(carphone, carphone[:1], metrics="fid", clip_model=folder)


def test_evaluate_skips_metrics_without_weights(panning, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing = str(tmp_path / "no-clip-here")
    res = evaluate(panning, panning, prompt="a painting", metrics=None, clip_model=missing,
                   pose_estimator=lambda f: np.zeros((len(f), 3, 3)))
    assert set(res.values) == {"pixel_mse", "warp_error"}
    for m in ("clip", "clip_consistency", "fid"):
        assert "--clip-model" in res.skipped[m] and missing in res.skipped[m]
    assert "--aesthetic-weights" in res.skipped["aesthetic"]
    assert "no keypoint" in res.skipped["pose_mse"]
    with pytest.raises(InputError, match="needs a prompt"):
        evaluate(panning, panning, metrics="clip", clip_model=missing)
    # called from Python, the reasons named the command's flags alone (--source, --prompt, ...): each now
    # names evaluate's keyword beside the flag, which `flickerless eval` still shows
    for m in ("clip", "clip_consistency", "fid"):
        assert "Pass --clip-model PATH / clip_model=PATH (a folder" in res.skipped[m]
    assert "pass --aesthetic-weights PATH / aesthetic_weights=PATH (a .pth" in res.skipped["aesthetic"]
    res = evaluate(panning, metrics=None, clip_model=missing, log_skips=False)
    assert res.skipped["pixel_mse"] == "needs the source video (--source / source=)"
    assert res.skipped["clip"] == "needs a prompt (--prompt / prompt=)"
    for m, says in [("pixel_mse", "^metric pixel_mse needs the source video \\(--source / source=\\)$"),
                    ("clip", "^metric clip needs a prompt \\(--prompt / prompt=\\)$")]:
        with pytest.raises(InputError, match=says):
            evaluate(panning, metrics=m, clip_model=missing)
    with pytest.raises(InputError, match="unknown metric"):
        evaluate(panning, panning, metrics="pixel_mse,psnr")


def test_evaluate_edge_inputs_are_skipped_or_said_before_any_work(tiny_clip, panning, tmp_path):
    """A 1-frame clip's default run stopped at FID (other metrics skip what needs 2 frames); a
    predictor for another CLIP size was refused after the flows had run; and frames the metrics would
    misread (a uint8 tensor as floats, 0-255 floats, NaN, uint16) were scored as saturated or as 0."""
    folder, clip = tiny_clip
    res = evaluate(panning[:1], panning[:1], clip_model=folder, pose_estimator=lambda f: np.zeros((len(f), 3, 3)))
    assert "at least 2 frames" in res.skipped["fid"] and "fid" not in res.values
    torch.save(AestheticPredictor(768).state_dict(), tmp_path / "l14.pth")
    flows = []

    def flow(a, b):
        flows.append(1)
        return np.zeros((*a.shape[:2], 2), np.float32)

    with pytest.raises(InputError, match="768-d CLIP embeddings"):
        evaluate(panning, panning, metrics="pixel_mse,aesthetic", clip_model=folder,
                 aesthetic_weights=str(tmp_path / "l14.pth"), flow=flow)
    assert not flows
    with pytest.raises(ModelNotFoundError, match="no such file"):
        load_aesthetic(str(tmp_path / "a" / "b" / "c.pth"))
    from flickerless.metrics.frames import as_uint8

    chw = torch.from_numpy(panning[:2]).permute(0, 3, 1, 2)
    assert np.array_equal(as_uint8(chw), panning[:2])
    from flickerless.metrics.pose import pose_error

    with pytest.raises(InputError, match="one row per frame"):  # 1 row for 4 frames was compared silently
        pose_error(panning[:4], panning[:4], estimator=lambda f: np.zeros((1, 3, 3)))
    for bad, says in [(panning[:2].astype(np.float32), "0-255"), (panning[:2] * np.float32(np.nan), "range"),
                      (panning[:2].astype(np.uint16), "uint16")]:
        with pytest.raises(InputError, match=says):
            as_uint8(bad)


# ---- Pose-MSE ----

def test_pose_mse_by_hand():
    rng = np.random.default_rng(0)
    kp = np.concatenate([rng.uniform(0, 1, (5, 18, 2)), np.ones((5, 18, 1))], -1)
    assert pose_mse(kp, kp.copy()).value == 0.0
    moved = kp.copy()
    moved[..., 0] += 0.03
    moved[..., 1] -= 0.04
    assert pose_mse(moved, kp).value == pytest.approx(0.03**2 + 0.04**2)
    # keypoints invisible in either track are left out; a frame with none in common is NaN
    moved[:, :9, 2] = 0.1
    moved[:, 9:, :2] += 1.0  # would count if the visibility filter were wrong
    kp2 = kp.copy()
    kp2[:, 9:, 2] = 0.0
    moved[4, :, 2] = 0.0
    r = pose_mse(moved, kp2)
    assert r.count == 0 and np.isnan(r.value) and np.isnan(r.per_frame).all()
    moved[:, 3, 2] = 1.0  # keypoint 3: visible in both, offset (0.03, -0.04)
    moved[4, 3, 2] = 0.0
    r = pose_mse(moved, kp2)
    assert r.count == 4 and r.value == pytest.approx(0.0025) and np.isnan(r.per_frame[4])
    # an estimator's NaN coordinates for a keypoint it did not see (NaN x 0 made the score NaN), or for
    # one it marks visible, leave that keypoint out
    moved[:, :3, :2] = np.nan  # not seen (visibility 0.1)
    kp2[0, 3, :2] = np.nan  # "seen" without coordinates
    r = pose_mse(moved, kp2)
    assert r.count == 3 and r.value == pytest.approx(0.0025) and np.isnan(r.per_frame).tolist() == [True, False, False, False, True]
    with pytest.raises(InputError, match="both be"):
        pose_mse(kp[:, :5], kp)


def test_pose_mse_says_how_many_of_the_source_s_keypoints_it_compared(panning, caplog):
    """An output that loses the person in 2 of 3 frames scored 8x better than one keeping a worse pose
    (only keypoints visible in both count), and only the compared count was in the JSON: the source's
    count is now beside it, and a warning says when the output misses over a quarter of them."""
    def estimator(frames):  # 4 keypoints at a frame's mean colour, unseen in a black frame
        kp = np.zeros((len(frames), 4, 3))
        kp[..., :2] = frames.reshape(len(frames), -1).mean(1)[:, None, None] / 255
        kp[..., 2] = frames.reshape(len(frames), -1).max(1)[:, None] > 0
        return kp

    lost = panning.copy()
    lost[:6] = 0
    r = pose_mse(estimator(lost), estimator(panning))
    assert (r.count, r.shown) == (8, 32)
    with caplog.at_level("WARNING", logger="flickerless"):
        res = evaluate(lost, panning, metrics="pose_mse", pose_estimator=estimator)
    assert res.info["pose_keypoints_compared"] == 8 and res.info["pose_keypoints_source"] == 32
    assert "the output shows 8 of the 32 keypoints the source shows" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="flickerless"):
        evaluate(panning, panning, metrics="pose_mse", pose_estimator=estimator)
    assert not caplog.text


def test_mediapipe_missing_says_an_install_that_works(carphone, monkeypatch):
    """The remedy said `pip install flickerless[pose]` (zsh takes an unquoted [pose] as a pattern) and "pass
    your own estimator", which has no CLI flag; then `pip install ".[pose]"` in the checkout, which a wheel's
    user has not. The quoted "flickerless[pose]" works for both (pip takes an installed flickerless's extra
    from its metadata), as the pose annotator says."""
    for name in [n for n in sys.modules if n.split(".")[0] == "mediapipe"] + ["mediapipe"]:
        monkeypatch.setitem(sys.modules, name, None)  # import mediapipe... raises ImportError
    with pytest.raises(ModelNotFoundError) as e:
        mediapipe_pose(carphone[:2])
    says = str(e.value)
    assert '`pip install --no-deps mediapipe==0.10.21` then `pip install "flickerless[pose]"`' in says
    assert "checkout" not in says and "evaluate(pose_estimator=...)" in says and "\n" not in says


@pytest.mark.mediapipe
def test_mediapipe_pose_on_real_clip(carphone):
    carphone = carphone[:6]
    kp = mediapipe_pose(carphone)
    assert kp.shape == (6, 33, 3)
    nose = kp[:, 0]
    assert (nose[:, 2] > 0.5).all() and ((nose[:, :2] > 0) & (nose[:, :2] < 1)).all()
    assert pose_mse(kp, mediapipe_pose(carphone)).value == pytest.approx(0.0, abs=1e-10)
    # the same clip shifted right by 16 px (of 176): the pose moves by about 16/176 in x
    shifted = np.concatenate([np.repeat(carphone[:, :, :1], 16, axis=2), carphone[:, :, :-16]], axis=2)
    r = pose_mse(mediapipe_pose(shifted), kp)
    assert r.value == pytest.approx((16 / 176) ** 2, rel=0.5)


@pytest.mark.mediapipe
def test_pose_mse_of_frames_identical_to_the_source_is_zero(carphone):
    """MediaPipe ran in tracking mode: after 3 frames without the person, frames identical to the source
    scored up to 1.3e-4 (2 px RMS): each frame is now detected on its own."""
    from flickerless.metrics import pose_error

    out = carphone.copy()
    out[3:6] = 0
    r, _, _ = pose_error(out, carphone)
    assert np.isnan(r.per_frame[3:6]).all()
    assert np.array_equal(np.asarray(r.per_frame)[[0, 1, 2, 6, 7, 8, 9, 10, 11]], np.zeros(9))


def test_api_inputs_are_said_not_raised_raw(tiny_clip, panning):
    """Keypoints and features as bfloat16 or autograd tensors (frames take both) were torch's TypeError or
    RuntimeError; ragged keypoints, NaN features, a mean not of its covariance's size (that gave 0.0), a
    wrong device, clip_score without a prompt and arrays in EvalResult.to_dict() were raw errors or
    silent. Each now works, or is an InputError / DeviceError of one line."""
    import json

    from flickerless.errors import DeviceError
    from flickerless.metrics import EvalResult

    rng = np.random.default_rng(0)
    kp = np.concatenate([rng.uniform(0, 1, (4, 5, 2)), np.ones((4, 5, 1))], -1)
    moved = kp + np.array([0.03, 0.0, 0.0])
    expect = pose_mse(moved, kp).value
    for convert in (lambda a: torch.tensor(a).bfloat16(), lambda a: torch.tensor(a).requires_grad_()):
        assert pose_mse(convert(moved), convert(kp)).value == pytest.approx(expect, rel=0.05)
    feats = rng.normal(size=(12, 3))
    mu, s = gaussian_stats(feats)
    for convert in (lambda a: torch.tensor(a).bfloat16(), lambda a: torch.tensor(a).requires_grad_()):
        assert frechet_distance(convert(mu), convert(s), mu, s) == pytest.approx(0.0, abs=1e-3)
        assert gaussian_stats(convert(feats))[0] == pytest.approx(mu, abs=1e-2)
    nan = feats.copy()
    nan[3, 1] = np.nan
    _, clip = tiny_clip
    frames = panning[:4]
    for call, says in [(lambda: pose_mse([[[0, 0, 1]], [[0, 0]]], kp), "not an array of numbers"),
                       (lambda: frechet_distance(np.zeros(4), np.eye(3), np.zeros(4), np.eye(3)), "same D"),
                       (lambda: gaussian_stats(nan), "NaN or infinite values"),
                       (lambda: fid(frames, frames, features=lambda f: np.full((len(f), 3), np.nan)), "NaN"),
                       (lambda: fid(frames, frames, features=lambda f: np.ones(len(f))), r"must be \(N, D\)"),
                       (lambda: clip_score(frames, None, clip), "clip_score needs a prompt")]:
        with pytest.raises(InputError, match=says) as e:
            call()
        assert "\n" not in str(e.value)
    with pytest.raises(DeviceError, match="unknown device 'tpu'"):
        evaluate(frames, frames, metrics="pixel_mse", device="tpu")
    res = EvalResult(values={"pixel_mse": np.float32(1.5)},
                     per_frame={"pixel_mse": np.array([1.0, np.nan]), "clip": torch.tensor([2.0, 3.0])})
    assert json.loads(json.dumps(res.to_dict()))["per_frame"] == {"pixel_mse": [1.0, None], "clip": [2.0, 3.0]}
