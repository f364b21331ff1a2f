import pytest
import torch

from flickerless.diffusion import DeflickerSchedule, VideoPipeline, load_components
from flickerless.errors import InputError, ModelNotFoundError

from . import tiny_models as tiny


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny.save_pipeline(tmp_path_factory.mktemp("m") / "tiny-sd")


@pytest.fixture(scope="module")
def video(carphone):
    v = torch.from_numpy(carphone[:4, :48, :80]).permute(0, 3, 1, 2).float() / 255
    return v.contiguous()


def test_loads_local_folder_and_generates(model_dir, video):
    pipe = VideoPipeline.from_pretrained(str(model_dir), device="cpu")
    sched = DeflickerSchedule(frequency=2, window=None)
    out = pipe(video, prompt="a red cat", steps=4, strength=0.6, schedule=sched, final_window=None, seed=1)
    assert out.shape == video.shape and 0 <= out.min() and out.max() <= 1
    again = pipe(video, prompt="a red cat", steps=4, strength=0.6, schedule=sched, final_window=None, seed=1)
    assert torch.equal(out, again)
    other = pipe(video, prompt="a red cat", steps=4, strength=0.6, schedule=sched, final_window=None, seed=2)
    assert not torch.equal(out, other)


def test_text_to_video_non_square_and_per_frame_prompts(model_dir):
    pipe = VideoPipeline.from_pretrained(str(model_dir), device="cpu")
    got = []
    out = pipe(None, prompt=["a cat", "a cat", "a dog"], num_frames=3, height=24, width=40, steps=3,
               schedule=DeflickerSchedule(frequency=None), on_frame=lambda i, f: got.append((i, f)))
    assert out.shape == (3, 3, 24, 40)
    assert [i for i, _ in got] == [0, 1, 2] and all(torch.equal(f, out[i]) for i, f in got)


def test_bad_size_names_nearest_valid(model_dir):
    pipe = VideoPipeline.from_pretrained(str(model_dir), device="cpu")
    with pytest.raises(InputError, match="nearest valid size: 40x24"):
        pipe(None, num_frames=2, height=23, width=41, steps=2)


def test_steps_past_the_model_s_noise_levels_are_refused(model_dir):
    """diffusers' own ValueError came after the annotation, as a traceback."""
    pipe = VideoPipeline.from_pretrained(str(model_dir), device="cpu")
    trained = pipe.c.scheduler.config.num_train_timesteps
    with pytest.raises(InputError, match=f"steps must be 1 to {trained}"):
        pipe(None, num_frames=1, height=16, width=16, steps=trained + 1)
    with pytest.raises(InputError, match=r"deflicker steps 3 are past the 2 denoising steps .*: give deflicker steps "
                                         r"up to 2 \(--set deflicker.steps=\[...\]\)"):
        pipe(None, num_frames=1, height=16, width=16, steps=2, schedule=DeflickerSchedule(steps=[1, 3]))


def test_from_pretrained_says_a_misspelt_argument_or_missing_controlnet_before_loading(model_dir, monkeypatch, tmp_path):
    """controlnet=[...] (for controlnets) failed after the base model loaded, as __init__'s unexpected
    keyword; a missing ControlNet folder was found after it too (tens of seconds on a real model)."""
    import flickerless.diffusion.pipeline as pipeline

    loaded = []
    real = pipeline.load_components
    monkeypatch.setattr(pipeline, "load_components", lambda *a, **k: loaded.append(a) or real(*a, **k))
    with pytest.raises(TypeError, match="unknown argument 'controlnet' \\(did you mean 'controlnets'\\?\\)"):
        VideoPipeline.from_pretrained(str(model_dir), controlnet=[str(tmp_path)])
    for given in ([str(tmp_path / "no-cn")], str(tmp_path / "no-cn")):
        with pytest.raises(ModelNotFoundError, match="ControlNet '.*no-cn' not found"):
            VideoPipeline.from_pretrained(str(model_dir), controlnets=given)
    with pytest.raises(ModelNotFoundError, match="T2I-Adapter '.*no-ad' not found"):
        VideoPipeline.from_pretrained(str(model_dir), adapters=[tmp_path / "no-ad"])
    assert not loaded
    tiny.controlnet().save_pretrained(tmp_path / "cn")
    pipe = VideoPipeline.from_pretrained(str(model_dir), controlnets=tmp_path / "cn", batch_size=3)  # one, alone
    assert len(pipe.c.controlnets) == 1 and pipe.batch_size == 3 and loaded


