import math
from pathlib import Path
import re

import numpy as np
import pytest

from flickerless.cli import main
from flickerless.errors import InputError
from flickerless.pipelines import apply_overrides, list_templates, load_template, target_size
from flickerless.pipelines.job import check_memory, job_folder, parse_frames, resolve_settings
from flickerless.pipelines.templates import dumps, split_lora, tomllib, window_value



def test_every_task_has_a_valid_template_with_every_key():
    names = [n for n, _ in list_templates()]
    assert names == sorted(["stylize", "fashion", "image_guided", "restore", "render3d", "longvideo"])
    for n in names:
        t = load_template(n)
        assert t["task"] == n and t["controlnets"]
        assert tomllib.loads(dumps(t)) == t  # what the job folder stores reads back the same
    # also a prompt with an emoji (JSON's surrogate escapes are not TOML), a DEL, quotes and a tab
    t["sampling"]["negative_prompt"] = 'no \U0001f600, caf\u00e9 \x7f "q" \\ \t'
    assert tomllib.loads(dumps(t)) == t


def test_paper_table2_values():
    s = load_template("stylize")
    assert (s["video"]["width"], s["video"]["height"], s["sampling"]["steps"]) == (960, 512, 20)
    assert [(u["annotator"], u["scale"]) for u in s["controlnets"]] == [("depth", 1.0), ("softedge", 1.0)]
    assert s["sampling"]["guidance_scale"] == 7.5 and s["deflicker"]["frequency"] == 5
    assert window_value(s["deflicker"]["window"]) is None and s["deflicker"]["final_window"] == 121
    assert s["post"]["contrast"] > 1 and s["post"]["sharpen"] > 0
    f = load_template("fashion")
    assert (f["video"]["width"], f["video"]["height"], f["sampling"]["steps"]) == (512, 768, 10)
    assert sorted((u["annotator"], u["scale"]) for u in f["controlnets"]) == [("depth", 0.3), ("pose", 0.6)]
    assert f["deflicker"]["frequency"] == 1 and f["deflicker"]["window"] == 7
    assert [u["cond_only"] for u in load_template("image_guided")["controlnets"] if u["annotator"] == "shuffle"] == [True]


def test_overrides_parse_values_and_reach_nested_keys():
    s = apply_overrides(load_template("stylize"), [
        "sampling.steps=7", "controlnets.1.scale=0.25", "deflicker.window=inf", "model.base=some/repo",
        "sampling.cross_frame=[]", "annotators.depth.model=\"x/y\"", "deflicker.final_window=0"])
    assert s["sampling"]["steps"] == 7 and s["controlnets"][1]["scale"] == 0.25
    assert math.isinf(s["deflicker"]["window"]) and s["model"]["base"] == "some/repo"
    assert s["sampling"]["cross_frame"] == [] and s["annotators"]["depth"]["model"] == "x/y"


@pytest.mark.parametrize("item, says", [
    ("sampling.stepz=3", "valid keys: sampling.steps"),
    ("samplin.steps=3", "unknown section"),
    ("sampling.steps=0", "an integer >= 1"),
    ("sampling.strength=1.5", "(0, 1]"),
    ("controlnets.5.scale=1", "the template has 2 ControlNets (index 0 or 1)"),
    ("controlnets.depth.scale=1", "the template has 2 ControlNets (index 0 or 1)"),
    ("controlnets.0.weight=1", "valid keys: controlnets.0.annotator"),
    ("deflicker.window=-3", "\"inf\""),
    ("deflicker.patch_sizes=[8, 5]", "odd patch sizes"),
    ("deflicker.patch_sizes=[65, 5]", "odd patch sizes up to 63"),
    ("sampling.guidance_scale=nan", "a finite number"),  # TOML reads nan and inf: a black or NaN video
    ("post.contrast=inf", "a number > 0"),
    ("controlnets.0.scale=inf", "a finite number"),
    ("sampling.seed=99999999999999999999999", "from -2**63 to 2**64 - 1"),  # torch's generator overflowed
    ("deflicker.iterations=0", "an integer >= 1"),
    ("nokey", "section.key=value"),
    # a section replaced by a value, then a key set in it: tracebacks before
    (["sampling=3", "sampling.steps=2"], "sampling is a section"),
    (["annotators.depth=1", "annotators.depth.model=x"], "annotators.depth is a value"),
    ("controlnets=[1]", "each ControlNet is a table"),
    ("controlnets.0=foo", "e.g. controlnets.0.scale=0.5"),
])
def test_bad_overrides_name_the_valid_keys(item, says):
    with pytest.raises(InputError, match=None) as e:
        apply_overrides(load_template("stylize"), item if isinstance(item, list) else [item])
    assert says in str(e.value)


