"""Single-file (original LDM / A1111 layout) checkpoints: export, load back, textual inversion."""

import os
import stat

import pytest
import torch
from safetensors.torch import load_file, save_file

from flickerless.cli import main
from flickerless.diffusion import Components, DeflickerSchedule, VideoPipeline, load_components
from flickerless.diffusion.export import ldm_state_dict, save_single_file, text_encoder_to_ldm, unet_to_ldm, vae_to_ldm
from flickerless.diffusion.models import expand_embedding_tokens
from flickerless.errors import InputError, ModelNotFoundError

from . import tiny_models as tiny

PARTS = ("unet", "vae", "text_encoder")
PREFIXES = ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.transformer.")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny.save_pipeline(tmp_path_factory.mktemp("m") / "tiny-sd")


@pytest.fixture(scope="module")
def checkpoint(model_dir, tmp_path_factory):
    return save_single_file(str(model_dir), tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


@pytest.fixture(scope="module")
def folder_components(model_dir):
    return load_components(str(model_dir))


def assert_same_weights(a, b):
    for name in PARTS:
        sa, sb = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        assert sa.keys() == sb.keys(), name
        for k in sa:
            assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), f"{name}.{k}"


def test_checkpoint_has_the_original_layout(checkpoint):
    sd = load_file(checkpoint)
    assert all(k.startswith(PREFIXES) for k in sd)
    assert not [k for k in sd if "down_blocks" in k or "up_blocks" in k or "mid_block" in k or "to_out.0" in k
                and k.startswith("first_stage_model.")]
    u, v, c = PREFIXES
    # tiny UNet: level 0 = resnet+attention, downsampler; level 1 = resnet; up: 2 resnets, upsampler; 2 resnets+attn
    for key in ["input_blocks.0.0.weight", "input_blocks.1.0.in_layers.0.weight", "input_blocks.1.0.emb_layers.1.weight",
                "input_blocks.1.1.proj_in.weight", "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
                "input_blocks.2.0.op.weight", "input_blocks.3.0.skip_connection.weight", "time_embed.0.weight",
                "time_embed.2.bias", "middle_block.0.out_layers.3.weight", "middle_block.1.norm.weight",
                "middle_block.2.in_layers.2.bias", "output_blocks.1.1.conv.weight", "output_blocks.3.1.proj_out.weight",
                "output_blocks.3.0.skip_connection.weight", "out.0.weight", "out.2.bias"]:
        assert u + key in sd, key
    assert not any(k.startswith(u + "output_blocks.4") or k.startswith(u + "input_blocks.4") for k in sd)
    assert sd[u + "out.2.weight"].shape == (4, 16, 3, 3)
    # VAE: decoder levels reversed, mid attention as 1x1 convs
    for key in ["encoder.down.0.downsample.conv.weight", "encoder.down.1.block.0.nin_shortcut.weight",
                "encoder.norm_out.weight", "decoder.up.1.upsample.conv.weight", "decoder.up.0.block.0.nin_shortcut.weight",
                "decoder.up.0.block.1.conv2.weight", "decoder.mid.block_2.norm1.weight", "quant_conv.weight",
                "post_quant_conv.bias"]:
        assert v + key in sd, key
    assert not any(k.startswith((v + "encoder.down.1.downsample", v + "decoder.up.0.upsample")) for k in sd)
    for part in ("encoder", "decoder"):
        for name in ("q", "k", "v", "proj_out"):
            assert sd[f"{v}{part}.mid.attn_1.{name}.weight"].shape == (32, 32, 1, 1)
        assert sd[f"{v}{part}.mid.attn_1.norm.weight"].shape == (32,)
    assert sd[c + "text_model.embeddings.token_embedding.weight"].shape == (64, 16)
    assert torch.equal(sd[c + "text_model.embeddings.position_ids"], torch.arange(12)[None])
    assert c + "text_model.final_layer_norm.weight" in sd


def test_loads_back_with_every_tensor_equal(checkpoint, model_dir, folder_components):
    assert_same_weights(folder_components, load_components(str(checkpoint), config=str(model_dir)))


def test_video_pipeline_from_the_file_generates_what_the_folder_does(checkpoint, model_dir, carphone):
    video = (torch.from_numpy(carphone[:3, :32, :48]).permute(0, 3, 1, 2).float() / 255).contiguous()
    kw = dict(prompt="a red cat", steps=3, strength=0.7, schedule=DeflickerSchedule(frequency=2, window=None),
              final_window=None, seed=3)
    from_folder = VideoPipeline.from_pretrained(str(model_dir), device="cpu")(video, **kw)
    from_file = VideoPipeline.from_pretrained(str(checkpoint), config=str(model_dir), device="cpu")(video, **kw)
    assert from_file.shape == video.shape and (from_file - video).abs().max() > 0.05  # something was generated
    assert torch.equal(from_folder, from_file)


