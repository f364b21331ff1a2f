"""`flickerless run`: templates + annotators + the engine, end to end on a real clip and tiny models."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flickerless.cli import main
from flickerless.demo import registry_clip
from flickerless.errors import InputError
from flickerless.pipelines import job_folder, run_job
from flickerless.video import read

from . import tiny_models as tiny

# small and quick: about 24x32 frames (the clip's aspect), 3 steps, deflicker at steps 1 and 3
QUICK = ["video.width=32", "video.height=24", "sampling.steps=3", "deflicker.frequency=2",
         "sampling.guidance_scale=2.0", "sampling.batch_size=2", "deflicker.final_window=2"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    tiny.save_pipeline(root / "tiny-sd")
    for i in range(3):
        tiny.controlnet(seed=10 + i).save_pretrained(root / f"cn{i}")
    return root


@pytest.fixture(scope="module")
def clip():
    return str(registry_clip("carphone_pristine.mp4"))


def _cn(models, task_units):
    return [f"controlnets.{i}.model=\"{models / f'cn{i}'}\"" for i in range(task_units)]


@pytest.fixture(scope="module")
def annotator_models(tmp_path_factory):
    from .test_control import _tiny_depth_model, _tiny_swin2sr

    root = tmp_path_factory.mktemp("annotators")
    return {"depth": _tiny_depth_model(root / "depth"), "tile": _tiny_swin2sr(root / "sr")}


# every task with its own annotators: tiny random depth and super-resolution models, weight-free
# softedge (HED weights are not here), mediapipe pose, the shuffle of a real frame
TASK_SETS = {
    "stylize": ['annotators.depth.model="{depth}"', 'annotators.softedge.method="sobel"'],
    "fashion": ['annotators.depth.model="{depth}"'],
    "image_guided": ['annotators.depth.model="{depth}"', 'annotators.softedge.method="sobel"'],
    "restore": ['annotators.tile.model="{tile}"', 'annotators.tile.sr="swin2sr"', "sampling.strength=0.6"],
    "render3d": ['annotators.depth.model="{depth}"', 'annotators.softedge.method="sobel"'],
}


@pytest.mark.parametrize("task", [pytest.param(t, marks=pytest.mark.mediapipe) if t == "fashion" else t
                                  for t in sorted(TASK_SETS)])
def test_each_task_end_to_end_on_a_real_clip(task, models, annotator_models, clip, tmp_path):
    from flickerless.pipelines import load_template

    units = load_template(task)["controlnets"]
    sets = QUICK + _cn(models, len(units)) + [s.format(**annotator_models) for s in TASK_SETS[task]]
    style = None
    if task == "image_guided":
        style = tmp_path / "style.png"
        Image.fromarray(read(clip, 40)[0][-1]).save(style)
    out = tmp_path / "out.mp4"
    run_job(task, clip, out, "a watercolor painting", model=str(models / "tiny-sd"), overrides=sets,
            frames="0:4", style_image=style, cache_dir=tmp_path / "cache", progress=False)
    frames, fps = read(out)
    assert frames.shape == (4, 24, 32, 3) and fps == pytest.approx(read(clip, 1)[1], rel=1e-3)
    job = job_folder(out)
    assert (job / "settings.toml").exists() and (job / "job.json").exists()
    controls = sorted(p.name for p in (job / "controls").iterdir())
    assert controls == [f"{i}_{u['annotator']}" for i, u in enumerate(units)]
    for c in controls:
        imgs = sorted((job / "controls" / c).glob("*.png"))
        assert len(imgs) == 4 and np.asarray(Image.open(imgs[0])).std() > 0
    assert len(list((job / "frames").glob("*.png"))) == 4 and (job / "latents.pt").exists()
    # the frames were generated: not the input passed through (measured ~10 dB from it), not a flat
    # image (std ~35-39), and the video holds the job's generated frames. (Across tasks the tiny models
    # need not differ: stylize and render3d differ only where the 12-character tokenizer and the
    # zero-initialised ControlNets cannot tell them apart.)
    from flickerless.pipelines.job import read_clip, resolve_settings
    from flickerless.synthetic import psnr

    given = read_clip(clip, (0, 4), resolve_settings(task, model=str(models / "tiny-sd"), overrides=sets)).frames
    assert given.shape == frames.shape and psnr(frames, given) < 15
    assert frames.std() > 10
    made = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sorted((job / "frames").glob("*.png"))])
    luma = lambda a: (a.astype(np.float64) @ [0.299, 0.587, 0.114]).round().astype(np.uint8)  # noqa: E731
    assert psnr(luma(frames), luma(made)) > 32  # luma: 4:2:0 halves the noisy tiny-model colours (RGB ~19 dB)
    # a second run of the same output refuses to overwrite the job without --resume/--restart
    with pytest.raises(InputError, match="--resume"):
        run_job(task, clip, out, "a watercolor painting", model=str(models / "tiny-sd"), overrides=sets,
                frames="0:4", style_image=style, cache_dir=tmp_path / "cache", progress=False)


def test_interrupted_job_resumes_to_the_same_frames(models, clip, tmp_path):
    import torch

    sets = QUICK + _cn(models, 2) + ['controlnets.0.annotator="canny"', 'controlnets.1.annotator="canny"',
                                     "deflicker.final_window=0"]
    kw = dict(model=str(models / "tiny-sd"), overrides=sets, frames="2:6", cache_dir=tmp_path / "c", progress=False)
    whole = tmp_path / "whole.mp4"
    run_job("stylize", clip, whole, "a cat", **kw)
    part = tmp_path / "part.mp4"
    with pytest.raises(KeyboardInterrupt):
        run_job("stylize", clip, part, "a cat", stop_after_step=2, **kw)
    assert not part.exists() and (job_folder(part) / "latents.pt").exists()
    assert (job_folder(part) / "matches.pt").exists()  # step 1 deflickered: its PatchMatch fields are kept
    with pytest.raises(InputError, match="other prompt"):
        run_job("stylize", clip, part, "a dog", resume=True, **kw)
    run_job("stylize", clip, part, "a cat", resume=True, **kw)

    def pngs(out):
        return np.stack([np.asarray(Image.open(p)) for p in sorted((job_folder(out) / "frames").glob("*.png"))])

    assert len(pngs(whole)) == 4 and np.array_equal(pngs(whole), pngs(part))  # the finished frames are identical
    assert read(whole)[0].shape == read(part)[0].shape
    # without the kept fields, step 3's pass would search from scratch and give other frames
    lost = tmp_path / "lost.mp4"
    with pytest.raises(KeyboardInterrupt):
        run_job("stylize", clip, lost, "a cat", stop_after_step=2, **kw)
    (job_folder(lost) / "matches.pt").unlink()
    run_job("stylize", clip, lost, "a cat", resume=True, **kw)
    assert not np.array_equal(pngs(whole), pngs(lost))
    # a job folder of an earlier version (no tokens tie the fields to the latents) resumes as it did
    old = tmp_path / "old.mp4"
    with pytest.raises(KeyboardInterrupt):
        run_job("stylize", clip, old, "a cat", stop_after_step=2, **kw)
    for name, key in (("latents.pt", "fields"), ("matches.pt", "token")):
        state = torch.load(job_folder(old) / name, weights_only=True)
        del state[key]
        torch.save(state, job_folder(old) / name)
    run_job("stylize", clip, old, "a cat", resume=True, **kw)
    assert np.array_equal(pngs(whole), pngs(old))


def test_what_a_resume_may_change_and_what_guards_the_job_folder(models, clip, tmp_path):
    """From the helpers' use of `run`: a resume with other settings did not say which; a ControlNet (or LoRA) retrained at its path was taken, the
    old latents finished with the new weights; a second run of the same output at once wiped the first's job
    folder and took over its latents (both wrong, exit 0); --restart deleted a user's folder named like the
    job folder; `--set task=...` ran the template's task."""
    import shutil

    import flickerless.pipelines.job as job_mod
    from flickerless.errors import OutputError

    cn = tmp_path / "cn"
    shutil.copytree(models / "cn0", cn)
    sets = QUICK + [f'controlnets.0.model="{cn}"', 'controlnets.0.annotator="canny"',
                    f'controlnets.1.model="{models / "cn1"}"', 'controlnets.1.annotator="canny"']
    kw = dict(model=str(models / "tiny-sd"), frames="0:3", cache_dir=tmp_path / "c", progress=False, device="cpu")
    whole, part = tmp_path / "whole.mp4", tmp_path / "part.mp4"
    run_job("stylize", clip, whole, "a cat", overrides=sets, **kw)
    with pytest.raises(KeyboardInterrupt):
        run_job("stylize", clip, part, "a cat", overrides=sets, stop_after_step=2, **kw)
    with pytest.raises(InputError, match=r"other settings: sampling.steps \(3 -> 4\)"):
        run_job("stylize", clip, part, "a cat", overrides=sets + ["sampling.steps=4"], resume=True, **kw)
    for f in cn.iterdir():  # retrained at its path
        __import__("os").utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    with pytest.raises(InputError, match=rf"other weights: controlnets.0.model \({cn}\) changed at its path since"):
        run_job("stylize", clip, part, "a cat", overrides=sets, resume=True, **kw)
    shutil.rmtree(cn)
    shutil.copytree(models / "cn0", cn)  # as it was (copytree keeps the times)
    with job_mod._job_lock(job_folder(part)):  # another run of this output, at work
        with pytest.raises(OutputError, match=r"another run of this output \(pid \d+\) is working in it"):
            run_job("stylize", clip, part, "a cat", overrides=sets, resume=True, **kw)
    with pytest.raises(InputError, match=r"sampling.batch_size \(2 -> 1\)"):  # another batch: other frames
        run_job("stylize", clip, part, "a cat", overrides=sets + ["sampling.batch_size=1"], resume=True, **kw)
    run_job("stylize", clip, part, "a cat", overrides=sets, resume=True, **kw)
    assert np.array_equal(read(part)[0], read(whole)[0])
    assert not (tmp_path / ".part.job.lock").exists()
    # folders the job must not touch, and a task set as a setting
    mine = tmp_path / "take.job"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    for out, extra in ((tmp_path / "take.mp4", {"restart": True}), (tmp_path / "take.mp4", {})):
        with pytest.raises(OutputError, match="not a flickerless job folder"):
            run_job("stylize", clip, out, "a cat", overrides=sets, **extra, **kw)
    assert (mine / "notes.txt").read_text() == "mine"
    with pytest.raises(InputError, match="a template's task is not a setting"):
        run_job("stylize", clip, tmp_path / "n.mp4", "a cat", overrides=sets + ['task="restore"'], **kw)


