"""`flickerless segment` writes SAM masks that `flickerless train --masks` takes: the long-video
paper's separate tuning -> combined tuning chain from the command line, on tiny models."""

import numpy as np
import pytest
from PIL import Image

from flickerless.cli import main
from flickerless.demo import registry_clip

from . import tiny_models as tiny


@pytest.fixture(scope="module")
def sam(tmp_path_factory):
    return tiny.save_sam(tmp_path_factory.mktemp("sam") / "sam")


def _masks(folder):
    files = sorted(folder.glob("*.png"))
    return np.stack([np.asarray(Image.open(f)) for f in files])


@pytest.mark.mediapipe
def test_segment_by_pose_then_train_with_the_masks(sam, tmp_path):
    clip = str(registry_clip("carphone_pristine.mp4"))
    masks = tmp_path / "masks"
    assert main(["segment", "--video", clip, "-o", str(masks), "--model", str(sam), "--frames", "3",
                 "--cache-dir", str(tmp_path / "c"), "--device", "cpu", "-q"]) == 0
    m = _masks(masks)
    assert m.shape == (3, 144, 176) and set(np.unique(m)) <= {0, 255}
    model = tiny.save_pipeline(tmp_path / "tiny-sd")
    out = tmp_path / "lora"
    assert main(["train", "--model", str(model), "--video", clip, "--prompt", "a man", "--output", str(out),
                 "--frames", "3", "--resolution", "16", "--masks", str(masks), "--loss-weights", "1,0.5,0.5",
                 "--steps", "2", "--device", "cpu", "-q"]) == 0
    assert (out / "pytorch_lora_weights.safetensors").exists()


@pytest.mark.mediapipe
def test_segment_by_pose_of_a_clip_without_a_person_warns_under_quiet(sam, tmp_path, capsys):
    """Every mask empty, exit 0, and under -q (warnings stay) not a word."""
    from flickerless.video import write

    frames = np.zeros((3, 64, 96, 3), np.uint8)
    frames[:, :, :, 2] = np.linspace(0, 255, 96, dtype=np.uint8)  # a gradient, nobody in it
    write(tmp_path / "empty", frames)
    assert main(["segment", "--video", str(tmp_path / "empty"), "-o", str(tmp_path / "m"), "--model", str(sam),
                 "--cache-dir", str(tmp_path / "c"), "--device", "cpu", "-q"]) == 0
    assert "no person was found in 3 of 3 frames" in capsys.readouterr().err
    assert _masks(tmp_path / "m").max() == 0


def test_segment_point_and_box_prompts_and_errors(sam, tmp_path, capsys):
    clip = str(registry_clip("carphone_pristine.mp4"))
    a, b = tmp_path / "a", tmp_path / "b"
    common = ["--video", clip, "--model", str(sam), "--frames", "2", "--cache-dir", str(tmp_path / "c"), "-q"]
    assert main(["segment", "-o", str(a), "--point", "0.5,0.4"] + common) == 0
    assert main(["segment", "-o", str(b), "--box", "0.2,0.1,0.8,0.9"] + common) == 0
    assert _masks(a).shape == _masks(b).shape == (2, 144, 176)
    assert main(["segment", "-o", str(a), "--point", "2,0.4"] + common) == 2  # a usage error, in one line
    last = capsys.readouterr().err.strip().splitlines()[-1]  # (before it: the earlier runs' weight loading)
    assert last.startswith("flickerless segment: error:") and "fractions of the frame" in last
    assert main(["segment", "-o", str(a), "--video", clip, "--model", str(tmp_path / "nosam"), "--point", "0.5,0.5",
                 "--frames", "1", "-q", "--cache-dir", str(tmp_path / "c2")]) == 2
    assert "SAM model" in capsys.readouterr().err
    assert main(["segment", "-o", str(a), "--video", clip, "--point", "0.5,0.5", "--frames", "-3"]) == 2
    assert "expected a positive integer" in capsys.readouterr().err  # was "has no frames", of the clip