def test_dtype_is_passed_as_each_release_takes_it_and_no_load_warns(model_dir, checkpoint, monkeypatch):
    """diffusers from 0.40 and transformers from 4.56 take ``dtype=`` and warn at every ``torch_dtype=``
    (a FutureWarning at each model load); older releases know only ``torch_dtype``. The loads give the
    dtype asked for, from a folder, a single file and a ControlNet, with no such warning."""
    import warnings
    from importlib import metadata

    from flickerless.diffusion.models import load_controlnet
    from flickerless.weights import dtype_kwarg

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        for comps in (load_components(str(model_dir), dtype=torch.float16),
                      load_components(str(checkpoint), config=str(model_dir), dtype=torch.float16)):
            assert {p.dtype for p in comps.unet.parameters()} == {torch.float16}
            assert {p.dtype for p in comps.text_encoder.parameters()} == {torch.float16}
        cn = model_dir.parent / "cn"
        tiny.controlnet().save_pretrained(cn)
        assert {p.dtype for p in load_controlnet(str(cn), "cpu", torch.float16).parameters()} == {torch.float16}
    assert not [w for w in seen if "torch_dtype" in str(w.message)]
    releases = {"diffusers": "0.39.2", "transformers": "4.55.0"}
    monkeypatch.setattr(metadata, "version", lambda name: releases[name])
    assert dtype_kwarg("diffusers", torch.float16) == {"torch_dtype": torch.float16}
    assert dtype_kwarg("transformers", torch.float16) == {"torch_dtype": torch.float16}
    releases.update(diffusers="0.40.0", transformers="5.0.0rc1")
    assert dtype_kwarg("diffusers", torch.float16) == {"dtype": torch.float16}
    assert dtype_kwarg("transformers", torch.float16) == {"dtype": torch.float16}


def test_fp16_export_casts_floats_only(folder_components, model_dir, tmp_path):
    path = save_single_file(folder_components, tmp_path / "half.safetensors", dtype="fp16")
    sd = load_file(path)
    assert {t.dtype for k, t in sd.items() if not k.endswith("position_ids")} == {torch.float16}
    assert sd["cond_stage_model.transformer.text_model.embeddings.position_ids"].dtype == torch.int64
    back = load_components(str(path), config=str(model_dir), dtype=torch.float16)
    for name in PARTS:
        ref = getattr(folder_components, name).state_dict()
        for k, t in getattr(back, name).state_dict().items():
            assert torch.equal(t, ref[k].half()), f"{name}.{k}"