def test_a_job_that_stopped_before_generating_does_not_block_the_corrected_command(models, clip, tmp_path,
                                                                                  monkeypatch, capsys):
    """A run that stops at a missing model (or device) leaves a job folder with nothing generated in it:
    the corrected command was refused (add --resume), and with --resume refused again (other settings).
    Such a folder is taken over. A job.json cut short by a full disk is said in one line; a checkpoint
    that a full disk stops is said in one line and leaves no half-written file."""
    import torch

    from flickerless.errors import FlickerlessError, OutputError

    sets = QUICK + _cn(models, 2) + ['controlnets.0.annotator="canny"', 'controlnets.1.annotator="canny"']
    out = tmp_path / "o.mp4"
    args = ["run", "stylize", "--video", clip, "-o", str(out), "--frames", "0:3", "-q", "--cache-dir", str(tmp_path / "c"),
            *sum((["--set", s] for s in sets), [])]
    assert main([*args, "--model", str(tmp_path / "no-such-model")]) == 2  # said before any work now
    assert "no-such-model" in capsys.readouterr().err and not job_folder(out).exists()
    broken = tmp_path / "broken"  # a model found only when it is loaded to be incomplete
    broken.mkdir()
    (broken / "model_index.json").write_text("{}")
    assert main([*args, "--model", str(broken)]) == 2
    assert "has no unet/" in capsys.readouterr().err and (job_folder(out) / "job.json").exists()
    assert main([*args, "--model", str(models / "tiny-sd")]) == 0
    assert read(out)[0].shape[0] == 3
    # job.json cut short, with frames done: one line, pointing at --restart
    (job_folder(out) / "job.json").write_text('{"video": ')
    assert main([*args, "--model", str(models / "tiny-sd"), "--resume"]) == 2
    assert "job.json is unreadable" in capsys.readouterr().err
    assert main([*args, "--model", str(models / "tiny-sd"), "--restart"]) == 0
    # a full disk while a step's latents are saved
    save, calls = torch.save, [0]

    def filling(obj, f, *a, **k):
        calls[0] += 1
        if calls[0] == 2:  # what a full disk leaves: part of the file, then the error
            Path(f).write_bytes(b"PK half")
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1664 vs 1616")
        return save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", filling)
    with pytest.raises(OutputError, match="is the disk full.*--resume") as e:
        run_job("stylize", clip, tmp_path / "f.mp4", "", model=str(models / "tiny-sd"), overrides=sets, frames="0:3",
                cache_dir=tmp_path / "c", progress=False)
    assert isinstance(e.value, FlickerlessError) and not list(job_folder(tmp_path / "f.mp4").glob("*.tmp"))


def test_missing_models_and_devices_are_said_before_the_clip_is_read_and_annotated(models, clip, tmp_path,
                                                                                   monkeypatch, capsys):
    """A missing base model was found after the clip was read and every annotator had run (minutes on a long
    clip), and after a missing annotator model; a missing device likewise. Offline, a repo id that is not in
    the Hugging Face cache is missing."""
    import flickerless.pipelines.job as job

    def never(*a, **k):
        raise AssertionError("the clip was read before the models were checked")

    monkeypatch.setattr(job, "read_clip", never)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    sets = QUICK + _cn(models, 2)  # the template's depth and softedge annotators have no weights here
    args = ["run", "stylize", "--video", clip, "-o", str(tmp_path / "o.mp4"), "-q", *sum((["--set", s] for s in sets), [])]
    assert main([*args, "--model", "nobody/no-such-sd"]) == 2
    err = capsys.readouterr().err
    assert "model 'nobody/no-such-sd' not found" in err and "HF_HUB_OFFLINE=1" in err
    assert main([*args, "--model", str(models / "tiny-sd"), "--set", 'controlnets.1.model="nobody/no-edge-cn"']) == 2
    assert "ControlNet (softedge) 'nobody/no-edge-cn' not found" in capsys.readouterr().err
    assert main([*args, "--model", str(models / "tiny-sd"), "--device", "cuda:7"]) == 2
    assert "device 'cuda:7'" in capsys.readouterr().err  # no GPU here, or no 8th one
    # a clip too long for the host memory at this size: from its header, not after reading it whole
    assert main([*args, "--model", str(models / "tiny-sd"), "--set", "video.width=8192", "--set",
                 "video.height=4096"]) == 2
    assert "need about" in capsys.readouterr().err
    assert not job.job_folder(tmp_path / "o.mp4").exists()
    # a missing annotator model, also before the clip is read: its remedy is the setting, not the
    # annotator's Python argument ("Pass model=")
    assert main([*args, "--model", str(models / "tiny-sd"), "--frames", "0:2"]) == 2
    err = capsys.readouterr().err
    assert "depth model 'depth-anything/Depth-Anything-V2-Small-hf' not found" in err
    assert "Set annotators.depth.model=<" in err and "Pass model=" not in err
    assert '--set annotators.depth.model="..."' in err
    assert main([*args, "--model", str(models / "tiny-sd"), "--set", 'annotators.depth.model="/nowhere/dpt"']) == 2
    assert "depth model '/nowhere/dpt' not found; looked in: local folder /nowhere/dpt (missing; it should hold config.json" in capsys.readouterr().err
    there = tmp_path / "dpt"  # a folder: its loading says what it lacks
    there.mkdir()
    assert main([*args, "--model", str(models / "tiny-sd"), "--set", f'annotators.depth.model="{there}"']) == 2
    err = capsys.readouterr().err  # the next annotator's: HED weights for softedge, with its own settings named
    assert "depth model" not in err and "HED softedge weights" in err
    assert 'Set annotators.softedge.model=<' in err and 'annotators.softedge.method="sobel"' in err
    assert not job.job_folder(tmp_path / "o.mp4").exists()


