"""``flickerless eval`` end to end on real footage: numbers, JSON, skips, errors, and the HTML report
rendered by headless Chromium."""

import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from flickerless.cli import main
from flickerless.metrics import METRICS, AestheticPredictor, evaluate
from flickerless.synthetic import add_flicker, stylize
from flickerless.video import read, write
from tests.tiny_clip import save_clip


@pytest.fixture(scope="module")
def clips(carphone, tmp_path_factory):
    d = tmp_path_factory.mktemp("eval")
    src = carphone[:8]
    write(d / "src.mp4", src, 15)
    write(d / "out.mp4", add_flicker(np.stack([stylize(f) for f in src]), seed=0, strength=0.5), 15)
    save_clip(d / "clip")
    torch.manual_seed(0)
    torch.save(AestheticPredictor(16).state_dict(), d / "aesthetic.pth")
    return d


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.mark.mediapipe
def test_eval_all_metrics_json_and_report(clips, capsys):
    d = clips
    rc = main(["eval", "--video", str(d / "out.mp4"), "--source", str(d / "src.mp4"), "--prompt", "a painting",
               "--clip-model", str(d / "clip"), "--aesthetic-weights", str(d / "aesthetic.pth"),
               "--json", str(d / "r.json"), "--report", str(d / "r.html"), "-q"])
    assert rc == 0
    printed = capsys.readouterr().out
    data = json.loads((d / "r.json").read_text())
    assert list(data["metrics"]) == list(METRICS) and not data["skipped"]
    # the numbers are the library's on the same frames: the range checks below also held with the CLI handing
    # evaluate() the wrong frames (the video as its own source, or the source reversed)
    lib = evaluate(read(d / "out.mp4")[0], read(d / "src.mp4")[0], prompt="a painting", clip_model=str(d / "clip"),
                   aesthetic_weights=str(d / "aesthetic.pth"), log_skips=False).to_dict()
    assert data["metrics"] == pytest.approx(lib["metrics"], rel=1e-6, abs=1e-9)
    assert data["per_frame"].keys() == lib["per_frame"].keys()
    for name, values in lib["per_frame"].items():
        assert data["per_frame"][name] == pytest.approx(values, rel=1e-6, abs=1e-9), name
    for name, value in data["metrics"].items():
        assert math.isfinite(value), name
        assert re.search(rf"^{name}\s+\S+\s+\((lower|higher) is better(; [^)]*)?\)$", printed, re.M), name
    # Pose-MSE's coverage beside it: an output that loses the person scores better
    shown = data["info"]["pose_keypoints_source"]
    assert 0 < data["info"]["pose_keypoints_compared"] <= shown
    assert f"keypoints compared: {data['info']['pose_keypoints_compared']} of {shown} the source shows)" in printed
    m = data["metrics"]
    assert m["pixel_mse"] > 10 and 0 < m["warp_error"] < 1 and 0 <= m["clip"] <= 100
    assert -1 <= m["clip_consistency"] <= 1 and m["fid"] > 0 and 0 <= m["pose_mse"] < 0.05
    assert len(data["per_frame"]["pixel_mse"]) == 7 and len(data["per_frame"]["aesthetic"]) == 8
    assert data["info"]["frames"] == 8 and "backward" in data["info"]["flow_direction"]
    html = (d / "r.html").read_text()
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in html


def test_eval_quiet_prints_no_model_loading_bars(clips, capfd, loading_bars_on):
    """-q: only the numbers; transformers' "Loading weights" bar of the CLIP model is not shown either."""
    capfd.readouterr()
    assert main(["eval", "--video", str(clips / "out.mp4"), "--prompt", "a painting", "--metrics", "clip",
                 "--clip-model", str(clips / "clip"), "-q"]) == 0
    out, err = capfd.readouterr()
    assert re.search(r"^clip\s+\S+", out, re.M) and "Loading" not in err