def test_cli_exports_a_full_fine_tune(model_dir, tmp_path, capsys):
    """A `train --mode full` result is a diffusers folder whose UNet differs from the base: the export holds it."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(model_dir), safety_checker=None, requires_safety_checker=False)
    torch.manual_seed(5)
    with torch.no_grad():
        for p in pipe.unet.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    tuned = tmp_path / "tuned"
    pipe.save_pretrained(tuned)
    out = tmp_path / "out" / "tuned.safetensors"
    assert main(["export", str(tuned), "-o", str(out), "--dtype", "fp32", "-q"]) == 0
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~mask  # not safetensors' 0600
    back = load_components(str(out), config=str(model_dir))
    ref = pipe.unet.state_dict()
    assert all(torch.equal(t, ref[k]) for k, t in back.unet.state_dict().items())
    base = load_components(str(model_dir)).unet.state_dict()
    assert not torch.equal(back.unet.state_dict()["conv_in.weight"], base["conv_in.weight"])
    # no silent overwrite; a wrong suffix says what to give
    assert main(["export", str(tuned), "-o", str(out), "-q"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["export", str(tuned), "-o", str(tmp_path / "x.ckpt"), "-q"]) == 2
    err = capsys.readouterr().err
    assert ".safetensors" in err and len(err.strip().splitlines()) == 1
    assert main(["export", str(tmp_path / "nowhere"), "-o", str(tmp_path / "y.safetensors"), "-q"]) == 2
    assert "not found" in capsys.readouterr().err
    # --overwrite replaces an earlier export, not the LoRA it is made with
    lora = tmp_path / "style.safetensors"
    lora.write_bytes(b"not replaced")
    assert main(["export", str(tuned), "-o", str(lora), "--lora", f"{lora}:0.5", "--overwrite", "-q"]) == 2
    assert "is the --lora input" in capsys.readouterr().err and lora.read_bytes() == b"not replaced"
    # nor a file within the model (or a LoRA's, or --config's) folder: the model's own UNet was replaced
    own = next((tuned / "unet").glob("*.safetensors"))
    before = own.read_bytes()
    assert main(["export", str(tuned), "-o", str(own), "--overwrite", "-q"]) == 2
    assert "is a file of the --model folder" in capsys.readouterr().err and own.read_bytes() == before
    assert main(["export", str(out), "--config", str(tuned), "-o", str(own), "--overwrite", "-q"]) == 2
    assert "is a file of the --config folder" in capsys.readouterr().err and own.read_bytes() == before


def test_export_bakes_a_fused_lora_in(model_dir, tmp_path):
    pytest.importorskip("peft")
    tiny.save_lora(model_dir, tmp_path / "style")
    lora = [(str(tmp_path / "style" / "pytorch_lora_weights.safetensors"), 0.7)]
    path = save_single_file(str(model_dir), tmp_path / "styled.safetensors", lora=lora)
    styled = load_components(str(path), config=str(model_dir))
    kw = dict(num_frames=2, height=16, width=16, steps=2, schedule=DeflickerSchedule(frequency=None))
    want = VideoPipeline.from_pretrained(str(model_dir), device="cpu", lora=lora)(None, **kw)
    got = VideoPipeline(styled, "cpu")(None, **kw)
    base = VideoPipeline.from_pretrained(str(model_dir), device="cpu")(None, **kw)
    assert (want - base).abs().max() > 1e-3
    assert torch.equal(got, want)


def _sd15_shaped_on_meta():
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(cross_attention_dim=768)  # diffusers' defaults are SD 1.x's UNet
        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                            up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4)
        te = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                          num_attention_heads=12, max_position_embeddings=77))
    return unet, vae, te


def _check_diffusers_reads_it_back(unet, vae, ckpt):
    """diffusers' own LDM -> diffusers converters give back every key with its shape (and values when real)."""
    from diffusers.loaders.single_file_utils import (
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
    )

    for model, conv in ((unet, convert_ldm_unet_checkpoint), (vae, convert_ldm_vae_checkpoint)):
        back, ref = conv(ckpt, dict(model.config)), model.state_dict()
        assert back.keys() == ref.keys()
        for k, t in ref.items():
            assert back[k].shape == t.shape, k
            if t.device.type != "meta":
                assert torch.equal(back[k], t), k


def test_sd15_shaped_model_gets_the_sd15_checkpoint_names():
    """Full-size SD 1.5 architecture (weights on the meta device: no memory): names and shapes A1111 expects."""
    unet, vae, te = _sd15_shaped_on_meta()
    ckpt = {**{"model.diffusion_model." + k: v for k, v in unet_to_ldm(unet).items()},
            **{"first_stage_model." + k: v for k, v in vae_to_ldm(vae).items()},
            **{"cond_stage_model.transformer." + k: v for k, v in text_encoder_to_ldm(te).items()}}
    u, v, c = PREFIXES
    expect = {
        u + "input_blocks.1.1.proj_in.weight": (320, 320, 1, 1),
        u + "input_blocks.3.0.op.weight": (320, 320, 3, 3),
        u + "input_blocks.6.0.op.weight": (640, 640, 3, 3),
        u + "input_blocks.9.0.op.weight": (1280, 1280, 3, 3),
        u + "input_blocks.11.0.out_layers.3.weight": (1280, 1280, 3, 3),
        u + "middle_block.1.transformer_blocks.0.attn2.to_k.weight": (1280, 768),
        u + "output_blocks.2.1.conv.weight": (1280, 1280, 3, 3),
        u + "output_blocks.5.2.conv.weight": (1280, 1280, 3, 3),
        u + "output_blocks.8.2.conv.weight": (640, 640, 3, 3),
        u + "output_blocks.11.0.skip_connection.weight": (320, 640, 1, 1),
        u + "output_blocks.11.1.transformer_blocks.0.ff.net.0.proj.weight": (2560, 320),
        v + "encoder.mid.attn_1.q.weight": (512, 512, 1, 1),
        v + "decoder.up.0.block.0.nin_shortcut.weight": (128, 256, 1, 1),
        v + "decoder.up.3.upsample.conv.weight": (512, 512, 3, 3),
        v + "encoder.down.2.downsample.conv.weight": (512, 512, 3, 3),
        c + "text_model.encoder.layers.11.mlp.fc2.weight": (768, 3072),
        c + "text_model.embeddings.position_ids": (1, 77),
    }
    for k, shape in expect.items():
        assert tuple(ckpt[k].shape) == shape, k
    assert u + "input_blocks.12.0.in_layers.0.weight" not in ckpt and u + "output_blocks.12.0.in_layers.0.weight" not in ckpt
    assert not any(k.startswith(v + "encoder.down.3.downsample") or k.startswith(v + "decoder.up.0.upsample") for k in ckpt)
    _check_diffusers_reads_it_back(unet, vae, ckpt)