def test_run_job_takes_python_s_own_types_or_says_which(clip, tmp_path, monkeypatch):
    """From Python: frames=(0, 4) failed on .strip(), frames=4 on ``in``, controlnets=[path] on .items(),
    overrides="a.b=1" was read a character at a time, a clip's frames failed in Path()."""
    import flickerless.pipelines.job as job

    # pathlib paths for the model, ControlNets and LoRAs, as video= takes one (json.dumps failed on them)
    s = job.resolve_settings("stylize", tmp_path / "m", {"depth": tmp_path / "cn"}, [tmp_path / "l.safetensors"])
    assert s["model"]["base"] == str(tmp_path / "m") and s["model"]["lora"] == [str(tmp_path / "l.safetensors")]
    assert all(isinstance(u["model"], str) for u in s["controlnets"])

    class Read(Exception):
        pass

    seen = []

    def read_clip(video, start_end, settings, **kw):
        seen.append((start_end, settings["sampling"]["steps"]))
        raise Read

    monkeypatch.setattr(job, "read_clip", read_clip)
    monkeypatch.setattr(job, "_check_annotators", lambda *a: None)
    kw = dict(pipeline=object(), progress=False)  # no models to check: stopped where the clip is read
    for frames, want in [((0, 4), (0, 4)), (slice(2, None), (2, None)), ([None, 3], (0, 3)), ("1:5", (1, 5))]:
        with pytest.raises(Read):
            run_job("stylize", clip, tmp_path / "o.mp4", "x", frames=frames, overrides="sampling.steps=2", **kw)
        assert seen.pop() == (want, 2)
    for bad, says in [(dict(frames=4), r'frames is a range, "START:END" or \(START, END\), e.g. \(0, 4\)'),
                      (dict(frames=(0.5, 4)), "frames is a range"),
                      (dict(controlnets=["cn"]), r"controlnets is a mapping \{annotator: model\}"),
                      (dict(overrides=[1]), r"overrides is a list of strings, e.g. \['sampling.steps=20'\]"),
                      (dict(video=np.zeros((4, 8, 8, 3), np.uint8)), "video is a clip's path .* got ndarray")]:
        args = {"video": clip, **bad}
        with pytest.raises(InputError, match=says):
            run_job("stylize", args.pop("video"), tmp_path / "o.mp4", "x", **args, **kw)
    assert not seen and not job_folder(tmp_path / "o.mp4").exists()
    assert job.resolve_settings("stylize", lora="a.safetensors:0.5")["model"]["lora"] == ["a.safetensors:0.5"]
    # said for a caller from Python as well as from the command line (it named the flag alone)
    with pytest.raises(InputError, match=r"give style_image \(--style-image PATH\)"):
        run_job("image_guided", clip, tmp_path / "o.mp4", "x", **kw)
    settings, folder = job.resolve_settings("stylize"), tmp_path / "p.job"
    job._prepare_job_folder(folder, {"prompt": "x"}, settings, False, False)
    (folder / "latents.pt").write_bytes(b"a step's latents")
    with pytest.raises(InputError, match=r"continue it with resume \(--resume\), or start over with restart \(--restart"):
        job._prepare_job_folder(folder, {"prompt": "x"}, settings, False, False)
    with pytest.raises(InputError, match=r"^resume \(--resume\): .* other prompt \('x' -> 'y'\); .* or restart \(--restart\)"):
        job._prepare_job_folder(folder, {"prompt": "y"}, settings, True, False)
    # another range is said with its values, and what follows from it (the frames' digest, their count)
    # is not: it said "other video_id; frames; num_frames", an internal key and no value
    ranged = tmp_path / "r.job"
    job._prepare_job_folder(ranged, {"video_id": "a", "frames": [0, 4], "num_frames": 4, "size": [48, 64]}, settings,
                            False, False)
    (ranged / "latents.pt").write_bytes(b"a step's latents")
    with pytest.raises(InputError) as e:
        job._prepare_job_folder(ranged, {"video_id": "b", "frames": [2, None], "num_frames": 10, "size": [48, 64]},
                                settings, True, False)
    assert "made with other --frames (0:4 -> 2:); run" in str(e.value) and "video_id" not in str(e.value)
    with pytest.raises(InputError) as e:  # the same range of a clip that changed since the stop
        job._prepare_job_folder(ranged, {"video_id": "b", "frames": [0, 4], "num_frames": 4, "size": [48, 64]},
                                settings, True, False)
    assert "made with other video frames (the clip changed since the stop); run" in str(e.value)
    # PatchMatch's own check, before any model loads
    with pytest.raises(InputError, match="patch_sizes go largest first"):
        job.resolve_settings("stylize", overrides="deflicker.patch_sizes=[5, 13]")


def test_annotator_checks_up_front(tmp_path, monkeypatch):
    """Each annotator's check_weights says what its loading would, loading nothing: the pose
    annotator's own setting (openpose_model) is named, tile's "auto" falls back quietly, and a missing
    local depth folder is named as a path."""
    from flickerless.control import get_annotator
    from flickerless.errors import ModelNotFoundError
    from flickerless.pipelines.job import _as_setting

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match=r"/nowhere/dpt.*missing"):
        get_annotator("depth", model="/nowhere/dpt").check_weights((32, 48))
    get_annotator("depth", model=str(tmp_path)).check_weights((32, 48))  # there: loading says what it lacks
    get_annotator("tile", model="/nowhere/sr").check_weights((32, 48))  # auto: Lanczos without weights
    with pytest.raises(ModelNotFoundError, match="Swin2SR"):
        get_annotator("tile", model="/nowhere/sr", sr="swin2sr", size=(64, 96)).check_weights((32, 48))
    get_annotator("softedge", model="/nowhere/hed.pth", fallback=True).check_weights((32, 48))
    get_annotator("canny").check_weights((32, 48))
    try:
        get_annotator("pose", backend="openpose", openpose_model="/nowhere/op").check_weights((32, 48))
    except InputError as e:  # no controlnet_aux here: said as such
        assert "controlnet_aux" in str(e)
    except ModelNotFoundError as e:
        said = str(_as_setting(e, "pose"))
        assert "Set annotators.pose.openpose_model=<" in said and '--set annotators.pose.openpose_model="..."' in said
        assert "preprocessor_config" not in said
    else:
        raise AssertionError("a missing OpenPose folder was not said")
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "mediapipe" else real(n, *a))
    with pytest.raises(InputError) as e:
        get_annotator("pose", backend="mediapipe").check_weights((32, 48))
    said = str(_as_setting(e.value, "pose"))  # in run, the way out is a setting
    assert "needs mediapipe" in said and '--set annotators.pose.backend="openpose"' in said
    assert "on the command line" not in said