def test_report_renders_in_chromium(clips, tmp_path):
    report = clips / "r.html"
    if not report.exists():
        main(["eval", "--video", str(clips / "out.mp4"), "--source", str(clips / "src.mp4"), "--metrics",
              "pixel_mse,warp_error", "--report", str(report), "-q"])
    chromium = _chromium()
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium): cannot render the HTML report")
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
           "--dump-dom", report.resolve().as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    assert "<svg" in dom and len(re.findall(r"<polyline [^>]*points=\"[^\"]+\"", dom)) >= 2  # temporal plots
    assert 'aria-label="pixel_mse per frame pair (t, t+1)"' in dom
    imgs = re.findall(r'<img alt="(source|output) frame \d+" src="data:image/png;base64,', dom)
    assert imgs.count("source") == imgs.count("output") == 4
    # set by the page's own script after load: every image decoded to a non-empty bitmap
    assert re.search(r'<body[^>]*data-images-decoded="8"', dom), dom[:500]


def test_eval_skips_metrics_without_weights(clips, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc = main(["eval", "--video", str(clips / "out.mp4"), "--source", str(clips / "src.mp4"), "--prompt", "a cat",
               "--metrics", "pixel_mse,clip,aesthetic", "--clip-model", str(tmp_path / "nothing"),
               "--json", str(tmp_path / "r.json"), "-q"])
    assert rc == 2  # metrics asked for by name were not measured: not a success to a script
    out, err = capsys.readouterr()
    assert "not measured: clip, aesthetic" in err
    lines = out.splitlines()
    assert lines[0].startswith("pixel_mse ") and len(lines) == 3
    assert re.match(r"clip\s+skipped: CLIP model .*nothing.* not found.*--clip-model PATH", lines[1])
    assert re.match(r"aesthetic\s+skipped: .*sac\+logos\+ava1-l14-linearMSE.pth.*--aesthetic-weights PATH", lines[2])
    data = json.loads((tmp_path / "r.json").read_text())  # what was measured is written all the same
    assert list(data["metrics"]) == ["pixel_mse"] and set(data["skipped"]) == {"clip", "aesthetic"}
    # every metric (none named): those that cannot run here are skipped, and the rest is a success
    assert main(["eval", "--video", str(clips / "out.mp4"), "--source", str(clips / "src.mp4"), "-q"]) == 0
    assert "skipped" in capsys.readouterr().out
    # but nothing measured at all is not
    assert main(["eval", "--video", str(clips / "out.mp4"), "--flow", "raft", "--raft-weights",
                 str(tmp_path / "no-raft.pth"), "--clip-model", str(tmp_path / "nothing"), "-q"]) == 2
    out, err = capsys.readouterr()
    assert "not measured:" in err and "skipped" in out


@pytest.mark.parametrize("args, message", [
    (["--video", "missing.mp4"], "--video missing.mp4: no such file"),
    (["--metrics", "clip"], "metric clip needs a prompt"),
    (["--metrics", "pixel_mse,psnr"], "unknown metric(s) psnr"),
    (["--json", "/nonexistent-dir/r.json"], "--json /nonexistent-dir/r.json: folder"),
    (["--metrics", "pixel_mse", "--device", "foo"], "unknown device 'foo'"),  # was ignored
    (["--metrics", "pixel_mse", "--json", "/tmp"], "--json /tmp is a folder"),  # said after the metrics ran
    (["--metrics", "pixel_mse", "--json", ""], "--json is empty: give a file name"),  # nothing written, exit 0
    (["--metrics", "pixel_mse", "--report", " "], "--report is empty: give a file name"),
])
def test_eval_errors_are_one_line(clips, capsys, args, message):
    base = {"--video": str(clips / "out.mp4"), "--source": str(clips / "src.mp4")}
    for k, v in zip(args[::2], args[1::2]):
        base[k] = v
    rc = main(["eval"] + [x for kv in base.items() for x in kv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_eval_of_clips_of_other_lengths_names_the_options_that_line_them_up(clips, capsys, tmp_path):
    """An output of `deflicker --frames 3:8` against its whole source: the message offered --max-frames 5,
    which compared output frames 3-7 with source frames 0-4 (a score several times too high, exit 0).
    It now names --frames / --source-frames, which pick the frames that correspond."""
    write(tmp_path / "part", read(clips / "out.mp4")[0][3:8])
    base = ["eval", "--video", str(tmp_path / "part"), "--source", str(clips / "src.mp4"), "--metrics", "pixel_mse",
            "-q"]
    assert main(base) == 2
    err = capsys.readouterr().err
    assert "the video has 5 frames but the source has 8: pixel_mse compares frame t of one with frame t" in err
    assert "--source-frames START:END" in err and "--max-frames" not in err and len(err.splitlines()) == 1
    assert main([*base, "--source-frames", "3:8", "--json", str(tmp_path / "part.json")]) == 0
    # the same frames picked from the whole output (and an open end, and --max-frames within the ranges)
    assert main(["eval", "--video", str(clips / "out.mp4"), "--frames", "3:", "--source", str(clips / "src.mp4"),
                 "--source-frames", "3:", "--max-frames", "5", "--metrics", "pixel_mse", "-q", "--json",
                 str(tmp_path / "whole.json")]) == 0
    part, whole = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("part", "whole"))
    assert part["metrics"] == whole["metrics"] and whole["info"]["frames"] == 5
    capsys.readouterr()
    for extra, says in [(["--source-frames", "3"], "--source-frames 3: give a range START:END"),
                        (["--source-frames", "5:2"], "--source-frames '5:2': need 0 <= START < END")]:
        assert main([*base, *extra]) == 2
        assert says in capsys.readouterr().err
    assert main(["eval", "--video", str(tmp_path / "part"), "--source-frames", "3:8"]) == 2
    assert "--source-frames picks frames of --source: give --source too" in capsys.readouterr().err


def test_eval_measures_fid_against_a_source_of_another_length(clips, capsys, tmp_path):
    """FID compares two sets of frames, and clip_consistency does not use the source, yet both were refused
    for a source of another length, with a message that offered --source-frames (which changes FID's set)."""
    write(tmp_path / "part", read(clips / "out.mp4")[0][3:8])
    base = ["eval", "--video", str(tmp_path / "part"), "--source", str(clips / "src.mp4"), "--clip-model",
            str(clips / "clip"), "-q"]
    assert main([*base, "--metrics", "fid,clip_consistency"]) == 0
    assert re.search(r"^fid\s+\d", capsys.readouterr().out, re.M)
    assert main([*base, "--metrics", "fid,warp_error"]) == 2
    err = capsys.readouterr().err
    assert "warp_error compares frame t of one with frame t of the other" in err and "fid and the CLIP" in err
    assert main(base) == 2  # by default every metric, the frame-paired ones too
    assert "pixel_mse, warp_error, pose_mse compare" in capsys.readouterr().err


def test_eval_crops_a_source_of_another_aspect_ratio_and_says_so(clips, capsys, tmp_path, caplog):
    """A centre-cropped output (run's video.resize = "crop") was scored against its source stretched to
    its size, without a word. --fit picks crop (default, warned) or stretch."""
    src = read(clips / "src.mp4")[0]
    write(tmp_path / "crop", np.ascontiguousarray(src[:, :, 16:160]))
    base = ["eval", "--video", str(tmp_path / "crop"), "--source", str(clips / "src.mp4"), "--metrics", "pixel_mse",
            "-q", "--json"]
    with caplog.at_level("WARNING", logger="flickerless"):
        assert main([*base, str(tmp_path / "crop.json")]) == 0
    assert "centre-cropped to the output's" in caplog.text and "--fit stretch" in caplog.text
    assert main([*base, str(tmp_path / "stretch.json"), "--fit", "stretch"]) == 0
    crop, stretch = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("crop", "stretch"))
    assert crop["info"]["source_fit"] == "crop" and stretch["info"]["source_fit"] == "stretch"
    assert stretch["metrics"]["pixel_mse"] > 1.3 * crop["metrics"]["pixel_mse"]
    # an anamorphic clip against its own kind (deflicker keeps the stored pixels and their shape): no fit at all;
    # the source's pixel shape alone was compared with the output's stored one, and it was cropped (2x the score)
    from fractions import Fraction

    from flickerless.video import VideoWriter

    caplog.clear()
    for name in ("wide_a.mp4", "wide_b.mp4"):
        with VideoWriter(tmp_path / name, 25, crf=0, pixel_aspect=Fraction(4, 3)) as w:
            for f in src[:6, :, :132]:
                w.write(np.ascontiguousarray(f))
    with caplog.at_level("WARNING", logger="flickerless"):
        assert main(["eval", "--video", str(tmp_path / "wide_a.mp4"), "--source", str(tmp_path / "wide_b.mp4"),
                     "--metrics", "pixel_mse", "-q", "--json", str(tmp_path / "wide.json")]) == 0
    assert "another aspect ratio" not in caplog.text
    assert "source_fit" not in json.loads((tmp_path / "wide.json").read_text())["info"]


def test_eval_takes_frames_of_an_anamorphic_sources_size_as_its_pixels(clips, tmp_path, caplog):
    """A folder of PNGs has no pixel shape: one of an anamorphic source's stored size (`deflicker -o folder/`,
    a per-frame tool) was taken as square pixels shown narrower, and the source centre-cropped (Pixel-MSE
    1.5x that of the same frames as an mp4, Pose-MSE of identical frames above 0)."""
    from fractions import Fraction

    from flickerless.video import VideoWriter

    src = read(clips / "src.mp4")[0][:6]
    with VideoWriter(tmp_path / "wide.mp4", 25, crf=0, pixel_aspect=Fraction(4, 3)) as w:
        for f in src:
            w.write(f)
    write(tmp_path / "frames", read(tmp_path / "wide.mp4")[0])  # the very frames eval decodes
    scores = {}
    for name in ("wide.mp4", "frames"):
        with caplog.at_level("INFO", logger="flickerless"):
            assert main(["eval", "--video", str(tmp_path / name), "--source", str(tmp_path / "wide.mp4"),
                         "--metrics", "pixel_mse", "--json", str(tmp_path / "s.json")]) == 0
        scores[name] = json.loads((tmp_path / "s.json").read_text())
    assert "another aspect ratio" not in caplog.text
    assert "frames is 176x144, the source's stored size, and images say no pixel shape" in caplog.text
    assert "--fit crop" in caplog.text
    assert "source_fit" not in scores["frames"]["info"]
    assert scores["frames"]["metrics"] == scores["wide.mp4"]["metrics"]


def test_eval_fits_a_square_pixel_video_of_an_anamorphic_sources_size(clips, tmp_path, caplog):
    """`run` generates at an anamorphic source's shown shape with square pixels, which can be its stored
    size (176x144 of a 16:11 source): such an mp4 was taken as the source's own pixels, scored uncropped
    (9x the Pixel-MSE), and an explicit --fit crop was dropped without a word. A video file says its pixel
    shape and is fitted (crop by default, said); images take --fit over the same-grid guess."""
    from fractions import Fraction

    from PIL import Image

    from flickerless.video import VideoWriter

    src = read(clips / "src.mp4")[0][:6]
    with VideoWriter(tmp_path / "ana.mp4", 15, crf=0, pixel_aspect=Fraction(16, 11)) as w:
        for f in src:
            w.write(f)
    dec = read(tmp_path / "ana.mp4")[0]
    shown = np.stack([np.asarray(Image.fromarray(f).resize((256, 144), Image.BICUBIC)) for f in dec])
    made = np.ascontiguousarray(shown[:, :, 40:216])  # what run makes with video.resize = "crop"
    write(tmp_path / "run.mp4", made, 15)
    write(tmp_path / "frames", made)
    scores = {}
    for name, fit in (("run.mp4", []), ("frames", ["--fit", "crop"])):
        caplog.clear()
        with caplog.at_level("WARNING", logger="flickerless"):
            assert main(["eval", "--video", str(tmp_path / name), "--source", str(tmp_path / "ana.mp4"),
                         "--metrics", "pixel_mse", "--json", str(tmp_path / "s.json"), "-q", *fit]) == 0
        scores[name] = json.loads((tmp_path / "s.json").read_text())
        assert scores[name]["info"]["source_fit"] == "crop"
        assert "stored size" not in caplog.text
        assert ("another aspect ratio" in caplog.text) == (not fit)  # the default crop is said, under -q too
    assert scores["run.mp4"]["metrics"]["pixel_mse"] < 60
    assert scores["frames"]["metrics"]["pixel_mse"] < 60


def test_eval_says_what_reading_its_inputs_leaves_out(clips, tmp_path, carphone, caplog):
    """Eval never said what the other commands say of a clip: frames lost at its start (a clip cut
    without re-encoding, whose frame 0 is then a later moment) or transparency (scored as the colours
    hidden under it). Both scored without a word."""
    from PIL import Image

    from tests.conftest import write_cut_mid_gop

    cut = write_cut_mid_gop(tmp_path, carphone[:12])
    clear = tmp_path / "clear"
    clear.mkdir()
    for i, f in enumerate(carphone[:8]):
        Image.fromarray(np.dstack([f, np.zeros(f.shape[:2], np.uint8)])).save(clear / f"{i:04d}.png")
    with caplog.at_level("WARNING", logger="flickerless"):
        assert main(["eval", "--video", str(cut), "--metrics", "clip_consistency", "--clip-model",
                     str(clips / "clip"), "-q"]) == 0
        assert main(["eval", "--video", str(clear), "--source", str(clips / "src.mp4"), "--metrics", "pixel_mse",
                     "-q"]) == 0
    said = caplog.text
    assert "cut.mp4: its first 2 frames cannot be decoded" in said
    assert "clear has transparency" in said and "scored as their RGB colours" in said
    assert "the output has none" not in said  # eval writes no video


def test_eval_maps_a_clip_over_the_memory_limit_instead_of_holding_it(clips, capsys, monkeypatch, tmp_path):
    """Both videos used to be read whole into RAM (twice over at the peak, a list then a stacked array).
    A clip over the in-memory limit is now read through a file and mapped: the same numbers, the same
    report, and nothing left in the spill folder."""
    import flickerless.video as video

    d = clips
    args = ["eval", "--video", str(d / "out.mp4"), "--source", str(d / "src.mp4"), "--metrics",
            "pixel_mse,warp_error,clip_consistency", "--clip-model", str(d / "clip"), "-q"]
    assert main(args + ["--json", str(tmp_path / "ram.json")]) == 0
    spill = tmp_path / "spill"
    spill.mkdir()
    monkeypatch.setenv("FLICKERLESS_TMPDIR", str(spill))
    monkeypatch.setattr(video, "MEMORY_LIMIT", 1000)  # every clip over it
    mapped = []
    real = video.DiskFrames.array
    monkeypatch.setattr(video.DiskFrames, "array", lambda self: mapped.append(1) or real(self))
    assert main(args + ["--json", str(tmp_path / "disk.json"), "--report", str(tmp_path / "r.html")]) == 0
    assert len(mapped) == 2  # video and source
    ram, disk = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("ram", "disk"))
    assert disk["metrics"] == ram["metrics"] and disk["per_frame"] == ram["per_frame"]
    assert (tmp_path / "r.html").stat().st_size > 1000
    assert not [p for p in spill.rglob("*") if p.is_file()]  # the frame files are gone


