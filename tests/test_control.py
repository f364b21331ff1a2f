"""Annotators (flickerless.control): registry, cache, and each annotator on real frames and tiny random models."""

import logging
import os

import numpy as np
import pytest
import torch

from flickerless.control import annotate, available, get_annotator, iter_annotate, to_tensor
from flickerless.errors import InputError, ModelNotFoundError

NAMES = {"depth", "softedge", "pose", "tile", "shuffle", "canny", "lineart"}


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("FLICKERLESS_CACHE", str(tmp_path / "fl-cache"))


# ---------------------------------------------------------------- registry, inputs, errors


def test_registry_lists_all_and_rejects_unknown_names_and_settings():
    assert set(available()) == NAMES and all(available().values())
    with pytest.raises(InputError, match="unknown annotator 'hed'.*depth"):
        get_annotator("hed")
    with pytest.raises(InputError, match="no setting 'threshold'.*valid: low, high"):
        get_annotator("canny", threshold=3)
    with pytest.raises(InputError, match="'low'"):
        get_annotator("canny", low=300, high=200)
    with pytest.raises(InputError, match="'method'.*'pidinet'"):
        get_annotator("softedge", method="pidinet")
    with pytest.raises(InputError, match="'sr'"):
        get_annotator("tile", sr="esrgan")
    with pytest.raises(InputError, match="^annotator 'tile': setting 'scale': must be positive$"):  # whose, too
        get_annotator("tile", scale=0)
    with pytest.raises(InputError, match="'normalize'"):
        get_annotator("depth", normalize="percentile")
    # a setting of the wrong type (--set annotators.canny.low=abc) was a TypeError inside the annotator
    with pytest.raises(InputError, match="'low' must be an integer, got 'abc'"):
        get_annotator("canny", low="abc")
    with pytest.raises(InputError, match="'min_confidence' must be a finite number, got nan"):
        get_annotator("pose", min_confidence=float("nan"))
    with pytest.raises(InputError, match="'smooth' must be true or false"):
        get_annotator("pose", smooth="yes")
    with pytest.raises(InputError, match="'device' must be a string"):
        get_annotator("canny", device=0)
    assert get_annotator("canny", low=np.int64(50), device=None).low == 50  # numpy numbers and None where allowed
    assert get_annotator("tile", size=[64, 32]).size == (64, 32)


def test_inputs_arrays_lists_tensors_agree(carphone):
    clip = carphone[:3]
    a = annotate("canny", clip, cache=False)
    assert a.shape == clip.shape and a.dtype == np.uint8
    b = annotate("canny", list(clip), cache=False)
    t = torch.from_numpy(clip).permute(0, 3, 1, 2).float() / 255
    c = annotate("canny", t, cache=False)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    from flickerless.video import DiskFrames

    with DiskFrames(iter(clip)) as disk:  # a disk-backed clip is read a chunk at a time
        np.testing.assert_array_equal(a, annotate("canny", disk, cache=False))
    x = to_tensor(a)
    assert x.shape == (3, 3, *clip.shape[1:3]) and x.dtype == torch.float32
    assert float(x.min()) >= 0 and float(x.max()) <= 1 and torch.equal(x[:, 0] * 255, torch.from_numpy(a[..., 0]).float())
    with pytest.raises(InputError, match=r"\(T, H, W, 3\)"):
        annotate("canny", np.zeros((2, 8, 8), np.uint8)[..., None], cache=False)
    # a tensor on the meta device (no values) failed with torch's error; a grey frame's shape is said as given
    with pytest.raises(InputError, match="meta device"):
        annotate("canny", t.to("meta"), cache=False)
    with pytest.raises(InputError, match=r"got \(4, 72, 88\)"):
        annotate("canny", torch.zeros(4, 72, 88), cache=False)


# ---------------------------------------------------------------- cache


def _counting(monkeypatch, cls):
    calls = []
    orig = cls.process

    def process(self, batch):
        calls.append(len(batch))
        return orig(self, batch)

    monkeypatch.setattr(cls, "process", process)
    return calls


def test_cache_hit_skips_work_and_keys_on_video_and_settings(monkeypatch, carphone, tmp_path):
    from flickerless.control.edges import CannyAnnotator

    calls = _counting(monkeypatch, CannyAnnotator)
    clip = np.concatenate([carphone] * 4)[:40]  # 40 frames: two stored chunks (32 + 8)
    first = annotate("canny", clip)
    assert sum(calls) == 40
    stored = list((tmp_path / "fl-cache" / "annotations" / "canny").glob("*/*.npz"))  # FLICKERLESS_CACHE honoured
    assert len(stored) == 2
    mask = os.umask(0o022)
    os.umask(mask)
    assert stored[0].parent.stat().st_mode & 0o777 == 0o777 & ~mask  # not mkdtemp's 0700: a cache is shared
    again = annotate("canny", clip, batch_size=5)  # runtime settings do not change the key
    assert sum(calls) == 40
    np.testing.assert_array_equal(first, again)
    assert [len(c) for c in iter_annotate("canny", clip)] == [32, 8] and sum(calls) == 40
    annotate("canny", clip, low=50)  # other settings: computed
    assert sum(calls) == 80
    other = clip.copy()
    other[3] = 255 - other[3]
    annotate("canny", other)  # other content: computed
    assert sum(calls) == 120
    annotate("canny", clip, cache=False)
    assert sum(calls) == 160
    # an explicit video id replaces the content hash; a cache_dir argument replaces the default place
    annotate("canny", clip, video_id="clip-a", cache_dir=tmp_path / "mine")
    annotate("canny", clip, video_id="clip-a", cache_dir=tmp_path / "mine")
    assert sum(calls) == 200 and list((tmp_path / "mine" / "canny").glob("*/meta.json"))