def test_missing_model_offline_names_id_and_places(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as e:
        load_components("someone/no-such-model")
    msg = str(e.value)
    assert "someone/no-such-model" in msg and "cache" in msg and "hf download" in msg
    with pytest.raises(ModelNotFoundError, match="missing"):
        load_components(str(tmp_path / "nowhere.safetensors"))


def test_a_folder_of_the_wrong_kind_or_missing_a_part_is_named(model_dir, tmp_path, monkeypatch):
    """A UNet's folder given as a ControlNet (or a ControlNet's as a T2I-Adapter) loaded its weights onto
    nothing ("Cannot copy out of meta tensor"); a model folder without tokenizer/ loaded and failed at the
    first prompt; a LoRA repo id with the hub unreachable asked it anyway (a connection error)."""
    import shutil

    import flickerless.weights as weights
    from flickerless.diffusion.models import load_adapter, load_controlnet

    with pytest.raises(InputError, match="holds a UNet .*not a ControlNet"):
        load_controlnet(str(model_dir / "unet"))
    cn = tmp_path / "cn"
    tiny.controlnet().save_pretrained(cn)
    with pytest.raises(InputError, match="holds a ControlNet .*not a T2I-Adapter"):
        load_adapter(str(cn))
    assert load_controlnet(str(cn)).config.cross_attention_dim == tiny.controlnet().config.cross_attention_dim
    partial = tmp_path / "partial"
    shutil.copytree(model_dir, partial)
    shutil.rmtree(partial / "tokenizer")
    shutil.rmtree(partial / "vae")
    with pytest.raises(ModelNotFoundError, match="has no vae/, tokenizer/"):
        load_components(str(partial))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(weights, "_hub_reachable", lambda: False)
    for lora in ("someone/no-such-lora", "no-such-lora.safetensors"):
        with pytest.raises(ModelNotFoundError, match="LoRA"):
            load_components(str(model_dir), lora=[(lora, 1.0)])


def test_lora_file_changes_the_output(model_dir, tmp_path):
    pytest.importorskip("peft")
    tiny.save_lora(model_dir, tmp_path / "style")
    lora = str(tmp_path / "style" / "pytorch_lora_weights.safetensors")
    base = VideoPipeline.from_pretrained(str(model_dir), device="cpu")
    styled = VideoPipeline.from_pretrained(str(model_dir), device="cpu", lora=[(lora, 1.0)])
    kw = dict(num_frames=2, height=16, width=16, steps=2, schedule=DeflickerSchedule(frequency=None))
    assert (base(None, **kw) - styled(None, **kw)).abs().max() > 1e-3
    with pytest.raises(ModelNotFoundError, match="LoRA"):
        VideoPipeline.from_pretrained(str(model_dir), device="cpu", lora=[(str(tmp_path / "missing.safetensors"), 1.0)])
    # two LoRAs both named pytorch_lora_weights.safetensors (as `train` writes them): the second was "not found"
    other = tiny.save_lora(model_dir, tmp_path / "other", seed=1)
    both = VideoPipeline.from_pretrained(str(model_dir), device="cpu", lora=[(lora, 1.0), (other, 1.0)])
    assert (both(None, **kw) - styled(None, **kw)).abs().max() > 1e-3
    # a LoRA of another model's layer sizes: a torch traceback of every layer before
    from safetensors.torch import load_file, save_file

    weights = load_file(lora)
    weights = {k: (v[:, : v.shape[1] // 2].contiguous() if "lora_A" in k or "lora.down" in k else v)
               for k, v in weights.items()}
    (tmp_path / "sdxl").mkdir()
    save_file(weights, str(tmp_path / "sdxl" / "pytorch_lora_weights.safetensors"))
    with pytest.raises(InputError, match=r"does not fit the base model .*\[4, \d+\] in the LoRA, \[4, \d+\] in the model"):
        VideoPipeline.from_pretrained(str(model_dir), device="cpu", lora=[(str(tmp_path / "sdxl"), 1.0)])


def test_pipelines_on_one_set_of_models_keep_their_own_attention(model_dir, video):
    """Building a second pipeline on the same components (another cross-frame pattern, or the per-frame
    ablation) took the UNet's attention layers: the first then ran without cross-frame attention."""
    from flickerless.diffusion import load_components

    comps = load_components(str(model_dir), device="cpu")
    kw = dict(prompt="a cat", steps=2, strength=0.7, seed=0, schedule=DeflickerSchedule(frequency=None))
    a = VideoPipeline(comps)
    first = a(video, **kw)
    b = VideoPipeline(comps, cross_frame=None)
    per_frame = b(video, **kw)
    c = VideoPipeline(comps, cross_frame=("first", "self"))
    assert torch.equal(a(video, **kw), first)
    assert (c(video, **kw) - first).abs().max() > 1e-4  # its own pattern
    assert torch.equal(b(video, **kw), per_frame)  # and the per-frame one stays per frame
    assert (first - per_frame).abs().max() > 1e-3
    assert torch.equal(VideoPipeline(load_components(str(model_dir), device="cpu"), cross_frame=None)(video, **kw),
                       per_frame)


def test_what_the_engine_would_misread_or_fail_on_deep_inside(model_dir, video):
    """A numpy video, a uint8 tensor, 0-255 or [-1, 1] floats, a None prompt or seed, a float step
    count, scales for the wrong number of ControlNets and a schedule that never runs: tracebacks or
    silent misreadings before; and latents gone NaN (a guidance scale of 1e30) were written as black
    frames with exit 0."""

    pipe = VideoPipeline.from_pretrained(str(model_dir), device="cpu")
    kw = dict(prompt="a cat", steps=2, strength=0.5, schedule=DeflickerSchedule(frequency=None), seed=1)
    ref = pipe(video, **kw)
    as_bytes = (video * 255).round().to(torch.uint8)
    assert torch.allclose(pipe(as_bytes, **kw), ref, atol=1e-5)
    assert torch.allclose(pipe(as_bytes.permute(0, 2, 3, 1).numpy(), **kw), ref, atol=1e-5)
    for bad, says in [(video * 255, "0-255"), (video * 2 - 1, "(x + 1) / 2"), (video[:, :1], "3 colour channels"),
                      (video[0], "(T, 3, H, W)"), (video * float("nan"), "holding NaN")]:
        with pytest.raises(InputError, match=None) as e:
            pipe(bad, **kw)
        assert says in str(e.value)
    for arg, says in [({"seed": None}, "seed"), ({"seed": 2**64}, "seed"), ({"steps": 2.0}, "steps"),
                      ({"prompt": 3}, "prompt"), ({"guidance_scale": float("nan")}, "guidance_scale"),
                      ({"contrast": 0}, "contrast"), ({"control_scales": [1.0]}, "1 given for 0"),
                      ({"final_window": -1}, "final_window must be >= 0")]:  # was "window", after the sampling
        with pytest.raises(InputError, match=says):
            pipe(video, **{**kw, **arg})
    assert torch.equal(pipe(video, **{**kw, "prompt": None}), pipe(video, **{**kw, "prompt": ""}))
    assert torch.equal(pipe(video, **{**kw, "negative_prompt": None}), pipe(video, **{**kw, "negative_prompt": ""}))
    # a device that is not there is said before anything loads (torch's AssertionError after), and a dtype
    # given by name is used (it was ignored)
    from flickerless.errors import DeviceError

    for dev in ("cuda:7", "cuda0"):
        with pytest.raises(DeviceError, match="device"):
            VideoPipeline.from_pretrained(str(model_dir), device=dev)
    assert VideoPipeline.from_pretrained(str(model_dir), device="cpu", dtype="bfloat16").c.unet.dtype == torch.bfloat16
    with pytest.raises(InputError, match="dtype 'fp8'"):
        VideoPipeline.from_pretrained(str(model_dir), device="cpu", dtype="fp8")
    for sched in ({"frequency": -1}, {"steps": [0]}):
        with pytest.raises(InputError):
            DeflickerSchedule(**sched)
    with pytest.raises(InputError, match="went NaN or infinite"):
        pipe(video, **{**kw, "guidance_scale": 1e30})
    with pytest.raises(InputError, match="went NaN or infinite"):
        pipe(video, **{**kw, "guidance_scale": 3e38})


def test_the_download_command_is_the_installed_hubs(monkeypatch):
    """`hf download` from huggingface_hub 0.34 (1.0 dropped `huggingface-cli`), `huggingface-cli download` before."""
    import importlib.metadata

    from flickerless.weights import download_hint

    real = importlib.metadata.version
    for installed, said in (("0.33.4", "huggingface-cli download a/b"), ("0.34.0", "hf download a/b"),
                            ("1.2.0", "hf download a/b")):
        monkeypatch.setattr(importlib.metadata, "version", lambda n, v=installed: v if n == "huggingface_hub" else real(n))
        assert download_hint("a/b").endswith(f"`{said}`")
    assert download_hint("/local/folder") == ""
    # a bare name is a folder that is not there: the tool's models are owner/name, and `hf download sd15` fails
    assert "hf download" not in download_hint("sd15") and "owner/name" in download_hint("sd15")


def test_the_torchvision_to_install_is_the_one_made_for_this_torch(monkeypatch):
    """A plain `pip install torchvision` replaces a CPU torch with the newest CUDA build: the line names
    the release made for the torch installed (2.x -> 0.(x+15), the same patch)."""
    import torch

    from flickerless.weights import torchvision_install

    for installed, pin in (("2.13.0", "torchvision==0.28.0"), ("2.14.1+cu130", "torchvision==0.29.1"),
                           ("2.5.1+cpu", "torchvision==0.20.1")):
        monkeypatch.setattr(torch, "__version__", installed)
        assert torchvision_install("pytorch-fid").startswith(f"`pip install {pin} pytorch-fid`")


def test_a_scheduler_the_engine_does_not_know_is_refused_before_any_work(model_dir):
    """PNDM ran the first `steps` of its longer list of timesteps: a video that was not finished."""
    from diffusers import DDIMScheduler, EulerAncestralDiscreteScheduler, EulerDiscreteScheduler, PNDMScheduler

    pipe = VideoPipeline.from_pretrained(str(model_dir), device="cpu")
    config = pipe.c.scheduler.config
    pipe.c.scheduler = PNDMScheduler.from_config(config)
    with pytest.raises(InputError, match="PNDMScheduler is not supported by the video engine: use one of DDIM"):
        pipe(None, num_frames=2, height=16, width=16, steps=3)
    pipe.c.scheduler = EulerDiscreteScheduler.from_config(config, use_karras_sigmas=True)
    seen = []
    out = pipe(None, num_frames=2, height=16, width=16, steps=3, schedule=DeflickerSchedule(frequency=1),
               deflicker=lambda f, g, w: seen.append(f) or f, final_window=0)
    assert out.shape == (2, 3, 16, 16) and len(seen) == 3
    # DDIM's "trailing" spacing makes one timestep more at some counts: said as that, with a count that works
    # (it advised a DDIM run to use DDIM)
    # a scheduler lacking a prediction type (Euler-Ancestral's "sample"): one line, not diffusers' traceback
    pipe.c.scheduler = EulerAncestralDiscreteScheduler.from_config(config, prediction_type="sample")
    with pytest.raises(InputError, match="EulerAncestralDiscreteScheduler cannot step a model of prediction_type 'sample'"):
        pipe(None, num_frames=1, height=16, width=16, steps=2)
    pipe.c.scheduler = DDIMScheduler.from_config(config, timestep_spacing="trailing")
    with pytest.raises(InputError, match="DDIMScheduler made 62 timesteps for 61 steps \\(its timestep spacing "
                                         "'trailing' at this count\\): choose another number of steps"):
        pipe(None, num_frames=1, height=16, width=16, steps=61)


def test_a_run_continued_with_the_saved_patchmatch_fields_gives_the_uninterrupted_frames(model_dir, video):
    """Each call started an empty MatchCache: a continued run searched from scratch where the
    uninterrupted one refined its fields (up to 82 levels apart on carphone)."""
    from flickerless.blend.deflicker import MatchCache
    from flickerless.diffusion.sampler import remembering_deflicker

    pipe = VideoPipeline.from_pretrained(str(model_dir), device="cpu")
    kw = dict(prompt="a red cat", steps=4, schedule=DeflickerSchedule(frequency=2), final_window=0, seed=1)
    pm = dict(patch_sizes=(5,), iterations=2)
    full_f = remembering_deflicker(**pm)
    saved = {}
    full = pipe(video, deflicker=full_f, **kw,
                on_step=lambda s, lat: saved.setdefault(s, (lat.clone(), full_f.matches.state_dict())))
    latents, fields = saved[2]
    cache = MatchCache()
    cache.load_state_dict(fields)
    cont = pipe(video, latents=latents, start_step=2, deflicker=remembering_deflicker(matches=cache, **pm), **kw)
    assert len(cache) > 0 and torch.equal(cont, full)
    fresh = pipe(video, latents=latents, start_step=2, deflicker=remembering_deflicker(**pm), **kw)
    assert not torch.equal(fresh, full)  # the fields are what made the difference