def test_cli_run_and_errors(models, clip, tmp_path, capsys):
    out = tmp_path / "cli.mp4"
    args = ["run", "restore", "--video", clip, "-o", str(out), "--prompt", "sharp photo", "--model",
            str(models / "tiny-sd"), "--controlnet", f"tile={models / 'cn0'}", "--frames", "0:3", "-q",
            "--cache-dir", str(tmp_path / "cache")] + sum((["--set", s] for s in QUICK + ["sampling.strength=0.7"]), [])
    assert main(args) == 0
    assert read(out)[0].shape == (3, 24, 32, 3)
    assert main(args) == 2 and "--resume" in capsys.readouterr().err
    assert main(args + ["--restart"]) == 0
    # a lossless output holds exactly the job's finished frames
    lossless = tmp_path / "lossless.mkv"
    assert main([a if a != str(out) else str(lossless) for a in args] + ["--codec", "ffv1"]) == 0
    kept = read(job_folder(lossless) / "frames")[0]
    np.testing.assert_array_equal(read(lossless)[0], kept)
    bad = ["run", "stylize", "--video", clip, "-o", str(tmp_path / "x.mp4"), "--set", "sampling.stepz=2"]
    assert main(bad) == 2 and "valid keys: sampling.steps" in capsys.readouterr().err
    twice = ["run", "restore", "--video", clip, "-o", str(tmp_path / "t.mp4"), "--controlnet", "tile=a",
             "--controlnet", "tile=b"]  # the last one was used without a word
    assert main(twice) == 2 and "--controlnet tile=... is given more than once" in capsys.readouterr().err
    missing = ["run", "stylize", "--video", clip, "-o", str(tmp_path / "y.mp4"), "--model", str(tmp_path / "nomodel"),
               "--frames", "0:2", "--set", "video.width=32", "--set", "video.height=24",
               "--set", 'controlnets.0.annotator="canny"', "--set", 'controlnets.1.annotator="canny"', "-q"]
    assert main(missing) == 2 and "not found; looked in" in capsys.readouterr().err
    assert main(["run", "image_guided", "--video", clip, "-o", str(tmp_path / "z.mp4")]) == 2
    assert "--style-image" in capsys.readouterr().err
    style = tmp_path / "style.png"
    Image.fromarray(read(clip, 1)[0][0]).save(style)  # a style image where no ControlNet takes it was ignored
    assert main(["run", "stylize", "--video", clip, "-o", str(tmp_path / "s.mp4"), "--style-image", str(style)]) == 2
    assert "has no shuffle ControlNet" in capsys.readouterr().err
    # an output it cannot write is said before any work, not after the generation
    assert main(["run", "stylize", "--video", clip, "-o", str(tmp_path / "w.avi")]) == 2
    assert "cannot write .avi files" in capsys.readouterr().err
    assert main(["run", "stylize", "--video", clip, "-o", str(tmp_path / "w.webm"), "--codec", "ffv1"]) == 2
    assert "a .webm file cannot hold ffv1" in capsys.readouterr().err
    assert not list(tmp_path.glob("w.avi*"))  # no job folder either


@pytest.mark.mediapipe
def test_longvideo_fusion_codenoise_prompt_ranges_and_resume(models, clip, tmp_path, monkeypatch):
    sam = tiny.save_sam(tmp_path / "sam")
    sets = ["video.width=32", "video.height=24", "sampling.steps=4", "sampling.guidance_scale=2.0",
            "sampling.batch_size=3", "deflicker.frequency=2", "deflicker.window=2", "deflicker.final_window=0",
            "longvideo.clip_length=4", "longvideo.clip_stride=2", "longvideo.fusion_seeds=[0, 1]",
            "longvideo.fusion_step=1", f'longvideo.sam_model="{sam}"',
            'longvideo.prompt_ranges=[[0, 3, "a cat"], [3, -1, "a dog"]]', f'controlnets.0.model="{models / "cn0"}"',
            'controlnets.0.kind="controlnet"']  # the template's pose T2I-Adapter: tested in test_adapter.py
    kw = dict(model=str(models / "tiny-sd"), overrides=sets, frames="0:7", cache_dir=tmp_path / "c", progress=False)
    whole = tmp_path / "whole.mp4"
    run_job("longvideo", clip, whole, "a person", **kw)
    assert read(whole)[0].shape == (7, 24, 32, 3)
    assert len(list((tmp_path / "c" / "masks").glob("*.npz"))) == 1  # SAM masks from the pose keypoints, cached
    part = tmp_path / "part.mp4"
    with pytest.raises(KeyboardInterrupt):
        run_job("longvideo", clip, part, "a person", stop_after_step=3, **kw)  # after fusion (step 1)
    run_job("longvideo", clip, part, "a person", resume=True, **kw)
    np.testing.assert_array_equal(read(whole)[0], read(part)[0])
    # stopped while the second fusion candidate is made: the first is not made again, and the frames agree
    from flickerless.diffusion import VideoPipeline

    made, stop, call = [], [True], VideoPipeline.__call__

    def candidates_counted(self, *a, **k):
        if k.get("end_step") is not None:
            made.append(k["seed"])
            if len(made) == 2 and stop:
                stop.clear()
                raise KeyboardInterrupt("stopped in the second candidate")
        return call(self, *a, **k)

    monkeypatch.setattr(VideoPipeline, "__call__", candidates_counted)
    mid = tmp_path / "mid.mp4"
    with pytest.raises(KeyboardInterrupt):
        run_job("longvideo", clip, mid, "a person", **kw)
    made.clear()
    run_job("longvideo", clip, mid, "a person", resume=True, **kw)
    assert made == [1]
    np.testing.assert_array_equal(read(whole)[0], read(mid)[0])
    monkeypatch.undo()
    # without fusion and co-denoising the same job gives other frames: the modules act
    plain = tmp_path / "plain.mp4"
    run_job("longvideo", clip, plain, "a person", **{**kw, "overrides": sets + ["longvideo.fusion_seeds=[]",
                                                                                 "longvideo.clip_length=0"]})
    assert not np.array_equal(read(whole)[0], read(plain)[0])


@pytest.mark.mediapipe
def test_longvideo_with_an_unwritable_cache_finds_the_pose_once(models, clip, tmp_path, monkeypatch):
    """From the helpers' use of `run`: with an annotation cache it cannot write, longvideo ran the pose model
    twice over the same frames (for its pose ControlNet's skeletons, then for the fusion's SAM prompts)."""
    from flickerless.control.pose import PoseAnnotator

    sam = tiny.save_sam(tmp_path / "sam")
    sets = QUICK + ["sampling.steps=2", "deflicker.final_window=0", "longvideo.clip_length=0",
                    "longvideo.fusion_seeds=[0, 1]", "longvideo.fusion_step=1", f'longvideo.sam_model="{sam}"',
                    f'controlnets.0.model="{models / "cn0"}"', 'controlnets.0.kind="controlnet"']
    (tmp_path / "file").write_text("not a folder")
    runs, compute = [], PoseAnnotator.compute_keypoints

    def counted(self, frames):
        runs.append(len(frames))
        return compute(self, frames)

    monkeypatch.setattr(PoseAnnotator, "compute_keypoints", counted)
    out = tmp_path / "out.mp4"
    run_job("longvideo", clip, out, "a person", model=str(models / "tiny-sd"), overrides=sets, frames="0:4",
            cache_dir=tmp_path / "file" / "c", progress=False)
    assert runs == [4] and read(out)[0].shape[0] == 4


@pytest.mark.mediapipe
def test_a_longvideo_resume_reads_each_fusion_candidate_once(models, clip, tmp_path, monkeypatch):
    """From the review of the fusion's resume: the newest candidate a stopped job kept (latents of the whole
    clip) was read twice, once for its fields token and again to fuse."""
    import torch

    from flickerless.diffusion import VideoPipeline

    sam = tiny.save_sam(tmp_path / "sam")
    sets = QUICK + ["sampling.steps=2", "deflicker.final_window=0", "longvideo.clip_length=0",
                    "longvideo.fusion_seeds=[0, 1, 2]", "longvideo.fusion_step=1", f'longvideo.sam_model="{sam}"',
                    f'controlnets.0.model="{models / "cn0"}"', 'controlnets.0.kind="controlnet"']
    kw = dict(model=str(models / "tiny-sd"), overrides=sets, frames="0:4", cache_dir=tmp_path / "c", progress=False)
    made, call = [], VideoPipeline.__call__

    def stopped_in_the_third_candidate(self, *a, **k):
        if k.get("end_step") is not None:
            made.append(k["seed"])
            if len(made) == 3:
                raise KeyboardInterrupt("stopped in the third candidate")
        return call(self, *a, **k)

    monkeypatch.setattr(VideoPipeline, "__call__", stopped_in_the_third_candidate)
    out = tmp_path / "out.mp4"
    with pytest.raises(KeyboardInterrupt):
        run_job("longvideo", clip, out, "a person", **kw)
    monkeypatch.undo()
    read_files, load = [], torch.load

    def counted(f, *a, **k):
        read_files.append(Path(f).name)
        return load(f, *a, **k)

    monkeypatch.setattr(torch, "load", counted)
    run_job("longvideo", clip, out, "a person", resume=True, **kw)
    fusion = sorted(f for f in read_files if f.startswith("fusion_"))
    assert fusion == ["fusion_0_seed0_step1.pt", "fusion_1_seed1_step1.pt"]