def test_interrupted_annotation_leaves_no_entry(monkeypatch, carphone, tmp_path):
    from flickerless.control.edges import CannyAnnotator

    calls = _counting(monkeypatch, CannyAnnotator)
    clip = np.concatenate([carphone] * 3)
    gen = iter_annotate("canny", clip, cache_dir=tmp_path / "c")
    next(gen)
    gen.close()  # consumer stops after the first chunk
    assert not list((tmp_path / "c").rglob("meta.json")) and not list((tmp_path / "c").rglob("*.npz"))
    out = annotate("canny", clip, cache_dir=tmp_path / "c")
    assert len(out) == len(clip) and sum(calls) == 32 + len(clip)


def test_a_cache_that_cannot_be_written_is_said_once_and_the_frames_are_still_given(monkeypatch, carphone,
                                                                                    tmp_path, caplog):
    """From the helpers' use of `run`: with a read-only HOME, `run` and `demo --engine` stopped at the
    annotation cache, and the way out it gave named Python arguments (cache_dir=, cache=False). The
    frames are computed and given uncached, with one warning naming the CLI's remedies; a disk that fills
    while an entry is written is the same, and leaves no half entry."""
    clip = carphone[:4]
    want = annotate("canny", clip, cache=False)
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("FLICKERLESS_CACHE", str(tmp_path / "file" / "home"))
    with caplog.at_level(logging.WARNING, logger="flickerless"):
        np.testing.assert_array_equal(annotate("canny", clip), want)
        np.testing.assert_array_equal(annotate("canny", clip, low=50).shape, want.shape)
    said = [r.getMessage() for r in caplog.records if "annotation cache" in r.getMessage()]
    assert len(said) == 1 and "cannot write there" in said[0] and str(tmp_path / "file" / "home") in said[0]
    assert "FLICKERLESS_CACHE" in said[0] and "--cache-dir" in said[0] and "cache=False" not in said[0]
    caplog.clear()

    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", full)
    with caplog.at_level(logging.WARNING, logger="flickerless"):
        np.testing.assert_array_equal(annotate("canny", clip, cache_dir=tmp_path / "c"), want)
    assert any("No space left" in r.getMessage() for r in caplog.records)
    assert not [p for p in (tmp_path / "c").rglob("*") if p.is_file()]


def test_video_identity_changes_with_the_file(tmp_path):
    import os

    from flickerless.control import video_identity

    f = tmp_path / "v.mp4"
    f.write_bytes(b"x" * 10)
    a = video_identity(f)
    assert video_identity(f) == a and video_identity(f, frames=(0, 5)) != a
    os.utime(f, ns=(1, 10**18))
    assert video_identity(f) != a


def test_cached_frames_are_not_taken_across_a_change_in_reading(tmp_path, monkeypatch, sound_clip):
    """The same file read another way gives other frames (session 21's exact Y'CbCr rounding): an
    identity made from the file alone would hand a run annotations (and a resumed job frames) made from
    the old reading. Both identities change with video.READ_VERSION."""
    from flickerless import video
    from flickerless.control import video_identity
    from flickerless.pipelines.job import read_clip
    from flickerless.pipelines.templates import apply_overrides, load_template

    s = apply_overrides(load_template("stylize"), ["video.width=32", "video.height=24"])
    ident, job_id = video_identity(sound_clip), read_clip(sound_clip, (0, 2), s).video_id
    monkeypatch.setattr(video, "READ_VERSION", video.READ_VERSION + 1)
    assert video_identity(sound_clip) != ident and read_clip(sound_clip, (0, 2), s).video_id != job_id


# ---------------------------------------------------------------- canny, lineart, shuffle


def test_canny_and_lineart_respond_to_lines_not_to_flat_areas():
    img = np.full((2, 64, 64, 3), 230, np.uint8)
    img[1, :, 30:33] = 20  # a dark vertical line on a light ground
    c = annotate("canny", img, cache=False)
    assert set(np.unique(c)) <= {0, 255} and c[0].max() == 0 and c[1, :, 25:38].max() == 255
    assert (c[..., 0] == c[..., 2]).all()
    lines = annotate("lineart", img, cache=False)
    assert lines[0].max() == 0
    assert lines[1, 10:54, 31].min() > 200 and lines[1, :, :20].max() == 0  # white line on black


def test_shuffle_is_seeded_keeps_colours_moves_layout(carphone):
    img = carphone[0]
    a = annotate("shuffle", img, seed=3, cache=False)
    b = annotate("shuffle", img, seed=3, cache=False)
    c = annotate("shuffle", img, seed=4, cache=False)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(int) - c).mean() > 10
    assert np.abs(a[0].astype(int) - img).mean() > 20  # the layout is gone
    assert np.abs(a[0].reshape(-1, 3).mean(0) - img.reshape(-1, 3).mean(0)).max() < 25  # the palette stays
    two = annotate("shuffle", np.stack([img, img]), seed=3, size=(64, 80), cache=False)
    assert two.shape == (2, 64, 80, 3)
    np.testing.assert_array_equal(two[0], two[1])  # one flow for every frame


