import numpy as np
import pytest
import torch

from flickerless.errors import InputError, ModelNotFoundError
from flickerless.segment import PAD_LABEL, SamPrompt, Segmenter, segment

from . import tiny_models as tiny


@pytest.fixture(scope="module")
def sam_dir(tmp_path_factory):
    return str(tiny.save_sam(tmp_path_factory.mktemp("sam") / "tiny-sam"))


@pytest.fixture(scope="module")
def frames(carphone):
    """3 real frames, 48x80 (not square, not SAM's size), (T, 3, H, W) in [0, 1]."""
    return torch.from_numpy(carphone[:3, 20:68, 40:120]).permute(0, 3, 1, 2).float() / 255


@pytest.fixture(scope="module")
def segmenter(sam_dir):
    return Segmenter(sam_dir, batch_size=2)


def test_masks_have_frame_size_for_every_prompt(segmenter, frames, tmp_path):
    t, _, h, w = frames.shape
    kp = np.zeros((t, 5, 3))
    kp[:, :, 0], kp[:, :, 1], kp[:, :, 2] = np.linspace(0.3, 0.7, 5), np.linspace(0.2, 0.9, 5), 1.0
    kp[1, :, 2] = 0  # frame 1: nobody visible -> empty mask
    for prompt in (dict(point=(0.5, 0.5)), dict(box=(0.2, 0.1, 0.8, 0.9)), dict(point=[(0.1, 0.2)] * t, box=(0, 0, 1, 1)),
                   dict(keypoints=kp)):
        m = segment(frames, segmenter=segmenter, cache_dir=tmp_path, **prompt)
        assert m.shape == (t, h, w) and m.dtype == torch.float32
        assert set(m.unique().tolist()) <= {0.0, 1.0}
    assert m[1].sum() == 0


def test_frames_without_a_person_are_warned_of_cache_hits_too(segmenter, frames, tmp_path, caplog):
    """A pose prompt of a clip without a person gave every mask empty with an info line alone (nothing
    under -q), and nothing at all when the masks came from the cache."""
    t = len(frames)
    kp = np.zeros((t, 5, 3))
    kp[:, :, :2] = 0.5
    for _ in range(2):  # computed, then from the cache
        caplog.clear()
        with caplog.at_level("WARNING", logger="flickerless"):
            assert segment(frames, keypoints=kp, segmenter=segmenter, cache_dir=tmp_path).sum() == 0
        assert caplog.text.count(f"no person was found in {t} of {t} frames") == 1
        assert "every mask is empty" in caplog.text and "--point X,Y" in caplog.text
    kp[0, :, 2] = 1
    caplog.clear()
    with caplog.at_level("WARNING", logger="flickerless"):
        segment(frames, keypoints=kp, segmenter=segmenter, cache_dir=tmp_path)
    assert f"no person was found in {t - 1} of {t} frames" in caplog.text and "their masks are empty" in caplog.text
    # what to do is the caller's: a run's longvideo fusion has no --point (it was told to give one)
    kp[0, :, 2] = 0
    caplog.clear()
    with caplog.at_level("WARNING", logger="flickerless"):
        segment(frames, keypoints=kp, segmenter=segmenter, cache_dir=tmp_path, if_empty="turn the fusion off")
    assert "every mask is empty; turn the fusion off" in caplog.text and "--point" not in caplog.text


def test_matches_the_transformers_reference_path(segmenter, frames):
    """The same masks as SamProcessor with pixel coordinates + its post_process_masks."""
    t, _, h, w = frames.shape
    pts = np.array([[0.25, 0.5], [0.6, 0.3], [0.9, 0.8]])
    got = segmenter(frames, point=pts)
    images = [(f.permute(1, 2, 0) * 255).round().byte().numpy() for f in frames]
    proc, sam = segmenter.processor, segmenter.sam
    pix = [[[[x * w, y * h]]] for x, y in pts]  # [image, object, point, xy] in pixels
    for i in range(t):
        enc = proc(images=images[i], input_points=pix[i], return_tensors="pt")
        with torch.no_grad():
            out = sam(**{k: v for k, v in enc.items() if k != "reshaped_input_sizes" and k != "original_sizes"})
        masks = proc.post_process_masks(out.pred_masks, enc["original_sizes"], enc["reshaped_input_sizes"])[0][0]
        want = masks[out.iou_scores[0, 0].argmax()].float()
        assert want.shape == (h, w)
        assert (got[i] == want).float().mean() > 0.995


