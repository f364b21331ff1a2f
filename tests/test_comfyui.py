"""The ComfyUI nodes (flickerless.comfyui), loaded and run the way ComfyUI loads and runs custom nodes, with
ComfyUI's own modules (comfy.utils, comfy.model_management) stood in for where a test needs them."""

import importlib.util
import logging
import sys
import types

import numpy as np
import pytest
import torch

from flickerless import comfyui, deflicker
from flickerless.cli import main
from flickerless.errors import InputError
from flickerless.synthetic import flickering_pair, psnr, temporal_error

from .conftest import shaken_matte

FAST = {"quality": "draft"}


@pytest.fixture(scope="module")
def images(small_clip):
    """guide, truth and flickering style as ComfyUI IMAGE batches: (B, H, W, 3) float32 in [0, 1]."""
    truth, flick = flickering_pair(small_clip)
    return tuple(torch.from_numpy(a).float() / 255 for a in (small_clip, truth, flick))


def _uint8(img: torch.Tensor) -> np.ndarray:
    return (img.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def _run(cls, **given):
    """What ComfyUI does with a node of the graph: every widget it is not given set to its default (each
    checked as ComfyUI's validation checks it), the node made and its FUNCTION called."""
    spec = cls.INPUT_TYPES()
    kwargs = {}
    for section in ("required", "optional"):
        for name, (kind, *rest) in spec.get(section, {}).items():
            opts = rest[0] if rest else {}
            if name in given:
                value = given[name]
            elif kind in ("IMAGE", "MASK"):
                assert section == "optional", f"{name} is a required link"
                continue
            else:
                value = opts["default"]
            if isinstance(kind, list):
                assert value in kind, (name, value, kind)
            elif kind == "INT":
                assert opts.get("min", -np.inf) <= value <= opts.get("max", np.inf), (name, value)
            kwargs[name] = value
    out = getattr(cls(), cls.FUNCTION)(**kwargs)
    assert isinstance(out, tuple) and len(out) == len(cls.RETURN_TYPES)
    return out


class Interrupted(Exception):
    """Stands for comfy.model_management.InterruptProcessingException."""


@pytest.fixture
def comfy(monkeypatch):
    """ComfyUI's modules as the nodes use them: a progress bar that records, a device, a Cancel that can be
    pressed after a number of progress reports, and the cache release."""
    state = types.SimpleNamespace(bars=[], device=torch.device("cpu"), cancel_after=None, reports=0, released=0,
                                  asked_device=0)

    class ProgressBar:
        def __init__(self, total):
            self.total, self.values = total, []
            state.bars.append(self)

        def update_absolute(self, value, total=None, preview=None):
            self.values.append((value, total))

    def get_torch_device():
        state.asked_device += 1
        return state.device

    def throw_exception_if_processing_interrupted():
        state.reports += 1
        if state.cancel_after is not None and state.reports > state.cancel_after:
            raise Interrupted()

    def soft_empty_cache(force=False):
        state.released += 1

    pkg = types.ModuleType("comfy")
    utils = types.ModuleType("comfy.utils")
    utils.ProgressBar = ProgressBar
    mm = types.ModuleType("comfy.model_management")
    mm.get_torch_device = get_torch_device
    mm.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted
    mm.soft_empty_cache = soft_empty_cache
    mm.InterruptProcessingException = Interrupted
    pkg.utils, pkg.model_management = utils, mm
    for name, mod in (("comfy", pkg), ("comfy.utils", utils), ("comfy.model_management", mm)):
        monkeypatch.setitem(sys.modules, name, mod)
    return state


def test_command_writes_a_custom_node_that_comfyui_loads(tmp_path, capsys):
    root = tmp_path / "ComfyUI"
    (root / "custom_nodes").mkdir(parents=True)
    assert main(["comfyui", str(root)]) == 0
    path = root / "custom_nodes" / "flickerless_nodes.py"
    # as ComfyUI's load_custom_node loads a single-file node: from its path, by spec
    spec = importlib.util.spec_from_file_location("flickerless_nodes", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert set(module.NODE_CLASS_MAPPINGS) == {"FlickerlessDeflicker", "FlickerlessKeyframes"}
    assert set(module.NODE_DISPLAY_NAME_MAPPINGS) == set(module.NODE_CLASS_MAPPINGS)
    for cls in module.NODE_CLASS_MAPPINGS.values():
        spec = cls.INPUT_TYPES()
        assert "required" in spec and cls.RETURN_TYPES == ("IMAGE", "MASK") and callable(getattr(cls, cls.FUNCTION))
        for section in spec.values():
            for name, (kind, *rest) in section.items():
                if isinstance(kind, list):  # a combo's default must be one of its values, or ComfyUI refuses it
                    assert rest[0]["default"] in kind, name
    # given custom_nodes itself, and again: the file is replaced, nothing else is left beside it
    assert main(["comfyui", str(root / "custom_nodes")]) == 0
    assert sorted(p.name for p in (root / "custom_nodes").iterdir()) == ["flickerless_nodes.py"]


@pytest.mark.parametrize("folder, said", [("missing", "no such folder"), ("plain", "not a ComfyUI folder")])
def test_command_refuses_a_folder_that_is_not_comfyui(tmp_path, capsys, folder, said):
    (tmp_path / "plain").mkdir()
    assert main(["comfyui", str(tmp_path / folder)]) == 2
    err = capsys.readouterr().err
    assert said in err and "custom_nodes" in err and "Traceback" not in err


def test_command_says_when_the_node_cannot_be_written(tmp_path, capsys, monkeypatch):
    (tmp_path / "custom_nodes").mkdir()

    def refuse(self, *a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(comfyui.Path, "write_text", refuse)
    assert main(["comfyui", str(tmp_path)]) == 2
    assert "cannot write" in capsys.readouterr().err
    assert list((tmp_path / "custom_nodes").iterdir()) == []


def test_deflicker_node_is_the_api_on_comfyui_images(images):
    guide, truth, flick = images
    out, _ = _run(comfyui.Deflicker, guide=guide, style=flick, quality="draft", device="cpu")
    assert out.shape == flick.shape and out.dtype == torch.float32 and out.is_contiguous()
    ref = deflicker(guide.permute(0, 3, 1, 2), flick.permute(0, 3, 1, 2), device="cpu", **FAST)
    assert torch.equal(out, ref.permute(0, 2, 3, 1))
    t, f, o = _uint8(truth), _uint8(flick), _uint8(out)
    assert temporal_error(o, t) < temporal_error(f, t) / 4 and psnr(o, t) > psnr(f, t) + 3
    # window mode and the whole shot are the same API calls
    win, _ = _run(comfyui.Deflicker, guide=guide, style=flick, mode="window", window=2, quality="draft", device="cpu")
    ref = deflicker(guide.permute(0, 3, 1, 2), flick.permute(0, 3, 1, 2), mode="window", window=2, device="cpu",
                    **FAST)
    assert torch.equal(win, ref.permute(0, 2, 3, 1))
    whole, _ = _run(comfyui.Deflicker, guide=guide, style=flick, window=2, whole_video=True, quality="draft",
                    device="cpu")
    ref = deflicker(guide.permute(0, 3, 1, 2), flick.permute(0, 3, 1, 2), window=None, device="cpu", **FAST)
    assert torch.equal(whole, ref.permute(0, 2, 3, 1))
    two, _ = _run(comfyui.Deflicker, guide=guide, style=flick, window=2, quality="draft", device="cpu")
    assert not torch.equal(whole, two)  # the window is what whole_video replaces


def test_keyframes_node_keeps_its_keyframes_and_renders_between(images):
    guide, truth, _ = images
    keys = truth[[0, 6]]
    out, _ = _run(comfyui.Keyframes, guide=guide, keyframes=keys, indices="0, 6", quality="draft", device="cpu")
    assert out.shape == guide.shape
    assert torch.allclose(out[0], keys[0], atol=1e-6) and torch.allclose(out[6], keys[1], atol=1e-6)
    assert psnr(_uint8(out[1:6]), _uint8(truth[1:6])) > 28
    # the indices given in another order than the images are the other keyframes
    swapped, _ = _run(comfyui.Keyframes, guide=guide, keyframes=keys[[1, 0]], indices="6 0", quality="draft",
                      device="cpu")
    assert torch.equal(swapped, out)


@pytest.mark.parametrize("indices, said", [
    ("0, six", "'six' is not a frame number"),
    ("0", "1 frame numbers for 2 keyframe images"),
    ("0, 4, 8", "3 frame numbers for 2"),
    ("0, 10", "frame 10 is past the guide's last frame, 9"),
    ("3, 3", "frame 3 is given twice"),
    ("-1, 4", "'-1' is not a frame number"),
])
def test_keyframes_node_says_what_is_wrong_with_the_indices(images, indices, said):
    guide, truth, _ = images
    with pytest.raises(InputError, match=said):
        _run(comfyui.Keyframes, guide=guide, keyframes=truth[[0, 6]], indices=indices, device="cpu")


def test_nodes_say_what_is_wrong_with_the_images(images):
    guide, truth, flick = images
    with pytest.raises(InputError, match="guide has 10 frames but style has 9"):
        _run(comfyui.Deflicker, guide=guide, style=flick[:9], device="cpu")
    small = flick[:, :32, :40]
    with pytest.raises(InputError, match=r"guide is 80x64 but style is 40x32: .*Upscale Image node on the style, "
                                         r"to 80x64"):
        _run(comfyui.Deflicker, guide=guide, style=small, device="cpu")
    with pytest.raises(InputError, match=r"guide is 80x64 but keyframes is 40x32"):
        _run(comfyui.Keyframes, guide=guide, keyframes=small[:1], indices="0", device="cpu")
    with pytest.raises(InputError, match=r"style: expected an IMAGE batch \(B, H, W, 3\), or RGBA \(B, H, W, 4\), got \(10, 3, 64, 80\)"):
        _run(comfyui.Deflicker, guide=guide, style=flick.permute(0, 3, 1, 2), device="cpu")  # (B, C, H, W)


def test_in_comfyui_the_run_shows_progress_on_its_device_and_frees_its_cache(images, comfy):
    guide, _, flick = images
    out, _ = _run(comfyui.Deflicker, guide=guide, style=flick, quality="draft")  # device "auto"
    assert comfy.asked_device == 1 and comfy.released == 1
    (bar,) = comfy.bars
    done = [v for v, _ in bar.values]
    assert done[0] == 0 and done[-1] == bar.total > 0 and done == sorted(done)
    assert comfy.reports == len(bar.values)  # Cancel looked at with every report
    ref = deflicker(guide.permute(0, 3, 1, 2), flick.permute(0, 3, 1, 2), device="cpu", **FAST)
    assert torch.equal(out, ref.permute(0, 2, 3, 1))


@pytest.mark.parametrize("node", ["deflicker", "keyframes"])
def test_comfyuis_cancel_stops_the_run(images, comfy, node):
    guide, truth, flick = images
    comfy.cancel_after = 2
    with pytest.raises(Interrupted):
        if node == "deflicker":
            _run(comfyui.Deflicker, guide=guide, style=flick, quality="draft")
        else:
            _run(comfyui.Keyframes, guide=guide, keyframes=truth[[0, 9]], indices="0 9", quality="draft")
    assert comfy.reports == 3  # stopped at the report after the second: no more pairs were remapped
    assert comfy.released == 1  # the GPU cache is given back on the way out too


def test_auto_device_a_comfyui_device_flickerless_cannot_use_runs_on_the_cpu(images, comfy, caplog):
    guide, _, flick = images
    comfy.device = torch.device("xpu")
    with caplog.at_level(logging.WARNING, logger="flickerless"):
        out, _ = _run(comfyui.Deflicker, guide=guide[:3], style=flick[:3], quality="draft")
    assert "ComfyUI runs on xpu, which flickerless does not: deflickering on the CPU" in caplog.text
    assert out.device.type == "cpu" and out.shape == flick[:3].shape


def test_progress_callable_reports_each_batch_and_can_stop_the_run(images):
    guide, _, flick = images
    g, s = guide.permute(0, 3, 1, 2), flick.permute(0, 3, 1, 2)
    for mode, window in (("table", 15), ("window", 3), ("all_pairs", None)):
        calls = []
        out = deflicker(g, s, mode=mode, window=window, device="cpu", batch=2,
                        progress=lambda done, total: calls.append((done, total)), **FAST)
        total = calls[0][1]
        assert calls[0] == (0, total) and calls[-1] == (total, total) and total > 0, mode
        assert all(a[0] < b[0] and b[1] == total for a, b in zip(calls, calls[1:])), mode
        assert torch.equal(out, deflicker(g, s, mode=mode, window=window, device="cpu", batch=2, **FAST))

    class Stop(Exception):
        pass

    seen = []

    def stop_at_third(done, total):
        seen.append(done)
        if len(seen) == 3:
            raise Stop

    with pytest.raises(Stop):
        deflicker(g, s, device="cpu", batch=2, progress=stop_at_third, **FAST)
    assert len(seen) == 3


@pytest.fixture(scope="module")
def mattes(small_clip):
    """A soft matte of the clip as ComfyUI MASKs (B, H, W): as it should be, and as a background remover
    run frame by frame draws it (its edge moved 1-3 px in or out, anew each frame)."""
    truth, shaken = shaken_matte(small_clip)
    return tuple(torch.from_numpy(m).float() / 255 for m in (truth, shaken))


def test_deflicker_node_blends_a_mask_with_the_style(images, mattes):
    guide, truth, flick = images
    matte, shaken = mattes
    plain, empty = _run(comfyui.Deflicker, guide=guide, style=flick, quality="draft", device="cpu")
    out, mask = _run(comfyui.Deflicker, guide=guide, style=flick, style_mask=shaken, quality="draft", device="cpu")
    assert torch.equal(out, plain)  # the colour exactly as without a mask
    assert mask.shape == matte.shape and mask.dtype == torch.float32 and not torch.equal(mask, shaken)
    assert torch.equal(empty, torch.zeros_like(matte))  # no mask given: Load Image's "no alpha"
    t, s, m = (_uint8(x[..., None].expand(-1, -1, -1, 3)) for x in (matte, shaken, mask))
    assert temporal_error(m, t) < temporal_error(s, t) / 3, (temporal_error(m, t), temporal_error(s, t))
    # blended linearly: a mask of the other sense (Load Image's, 1 where transparent) comes out in that sense
    _, inverse = _run(comfyui.Deflicker, guide=guide, style=flick, style_mask=1 - shaken, quality="draft",
                      device="cpu")
    # (to half a uint8 step: what is kept between passes is float16, finer near 0 than near 1)
    assert (inverse - (1 - mask)).abs().max() < 0.5 / 255
    # one mask for every frame
    _, one = _run(comfyui.Deflicker, guide=guide, style=flick, style_mask=matte[0], quality="draft", device="cpu")
    assert one.shape == matte.shape


def test_keyframes_node_carries_keyframe_masks(images, mattes):
    guide, truth, _ = images
    matte, _ = mattes
    out, mask = _run(comfyui.Keyframes, guide=guide, keyframes=truth[[0, 6]], keyframe_masks=matte[[0, 6]],
                     indices="0, 6", quality="draft", device="cpu")
    assert torch.allclose(mask[0], matte[0], atol=1e-6) and torch.allclose(mask[6], matte[6], atol=1e-6)
    assert ((mask[1:6] > 0.5) == (matte[1:6] > 0.5)).float().mean() > 0.9
    plain, _ = _run(comfyui.Keyframes, guide=guide, keyframes=truth[[0, 6]], indices="0, 6", quality="draft",
                    device="cpu")
    assert torch.equal(out, plain)


def test_nodes_say_what_is_wrong_with_a_mask(images, mattes):
    guide, truth, flick = images
    matte, _ = mattes
    with pytest.raises(InputError, match="style_mask is 40x32 but its images are 80x64"):
        _run(comfyui.Deflicker, guide=guide, style=flick, style_mask=matte[:, :32, :40], device="cpu")
    with pytest.raises(InputError, match="style_mask has 3 masks for 10 images"):
        _run(comfyui.Deflicker, guide=guide, style=flick, style_mask=matte[:3], device="cpu")
    with pytest.raises(InputError, match=r"keyframe_masks: expected a MASK \(B, H, W\), got \(2, 64, 80, 3\)"):
        _run(comfyui.Keyframes, guide=guide, keyframes=truth[[0, 6]], keyframe_masks=truth[[0, 6]], indices="0 6",
             device="cpu")
    rgba = torch.cat([flick, matte[..., None]], -1)
    with pytest.raises(InputError, match="carry alpha already"):
        _run(comfyui.Deflicker, guide=guide, style=rgba, style_mask=matte, device="cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="ComfyUI's device is a GPU only where there is one")
def test_in_comfyui_on_a_gpu_the_images_come_back_to_the_host(images, comfy, monkeypatch):
    guide, truth, flick = images
    comfy.device = torch.device("cuda", torch.cuda.device_count() - 1)
    core = importlib.import_module("flickerless.blend.deflicker")  # (the package's `deflicker` is the function)

    ran_on = []
    real = core.run_deflicker
    monkeypatch.setattr(core, "run_deflicker", lambda *a, **k: ran_on.append(k["device"]) or real(*a, **k))
    out, mask = _run(comfyui.Deflicker, guide=guide, style=flick, style_mask=flick[..., 0], quality="draft")
    assert ran_on == [comfy.device] and out.device.type == "cpu" and mask.device.type == "cpu"
    cpu, _ = _run(comfyui.Deflicker, guide=guide, style=flick, quality="draft", device="cpu")
    assert psnr(_uint8(out), _uint8(cpu)) > 40  # the Triton and numba kernels run the same passes
    assert comfy.bars[0].values[-1][0] == comfy.bars[0].total


def test_nodes_run_in_a_worker_thread_as_comfyui_runs_them(images, mattes):
    """ComfyUI executes a graph in a thread of its own, under torch.inference_mode."""
    import threading

    guide, truth, flick = images
    got = {}

    def work():
        try:
            with torch.inference_mode():
                got["deflicker"] = _run(comfyui.Deflicker, guide=guide, style=flick, style_mask=mattes[1],
                                        quality="draft", device="cpu")
                got["keyframes"] = _run(comfyui.Keyframes, guide=guide, keyframes=truth[[0, 9]], indices="0 9",
                                        quality="draft", device="cpu")
        except BaseException as e:  # noqa: BLE001 - handed to the test's thread
            got["error"] = e

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    assert "error" not in got, got.get("error")
    out, mask = got["deflicker"]
    ref, ref_mask = _run(comfyui.Deflicker, guide=guide, style=flick, style_mask=mattes[1], quality="draft",
                         device="cpu")
    assert torch.equal(out, ref) and torch.equal(mask, ref_mask)
    assert got["keyframes"][0].shape == guide.shape


def test_what_is_wrong_with_a_mask_is_said_of_the_mask(images, mattes):
    """A mask is checked as a mask, before it joins the images as a channel (where the images' checks blamed the
    images for it, and told a user of a uint8 mask to pass uint8)."""
    guide, truth, flick = images
    matte = mattes[0]
    cases = [((matte * 255).to(torch.uint8), r"style_mask: an integer mask holding values from 0 to 255; a MASK is "
                                             r"floats in \[0, 1\] \(divide a 0-255 mask by 255\)"),
             (matte * 255, r"style_mask: a MASK is floats in \[0, 1\], this one ranges from 0 to 255 \(divide"),
             (matte * 2 - 1, r"style_mask: a MASK is floats in \[0, 1\], this one ranges from -1 to 1$"),
             (torch.where(matte > 0.5, torch.nan, matte), "style_mask holds NaN or infinite values")]
    for mask, said in cases:
        with pytest.raises(InputError, match=said):
            _run(comfyui.Deflicker, guide=guide, style=flick, style_mask=mask, device="cpu")
    with pytest.raises(InputError, match="keyframe_masks holds NaN"):
        _run(comfyui.Keyframes, guide=guide, keyframes=truth[[0, 6]], indices="0 6", device="cpu",
             keyframe_masks=torch.full_like(matte[[0, 6]], torch.nan))
    # bool, and integers 0 and 1, are masks as they are
    want = _run(comfyui.Deflicker, guide=guide, style=flick, style_mask=(matte > 0.5).float(), **FAST, device="cpu")
    for mask in ((matte > 0.5), (matte > 0.5).to(torch.uint8)):
        got = _run(comfyui.Deflicker, guide=guide, style=flick, style_mask=mask, **FAST, device="cpu")
        assert torch.equal(got[1], want[1])


def test_rgba_images_give_their_alpha_as_the_mask(images, mattes):
    guide, truth, flick = images
    rgba = torch.cat([flick, mattes[1][..., None]], -1)
    out, mask = _run(comfyui.Deflicker, guide=guide, style=rgba, **FAST, device="cpu")
    rgb, blended = _run(comfyui.Deflicker, guide=guide, style=flick, style_mask=mattes[1], **FAST, device="cpu")
    assert out.shape == rgba.shape and torch.equal(out[..., :3], rgb) and torch.equal(mask, blended)
    assert torch.equal(out[..., 3], mask)


def test_nodes_refuse_empty_batches_and_frames(images):
    guide, truth, flick = images
    with pytest.raises(InputError, match="guide: the IMAGE batch is empty"):
        _run(comfyui.Keyframes, guide=guide[:0], keyframes=truth[:1], indices="0", device="cpu")
    with pytest.raises(InputError, match="guide: frames of 80x0 pixels have nothing to deflicker"):
        _run(comfyui.Deflicker, guide=guide[:, :0], style=flick[:, :0], device="cpu")
    # the API says so too, for tensors and arrays
    with pytest.raises(InputError, match="frames of 0x64 pixels"):
        deflicker(np.zeros((3, 64, 0, 3), np.uint8), np.zeros((3, 64, 0, 3), np.uint8), device="cpu")


@pytest.mark.parametrize("given", ["yes", 2.5, object()])
def test_progress_that_is_neither_a_flag_nor_a_function_is_refused(images, given):
    """A bar object passed as it is (a tqdm, ComfyUI's ProgressBar) was read as True: a bar of its own, the
    caller's never moved."""
    guide, _, flick = images
    with pytest.raises(InputError, match=r"progress: True \(a progress bar\), False, or a function"):
        deflicker(guide[:3].permute(0, 3, 1, 2), flick[:3].permute(0, 3, 1, 2), device="cpu", progress=given, **FAST)


def test_command_takes_a_link_to_custom_nodes_and_says_a_file_is_not_a_folder(tmp_path, capsys):
    (tmp_path / "ComfyUI" / "custom_nodes").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "ComfyUI" / "custom_nodes")
    assert main(["comfyui", str(tmp_path / "link")]) == 0
    assert (tmp_path / "ComfyUI" / "custom_nodes" / "flickerless_nodes.py").is_file()
    (tmp_path / "main.py").write_text("")
    assert main(["comfyui", str(tmp_path / "main.py")]) == 2
    assert "main.py: a file, not a folder" in capsys.readouterr().err


def test_command_on_a_read_only_file_system_says_it_cannot_write(tmp_path, capsys, monkeypatch):
    """Where the temporary file cannot be written, its removal fails as well (EROFS): that second error
    escaped, naming the hidden temporary file."""
    import errno

    (tmp_path / "custom_nodes").mkdir()

    def read_only(self, *a, **k):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(comfyui.Path, "write_text", read_only)
    monkeypatch.setattr(comfyui.Path, "unlink", read_only)
    assert main(["comfyui", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "cannot write" in err and "flickerless_nodes.py: Read-only file system" in err and ".tmp" not in err


def test_exposure_match_reaches_the_api(images):
    """On a clip that fades, a run with exposure matching is the API's run with it, and not the run without."""
    guide, truth, _ = images
    fade = torch.linspace(1, 0.5, len(guide))[:, None, None, None]
    g, t = guide * fade, truth * fade
    for node, kw, api in ((comfyui.Deflicker, {"style": t}, {"style": t.permute(0, 3, 1, 2)}),
                          (comfyui.Keyframes, {"keyframes": t[[0, 9]], "indices": "0 9"},
                           {"style": None, "mode": "keyframes", "keyframes": {0: t[0].permute(2, 0, 1),
                                                                              9: t[9].permute(2, 0, 1)}})):
        matched, _ = _run(node, guide=g, exposure_match=True, **kw, **FAST, device="cpu")
        plain, _ = _run(node, guide=g, **kw, **FAST, device="cpu")
        ref = deflicker(g.permute(0, 3, 1, 2), exposure_match=True, device="cpu", **api, **FAST)
        assert torch.equal(matched, ref.permute(0, 2, 3, 1)) and not torch.equal(matched, plain), node