def test_prompt_ranges_that_cover_every_frame_say_the_prompt_is_unused(caplog):
    """A range's text replaces --prompt: with ranges over the whole clip the prompt (a fine-tune's "sks man")
    was dropped without a word."""
    from flickerless.pipelines.job import _longvideo_kwargs

    lv = {"prompt_ranges": [[0, 3, "on a beach"], [3, -1, "in a city"]], "clip_length": 0}
    with caplog.at_level("WARNING", logger="flickerless"):
        assert _longvideo_kwargs(lv, 7, "a photo of sks man")["prompt_ranges"] == [(0, 3, "on a beach"),
                                                                                   (3, None, "in a city")]
        _longvideo_kwargs({**lv, "prompt_ranges": [[0, 3, "on a beach"]]}, 7, "a photo of sks man")
        _longvideo_kwargs(lv, 7, "")
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "'a photo of sks man' is used for no frame" in said[0]
    assert "'a photo of sks man on a beach'" in said[0]


def test_out_of_memory_and_interrupt_keep_progress(models, clip, tmp_path, monkeypatch, capsys):
    from flickerless.errors import DeviceError

    def oom(*a, **k):
        raise __import__("torch").OutOfMemoryError("CUDA out of memory")

    sets = QUICK + _cn(models, 2) + ['controlnets.0.annotator="canny"', 'controlnets.1.annotator="canny"']
    out = tmp_path / "o.mp4"
    with pytest.raises(DeviceError, match="halved on their own.*--resume.*video.width.*--restart"):
        run_job("stylize", clip, out, "x", overrides=sets, frames="0:3", cache_dir=tmp_path / "c", progress=False,
                pipeline=oom)
    assert len(list((job_folder(out) / "controls" / "0_canny").glob("*.png"))) == 3  # control frames kept

    import flickerless.pipelines.job as job_mod

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(job_mod, "run_job", interrupted)
    # the job folder holds control frames, nothing generated: no --resume to point at (it claimed one)
    assert main(["run", "stylize", "--video", clip, "-o", str(out), "-q"]) == 130
    err = capsys.readouterr().err
    assert "before any progress was kept; run the command again" in err and "--resume" not in err
    (job_folder(out) / "latents.pt").write_bytes(b"a step's latents")
    assert main(["run", "stylize", "--video", clip, "-o", str(out), "-q"]) == 130
    assert "add --resume" in capsys.readouterr().err


def test_deflicker_settings_reach_F(models, clip, tmp_path, monkeypatch):
    import flickerless.diffusion.sampler as sampler

    seen = []

    def spy(frames, guide, window, progress=False, matches="unset", **pm):
        assert matches is None  # self-guided: the guide changes every pass, no fields are carried over
        seen.append((window, guide is None, pm))
        return frames

    monkeypatch.setattr(sampler, "default_deflicker", spy)
    sets = QUICK + _cn(models, 2) + ['controlnets.0.annotator="canny"', 'controlnets.1.annotator="canny"',
                                     "deflicker.window=3", "deflicker.patch_sizes=[7, 5]", "deflicker.iterations=2",
                                     'deflicker.guide="self"']
    run_job("stylize", clip, tmp_path / "o.mp4", "x", model=str(models / "tiny-sd"), overrides=sets, frames="0:3",
            cache_dir=tmp_path / "c", progress=False)
    # steps 1 and 3 of 3 (frequency 2), then the final pass with window 2; self-guided; PatchMatch settings
    assert [w for w, _, _ in seen] == [3, 3, 2] and all(g for _, g, _ in seen)
    assert all(pm == {"patch_sizes": (7, 5), "iterations": 2} for _, _, pm in seen)


def test_a_resumed_job_needs_no_weights_for_the_controls_it_holds(tmp_path, monkeypatch):
    """The up-front annotator check passes a unit whose control frames the resumed job folder holds
    (its weights may be gone from the Hugging Face cache since): they are read, not made again."""
    from flickerless.errors import ModelNotFoundError
    from flickerless.pipelines.job import _check_annotators, resolve_settings
    from flickerless.video import VideoInfo

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    settings = resolve_settings("stylize", "m", [], None, ['annotators.softedge.method="sobel"'])
    units = settings["controlnets"]
    info = VideoInfo(frames=4, height=144, width=176, fps=25.0)
    job = tmp_path / "o.job"
    with pytest.raises(ModelNotFoundError, match="depth model"):
        _check_annotators(units, settings, info, job, resume=True)
    k = [u["annotator"] for u in units].index("depth")
    (job / "controls" / f"{k}_depth").mkdir(parents=True)
    Image.new("RGB", (176, 144)).save(job / "controls" / f"{k}_depth" / "00000.png")
    _check_annotators(units, settings, info, job, resume=True)
    with pytest.raises(ModelNotFoundError, match="depth model"):  # not resumed: they are made again
        _check_annotators(units, settings, info, job, resume=False)


@pytest.mark.parametrize("aspect", [(24, 64), (64, 24)])
def test_restore_crops_the_clip_it_super_resolves(clip, tmp_path, aspect):
    """Restore super-resolved the uncropped clip to the target size, so ``video.resize=crop`` gave the
    stretched frames (byte-identical to ``stretch``) for its tile control and img2img input. A crop and
    a stretch to one size also shared their annotations in the cache (one video identity)."""
    import cv2

    from flickerless.pipelines.job import _annotate, read_clip, resolve_settings
    from flickerless.video import probe

    H, W = aspect
    tiles, ids = {}, set()
    for mode in ("crop", "stretch"):
        s = resolve_settings("restore", overrides=[f"video.width={W}", f"video.height={H}", f'video.resize="{mode}"',
                                                   'annotators.tile.sr="lanczos"'])
        inputs = read_clip(clip, (0, 2), s, keep_native=True)
        assert inputs.frames.shape[1:3] == (H, W)
        ids.add(inputs.video_id)
        t = _annotate(s["controlnets"][0], inputs, s, None, tmp_path / "cache", False, None)
        tiles[mode] = (t.float().numpy().transpose(0, 2, 3, 1) * 255)
    raw = read(clip, 2)[0]
    h, w = raw.shape[1:3]
    pa = float(probe(clip).pixel_aspect)  # QCIF's pixels are 12:11, shown wider than stored
    if W / H > w * pa / h:  # wider than the clip is shown: rows cut
        ch, cw = int(round(w * pa * H / W)), w
    else:
        ch, cw = h, int(round(h * W / H / pa))
    y, x = (h - ch) // 2, (w - cw) // 2

    def down(f):  # as the tile annotator makes a smaller frame
        return cv2.resize(np.ascontiguousarray(f), (W, H), interpolation=cv2.INTER_AREA)

    centre = np.stack([down(f[y:y + ch, x:x + cw]) for f in raw]).astype(np.float32)
    stretched = np.stack([down(f) for f in raw]).astype(np.float32)
    assert len(ids) == 2  # each fitting's annotations are its own
    assert np.abs(tiles["crop"] - centre).mean() < 1  # up to float16 rounding
    assert np.abs(tiles["stretch"] - stretched).mean() < 1
    assert np.abs(tiles["crop"] - tiles["stretch"]).mean() > 10