def test_segment_replaces_its_earlier_masks_and_leaves_other_folders_alone(sam, tmp_path, capsys):
    """A second run into the same folder left the first run's masks beside fewer new ones, and a clip's
    frame folder took the masks beside its frames; the masks now replace an earlier output whole, and a
    folder of frames not written by flickerless is refused."""
    clip = str(registry_clip("carphone_pristine.mp4"))
    common = ["--video", clip, "--model", str(sam), "--point", "0.5,0.4", "--cache-dir", str(tmp_path / "c"), "-q"]
    out = tmp_path / "masks"
    assert main(["segment", "-o", str(out), "--frames", "4"] + common) == 0
    assert main(["segment", "-o", str(out), "--frames", "2"] + common) == 0
    assert _masks(out).shape == (2, 144, 176)
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(frames / f"{i:04d}.png")
    capsys.readouterr()
    assert main(["segment", "-o", str(frames), "--frames", "2"] + common) == 2
    assert "did not write" in capsys.readouterr().err
    assert sorted(p.name for p in frames.iterdir()) == ["0000.png", "0001.png", "0002.png"]
    assert main(["segment", "-o", str(tmp_path / "m.mp4"), "--frames", "2"] + common) == 2


def test_masks_and_a_deflickered_clip_s_frames_do_not_replace_each_other(sam, tmp_path, capsys):
    """Every output folder carried one mark, so `segment -o frames/` replaced a deflickered clip's frames with
    masks (and back); the mark now says what the folder holds, and only the same kind is replaced."""
    from flickerless import video

    clip = str(registry_clip("carphone_pristine.mp4"))
    frames = tmp_path / "deflickered"
    video.write(frames, video.read(clip, 3)[0])  # a PNG-folder output of the frames' kind, as deflicker writes
    common = ["--video", clip, "--model", str(sam), "--point", "0.5,0.4", "--cache-dir", str(tmp_path / "c"), "-q",
              "--frames", "2"]
    assert main(["segment", "-o", str(frames)] + common) == 2
    assert "holds the frames of another flickerless output" in capsys.readouterr().err
    assert video.read(frames)[0].shape == (3, 144, 176, 3)
    masks = tmp_path / "masks"
    assert main(["segment", "-o", str(masks)] + common) == 0
    with pytest.raises(video.OutputError, match="holds the masks of another flickerless output"):
        video.write(masks, video.read(clip, 2)[0])
    assert main(["segment", "-o", str(masks)] + common) == 0  # its own earlier masks: replaced


def test_a_missing_sam_is_said_before_the_pose_of_every_frame(tmp_path, monkeypatch, capsys):
    """segment found the SAM model missing only after the pose of every frame (minutes on a long clip)."""
    import flickerless.control as control

    def never(*a, **k):
        raise AssertionError("the pose ran before the SAM model was checked")

    monkeypatch.setattr(control, "keypoints", never)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    clip = str(registry_clip("carphone_pristine.mp4"))
    assert main(["segment", "-o", str(tmp_path / "m"), "--video", clip, "--model", "nobody/no-sam", "--frames", "2",
                 "-q"]) == 2
    assert "SAM model 'nobody/no-sam' not found" in capsys.readouterr().err


def test_without_mediapipe_the_pose_prompt_says_the_other_prompts_first(sam, tmp_path, monkeypatch, capsys):
    """Without mediapipe, segment said so only after reading the clip, with a way out it has no option
    for (backend="openpose"); now before, naming its own --point and --box."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "mediapipe" else real(n, *a))
    import flickerless.video as video

    monkeypatch.setattr(video, "read", lambda *a, **k: (_ for _ in ()).throw(AssertionError("the clip was read")))
    clip = str(registry_clip("carphone_pristine.mp4"))
    assert main(["segment", "-o", str(tmp_path / "m"), "--video", clip, "--model", str(sam), "--frames", "2", "-q"]) == 2
    err = capsys.readouterr().err
    assert "needs mediapipe 0.10.21" in err and "--point X,Y or --box X0,Y0,X1,Y1" in err and "backend=" not in err
    assert not (tmp_path / "m").exists()


def test_masks_are_written_when_their_cache_cannot_be(sam, tmp_path, capsys):
    """From the helpers' use of `segment`: with a cache folder it cannot write (a read-only HOME, a full
    disk) SAM ran over every frame, then the command ended in "Permission denied: ~/.cache" with no masks
    and no word of the cache or how to move it. The masks are written; the cache is said, with the remedy."""
    clip = str(registry_clip("carphone_pristine.mp4"))
    (tmp_path / "file").write_text("not a folder")
    cache = tmp_path / "file" / "c"
    assert main(["segment", "--video", clip, "-o", str(tmp_path / "m"), "--model", str(sam), "--point", "0.5,0.4",
                 "--frames", "2", "--cache-dir", str(cache), "-q"]) == 0
    assert _masks(tmp_path / "m").shape == (2, 144, 176)
    err = capsys.readouterr().err
    assert f"mask cache {cache}: cannot write there" in err and "--cache-dir" in err and "FLICKERLESS_CACHE" in err
