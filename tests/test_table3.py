"""benchmarks/table3.py runs the paper's protocol end to end on tiny random models."""

import importlib.util
import json
from pathlib import Path

from flickerless.demo import registry_clip


def test_table3_protocol_on_tiny_models(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # --tiny sets it; restored after the test
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "table3.py"
    spec = importlib.util.spec_from_file_location("table3", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    clip = registry_clip("carphone_pristine.mp4")
    assert mod.main(["--tiny", "--videos", str(clip), "--frames", "0:5", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "results.json").read_text())
    ours, ablation = rows["flickerless"][0], rows["per frame (ablation)"][0]
    for r in (ours, ablation):  # Pixel-MSE and CLIP score (tiny random CLIP) measured; aesthetic has no weights
        assert r["video"] == clip.name and r["pixel_mse"] > 0 and 0 <= r["clip"] <= 100
        assert "aesthetic" in r["skipped"] and r["s_per_frame"] > 0
    assert (tmp_path / "carphone_pristine.ours.mp4").exists() and (tmp_path / "carphone_pristine.ablation.mp4").exists()
    # the ablation really is another run: no cross-frame attention, no deflicker
    settings = (tmp_path / "carphone_pristine.ablation.job" / "settings.toml").read_text()
    assert "cross_frame = []" in settings and "frequency = 0" in settings
    out = capsys.readouterr().out
    assert "| flickerless |" in out and "| per frame (ablation) |" in out and "aesthetic: skipped" in out