def test_prompt_ranges_with_frames_start_end_are_the_clips_frame_numbers(models, clip, tmp_path):
    """With --frames 2:6, the range [4, -1] was left out ("starts past this run's 4 frames"), though
    clip frames 4 and 5 are in the run: ranges counted from START, not in the clip's numbers as --frames."""
    seen = {}

    def engine(frames, *, on_frame, **kw):  # the pipeline's part: what it is asked, the frames passed through
        seen.update(kw)
        for i, f in enumerate(frames):
            on_frame(i, f)

    sets = QUICK + ['controlnets.0.kind="controlnet"', 'controlnets.0.annotator="canny"',
                    f'controlnets.0.model="{models / "cn0"}"', "longvideo.fusion_seeds=[]",
                    'longvideo.prompt_ranges=[[0, 3, "beach"], [4, -1, "neon"]]']
    out = tmp_path / "o.mp4"
    run_job("longvideo", clip, out, "", model=str(models / "tiny-sd"), overrides=sets, frames="2:6",
            cache_dir=tmp_path / "c", progress=False, pipeline=engine)
    # clip frame 2 is the run's frame 0: "beach" on clip frame 2, "neon" on clip frames 4 and 5
    assert seen["prompt_ranges"] == [(0, 1, "beach"), (2, None, "neon")]
    assert len(read(out)[0]) == 4


def test_a_changed_fps_says_the_sound_is_left_out(sound_clip, caplog):
    """``video.fps`` writes the same frames at another rate (they last another time than their sound),
    so the sound is left out: that was done without a word, and the output looked like it had lost it."""
    from flickerless.pipelines.job import read_clip, resolve_settings

    small = ["video.width=32", "video.height=24"]
    with caplog.at_level("WARNING", logger="flickerless"):
        kept = read_clip(sound_clip, (0, 2), resolve_settings("stylize", overrides=small))
    assert kept.sound_start == 0 and "sound" not in caplog.text
    with caplog.at_level("WARNING", logger="flickerless"):
        left = read_clip(sound_clip, (0, 2), resolve_settings("stylize", overrides=[*small, "video.fps=12"]))
    assert left.sound_start is None and left.fps == 12
    assert "the clip's sound is left out: video.fps 12 changes the timing (the clip is 25 fps" in caplog.text


def test_frames_past_the_clips_end_are_said(clip, caplog):
    """``--frames 10:20`` on a 12-frame clip wrote 2 frames without a word (deflicker says it); a range
    that starts past the end is refused."""
    from flickerless.pipelines.job import read_clip, resolve_settings
    from flickerless.video import probe

    n = probe(clip).frames
    s = resolve_settings("stylize", overrides=["video.width=32", "video.height=24"])
    with caplog.at_level("WARNING", logger="flickerless"):
        assert len(read_clip(clip, (n - 2, n + 8), s).frames) == 2
    assert f"--frames {n - 2}:{n + 8}: the clip has {n} frames; frames {n - 2}-{n - 1} are done" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="flickerless"):
        read_clip(clip, (n - 2, n), s)
    assert "--frames" not in caplog.text
    with pytest.raises(InputError, match=f"no frames in the range {n}:{n + 8} \\(the clip has {n} frames\\)"):
        read_clip(clip, (n, n + 8), s)


@pytest.mark.parametrize("mode", ["crop", "stretch"])
def test_crop_and_stretch_say_the_size_is_rounded(clip, caplog, mode):
    """``crop``/``stretch`` to 130x90 made 128x88 without a word (the model works in multiples of 8)."""
    from flickerless.pipelines.job import read_clip, resolve_settings

    def said(w, h):
        caplog.clear()
        s = resolve_settings("stylize", overrides=[f"video.width={w}", f"video.height={h}", f'video.resize="{mode}"'])
        with caplog.at_level("INFO", logger="flickerless"):
            frames = read_clip(clip, (0, 1), s).frames
        return frames.shape[1:3], caplog.text

    size, text = said(130, 90)
    assert size == (88, 128) and f"video.resize={mode}: 130x90 is made 128x88 (the model works in multiples of 8" in text
    size, text = said(128, 88)
    assert size == (88, 128) and "is made" not in text


@pytest.mark.parametrize("at", ["after the fields", "after the latents"])
def test_a_stop_between_saving_the_fields_and_the_latents_resumes_to_the_same_frames(models, clip, tmp_path,
                                                                                   monkeypatch, at):
    """From the helpers' use of `run`: a stop after a step's PatchMatch fields were saved but before its
    latents were left the step's fields with the step before's latents; --resume redid the step from the
    newer fields and gave other frames, exit 0. The two are kept as one: either stop resumes exactly."""
    import os

    import torch

    sets = QUICK + _cn(models, 2) + ['controlnets.0.annotator="canny"', 'controlnets.1.annotator="canny"',
                                     "deflicker.frequency=1", "deflicker.final_window=0",
                                     "video.width=64", "video.height=48"]
    kw = dict(model=str(models / "tiny-sd"), overrides=sets, frames="2:6", cache_dir=tmp_path / "c", progress=False)
    whole, part = tmp_path / "whole.mp4", tmp_path / "part.mp4"
    run_job("stylize", clip, whole, "a cat", **kw)
    save, replace, fields = torch.save, os.replace, [0]

    def saving(obj, f, *a, **k):
        if isinstance(obj, dict) and "pairs" in obj:
            fields[0] += 1
        elif isinstance(obj, dict) and obj.get("step") == 2 and at == "after the fields":
            raise KeyboardInterrupt  # step 2's fields are on disk, its latents not
        return save(obj, f, *a, **k)

    def replacing(src, dst, *a, **k):
        if at == "after the latents" and fields[0] == 2 and Path(dst).name == "matches.pt":
            raise KeyboardInterrupt  # step 2's latents are on disk, its fields not yet at their usual name
        return replace(src, dst, *a, **k)

    monkeypatch.setattr(torch, "save", saving)
    monkeypatch.setattr(os, "replace", replacing)
    with pytest.raises(KeyboardInterrupt):
        run_job("stylize", clip, part, "a cat", **kw)
    monkeypatch.setattr(torch, "save", save)
    monkeypatch.setattr(os, "replace", replace)
    assert fields[0] == 2
    run_job("stylize", clip, part, "a cat", resume=True, **kw)
    assert np.array_equal(read(part)[0], read(whole)[0])