def test_an_index_past_the_template_s_controlnets_is_said_in_words():
    """From the helpers' use of `run`: controlnets.1 on a template with one ControlNet said "there are 1
    controlnets (index 0..0)"."""
    with pytest.raises(InputError) as e:
        apply_overrides(load_template("restore"), ["controlnets.1.scale=0.5"])
    assert str(e.value) == "--set controlnets.1.scale: the template has one ControlNet (index 0): give controlnets.0.scale"
    with pytest.raises(InputError, match="the template has 3 ControlNets .index 0 to 2.$"):
        apply_overrides(load_template("image_guided"), ["controlnets.3.scale=0.5"])
    with pytest.raises(InputError, match="the template has no ControlNets$"):
        apply_overrides(load_template("restore"), ["controlnets=[]", "controlnets.0.scale=0.5"])


@pytest.mark.parametrize("item, says", [
    ("deflicker.patch_sizes.0=3", "e.g. --set deflicker.patch_sizes=[3,11,9,7,5]"),
    ("deflicker.patch_sizes.x=3", "e.g. --set deflicker.patch_sizes=[13,11,9,7,5]"),
    ("model.lora.0=x", "e.g. --set 'model.lora=[\"x\"]'"),
    ("sampling.cross_frame.1=self", "e.g. --set 'sampling.cross_frame=[\"first\",\"self\",\"self\",\"next\"]'"),
])
def test_an_item_of_a_list_of_values_is_set_by_giving_the_whole_list(item, says):
    """From the review of session 34: deflicker.patch_sizes.0=3 was told "give a key inside the list item, e.g.
    deflicker.patch_sizes.0.scale=0.5", a key that does not exist: such a list is given whole."""
    with pytest.raises(InputError) as e:
        apply_overrides(load_template("stylize"), [item])
    assert says in str(e.value) and ".scale=" not in str(e.value)
    suggested = str(e.value).split("e.g. --set ")[1].strip("'")
    apply_overrides(load_template("stylize"), [suggested])  # what it suggests is taken


def test_resolve_settings_applies_cli_choices_then_set():
    s = resolve_settings("fashion", model="my/person", controlnets={"pose": "local/openpose"},
                         lora=["a.safetensors:0.7"], overrides=["model.base=wins"])
    assert s["model"]["base"] == "wins" and s["model"]["lora"] == ["a.safetensors:0.7"]
    assert [u["model"] for u in s["controlnets"] if u["annotator"] == "pose"] == ["local/openpose"]
    with pytest.raises(InputError, match="has no shuffle ControlNet"):
        resolve_settings("fashion", controlnets={"shuffle": "x"})


def test_settings_of_an_annotator_no_controlnet_uses_are_said(caplog):
    """--set annotators.pose.window=9 on a template without pose was taken without a word."""
    resolve_settings("stylize", overrides=["annotators.pose.window=9"])
    assert "annotators.pose: no ControlNet of the stylize template uses the pose annotator" in caplog.text
    assert "depth, softedge" in caplog.text
    caplog.clear()
    resolve_settings("stylize", overrides=["annotators.depth.batch_size=2"])
    resolve_settings("longvideo", overrides=["annotators.pose.window=9"])  # also the fusion's masks' prompt
    resolve_settings("stylize", overrides=["controlnets=[]"])  # the template's own tables, its ControlNets removed
    assert "annotators." not in caplog.text


