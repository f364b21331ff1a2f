"""The torchvision-backed metric paths: RAFT flow and pytorch-fid's Inception FID.

They need a torchvision built for the installed torch (and pytorch-fid), which this project's CPU
torch cannot have: in CI these tests skip and say why. Weights are random here (no hub): the tests
check that the real loading and inference paths run and keep their contracts, not the values."""

import numpy as np
import pytest
import torch


def _need(module):
    try:
        return __import__(module, fromlist=["_"])
    except Exception as e:  # noqa: BLE001 - ImportError, or a torchvision built for another torch
        pytest.skip(f"{module} not usable with this torch ({type(e).__name__}): the RAFT/Inception paths are "
                    "checked in an environment with torchvision (see BENCHMARKS.md)")


def test_raft_flow_from_a_weights_file_and_pixel_mse(tmp_path, carphone):
    _need("torchvision")
    from torchvision.models.optical_flow import raft_large

    from flickerless.metrics import pixel_mse
    from flickerless.metrics.flow import get_flow

    torch.manual_seed(0)
    weights = tmp_path / "raft.pth"
    torch.save(raft_large(weights=None).state_dict(), weights)
    flow = get_flow("raft", raft_weights=str(weights), device="cpu")
    a, b = carphone[0, :60, :70], carphone[1, :60, :70]  # not multiples of 8: padded and cropped back
    f = flow(a, b)
    assert f.shape == (60, 70, 2) and f.dtype == np.float32 and np.isfinite(f).all()
    np.testing.assert_array_equal(f, flow(a, b))  # deterministic
    clip = carphone[:3]
    score = pixel_mse(clip, clip, flow=flow)
    assert np.isfinite(score.value) and score.value >= 0 and len(score.per_pair) == 2
    bad = tmp_path / "bad.pth"
    torch.save({"x": torch.zeros(1)}, bad)
    from flickerless.errors import ModelNotFoundError

    with pytest.raises(ModelNotFoundError, match="not a raft_large state dict"):
        get_flow("raft", raft_weights=str(bad))


def test_inception_fid_with_weights_in_the_hub_cache(tmp_path, monkeypatch, carphone):
    _need("torchvision")
    pi = _need("pytorch_fid.inception")
    import torchvision

    from flickerless.metrics import fid

    # a randomly initialised TF-Inception under pytorch-fid's file name in a private hub cache
    monkeypatch.setattr(torchvision.models.Inception3, "load_state_dict", lambda self, *a, **k: None)
    monkeypatch.setattr(pi, "load_state_dict_from_url", lambda *a, **k: {})
    torch.manual_seed(0)
    state = pi.fid_inception_v3().state_dict()
    monkeypatch.undo()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(state, cache / pi.FID_WEIGHTS_URL.rsplit("/", 1)[1])
    a, b = carphone[:6], carphone[6:12, ::-1]
    same = fid(a, a, features="inception", device="cpu")
    other = fid(a, b, features="inception", device="cpu")
    assert other > 0 and abs(same) < 1e-3 * other  # a set against itself ~0