def test_eval_says_when_the_clips_rates_differ(clips, tmp_path, caplog, carphone):
    """Frames are compared one for one: a 30 fps output against a 15 fps source compares other moments."""
    import logging

    write(tmp_path / "fast.mp4", carphone[:8], 30)
    with caplog.at_level(logging.WARNING, logger="flickerless"):
        assert main(["eval", "--video", str(tmp_path / "fast.mp4"), "--source", str(clips / "src.mp4"),
                     "--metrics", "pixel_mse", "-q"]) == 0
    assert "30 fps and the source 15 fps" in caplog.text
    caplog.clear()
    # FID compares sets of frames, not frame t with frame t: no word of the rates; the JSON says which frames
    # of each were scored and the source's count (FIDs compare over equal counts)
    with caplog.at_level(logging.WARNING, logger="flickerless"):
        assert main(["eval", "--video", str(tmp_path / "fast.mp4"), "--frames", "2:", "--source", str(clips / "src.mp4"),
                     "--source-frames", "1:7", "--metrics", "fid", "--clip-model", str(clips / "clip"), "-q", "--json",
                     str(tmp_path / "fid.json")]) == 0
    assert "fps" not in caplog.text
    info = json.loads((tmp_path / "fid.json").read_text())["info"]
    assert (info["frames"], info["video_range"], info["source_frame_count"], info["source_range"]) == (6, [2, 8], 6, [1, 7])
    write(tmp_path / "frames", carphone[:8])  # a folder of images has no rate of its own
    with caplog.at_level(logging.WARNING, logger="flickerless"):
        assert main(["eval", "--video", str(tmp_path / "frames"), "--source", str(clips / "src.mp4"),
                     "--metrics", "pixel_mse", "-q"]) == 0
    assert "fps" not in caplog.text