@pytest.mark.parametrize("overrides, says", [
    (["annotators.nope.x=1"], "unknown annotator 'nope'"),  # was ignored
    (["annotators.canny.low=\"abc\""], "'low' must be an integer"),  # was a TypeError in the annotator
    (["annotators.canny.lo=5"], "no setting 'lo'"),
    (["controlnets.0.start=0.8", "controlnets.0.end=0.2"], "start 0.8 is after end 0.2"),  # never applied
    (["sampling.steps=20", "sampling.strength=0.5", "deflicker.steps=[4, 11, 30]"],
     "deflicker steps 11, 30 are past the 10 denoising steps this run takes (20 steps at strength 0.5)"),
])
def test_settings_that_would_fail_late_or_do_nothing_are_refused_up_front(overrides, says):
    with pytest.raises(InputError, match=re.escape(says)):
        resolve_settings("stylize", overrides=overrides)


@pytest.mark.parametrize("overrides, says", [
    (["sampling.steps=8", "longvideo.fusion_step=8"],
     "fusion_step 8 is not below the 8 denoising steps this run takes (8 steps): --set longvideo.fusion_step=N with "
     "1 <= N <= 7"),
    # at strength < 1 it passed, then failed after the pose, SAM and model loading, without naming it
    (["sampling.steps=4", "sampling.strength=0.5", "longvideo.fusion_step=3"],
     "fusion_step 3 is not below the 2 denoising steps this run takes (4 steps at strength 0.5): "
     "--set longvideo.fusion_step=N with 1 <= N <= 1"),
    (["sampling.steps=8", "sampling.strength=0.01", "longvideo.fusion_step=1"],
     "the 1 denoising steps this run takes (8 steps at strength 0.01): raise sampling.steps or sampling.strength"),
    (["longvideo.clip_length=4", "longvideo.clip_stride=6"], "clip_stride 6 is larger than clip_length 4"),
])
def test_longvideo_settings_are_refused_before_the_pose_sam_and_models(overrides, says):
    with pytest.raises(InputError, match=re.escape(says)):
        resolve_settings("longvideo", overrides=overrides)


def test_a_fusion_step_within_the_steps_taken_at_a_strength_is_taken():
    s = resolve_settings("longvideo", overrides=["sampling.steps=4", "sampling.strength=0.5", "longvideo.fusion_step=1"])
    assert s["longvideo"]["fusion_step"] == 1
    # without fusion, the step is not used and not checked
    resolve_settings("longvideo", overrides=["sampling.steps=4", "longvideo.fusion_step=9", "longvideo.fusion_seeds=[]"])


def test_prompt_ranges_written_for_the_whole_clip_fit_a_shorter_run(caplog):
    """The README's ranges [[0, 120, ...], [120, -1, ...]] failed on any --frames under 120."""
    from flickerless.pipelines.job import _longvideo_kwargs

    lv = {**load_template("longvideo")["longvideo"], "prompt_ranges": [[0, 120, "beach"], [120, -1, "city"]]}
    assert _longvideo_kwargs(lv, 200)["prompt_ranges"] == [(0, 120, "beach"), (120, None, "city")]
    assert _longvideo_kwargs(lv, 60)["prompt_ranges"] == [(0, None, "beach")]
    assert "[120, -1] 'city' is outside this run's frames 0:60 of the clip" in caplog.text


def test_prompt_ranges_count_in_the_clips_frame_numbers_as_frames_does(caplog):
    """They counted from --frames START: with --frames 100:150 the README's "city" range [120, -1]
    never applied, and [4, -1] with --frames 2:6 was left out though clip frames 4 and 5 ran."""
    from flickerless.pipelines.job import _longvideo_kwargs

    lv = {**load_template("longvideo")["longvideo"], "prompt_ranges": [[0, 120, "beach"], [120, -1, "city"]]}
    assert _longvideo_kwargs(lv, 50, start=100)["prompt_ranges"] == [(0, 20, "beach"), (20, None, "city")]
    assert _longvideo_kwargs(lv, 50, start=130)["prompt_ranges"] == [(0, None, "city")]
    assert "[0, 120] 'beach' is outside this run's frames 130:180 of the clip" in caplog.text
    lv["prompt_ranges"] = [[3, 5, "neon"]]
    assert _longvideo_kwargs(lv, 4, start=2)["prompt_ranges"] == [(1, 3, "neon")]