# ---------------------------------------------------------------- softedge


def test_sobel_softedge_fixed_scale_no_per_frame_normalisation():
    img = np.full((2, 64, 64, 3), 200, np.uint8)
    img[:, :, 32:] = 40
    img[1, :, 32:] = 120  # the same edge at half the contrast
    e = annotate("softedge", img, method="sobel", cache=False)[..., 0].astype(int)
    assert e[0, :, :20].max() < 5 and e[0, :, 28:36].max() > 150
    assert 40 < e[1, :, 28:36].max() < e[0, :, 28:36].max() - 30  # weaker edge, weaker response


def _hed_keys():
    keys = ["norm"]
    for b, n in zip(range(1, 6), (2, 2, 3, 3, 3)):
        for i in range(n):
            keys += [f"block{b}.convs.{i}.weight", f"block{b}.convs.{i}.bias"]
        keys += [f"block{b}.projection.weight", f"block{b}.projection.bias"]
    return keys


def test_hed_net_matches_public_layout_and_loads_from_file_or_folder(tmp_path, carphone, caplog):
    from flickerless.control.edges import ControlNetHED, hed_edges

    torch.manual_seed(0)
    net = ControlNetHED()
    sd = net.state_dict()
    assert sorted(sd) == sorted(_hed_keys())
    assert sd["block4.convs.0.weight"].shape == (512, 256, 3, 3) and sd["block5.projection.weight"].shape == (1, 512, 1, 1)
    with torch.no_grad():
        sd["norm"].copy_(torch.tensor([123.0, 117.0, 104.0]).view(1, 3, 1, 1))
    folder = tmp_path / "Annotators"
    folder.mkdir()
    torch.save(sd, folder / "ControlNetHED.pth")
    clip = np.ascontiguousarray(carphone[:2, :64, :80])
    out = annotate("softedge", clip, model=str(folder), device="cpu", cache=False)
    out2 = annotate("softedge", clip, model=str(folder / "ControlNetHED.pth"), device="cpu", cache=False)
    np.testing.assert_array_equal(out, out2)
    ref = hed_edges(net.eval(), clip)
    assert out.shape == clip.shape and np.abs(out[..., 0].astype(float) - ref * 255).max() <= 1
    torch.save({"block1.convs.0.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(ModelNotFoundError, match="not a ControlNetHED state dict"):
        annotate("softedge", clip, model=str(tmp_path / "bad.pth"), cache=False)
    with pytest.raises(ModelNotFoundError, match="lllyasviel/Annotators.*HF_HUB_OFFLINE=1.*method='sobel'"):
        annotate("softedge", clip, cache=False)
    with caplog.at_level(logging.WARNING, logger="flickerless"):
        fb = annotate("softedge", clip, fallback=True, cache=False)
    assert "Sobel" in caplog.text
    np.testing.assert_array_equal(fb, annotate("softedge", clip, method="sobel", cache=False))


def test_a_missing_local_folder_is_said_as_one_naming_what_it_should_hold(tmp_path, monkeypatch):
    """``model="Annotators/"`` (no such folder) was said as "ControlNetHED.pth of the Hugging Face repo
    'Annotators/'", depth's as "download it once with `hf download Annotators/`"."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    clip = np.zeros((2, 32, 32, 3), np.uint8)
    for name, model, says in [
        ("softedge", "Annotators/", "local folder .*Annotators \\(missing; it should hold ControlNetHED.pth\\)"),
        ("softedge", "./models/hed", "local folder .*models/hed \\(missing; it should hold ControlNetHED.pth\\)"),
        ("softedge", "models/hed.pth", "local file .*models/hed.pth \\(missing\\)"),
        ("depth", "Annotators/", "local folder .*Annotators \\(missing; it should hold config.json"),
    ]:
        with pytest.raises(ModelNotFoundError, match=says) as e:
            annotate(name, clip, model=model, cache=False, progress=False)
        assert "Hugging Face repo" not in str(e.value) and f"download {model}" not in str(e.value)
    with pytest.raises(ModelNotFoundError, match="local folder .*Annotators \\(missing; it should hold config.json"):
        annotate("tile", clip, sr="swin2sr", model="Annotators/", scale=2, cache=False, progress=False)
    # an "owner/name" beside a folder "owner/" is still a repo id (looked for in the Hugging Face cache)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as e:
        annotate("softedge", clip, model="models/hed", cache=False, progress=False)
    assert "local folder" not in str(e.value) and "models/hed" in str(e.value)


# ---------------------------------------------------------------- depth


def _tiny_depth_model(folder):
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessor

    torch.manual_seed(0)
    bb = Dinov2Config(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                      image_size=28, patch_size=14, out_features=["stage1", "stage2"], reshape_hidden_states=False)
    cfg = DepthAnythingConfig(backbone_config=bb, reassemble_hidden_size=16, neck_hidden_sizes=[8, 16],
                              reassemble_factors=[2, 1], fusion_hidden_size=8, head_hidden_size=8)
    DepthAnythingForDepthEstimation(cfg).save_pretrained(folder)
    DPTImageProcessor(size={"height": 56, "width": 56}, keep_aspect_ratio=True, ensure_multiple_of=14,
                      image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(folder)
    return str(folder)


def test_depth_with_tiny_depth_anything(tmp_path, carphone):
    model = _tiny_depth_model(tmp_path / "depth")
    clip = carphone[:4]
    out = annotate("depth", clip, model=model, device="cpu", progress=False, cache_dir=tmp_path / "c")
    assert out.shape == clip.shape and out.dtype == np.uint8
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 0] == out[..., 2]).all()
    assert out.min() == 0 and out.max() >= 254  # one range for the whole clip
    again = annotate("depth", clip, model=model, device="cpu", progress=False, cache=False)
    np.testing.assert_array_equal(out, again)
    with pytest.raises(ModelNotFoundError, match="depth-anything/Depth-Anything-V2-Small-hf.*HF_HUB_OFFLINE.*hf download"):
        annotate("depth", clip, cache=False)
    with pytest.raises(ModelNotFoundError, match="missing"):
        annotate("depth", clip, model=str(tmp_path / "no-such-folder"), cache=False)


def test_depth_normalised_over_the_clip_not_per_frame():
    from flickerless.control.depth import DepthAnnotator

    class Known(DepthAnnotator):  # the model replaced by a known depth: frame t is a ramp times (t + 1)
        def raw_depth(self, batch):
            ramp = np.linspace(0, 1, 20, dtype=np.float32)[None, :].repeat(10, 0)
            return np.stack([ramp * (f[0, 0, 0] + 1) for f in batch])

    frames = np.zeros((4, 30, 40, 3), np.uint8)
    frames[:, 0, 0, 0] = np.arange(4)
    vid = np.concatenate(list(Known(batch_size=3).run(frames, chunk=3)))[..., 0]  # chunks and batches cross
    assert vid.shape == (4, 30, 40)
    np.testing.assert_allclose(vid.max(axis=(1, 2)), 255 * np.arange(1, 5) / 4, atol=2)
    per = np.concatenate(list(Known(normalize="frame").run(frames)))[..., 0]
    assert (per.max(axis=(1, 2)) == 255).all()


# ---------------------------------------------------------------- tile


def _tiny_swin2sr(folder):
    from transformers import Swin2SRConfig, Swin2SRForImageSuperResolution

    torch.manual_seed(0)
    cfg = Swin2SRConfig(image_size=16, embed_dim=8, depths=[1], num_heads=[2], window_size=4, upscale=2, mlp_ratio=1.0)
    Swin2SRForImageSuperResolution(cfg).save_pretrained(folder)
    return str(folder)


def test_tile_super_resolves_with_swin2sr_else_lanczos(tmp_path, carphone, caplog):
    from flickerless.control.tile import swin2sr_upscale

    model = _tiny_swin2sr(tmp_path / "sr")
    clip = np.ascontiguousarray(carphone[:2, :30, :38])  # not a multiple of the window: padded and cropped
    sr = annotate("tile", clip, model=model, scale=2, device="cpu", progress=False, cache=False)
    assert sr.shape == (2, 60, 76, 3)
    from transformers import Swin2SRForImageSuperResolution

    net = Swin2SRForImageSuperResolution.from_pretrained(model).eval()
    np.testing.assert_array_equal(sr, swin2sr_upscale(net, clip))
    lz = annotate("tile", clip, sr="lanczos", scale=2, cache=False)
    assert lz.shape == sr.shape and np.abs(lz.astype(int) - sr).mean() > 1  # the random net is not Lanczos
    with caplog.at_level(logging.WARNING, logger="flickerless"):
        auto = annotate("tile", clip, model=str(tmp_path / "none"), size=(60, 76), cache=False)
    assert caplog.text.count("Lanczos") == 1
    np.testing.assert_array_equal(auto, lz)
    with pytest.raises(ModelNotFoundError, match="Swin2SR"):
        annotate("tile", clip, sr="swin2sr", model=str(tmp_path / "none"), scale=2, cache=False)
    same = annotate("tile", clip, model=model, cache=False)  # no larger: no model, the frame itself
    np.testing.assert_array_equal(same, clip)


# ---------------------------------------------------------------- pose


@pytest.fixture(scope="module")
def pose_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("pose-cache")


@pytest.fixture(scope="module")
def carphone_pose(carphone, pose_cache):
    ann = get_annotator("pose", progress=False)
    images = np.concatenate(list(iter_annotate(ann, carphone, cache_dir=pose_cache)))
    return images, ann.keypoints


@pytest.mark.mediapipe
def test_pose_keypoints_come_back_from_the_cache(monkeypatch, carphone, carphone_pose, pose_cache):
    from flickerless.control import keypoints, pose

    def fail(*a, **k):
        raise AssertionError("the pose model ran again")

    monkeypatch.setattr(pose, "extract_keypoints", fail)
    kp = keypoints(carphone, cache_dir=pose_cache, progress=False)
    np.testing.assert_array_equal(kp, carphone_pose[1])
    np.testing.assert_array_equal(annotate("pose", carphone, cache_dir=pose_cache), carphone_pose[0])
    with pytest.raises(AssertionError, match="ran again"):  # other settings: not cached
        keypoints(carphone, cache_dir=pose_cache, window=5)


@pytest.mark.mediapipe
def test_pose_finds_the_person_in_carphone(carphone, carphone_pose):
    from flickerless.control import OPENPOSE_KEYPOINTS

    images, kp = carphone_pose
    assert kp.shape == (len(carphone), 18, 3)
    ix = {n: i for i, n in enumerate(OPENPOSE_KEYPOINTS)}
    head = [ix[n] for n in ("nose", "neck", "right_shoulder", "left_shoulder", "right_eye", "left_eye")]
    seen = (kp[:, head, 2] >= 0.5).all(axis=1)
    assert seen.sum() >= 0.8 * len(carphone)
    k = kp[seen]
    nose, reye, leye = k[:, ix["nose"]], k[:, ix["right_eye"]], k[:, ix["left_eye"]]
    rsh, lsh, neck = k[:, ix["right_shoulder"]], k[:, ix["left_shoulder"]], k[:, ix["neck"]]
    assert ((nose[:, 0] > 0.35) & (nose[:, 0] < 0.7) & (nose[:, 1] > 0.25) & (nose[:, 1] < 0.6)).all()  # face mid-frame
    assert (reye[:, 1] < nose[:, 1]).all() and (leye[:, 1] < nose[:, 1]).all()  # eyes above the nose
    assert (reye[:, 0] < leye[:, 0]).all() and (rsh[:, 0] < nose[:, 0]).all() and (lsh[:, 0] > nose[:, 0]).all()  # facing us
    assert (neck[:, 1] > nose[:, 1] + 0.15).all() and (rsh[:, 1] > nose[:, 1]).all()  # shoulders below the face
    # drawn: black ground, the nose's circle in red
    assert images.shape == carphone.shape and (images == 0).all(axis=-1).mean() > 0.8
    t = int(np.flatnonzero(seen)[0])
    x, y = int(kp[t, 0, 0] * 176), int(kp[t, 0, 1] * 144)
    assert tuple(images[t, y, x]) == (255, 0, 0)


@pytest.mark.mediapipe
def test_pose_keeps_mediapipe_s_native_noise_off_the_terminal(carphone, capfd):
    """mediapipe's C++ side writes lines straight to stderr as its models first run ("Created TensorFlow
    Lite XNNPACK delegate", absl's "Feedback manager requires a model with a single signature") and as
    it first finds a person in a frame that is not square ("Using NORM_RECT without IMAGE_DIMENSIONS"):
    they are left out, while anything else written to stderr meanwhile still reaches it."""
    import os

    from flickerless.control import pose

    capfd.readouterr()
    kp = pose.extract_keypoints(carphone[:3])
    err = capfd.readouterr().err
    assert kp.shape == (3, 18, 3) and (kp[:, :, 2] > 0.5).any()  # carphone: a person, in 176x144 frames
    assert "inference_feedback_manager" not in err and "XNNPACK" not in err and "NORM_RECT" not in err
    with pose._without_native_noise():
        os.write(2, b"W0000 inference_feedback_manager.cc:114] noise\nsomething else\n")
    assert capfd.readouterr().err == "something else\n"


def test_draw_pose_colours_and_limbs():
    from flickerless.control import draw_pose

    kp = np.zeros((18, 3), np.float32)
    kp[1] = (0.5, 0.3, 1.0)  # neck
    kp[2] = (0.3, 0.3, 1.0)  # right shoulder
    kp[5] = (0.7, 0.3, 0.1)  # left shoulder, below the confidence threshold: not drawn
    img = draw_pose(kp, (200, 400))
    assert tuple(img[60, 200]) == (255, 85, 0)  # neck joint: its colour
    assert tuple(img[60, 160]) == (153, 0, 0)  # the neck-right shoulder limb: colour 0 at 60 %
    assert img[:, 250:].max() == 0  # nothing towards the unconfident left shoulder


def _track(t):
    return np.stack([0.5 + 0.2 * np.sin(2 * np.pi * t / 30), 0.2 + 0.01 * t], -1)


def test_savgol_smoothing_reduces_jitter_keeps_motion_bridges_gaps():
    from flickerless.control import smooth_keypoints

    rng = np.random.default_rng(0)
    T = 60
    truth = _track(np.arange(T))
    kp = np.zeros((T, 2, 3), np.float32)
    kp[:, 0, :2] = truth + rng.normal(0, 0.01, (T, 2))
    kp[:, 0, 2] = 0.9
    kp[:, 1, :2] = truth
    kp[:, 1, 2] = 0.9
    kp[20:23, 0] = 0  # a 3-frame dropout: bridged
    kp[40:50, 0] = 0  # a 10-frame dropout: too long, stays missing
    kp[:4, 1] = 0  # missing at the start: not extrapolated
    out = smooth_keypoints(kp, window=9, order=2, max_gap=5)
    ok = np.r_[0:20, 23:40, 50:60]
    noisy = np.sqrt(((kp[ok, 0, :2] - truth[ok]) ** 2).mean())
    smooth = np.sqrt(((out[ok, 0, :2] - truth[ok]) ** 2).mean())
    assert smooth < 0.75 * noisy  # over all present frames, the clip's and the gaps' edges included
    mid = np.r_[5:15, 28:35]  # away from edges the window fits on both sides
    assert np.sqrt(((out[mid, 0, :2] - truth[mid]) ** 2).mean()) < 0.6 * np.sqrt(((kp[mid, 0, :2] - truth[mid]) ** 2).mean())
    assert (out[20:23, 0, 2] > 0.5).all() and np.abs(out[20:23, 0, :2] - truth[20:23]).max() < 0.035  # 3.5 sigma
    assert (out[40:50, 0] == 0).all()  # not smoothed into zero, not invented
    np.testing.assert_allclose(out[4:, 1, :2], truth[4:], atol=4e-3)  # a clean real motion is kept (2 % of its swing)
    quad = np.zeros((T, 1, 3), np.float32)
    t = np.arange(T) / T
    quad[:, 0] = np.stack([0.1 + 0.8 * t * t, 0.9 - 0.7 * t, np.ones(T)], -1)  # a fast accelerating move
    np.testing.assert_allclose(smooth_keypoints(quad, window=9, order=2), quad, atol=1e-5)  # order 2: exact
    assert (out[:4, 1] == 0).all()
    np.testing.assert_array_equal(smooth_keypoints(kp, window=1)[ok], kp[ok])  # window 1: bridging only
    for bad, key in (({"window": 8}, "window"), ({"window": 5, "order": 5}, "order"), ({"max_gap": -1}, "max_gap")):
        with pytest.raises(InputError, match=key):
            smooth_keypoints(kp, **bad)
    with pytest.raises(InputError, match="window"):
        get_annotator("pose", window=4)


def test_depth_refuses_non_finite_output_instead_of_a_black_control(tmp_path, carphone):
    from flickerless.control import get_annotator

    ann = get_annotator("depth", model=_tiny_depth_model(tmp_path / "depth"), device="cpu", progress=False)
    model, _ = ann._load()
    with torch.no_grad():
        next(model.head.parameters()).fill_(float("nan"))  # as a float16 overflow would give
    with pytest.raises(InputError, match="non-finite depth"):
        annotate(ann, carphone[:2], cache=False)
    with pytest.raises(InputError, match="dtype"):
        get_annotator("depth", dtype="float64")


@pytest.mark.mediapipe
def test_pose_backend_openpose_without_controlnet_aux_or_weights(tmp_path, carphone, caplog):
    from flickerless.control.pose import pose_keypoints

    frames = carphone[:2]
    try:
        import controlnet_aux.open_pose  # noqa: F401
        have = True
    except Exception:  # noqa: BLE001
        have = False
    missing = str(tmp_path / "no-annotators")
    with pytest.raises((InputError, ModelNotFoundError), match="controlnet_aux" if not have else "OpenPose weights"):
        pose_keypoints(frames, smooth=False, backend="openpose", openpose_model=missing)
    with caplog.at_level(logging.INFO, logger="flickerless"):  # auto falls back to mediapipe, said in the log
        kp = pose_keypoints(frames, smooth=False, backend="auto", openpose_model=missing)
    assert kp.shape == (2, 18, 3) and "using mediapipe" in caplog.text
    np.testing.assert_array_equal(kp, pose_keypoints(frames, smooth=False))
    with pytest.raises(InputError, match="backend"):
        get_annotator("pose", backend="dwpose")
    if not have:  # the annotator's default, auto, resolves to mediapipe, and its cache key says so
        assert get_annotator("pose", openpose_model=missing).cache_settings()["backend"] == "mediapipe"


def test_pose_backend_openpose_through_controlnet_aux(tmp_path, carphone):
    try:
        from controlnet_aux.open_pose.model import bodypose_model, handpose_model
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"controlnet_aux not usable here ({type(e).__name__}); checked where it is (BENCHMARKS.md)")
    from flickerless.control.pose import openpose_keypoints

    # the Annotators layout with random weights: the real loading and inference path, not its accuracy
    def public(model):  # the published files drop the first part of each name (model0.conv1_1 -> conv1_1)
        return {k.split(".", 1)[1]: v for k, v in model.state_dict().items()}

    torch.manual_seed(0)
    torch.save(public(bodypose_model()), tmp_path / "body_pose_model.pth")
    torch.save(public(handpose_model()), tmp_path / "hand_pose_model.pth")
    from controlnet_aux.open_pose.face import FaceNet

    torch.save(FaceNet().state_dict(), tmp_path / "facenet.pth")
    assert get_annotator("pose", openpose_model=str(tmp_path)).cache_settings()["backend"] == "openpose"  # auto
    kp = openpose_keypoints(carphone[:2], str(tmp_path), device="cpu")
    assert kp.shape == (2, 18, 3) and kp.dtype == np.float32 and np.isfinite(kp).all()
    assert (kp[..., :2] >= 0).all() and (kp[..., :2] <= 1).all()
    out = annotate("pose", carphone[:2], backend="openpose", openpose_model=str(tmp_path), device="cpu",
                   smooth=False, cache=False, progress=False)
    assert out.shape == carphone[:2].shape


def test_a_batch_of_frames_that_does_not_fit_the_gpu_is_halved(carphone, caplog):
    """Every batched model of the tool goes through errors.in_batches: the annotators (HED, depth,
    openpose), SAM, CLIP and Inception. An annotator whose batch runs out of GPU memory goes on
    with half, for the chunks after too, and gives the same frames."""
    from flickerless.errors import in_batches

    calls = []

    def step(a, b):
        calls.append((a, b))
        if b - a > 2:
            raise torch.OutOfMemoryError("CUDA out of memory")

    with caplog.at_level("WARNING", logger="flickerless"):
        assert in_batches(7, 8, step, "test", "--set some.batch_size={}") == 2
    assert calls == [(0, 7), (0, 4), (0, 2), (2, 4), (4, 6), (6, 7)]  # the failed range again, then on
    assert "test batches of 8: going on with 4 (slower; --set some.batch_size=4 starts there)" in caplog.text
    with pytest.raises(torch.OutOfMemoryError):  # one item that does not fit: the caller says what to do
        in_batches(3, 4, lambda a, b: step(0, 3), "test")

    def mps(a, b):  # Apple's MPS says it with a RuntimeError
        if b - a > 1:
            raise RuntimeError("MPS backend out of memory (MPS allocated: 5.56 GB, max allowed: 6.80 GB).")

    assert in_batches(5, 4, mps, "test") == 1
    def wrong(a, b):
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape"):  # any other error is not retried
        in_batches(5, 4, wrong, "test")

    ann = get_annotator("canny")
    ann.batch_size = 8
    plain = ann.process
    seen = []

    def small_gpu(batch):
        seen.append(len(batch))
        if len(batch) > 3:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return plain(batch)

    want = annotate("canny", carphone[:10], cache=False)
    ann.process = small_gpu
    got = np.concatenate(list(ann.run(carphone[:10], chunk=6)))
    assert np.array_equal(got, want)
    assert seen == [6, 4, 2, 2, 2, 2, 2]  # chunk 1: 6 frames, 4, then 2 at a time; chunk 2 starts at 2
    assert "canny annotator batches of 4: going on with 2 (slower; --set annotators.canny.batch_size=2" in caplog.text


# ---------------------------------------------------------------- what a caller passes by mistake


def test_float_frames_off_the_unit_range_are_named_as_the_frames_to_annotate():
    """0-255 floats were refused as "frames from 0 are floats ...", read as frames made from 0."""
    clip = np.zeros((40, 8, 8, 3), np.float32)
    with pytest.raises(InputError, match=r"^the frames to annotate are floats, which are read as \[0, 1\], but they "
                       r"range from 200 to 200: divide 0-255 floats by 255, or pass uint8$"):
        annotate("canny", clip + 200, cache=False, progress=False)
    clip[32:] = 3  # read a chunk of 32 at a time: the first off the range is said
    with pytest.raises(InputError, match="^the frames to annotate from frame 32 on are floats"):
        annotate("canny", clip, cache=False, progress=False)
    with pytest.raises(InputError, match="^the control frames are floats"):
        to_tensor(clip[:2] + 200)


def test_annotators_refuse_what_they_would_misread_and_run_on_tiny_frames(tmp_path, carphone):
    """0-255 floats and uint16 were saturated to white (canny found 1% of the edges), a uint8 tensor
    read as floats, an empty array failed in numpy, a device that is not there gave torch's error;
    to_tensor divided [0, 1] floats by 255 again and permuted a tensor already in its form; HED's
    poolings refused a side under 16 pixels; shuffle's seed -1 and size 5 failed inside numpy."""
    from flickerless.control.edges import ControlNetHED
    from flickerless.errors import DeviceError

    clip = np.ascontiguousarray(carphone[:2, :32, :48])
    ref = annotate("canny", clip, cache=False)
    assert np.array_equal(annotate("canny", torch.from_numpy(clip).permute(0, 3, 1, 2), cache=False), ref)
    for bad, says in [(clip.astype(np.float32), "0-255"), (clip.astype(np.uint16), "uint16"),
                      (clip[:0], "no frames"), (clip * np.float32(np.nan), "floats")]:
        with pytest.raises(InputError, match=says):
            annotate("canny", bad, cache=False)
    # grey frames: a (T, H, W) array was taken as one frame and said as the (1, T, H, W) never passed
    grey = clip[..., 0]
    for bad, says in [(grey, r"got an array of shape \(2, 32, 48\); grey frames: give them 3 channels "
                             r"\(np.repeat\(frames\[\.\.\., None\], 3, -1\)\)"),
                      (grey[..., None], r"shape \(2, 32, 48, 1\); grey frames: .*np.repeat\(frames, 3, -1\)"),
                      (list(grey), r"each frame must be \(H, W, 3\) uint8, got \(32, 48\); grey frames")]:
        with pytest.raises(InputError, match=says):
            annotate("canny", bad, cache=False)
    assert np.array_equal(annotate("canny", np.repeat(grey[..., None], 3, -1), cache=False),
                          annotate("canny", list(np.repeat(grey[..., None], 3, -1)), cache=False))
    for dev in ("cuda:7", "bogus"):
        with pytest.raises(DeviceError):
            annotate("canny", clip, device=dev, cache=False)
    t = to_tensor(clip)
    assert torch.allclose(to_tensor(clip / 255.0), t, atol=1e-6) and torch.equal(to_tensor(t), t)
    with pytest.raises(InputError, match="RGB"):
        to_tensor(np.zeros((2, 8, 8, 4), np.uint8))
    torch.manual_seed(0)
    torch.save(ControlNetHED().state_dict(), tmp_path / "ControlNetHED.pth")
    for h, w in [(1, 1), (7, 3), (15, 64)]:
        tiny = np.ascontiguousarray(np.resize(clip[0], (1, h, w, 3)))
        assert annotate("softedge", tiny, model=str(tmp_path / "ControlNetHED.pth"), device="cpu", cache=False).shape == tiny.shape
    for settings, says in [({"seed": -1}, "seed"), ({"size": 5}, "size")]:
        with pytest.raises(InputError, match=says):
            get_annotator("shuffle", **settings)
    for name in ("canny", "lineart"):
        with pytest.raises(InputError, match="batch_size"):
            get_annotator(name, batch_size=0)


def test_the_cache_knows_weights_replaced_and_frames_rewritten_in_place(tmp_path, carphone):
    """Weights replaced at the same path, or one image of a folder clip rewritten, used to be served
    the annotations of the old ones."""
    from PIL import Image

    from flickerless.control import video_identity
    from flickerless.control.edges import ControlNetHED

    clip = np.ascontiguousarray(carphone[:2, :32, :48])
    weights = tmp_path / "ControlNetHED.pth"
    for seed in (0, 1):
        torch.manual_seed(seed)
        torch.save(ControlNetHED().state_dict(), weights)
        os.utime(weights, ns=(10**18 + seed, 10**18 + seed))
        got = annotate("softedge", clip, model=str(weights), device="cpu", video_id="clip")
        fresh = annotate("softedge", clip, model=str(weights), device="cpu", cache=False)
        assert np.array_equal(got, fresh)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(clip):
        Image.fromarray(f).save(folder / f"{i}.png")
    before = video_identity(folder)
    stat = os.stat(folder)
    Image.fromarray(255 - clip[1]).save(folder / "1.png")
    os.utime(folder, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the folder's own stat as it was
    assert video_identity(folder) != before
    # what is put beside the images (a run's job folder for an output there, notes) is not the clip: a
    # --resume was refused as "made with other video_id" once the job folder had changed the folder's stat
    from flickerless.pipelines import load_template
    from flickerless.pipelines.job import read_clip

    settings = load_template("stylize")
    now, vid = video_identity(folder), read_clip(folder, (0, None), settings).video_id
    (folder / "out.job").mkdir()
    (folder / "notes.txt").write_text("take 2")
    assert video_identity(folder) == now and read_clip(folder, (0, None), settings).video_id == vid


def test_the_lanczos_fallback_says_the_setting_not_a_python_argument(caplog, monkeypatch):
    """Without Swin2SR weights the tile annotator upscales with Lanczos, said with the whole missing-weights
    error, whose remedy ("Pass model=") is a Python argument, wrong for `run`'s users."""
    from flickerless.control import get_annotator

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ann = get_annotator("tile", model="/nowhere/sr", size=(32, 48))
    with caplog.at_level("WARNING", logger="flickerless"):
        ann.prepare(np.zeros((1, 16, 24, 3), np.uint8))
    said = caplog.text
    assert "upscaling with Lanczos instead" in said and "/nowhere/sr" in said and "Pass model=" not in said
    assert ann.cache_settings()["sr"] == "lanczos"


def test_the_pose_fallback_to_mediapipe_is_said_once(tmp_path, caplog, monkeypatch):
    """Each PoseAnnotator said "not available here; using mediapipe": 2-4 times a run (the weights
    check, the annotation, the fusion's keypoints). Now once a process for each OpenPose model."""
    from flickerless.control import pose

    monkeypatch.setattr(pose, "openpose_available", lambda model: False)
    monkeypatch.setattr(pose, "_SAID_MEDIAPIPE", set(), raising=False)
    with caplog.at_level(logging.INFO, logger="flickerless"):
        for _ in range(3):
            get_annotator("pose", openpose_model=str(tmp_path / "a")).prepare()
        get_annotator("pose", openpose_model=str(tmp_path / "b")).cache_settings()
    assert caplog.text.count("using mediapipe") == 2
    assert caplog.text.count(f"controlnet_aux + {tmp_path / 'a'}) not available here; using mediapipe") == 1


def test_by_products_kept_in_memory_are_copies(tmp_path):
    """Where the cache cannot be written, an entry's by-products (pose keypoints) are kept in memory for the
    process: they were handed out as the one array kept, so a caller that edited its keypoints in place
    changed every later call's."""
    from flickerless.control.cache import AnnotationCache, _Writer

    (tmp_path / "file").write_text("x")
    cache = AnnotationCache(tmp_path / "file" / "cache")  # under a regular file: cannot be written
    kp = np.arange(2 * 18 * 3, dtype=np.float32).reshape(2, 18, 3)
    w = _Writer(cache.entry("pose", "k1"), {})
    w.close({"keypoints": kp})
    kp[...] = -1  # the caller's own array, changed after it was kept
    first = cache.read_extra("pose", "k1", "keypoints")
    first[...] = 0  # a caller editing what it was given
    again = cache.read_extra("pose", "k1", "keypoints")
    assert again is not first and again.min() == 0 and again.max() == 2 * 18 * 3 - 1
