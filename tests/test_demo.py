"""`flickerless demo --engine`: the stylize task with the committed tiny model on a held-out real clip."""

from pathlib import Path

import pytest

from flickerless.cli import main
from flickerless.demo import run_engine_demo, tiny_model_dir
from flickerless.video import read


@pytest.mark.skipif(tiny_model_dir() is None, reason="needs the source checkout's tests/fixtures/tiny_sd")
def test_engine_demo_writes_both_runs_and_a_report(tmp_path, capsys):
    res = run_engine_demo(tmp_path, frames=4, progress=False)
    for name in ("stylized", "per_frame"):
        frames = read(tmp_path / f"{name}.mp4")[0]
        assert frames.shape[0] == 4 and res[name]["pixel_mse"] > 0
    assert res["per_frame"]["pixel_mse"] > res["stylized"]["pixel_mse"]  # the method steadies the video
    html = (tmp_path / "report.html").read_text()
    assert "<svg" in html and "data:image/png;base64" in html
    assert "lower)" in capsys.readouterr().out


def test_engine_demo_without_the_model_says_what_to_do(tmp_path, capsys, monkeypatch):
    assert main(["demo", "--engine", "--model", str(tmp_path / "none"), "--out", str(tmp_path), "-q"]) == 2
    assert f"--model {tmp_path / 'none'}: no such folder" in capsys.readouterr().err
    assert main(["demo", "--engine", "--model", str(tmp_path), "--out", str(tmp_path), "-q"]) == 2
    assert "no stylize.toml there" in capsys.readouterr().err
    # installed from a wheel, the package is not in a checkout: the model is found in the working directory
    import flickerless.demo as demo

    monkeypatch.setattr(demo, "__file__", str(tmp_path / "site-packages" / "flickerless" / "demo.py"))
    monkeypatch.chdir(tmp_path)
    assert demo.tiny_model_dir() is None
    assert main(["demo", "--engine", "--out", str(tmp_path / "o"), "-q"]) == 2
    assert "a pip-installed wheel does not carry it" in capsys.readouterr().err
    checkout = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(checkout)
    assert demo.tiny_model_dir() == checkout / "tests" / "fixtures" / "tiny_sd"


@pytest.mark.parametrize("args, says", [
    (["--frames", "1"], "give 2 or more"),  # was NaN metrics and exit 0
    (["--engine", "--frames", "1"], "give 2 or more"),  # was refused only after generating
    (["--engine", "--width", "64", "--window", "3"], "--width, --window: for the deflicker demo"),  # were ignored
    (["--engine", "--style", "foo"], "knows photo, sketch, sepia, invert, cartoon, neon"),  # was accepted
    (["--style", "neon"], "--style: for the engine demo; add --engine"),  # the deflicker demo ran, rc 0
    (["--model", "m", "--style", "neon"], "--style, --model: for the engine demo"),
])
def test_demo_refuses_what_it_cannot_show(tmp_path, capsys, args, says):
    assert main(["demo", *args, "--out", str(tmp_path), "-q"]) == 2
    assert says in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # before any work


def test_demo_keeps_the_clips_shape_as_shown_and_makes_no_folder_for_a_missing_clip(tmp_path, capsys):
    from flickerless import video
    from flickerless.demo import registry_clip

    # carphone's pixels are 128/117 as wide as high: shown 193x144, so 64 wide is 48 high (52 from its
    # stored 176x144 looked 9% narrower than the original)
    out = tmp_path / "o"
    assert main(["demo", "--video", str(registry_clip("carphone_pristine.mp4")), "--frames", "3", "--width", "64",
                 "--mode", "window", "--window", "1", "--device", "cpu", "--out", str(out), "-q"]) == 0
    info = video.probe(out / "demo.mp4")
    assert (info.height, info.width) == (48, 64)
    assert main(["demo", "--video", str(tmp_path / "nope.mp4"), "--out", str(tmp_path / "p"), "-q"]) == 2
    assert "nope.mp4" in capsys.readouterr().err and not (tmp_path / "p").exists()  # was left empty