def test_denoising_steps_follow_the_strength():
    from flickerless.diffusion.pipeline import denoising_steps

    assert [denoising_steps(20, s) for s in (1.0, 0.75, 0.5, 0.01)] == [20, 15, 10, 1]
    assert resolve_settings("stylize", overrides=["sampling.steps=20", "deflicker.steps=[15]"])


def test_user_template_file(tmp_path):
    p = tmp_path / "mine.toml"
    p.write_text(dumps(apply_overrides(load_template("restore"), ["sampling.strength=0.3"])))
    assert load_template(str(p))["sampling"]["strength"] == 0.3
    p.write_text(p.read_text() + "\n[extra]\nx = 1\n")
    with pytest.raises(InputError, match="unknown key 'extra'"):
        load_template(str(p))
    with pytest.raises(InputError, match="template file not found"):
        load_template(str(tmp_path / "missing.toml"))
    with pytest.raises(InputError, match="bundled templates: fashion"):
        load_template("nosuchtask")
    # PowerShell's `templates show restore > mine.toml` writes UTF-16 (a UnicodeDecodeError traceback), an editor
    # may add UTF-8's byte-order mark ("not valid TOML, line 1 column 1"), a Latin-1 comment is not UTF-8
    text = dumps(apply_overrides(load_template("restore"), ["sampling.strength=0.3"]))
    for raw in (text.encode("utf-16"), b"\xef\xbb\xbf" + text.encode()):
        p.write_bytes(raw)
        assert load_template(str(p))["sampling"]["strength"] == 0.3
    p.write_bytes(("# caf\u00e9\n" + text).encode("latin-1"))
    with pytest.raises(InputError, match="not UTF-8 text .*save the template as UTF-8"):
        load_template(str(p))


def test_a_templates_longvideo_table_goes_with_its_task(tmp_path):
    """task = "longvideo" without [longvideo] ran as plain generation (no fusion, no co-denoising)
    without a word, and a [longvideo] table in a stylize template was used."""
    p = tmp_path / "mine.toml"
    stylize = load_template("stylize")
    p.write_text(dumps({**stylize, "task": "longvideo"}))
    with pytest.raises(InputError, match=re.escape("task = 'longvideo' lacks [longvideo] (a template holds every "
                                                   "setting; copy it from `flickerless templates show longvideo`)")):
        load_template(str(p))
    p.write_text(dumps({**stylize, "longvideo": load_template("longvideo")["longvideo"]}))
    with pytest.raises(InputError, match=re.escape("[longvideo] is for task = 'longvideo' templates, not 'stylize'")):
        load_template(str(p))
    p.write_text(dumps(load_template("longvideo")))
    assert load_template(str(p))["longvideo"] == load_template("longvideo")["longvideo"]