def test_masks_are_cached_per_video_prompt_and_model(sam_dir, frames, tmp_path, monkeypatch):
    first = segment(frames, point=(0.5, 0.5), model=sam_dir, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 1

    def no_model(*a, **k):
        raise AssertionError("SAM was run although the masks are cached")

    monkeypatch.setattr(Segmenter, "__call__", no_model)
    monkeypatch.setattr(Segmenter, "__init__", no_model)
    assert torch.equal(segment(frames, point=(0.5, 0.5), model=sam_dir, cache_dir=tmp_path), first)
    for other in (dict(point=(0.4, 0.5)), dict(point=(0.5, 0.5), frames=frames.flip(0))):
        kw = dict(frames=frames, model=sam_dir, cache_dir=tmp_path) | other
        with pytest.raises(AssertionError, match="SAM was run"):
            segment(**kw)  # another prompt or another video: not from the cache
    monkeypatch.undo()
    half = Segmenter(sam_dir, dtype=torch.bfloat16)  # another precision: its own masks, not fp32's
    monkeypatch.setattr(Segmenter, "__call__", no_model)
    with pytest.raises(AssertionError, match="SAM was run"):
        segment(frames, point=(0.5, 0.5), segmenter=half, cache_dir=tmp_path)


def test_frames_in_either_layout_give_the_same_masks(segmenter, frames):
    """A uint8 tensor in the library's (T, 3, H, W) layout was clamped to 0 or 255; 0-255 floats were
    clamped without a word."""
    as_bytes = (frames * 255).round().to(torch.uint8)
    want = segment(frames, point=(0.5, 0.5), segmenter=segmenter, cache=False)
    for same in (as_bytes, as_bytes.permute(0, 2, 3, 1).numpy()):
        assert torch.equal(segment(same, point=(0.5, 0.5), segmenter=segmenter, cache=False), want)
    with pytest.raises(InputError, match="divide 0-255 floats by 255"):
        segment(frames * 255, point=(0.5, 0.5), segmenter=segmenter, cache=False)


def test_missing_weights_name_the_id_and_the_remedy(monkeypatch, tmp_path, frames):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as e:
        segment(frames, point=(0.5, 0.5), model="someone/no-such-sam", cache=False)
    msg = str(e.value)
    assert "someone/no-such-sam" in msg and "cache" in msg and "hf download someone/no-such-sam" in msg
    with pytest.raises(ModelNotFoundError, match="missing") as e:
        Segmenter(str(tmp_path / "no-folder"))
    assert "hf download" not in str(e.value)  # a local path is not something to download


def test_prompts_from_keypoints_points_and_boxes():
    kp = np.array([[[0.2, 0.3, 0.9], [0.6, 0.7, 0.8], [0.5, 0.5, 0.1]],
                   [[0.1, 0.1, 0.0], [0.2, 0.2, 0.0], [0.3, 0.3, 0.0]]])
    p = SamPrompt.build(2, keypoints=kp, pose_margin=0.1)
    assert p.valid.tolist() == [True, False]
    np.testing.assert_allclose(p.points[0], [[0.2, 0.3], [0.6, 0.7]])
    assert p.labels[0].tolist() == [1, 1] and (p.labels[1] == PAD_LABEL).all()
    np.testing.assert_allclose(p.boxes[0], [0.2 - 0.04, 0.3 - 0.04, 0.6 + 0.04, 0.7 + 0.04])  # grown by 0.1 * 0.4
    q = SamPrompt.build(3, point=(0.5, 0.25), box=(0.1, 0.2, 0.3, 0.4))
    assert q.points.shape == (3, 1, 2) and q.boxes.shape == (3, 4) and q.labels.tolist() == [[1], [1], [1]]
    with pytest.raises(InputError, match="normalised"):
        SamPrompt.build(3, point=(120, 40))
    with pytest.raises(InputError, match=r"\(T=3, K, 3\)"):
        SamPrompt.build(3, keypoints=kp)
    with pytest.raises(InputError, match="give SAM a prompt"):
        SamPrompt.build(3)
    # a person cut off at the frame's edge: the pose annotator places the shoulders past it (y 1.2, seen
    # with confidence 0.99). That frame was refused; those landmarks now shape the box only
    cut = np.array([[[0.4, 0.5, 0.99], [0.6, 0.5, 0.99], [0.3, 1.2, 0.99], [0.7, 1.2, 0.99]]])
    c = SamPrompt.build(1, keypoints=cut, pose_margin=0.0)
    assert c.valid.tolist() == [True] and c.labels[0].tolist() == [1, 1]
    np.testing.assert_allclose(c.points[0], [[0.4, 0.5], [0.6, 0.5]])
    np.testing.assert_allclose(c.boxes[0], [0.3, 0.5, 0.7, 1.0])
    with pytest.raises(InputError, match="normalised"):  # pixels, not fractions of the frame
        SamPrompt.build(1, keypoints=cut * [[[100, 100, 1]]])


def test_masks_follow_the_prompt(segmenter, frames):
    a = segmenter(frames, point=(0.1, 0.1))
    b = segmenter(frames, point=(0.9, 0.9))
    c = segmenter(frames[[2, 1, 0]], point=(0.1, 0.1))
    assert (a != b).float().mean() > 0.01  # another point, another mask
    assert torch.equal(c[[2, 1, 0]], a)  # each frame's mask is its own, whatever the batch order