def test_eval_does_not_write_its_scores_over_its_inputs(clips, tmp_path, capsys, carphone, monkeypatch):
    """--report v.mp4 replaced the video with the HTML report (exit 0); --json into an input folder's frame,
    and --json and --report at one path, likewise. Each is refused before the metrics run."""
    import shutil

    video = tmp_path / "v.mp4"
    shutil.copy(clips / "out.mp4", video)
    write(tmp_path / "frames", carphone[:8])
    before = video.read_bytes()
    base = ["eval", "--video", str(video), "--source", str(clips / "src.mp4"), "--metrics", "pixel_mse", "-q"]
    for extra, says in [(["--report", str(video)], "is the --video input"),
                        (["--json", str(clips / "src.mp4")], "is the --source input"),
                        (["--json", str(tmp_path / "s.out"), "--report", str(tmp_path / "s.out")], "both"),
                        (["--video", str(tmp_path / "frames"), "--json", str(tmp_path / "frames" / "00000.png")],
                         "is a frame of the --video folder")]:
        assert main([*base, *extra]) == 2
        assert says in capsys.readouterr().err
    assert video.read_bytes() == before and len(read(tmp_path / "frames")[0]) == 8
    # a folder it cannot write to: said before the metrics run (it was said after them, the report lost)
    locked = tmp_path / "locked"
    locked.mkdir()
    access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != locked and access(p, mode))  # root writes anywhere
    assert main([*base, "--json", str(locked / "s.json")]) == 2
    assert "is not writable" in capsys.readouterr().err