def test_a_file_named_as_a_task_does_not_hide_its_template(tmp_path, monkeypatch):
    """`run restore -o restore` (a PNG folder output) made every later `run restore` there "template file
    not found", and notes in a file called `fashion` "not valid TOML"; ./NAME still reads such a file."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "restore").mkdir()
    (tmp_path / "fashion").write_text("my notes\n")
    assert load_template("restore") == load_template(str(Path(__file__).parents[1] / "src/flickerless/templates/restore.toml"))
    assert load_template("fashion")["task"] == "fashion"
    (tmp_path / "stylize").write_text(dumps(apply_overrides(load_template("stylize"), ["sampling.steps=3"])))
    assert load_template("./stylize")["sampling"]["steps"] == 3 and load_template("stylize")["sampling"]["steps"] != 3


def test_a_template_files_relative_paths_are_found_beside_it(tmp_path, monkeypatch):
    """A project keeps its template beside its models: relative paths that exist from the template's
    folder become absolute (the run, and a --resume from elsewhere, find them); others stay as written
    (a path from the working directory, or a repo id)."""
    project = tmp_path / "project"
    for d in ("models/sd", "cn/depth", "annot/dpt"):
        (project / d).mkdir(parents=True)
    (project / "loras").mkdir()
    (project / "loras" / "style.safetensors").write_bytes(b"x")
    s = apply_overrides(load_template("stylize"), [
        'model.base="models/sd"', 'model.lora=["loras/style.safetensors:0.35", "loras/style.safetensors", "me/lora"]',
        'controlnets.0.model="cn/depth"', 'annotators.depth.model="annot/dpt"'])
    (project / "mine.toml").write_text(dumps(s))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    got = load_template(str(project / "mine.toml"))
    root = project.resolve()
    assert got["model"]["base"] == str(root / "models" / "sd")
    assert got["model"]["lora"] == [f"{root / 'loras' / 'style.safetensors'}:0.35",
                                    str(root / "loras" / "style.safetensors"), "me/lora"]
    assert got["controlnets"][0]["model"] == str(root / "cn" / "depth")
    assert got["controlnets"][1]["model"] == s["controlnets"][1]["model"]  # a repo id: as written
    assert got["annotators"]["depth"]["model"] == str(root / "annot" / "dpt")
    # the same relative path from the working directory, with nothing beside the template: as written
    (elsewhere / "models" / "sd").mkdir(parents=True)
    (tmp_path / "other.toml").write_text(dumps(s))
    assert load_template(str(tmp_path / "other.toml"))["model"]["base"] == "models/sd"


@pytest.mark.parametrize("text, want", [("a.safetensors:0.5", ("a.safetensors", 0.5)), ("a:-1", ("a", -1.0)),
                                        ("a", ("a", 1.0)), ("C:\\loras\\a", ("C:\\loras\\a", 1.0)),
                                        ("a:nan", ("a:nan", 1.0)), ("me/lora:2", ("me/lora", 2.0))])
def test_split_lora(text, want):
    assert split_lora(text) == want


def test_a_lora_s_bad_scale_is_said_not_looked_for_as_a_file(tmp_path, monkeypatch, capsys):
    """"style.safetensors:x" was looked for as a file of that name, after the whole model had loaded."""
    from flickerless.cli import main

    lora = tmp_path / "style.safetensors"
    lora.write_bytes(b"")
    for scale in ("x", "nan", "inf", ""):
        with pytest.raises(InputError, match=f"the scale after the last ':' \\('{scale}'\\) is not a finite number"):
            split_lora(f"{lora}:{scale}")
    with pytest.raises(InputError, match="is not a finite number"):
        resolve_settings("stylize", lora=[f"{lora}:x"])
    assert main(["export", str(tmp_path / "no-model"), "-o", str(tmp_path / "e.safetensors"), "--lora",
                 f"{lora}:x"]) == 2
    assert "is not a finite number" in capsys.readouterr().err


def test_sizes_frames_memory_and_job_folder():
    s = load_template("stylize")  # 960x512, area mode keeps the clip's aspect
    h, w = target_size(144, 176, s)
    assert h % 8 == 0 and w % 8 == 0 and abs(w / h - 176 / 144) < 0.05 and abs(h * w - 960 * 512) / (960 * 512) < 0.05
    assert target_size(1080, 1920, apply_overrides(s, ["video.resize=\"crop\""])) == (512, 960)
    # the sides in multiples of 8 chosen together: on the tiny model's 160x128, 16:9 was made 192x104 (3.8% too
    # wide), 4:3 168x120 (5%), 20x300 40x552 (8.7%), 64x1 1144x16 (11.7%); each is now within 1% of its aspect
    small = apply_overrides(s, ["video.width=160", "video.height=128"])
    for h, w in [(180, 320), (1080, 1920), (320, 180), (75, 100), (300, 20), (1, 64), (272, 640), (144, 176)]:
        th, tw = target_size(h, w, small)
        assert th % 8 == 0 and tw % 8 == 0 and abs(th * tw / (160 * 128) - 1) < 0.25, (h, w, th, tw)
        assert abs(tw / th / (w / h) - 1) < (0.025 if (h, w) == (144, 176) else 0.01), (h, w, th, tw)
    for t in ("stylize", "fashion"):
        tpl = load_template(t)
        for h, w in [(1080, 1920), (1920, 1080), (480, 640), (144, 176), (272, 640), (1, 1)]:
            th, tw = target_size(h, w, tpl)
            assert abs(tw / th / (w / h) - 1) < 0.005 and abs(th * tw / (tpl["video"]["width"] * tpl["video"]["height"]) - 1) < 0.05
    # the narrow side is the one stepped, and h x w is w x h turned: a 3x4000 strip was made 16x23808 (10% too
    # narrow; 4000x3 was exact), 1x64 on the tiny template 16x1064 (64x1 was exact)
    for tpl in (small, s, load_template("fashion")):
        for h, w in [(4000, 3), (64, 1), (1350, 1080), (1140, 1000), (144, 176), (1000, 2600), (7, 100000)]:
            assert target_size(h, w, tpl) == target_size(w, h, tpl)[::-1], (h, w, tpl["video"])
    assert target_size(4000, 3, s) == (21336, 16) and target_size(64, 1, small) == (1024, 16)
    assert parse_frames("10:20") == (10, 20) and parse_frames(":5") == (0, 5) and parse_frames(None) == (0, None)
    with pytest.raises(InputError, match="not one string"):
        apply_overrides(s, "sampling.steps=3")  # was read a character at a time
    with pytest.raises(InputError, match=":3 for the first 3 frames or 3: for frame 3 on"):
        parse_frames("3")  # read as 3: (train's --frames 3 is the first 3)
    for bad in ("5:2", "a:b", "-1:4"):
        with pytest.raises(InputError):
            parse_frames(bad)
    check_memory(100, (512, 960), 2, available=64 << 30)
    with pytest.raises(InputError, match="--frames START:END"):
        check_memory(10000, (512, 960), 2, available=16 << 30)
    assert job_folder("/a/out.mp4").name == "out.job" and job_folder("/a/frames").name == "frames.png.job"
    assert job_folder("/a/out.gif").name == "out.gif.job" and job_folder("/a/out.mov").name == "out.mov.job"
    # each output its own job folder: these pairs shared one (xx.png.mp4 and the PNG folder xx, a.gif.mp4 and
    # a.gif, K.MP4 and K.mp4), and the second was refused ("holds the job of ..., another output")
    outputs = ["xx.png.mp4", "xx", "a.gif.mp4", "a.gif", "K.MP4", "K.mp4", "v.mov.mp4", "v.mov", "t.PNG.mp4", "t",
               "o.mp4", "o.gif", "o.mov", "o", "o.v2.mp4", "o.v2"]
    assert len({job_folder(f"/a/{o}") for o in outputs}) == len(outputs)
    assert job_folder("/a/a.gif.mp4").name == "a.gif.mp4.job" and job_folder("/a/o.v2.mp4").name == "o.v2.job"


def test_templates_command(capsys):
    assert main(["templates"]) == 0
    out = capsys.readouterr().out
    assert all(n in out for n in ("stylize", "fashion", "image_guided", "restore", "render3d"))
    assert main(["templates", "show", "stylize"]) == 0
    assert 'task = "stylize"' in capsys.readouterr().out
    assert main(["templates", "show", "nope"]) == 2
    capsys.readouterr()
    assert main(["templates", "list", "stylize"]) == 2  # listed them all, the word ignored
    assert "`templates show stylize` prints one" in capsys.readouterr().err
    assert main(["templates", "stylize"]) == 0  # a name alone shows it (it was "invalid choice")
    assert 'task = "stylize"' in capsys.readouterr().out
    assert main(["templates", "nope"]) == 2
    assert "no template 'nope'; bundled templates: fashion" in capsys.readouterr().err


def test_a_reader_that_stops_early_is_not_an_error():
    """`flickerless templates show stylize | head -1` ended in "error: Broken pipe", exit 2."""
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", "import sys; from flickerless.cli import main; sys.exit(main())",
                          "templates", "show", "stylize"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()  # before it writes
    err = p.stderr.read()
    assert p.wait() == 141 and err == b""


def test_read_clip_keeps_where_the_frames_sound_starts(sound_clip):
    from flickerless.pipelines.job import read_clip

    s = apply_overrides(load_template("stylize"), ["video.width=32", "video.height=24"])
    inputs = read_clip(sound_clip, (10, 20), s)
    assert len(inputs.frames) == 10 and inputs.fps == 25 and inputs.sound_start == 10 / 25
    # another frame rate would put the sound out of step: none is kept
    assert read_clip(sound_clip, (10, 20), apply_overrides(s, ["video.fps=12"])).sound_start is None
    with pytest.raises(InputError, match="the clip has 30 frames"):
        read_clip(sound_clip, (100, None), s)


def test_a_variable_rate_clip_is_generated_at_its_own_frame_times(carphone, tmp_path):
    """Phone footage is often variable-rate: a job's output shows each frame when the clip did, and its
    sound is cut at the range's first frame's time (not at START / average fps)."""
    import av

    from flickerless.pipelines.job import _write_output, read_clip

    from .conftest import write_h264

    times = np.r_[np.arange(6) * 0.1, 0.6 + np.arange(6) * 0.04]  # 10 fps, then 25 fps
    write_h264(tmp_path / "phone.mp4", carphone, times=times)
    s = apply_overrides(load_template("stylize"), ["video.width=32", "video.height=24"])
    inputs = read_clip(tmp_path / "phone.mp4", (4, 10), s)
    assert np.allclose(inputs.times, times[4:11], atol=1e-3)  # and when frame 9 ends: frame 10
    assert abs(inputs.sound_start - 0.4) < 1e-3
    _write_output(tmp_path / "out.mp4", list(inputs.frames), inputs.fps, times=inputs.times)
    with av.open(str(tmp_path / "out.mp4")) as c:
        shown = np.array([f.time for f in c.decode(video=0)])
    assert np.allclose(shown - shown[0], times[4:10] - times[4], atol=2e-3)
    # an even rate asked for: frames at that rate
    assert read_clip(tmp_path / "phone.mp4", (4, 10), apply_overrides(s, ["video.fps=12"])).times is None


def test_read_clip_generates_anamorphic_video_with_square_pixels(carphone, tmp_path):
    """A clip whose pixels are shown wider than high is generated (and so written) as it is shown."""
    from fractions import Fraction

    from flickerless.pipelines.job import read_clip
    from flickerless.video import write

    from .conftest import write_h264

    path = tmp_path / "wide.mp4"
    write_h264(path, carphone[:2], sample_aspect_ratio=Fraction(16, 11))  # 176x144 shown 256x144: 16:9
    s = load_template("stylize")
    frames = read_clip(path, (0, None), s).frames
    h, w = frames.shape[1:3]
    assert abs(w / h - 16 / 9) < 0.03
    plain = tmp_path / "plain.mp4"
    write(plain, carphone[:2], 25)
    h, w = read_clip(plain, (0, None), s).frames.shape[1:3]
    assert abs(w / h - 176 / 144) < 0.03
    # cropped to the template's 960x512, in one resample: as the clip shown (desqueezed to 256x144)
    # and then cropped
    from flickerless.pipelines.job import _fit
    from flickerless.synthetic import psnr
    from flickerless.video import read, resize_frame

    stored = read(path)[0]
    crop = read_clip(path, (0, None), apply_overrides(s, ['video.resize="crop"'])).frames
    shown = np.stack([_fit(resize_frame(f, (144, 256)), (512, 960), "crop") for f in stored])
    assert crop.shape == shown.shape == (2, 512, 960, 3) and psnr(crop, shown) > 30
    # cropped as stored (the pixel shape ignored) is another picture
    assert psnr(crop, np.stack([_fit(f, (512, 960), "crop") for f in stored])) < 25


def test_python_dash_m_and_the_version(tmp_path):
    """`python -m flickerless` runs the command line (there was no __main__), and the version it says is
    the one the package's metadata carries (one place: flickerless.__version__)."""
    import subprocess
    import sys
    from importlib.metadata import version

    import flickerless

    r = subprocess.run([sys.executable, "-m", "flickerless", "--version"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == f"flickerless {flickerless.__version__}"
    assert version("flickerless") == flickerless.__version__