def test_other_block_layouts_round_trip():
    """More levels, two layers per block, attention only in the middle level, two transformer layers."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, layers_per_block=2, block_out_channels=(8, 16, 16), norm_num_groups=4, cross_attention_dim=8,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"), attention_head_dim=4,
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), transformer_layers_per_block=2)
    vae = AutoencoderKL(block_out_channels=(8, 8, 16), down_block_types=("DownEncoderBlock2D",) * 3,
                        up_block_types=("UpDecoderBlock2D",) * 3, layers_per_block=2, norm_num_groups=4)
    ckpt = {**{"model.diffusion_model." + k: v for k, v in unet_to_ldm(unet).items()},
            **{"first_stage_model." + k: v for k, v in vae_to_ldm(vae).items()}}
    assert "model.diffusion_model.input_blocks.5.1.transformer_blocks.1.attn1.to_q.weight" in ckpt
    assert "model.diffusion_model.output_blocks.5.2.conv.weight" in ckpt  # upsampler after an attention
    assert "model.diffusion_model.output_blocks.2.1.conv.weight" in ckpt  # upsampler after a plain resnet
    _check_diffusers_reads_it_back(unet, vae, ckpt)


def test_non_sd1_architecture_is_refused_naming_a_weight():
    from diffusers import UNet2DConditionModel

    comps = Components(
        UNet2DConditionModel(sample_size=8, layers_per_block=1, block_out_channels=(8, 16), norm_num_groups=4,
                             cross_attention_dim=8, attention_head_dim=4, class_embed_type="timestep",
                             down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                             up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")),
        tiny.vae(), tiny.text_encoder(), None, None)
    with pytest.raises(InputError, match="class_embedding"):
        ldm_state_dict(comps)


# -- textual inversion -------------------------------------------------------------------------------------------


def test_textual_inversion_adds_the_token_and_changes_the_output(model_dir, tmp_path):
    torch.manual_seed(7)
    vec = torch.randn(1, 16) * 2
    save_file({"<sks>": vec}, tmp_path / "sks.safetensors")
    plain = load_components(str(model_dir))
    comps = load_components(str(model_dir), textual_inversion=[str(tmp_path / "sks.safetensors")])
    tok = comps.tokenizer
    assert "<sks>" in tok.get_vocab() and "<sks>" not in plain.tokenizer.get_vocab()
    tid = tok.convert_tokens_to_ids("<sks>")
    assert tid in tok("a <sks> cat").input_ids  # one token, not split into characters
    assert torch.equal(comps.text_encoder.get_input_embeddings().weight[tid], vec[0])
    kw = dict(num_frames=2, height=16, width=16, steps=2, schedule=DeflickerSchedule(frequency=None), seed=1)
    with_ti, without = VideoPipeline(comps, "cpu"), VideoPipeline(plain, "cpu")
    assert (with_ti(None, prompt="a <sks> cat", **kw) - without(None, prompt="a <sks> cat", **kw)).abs().max() > 1e-3
    # prompts without the token are untouched by loading it
    assert torch.equal(with_ti(None, prompt="a cat", **kw), without(None, prompt="a cat", **kw))


def test_a1111_embedding_is_named_after_its_file(model_dir, tmp_path):
    """A1111/kohya .safetensors embeddings hold one tensor "emb_params" (here two vectors); the file name is the token."""
    vecs = torch.randn(2, 16)
    save_file({"emb_params": vecs}, tmp_path / "mystyle.safetensors")
    save_file({"emb_params": torch.randn(1, 16)}, tmp_path / "other.safetensors")
    comps = load_components(str(model_dir), textual_inversion=[str(tmp_path / "mystyle.safetensors"),
                                                               str(tmp_path / "other.safetensors")])
    vocab = comps.tokenizer.get_vocab()
    assert {"mystyle", "mystyle_1", "other"} <= vocab.keys() and "emb_params" not in vocab
    emb = comps.text_encoder.get_input_embeddings().weight
    assert torch.equal(emb[vocab["mystyle"]], vecs[0]) and torch.equal(emb[vocab["mystyle_1"]], vecs[1])
    # "mystyle" in a prompt stands for both vectors: changing only the second one changes the prompt's embedding
    pipe = VideoPipeline(comps, "cpu", cross_frame=None)
    ids = comps.tokenizer(expand_embedding_tokens("a mystyle cat", comps.tokenizer)).input_ids
    assert ids[2:4] == [vocab["mystyle"], vocab["mystyle_1"]]  # after <|startoftext|> and "a"
    before = pipe.encode_prompt("a mystyle cat", 1)
    with torch.no_grad():
        emb[vocab["mystyle_1"]] = torch.randn(16)
    assert (pipe.encode_prompt("a mystyle cat", 1) - before).abs().max() > 1e-3


def test_missing_embedding_names_it_and_where_it_was_looked_for(model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing = str(tmp_path / "nothere.safetensors")
    with pytest.raises(ModelNotFoundError) as e:
        load_components(str(model_dir), textual_inversion=[missing])
    msg = str(e.value)
    assert "textual-inversion embedding" in msg and missing in msg and "missing" in msg
    assert "Give a textual-inversion embedding" in msg and "diffusers folder" not in msg  # not the model's remedy
    # a file that is there but is no LoRA (or embedding): not "not found", and the remedy is a LoRA's
    junk = tmp_path / "notes.safetensors"
    junk.write_bytes(b"not weights")
    for kw, what in ((dict(lora=[(str(junk), 1.0)]), "LoRA"), (dict(textual_inversion=[str(junk)]), "textual-inversion")):
        with pytest.raises(ModelNotFoundError) as e:
            load_components(str(model_dir), **kw)
        msg = str(e.value)
        assert f"{what}" in msg and "could not be loaded as one" in msg and "not found" not in msg, msg
        assert "diffusers folder" not in msg


def test_only_the_torchvision_advisory_of_transformers_is_dropped():
    """transformers 5 tells users at every model load to install torchvision for image processors
    nothing here needs; importing flickerless drops that message, and only that one."""
    import logging

    import flickerless  # noqa: F401  (installs the filter)

    log = logging.getLogger("transformers.utils.import_utils")

    def record(msg):
        return log.makeRecord(log.name, logging.WARNING, __file__, 1, msg, None, None)

    assert not log.filter(record("`SiglipImageProcessor` requires torchvision (not installed); falling back to "
                                 "`SiglipImageProcessorPil` for backward compatibility."))
    assert log.filter(record("Some weights of CLIPModel were not initialized from the model checkpoint"))
    # diffusers' note that a (UNet-only) LoRA has nothing for the text encoder; not the one for the UNet
    lora = logging.getLogger("diffusers.loaders.lora_base")
    note = lora.makeRecord(lora.name, logging.WARNING, __file__, 1, "No LoRA keys associated to CLIPTextModel found "
                           "with the prefix='text_encoder'. This is safe to ignore", None, None)
    assert not lora.filter(note)
    assert lora.filter(lora.makeRecord(lora.name, logging.WARNING, __file__, 1, "No LoRA keys associated to "
                                       "UNet2DConditionModel found", None, None))


def test_run_takes_a_single_file_model_with_its_configs_offline(checkpoint, model_dir, tmp_path, monkeypatch, capsys):
    """What `export` writes loads back in `run` offline with --config (the folder it came from); without
    it, the error says what is missing (it said the file "holds no usable weights")."""
    from flickerless.demo import registry_clip
    from flickerless.video import read

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    sets = ["video.width=32", "video.height=24", "sampling.steps=2", "deflicker.frequency=0", "deflicker.final_window=0",
            "controlnets=[]"]
    args = ["run", "stylize", "--video", str(registry_clip("carphone_pristine.mp4")), "--frames", "0:2", "-q",
            "--model", str(checkpoint), "--cache-dir", str(tmp_path / "c"), *sum((["--set", s] for s in sets), [])]
    assert main([*args, "-o", str(tmp_path / "a.mp4")]) == 2
    err = capsys.readouterr().err
    assert "--config" in err and "no usable weights" not in err
    assert main([*args, "-o", str(tmp_path / "b.mp4"), "--config", str(model_dir)]) == 0
    assert read(tmp_path / "b.mp4")[0].shape == (2, 24, 32, 3)