def test_eval_writes_a_long_valid_name_and_says_one_too_long_before_the_metrics(clips, tmp_path, capsys):
    """A --json name of 250 bytes (valid) failed on its temporary name's 14 bytes more, after every metric
    ran: the scores were lost. One past the file system's limit is said in words before the metrics."""
    base = ["eval", "--video", str(clips / "out.mp4"), "--source", str(clips / "src.mp4"), "--metrics", "pixel_mse", "-q"]
    out = tmp_path / ("s" * 245 + ".json")
    assert main([*base, "--json", str(out)]) == 0
    assert "pixel_mse" in json.loads(out.read_text())["metrics"] and [p.name for p in tmp_path.iterdir()] == [out.name]
    capsys.readouterr()
    assert main([*base, "--json", str(tmp_path / ("s" * 255 + ".json"))]) == 2
    err = capsys.readouterr()
    assert "the name is 260 bytes, 5 more than its file system takes (255); give a shorter name" in err.err
    assert "pixel_mse" not in err.out


@pytest.mark.parametrize("flag, limit", [("--json", 200), ("--report", 4096)])
def test_a_failed_write_leaves_the_earlier_file(clips, tmp_path, flag, limit):
    """--json and --report were written in place: a write cut short (a full disk, here a file size limit)
    left a cut-off file where the earlier results had been. Now the earlier file is kept whole."""
    import resource
    import sys

    target = tmp_path / "earlier.out"
    target.write_text('{"old": "previous results"}\n')

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    r = subprocess.run([sys.executable, "-m", "flickerless", "eval", "-q", "--video", str(clips / "out.mp4"),
                        "--source", str(clips / "src.mp4"), "--metrics", "pixel_mse,warp_error", flag, str(target)],
                       capture_output=True, text=True, preexec_fn=small_files, timeout=120)
    assert r.returncode == 2 and "cannot write" in r.stderr and "Traceback" not in r.stderr
    assert target.read_text() == '{"old": "previous results"}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["earlier.out"]  # no temporary file left