def test_outputs_that_differ_only_in_their_type_have_their_own_job_folders(models, clip, tmp_path, caplog,
                                                                          monkeypatch):
    """From the helpers' use of `run`: out/r5.mp4, out/r5.gif and the folder out/r5 shared out/r5.job, so one
    was refused while the other worked or had stopped, and the --restart it advised deleted the other's job.
    Each has its own now; one that records another output is refused, never deleted; a job folder of an
    earlier version (out.job for out.gif, recording no output) is still found by --resume."""
    import json
    import shutil

    from flickerless.errors import OutputError

    sets = QUICK + _cn(models, 2) + ['controlnets.0.annotator="canny"', 'controlnets.1.annotator="canny"']
    kw = dict(model=str(models / "tiny-sd"), overrides=sets, frames="0:3", cache_dir=tmp_path / "c", progress=False)
    mp4, gif, png = tmp_path / "r5.mp4", tmp_path / "r5.gif", tmp_path / "r5"
    with pytest.raises(KeyboardInterrupt):
        run_job("stylize", clip, mp4, "a cat", stop_after_step=2, **kw)
    run_job("stylize", clip, gif, "a sketch", **kw)  # was refused: r5.job holds an earlier job for this output
    run_job("stylize", clip, png, "a sketch", restart=True, **kw)  # deleted r5.mp4's job
    assert [job_folder(o).name for o in (mp4, gif, png)] == ["r5.job", "r5.gif.job", "r5.png.job"]
    assert (job_folder(mp4) / "latents.pt").exists() and len(read(png)[0]) == 3
    run_job("stylize", clip, mp4, "a cat", resume=True, **kw)
    # shot.png.mp4 and the PNG folder shot shared shot.png.job: the folder was refused ("holds the job of
    # shot.png.mp4, another output"); each has its own now
    with pytest.raises(KeyboardInterrupt):
        run_job("stylize", clip, tmp_path / "shot.png.mp4", "a cat", stop_after_step=2, **kw)
    run_job("stylize", clip, tmp_path / "shot", "a cat", **kw)
    assert (job_folder(tmp_path / "shot.png.mp4") / "latents.pt").exists() and len(read(tmp_path / "shot")[0]) == 3
    # a job folder recording another output at this one's name (moved there)
    meta = json.loads((job_folder(mp4) / "job.json").read_text())
    shutil.copytree(job_folder(mp4), tmp_path / "moved.job")
    for extra in ({}, {"resume": True}, {"restart": True}):
        with pytest.raises(OutputError, match="holds the job of r5.mp4, another output"):
            run_job("stylize", clip, tmp_path / "moved.mp4", "a cat", **extra, **kw)
    assert (tmp_path / "moved.job" / "latents.pt").exists()
    # names that differ in case only are distinct here; where the file system makes them one (macOS, Windows),
    # the job folder of one is the other's, and that is said as it is (not "another output")
    shutil.copytree(job_folder(mp4), tmp_path / "r5.mov.job")
    (tmp_path / "r5.mov.job" / "job.json").write_text(json.dumps(dict(meta, output="R5.MOV")))
    import flickerless.pipelines.job as job_mod

    if not job_mod._case_blind(tmp_path / "r5.mov.job"):  # here R5.MOV is another file: it was said to be one
        with pytest.raises(OutputError, match="holds the job of R5.MOV, another output"):
            run_job("stylize", clip, tmp_path / "r5.mov", "a cat", resume=True, **kw)
    monkeypatch.setattr(job_mod, "_case_blind", lambda path: True)
    with pytest.raises(OutputError, match="does not tell R5.MOV from r5.mov .letter case.* give it as R5.MOV"):
        run_job("stylize", clip, tmp_path / "r5.mov", "a cat", resume=True, **kw)
    monkeypatch.undo()
    # K.MP4's job folder was K.job (K.mp4's): --resume still finds one kept there for it, not one for K.mp4
    from flickerless.pipelines.job import job_of

    shutil.copytree(job_folder(mp4), tmp_path / "K.job")
    (tmp_path / "K.job" / "job.json").write_text(json.dumps(dict(meta, output="K.MP4")))
    assert job_folder(tmp_path / "K.MP4").name == "K.MP4.job" and job_of(tmp_path / "K.MP4", resume=True).name == "K.job"
    (tmp_path / "K.job" / "job.json").write_text(json.dumps(dict(meta, output="K.mp4")))
    assert job_of(tmp_path / "K.MP4", resume=True).name == "K.MP4.job"
    # an earlier version's job folder for a gif: out.job, no output recorded
    old = tmp_path / "old.gif"
    with pytest.raises(KeyboardInterrupt):
        run_job("stylize", clip, old, "a sketch", stop_after_step=2, **kw)
    shutil.move(job_folder(old), tmp_path / "old.job")
    meta = json.loads((tmp_path / "old.job" / "job.json").read_text())
    del meta["output"]
    (tmp_path / "old.job" / "job.json").write_text(json.dumps(meta))
    assert job_of(old, resume=True) == tmp_path / "old.job" and job_of(old) == job_folder(old)
    caplog.clear()
    run_job("stylize", clip, old, "a sketch", resume=True, **kw)
    assert np.array_equal(read(old)[0], read(gif)[0])
    # it records no output, so any output named old.* (or the folder old) took it on --resume: the first to
    # resume it is said, and it is that output's from then on
    assert "records not which output it was for" in caplog.text and "resumed as old.gif's" in caplog.text
    assert json.loads((tmp_path / "old.job" / "job.json").read_text())["output"] == "old.gif"
    assert job_of(old, resume=True) == tmp_path / "old.job"
    assert job_of(tmp_path / "old", resume=True) == job_folder(tmp_path / "old")
    # one with no work in it is not resumed: it was taken by any old.* and started over there, claimed
    (tmp_path / "empty.job").mkdir()
    (tmp_path / "empty.job" / "job.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "output"}))
    assert job_of(tmp_path / "empty.gif", resume=True) == job_folder(tmp_path / "empty.gif")
    # without --resume a new job starts in old.gif.job: said, where it recomputed beside it without a word
    # (the earlier version refused, advising --resume)
    caplog.clear()
    with pytest.raises(KeyboardInterrupt):
        run_job("stylize", clip, old, "a sketch", stop_after_step=1, **kw)
    assert f"{tmp_path / 'old.job'} holds a job an earlier version kept for old.gif or another output" in caplog.text


def test_an_earlier_versions_job_and_a_changed_size_are_said_as_they_are(tmp_path):
    """From the review of the resolved paths: a job hashed by the version before, resumed with its model
    spelled otherwise (``m/``), was refused with two hashes; a changed size was said as "the clip changed
    since the stop" (the frames' digest is of their size too)."""
    import json

    import flickerless.pipelines.job as job

    settings = job.resolve_settings("stylize")
    (tmp_path / "m").mkdir()
    settings["model"]["base"] = str(tmp_path / "m")
    folder = tmp_path / "o.job"
    meta = {"video_id": "a", "size": [48, 64], "settings": "raw-hash-of-the-version-before"}
    job._prepare_job_folder(folder, meta, settings, False, False)
    (folder / "latents.pt").write_bytes(b"a step's latents")
    respelled = json.loads(json.dumps(settings))
    respelled["model"]["base"] = str(tmp_path / "m") + "/"
    job._prepare_job_folder(folder, dict(meta, settings=job._hash(job._comparable(respelled))), respelled, True, False)
    other = json.loads(json.dumps(settings))
    other["model"]["base"] = str(tmp_path)  # another folder: still refused, named
    with pytest.raises(InputError, match=r"settings: model.base"):
        job._prepare_job_folder(folder, dict(meta, settings=job._hash(job._comparable(other))), other, True, False)
    with pytest.raises(InputError) as e:
        job._prepare_job_folder(folder, dict(meta, video_id="b", size=[48, 72]), settings, True, False)
    assert "size (64x48 -> 72x48)" in str(e.value) and "clip changed" not in str(e.value)


def test_a_job_an_earlier_version_sized_otherwise_resumes_at_its_own_size(models, clip, tmp_path, monkeypatch,
                                                                          caplog):
    """From the review of session 34: area mode's sizes changed (the sides chosen together, not each rounded on its
    own), and --resume of a job the earlier version made was refused for "other size (168x120 -> 160x120)" with
    the same inputs and settings; its work could only be deleted (--restart). It resumes at the size it was made
    at, said, without redoing its steps or controls; a new run takes the new size."""
    import flickerless.pipelines.job as job_mod
    from flickerless.diffusion import VideoPipeline

    def rounded_apart(h, w, area, multiple=8):  # area mode before: each side rounded on its own
        r = lambda v: max(multiple, int(round(v / multiple)) * multiple)  # noqa: E731
        scale = (area / (w * h)) ** 0.5
        return r(h * scale), r(w * scale)

    # carphone (176x144, shown 193x144) at 48x32's pixels: 48x32 rounded apart, 40x32 now
    sets = QUICK + ["video.width=48", "video.height=32"] + _cn(models, 2) + [
        'controlnets.0.annotator="canny"', 'controlnets.1.annotator="canny"', "deflicker.final_window=0"]
    kw = dict(model=str(models / "tiny-sd"), overrides=sets, frames="0:3", cache_dir=tmp_path / "c", progress=False)
    from flickerless.video import probe

    assert job_mod._generation_size(probe(clip), job_mod.resolve_settings("stylize", overrides=sets)) == (32, 40)
    monkeypatch.setattr(job_mod, "_area_size", rounded_apart)  # the earlier version
    whole, part = tmp_path / "whole.mp4", tmp_path / "part.mp4"
    run_job("stylize", clip, whole, "a cat", **kw)
    with pytest.raises(KeyboardInterrupt):
        run_job("stylize", clip, part, "a cat", stop_after_step=2, **kw)
    monkeypatch.undo()
    controls = sorted((job_folder(part) / "controls").rglob("*.png"))
    stamps = [f.stat().st_mtime_ns for f in controls]
    starts = []
    call = VideoPipeline.__call__

    def spy(self, *a, **k):
        starts.append(k.get("start_step"))
        return call(self, *a, **k)

    monkeypatch.setattr(VideoPipeline, "__call__", spy)
    monkeypatch.setattr(job_mod, "_annotate", lambda *a, **k: pytest.fail("the controls were made again"))
    caplog.set_level("INFO", logger="flickerless")
    run_job("stylize", clip, part, "a cat", resume=True, **kw)
    assert starts == [2] and [f.stat().st_mtime_ns for f in controls] == stamps
    assert read(part)[0].shape[1:3] == (32, 48) and np.array_equal(read(part)[0], read(whole)[0])
    assert "made at 48x32" in caplog.text and "40x32" in caplog.text
    monkeypatch.undo()
    new = tmp_path / "new.mp4"  # a new run (or --restart) sizes as this version does
    run_job("stylize", clip, part, "a cat", restart=True, **kw)
    run_job("stylize", clip, new, "a cat", **kw)
    assert read(part)[0].shape[1:3] == read(new)[0].shape[1:3] == (32, 40)


def test_a_job_kept_for_a_name_in_other_letter_case_is_said_as_the_file_system_has_it(tmp_path, monkeypatch):
    """From the review of session 34: on Linux, ``run -o K.mp4`` beside an earlier version's ``K.MP4`` job (in
    K.job, K.mp4's folder now) said "this file system does not tell K.MP4 from K.mp4 (letter case)", and to
    write K.MP4: they are two files there. The letter case is said only where the file system makes them one."""
    import json

    import flickerless.pipelines.job as job
    from flickerless.errors import OutputError

    settings = job.resolve_settings("stylize")
    folder = tmp_path / "K.job"
    meta = {"video_id": "a", "size": [48, 64], "settings": job._hash(job._comparable(settings)), "output": "K.MP4"}
    job._prepare_job_folder(folder, meta, settings, False, False)  # K.MP4's, as the earlier version kept it
    (folder / "latents.pt").write_bytes(b"a step's latents")
    if job._case_blind(folder):
        pytest.skip("this file system does not tell K.job from k.JOB")
    for resume, restart in ((False, False), (True, False), (False, True)):
        with pytest.raises(OutputError) as e:
            job._prepare_job_folder(folder, dict(meta, output="K.mp4"), settings, resume, restart)
        said = str(e.value)
        assert "letter case" not in said and "an earlier version kept there for K.MP4" in said, said
        assert "--resume" in said and "K.mp4" in said
    assert (folder / "latents.pt").exists() and json.loads((folder / "job.json").read_text())["output"] == "K.MP4"
    assert job.job_of(tmp_path / "K.MP4", resume=True) == folder  # where --resume of K.MP4 continues it
    monkeypatch.setattr(job, "_case_blind", lambda path: True)  # macOS, Windows: K.mp4 is K.MP4
    with pytest.raises(OutputError, match=r"does not tell K.MP4 from K.mp4 \(letter case\)"):
        job._prepare_job_folder(folder, dict(meta, output="K.mp4"), settings, True, False)


def test_a_resume_names_the_weights_that_changed_at_their_path(tmp_path):
    """From the helpers' use of `run`: a LoRA retrained at its path (train --overwrite) was refused on --resume
    as "other weights (a model, LoRA or ControlNet changed at its path)", leaving which to guess."""
    import json
    import os

    import flickerless.pipelines.job as job

    for name in ("m", "cn"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "w.bin").write_bytes(b"w")
    lora, ti = tmp_path / "style.safetensors", tmp_path / "ti.bin"
    for f in (lora, ti):
        f.write_bytes(b"w")
    settings = job.resolve_settings("stylize", model=str(tmp_path / "m"), lora=[f"{lora}:0.8"],
                                    controlnets={"depth": str(tmp_path / "cn")})
    settings["model"]["textual_inversion"] = [str(ti)]

    def meta(s=settings):
        return {"prompt": "a cat", "settings": job._hash(job._comparable(s)), "weights": job._local_stamps(s, None, None)}

    folder = tmp_path / "o.job"
    job._prepare_job_folder(folder, meta(), settings, False, False)
    (folder / "latents.pt").write_bytes(b"a step's latents")
    later = lambda f: os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))  # noqa: E731
    later(lora)  # retrained at its path
    with pytest.raises(InputError, match=rf"other weights: model.lora \({lora}\) changed at its path since the stop; "):
        job._prepare_job_folder(folder, meta(), settings, True, False)
    later(tmp_path / "cn" / "w.bin")
    with pytest.raises(InputError) as e:
        job._prepare_job_folder(folder, meta(), settings, True, False)
    assert f"controlnets.0.model ({tmp_path / 'cn'}), model.lora ({lora}) changed at their paths" in str(e.value)
    assert json.loads((folder / "job.json").read_text())["prompt"] == "a cat"  # refused: nothing rewritten
    # a ControlNet given at another path, nothing changed at either: the settings name the switch, and no
    # weights were said "changed at their paths" (the old path's and the new's stamps differ only in their keys)
    import shutil

    shutil.copytree(tmp_path / "cn", tmp_path / "cn2")
    moved = json.loads(json.dumps(settings))
    moved["controlnets"][0]["model"] = str(tmp_path / "cn2")
    folder = tmp_path / "p.job"
    job._prepare_job_folder(folder, meta(), settings, False, False)
    (folder / "latents.pt").write_bytes(b"a step's latents")
    with pytest.raises(InputError) as e:
        job._prepare_job_folder(folder, meta(moved), moved, True, False)
    assert "other settings: controlnets" in str(e.value) and "cn2" in str(e.value)
    assert "changed at" not in str(e.value) and "weights" not in str(e.value)


def test_a_resume_takes_the_same_local_weights_spelled_otherwise(models, clip, tmp_path, monkeypatch):
    """From the helpers' use of `run`: --resume refused its own job when the model or a ControlNet was
    spelled otherwise (a trailing '/', as tab completion adds; a relative path from another directory; a
    symlink), and the only way out it gave, --restart, deleted the frames. The same folder is the same."""
    import os

    link = tmp_path / "cn-link"
    link.symlink_to(models / "cn1")
    sets = QUICK + ['controlnets.0.annotator="canny"', 'controlnets.1.annotator="canny"']
    kw = dict(frames="0:3", cache_dir=tmp_path / "c", progress=False)
    out = tmp_path / "o.mp4"
    with pytest.raises(KeyboardInterrupt):
        run_job("stylize", clip, out, "a cat", model=str(models / "tiny-sd"), stop_after_step=2,
                controlnets={"depth": str(models / "cn0"), "softedge": str(models / "cn1")}, overrides=sets, **kw)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    other = dict(model=os.path.relpath(models / "tiny-sd") + "/", controlnets={"depth": str(models / "cn0") + "/", "softedge": str(link)}, **kw)
    with pytest.raises(InputError, match=r"other settings: sampling.steps \(3 -> 4\); run"):  # named alone
        run_job("stylize", clip, out, "a cat", overrides=sets + ["sampling.steps=4"], resume=True, **other)
    # a job of an earlier version, which hashed the settings as written: resumed with that spelling
    import json

    from flickerless.pipelines.job import _hash, resolve_settings

    meta = json.loads((job_folder(out) / "job.json").read_text())
    meta["settings"] = _hash(resolve_settings("stylize", other["model"], other["controlnets"], None, sets))
    (job_folder(out) / "job.json").write_text(json.dumps(meta))
    run_job("stylize", clip, out, "a cat", overrides=sets, resume=True, **other)
    assert len(read(out)[0]) == 3


def test_run_help_says_the_cache_folder_it_uses(capsys):
    """`run --help` gave the default annotator cache as ~/.cache/flickerless; it is annotations/ in it."""
    from flickerless.control.cache import default_cache_dir

    assert main(["run", "--help"]) == 0
    said = " ".join(capsys.readouterr().out.split())
    assert "$FLICKERLESS_CACHE/annotations" in said and "~/.cache/flickerless/annotations" in said
    assert default_cache_dir().name == "annotations"
