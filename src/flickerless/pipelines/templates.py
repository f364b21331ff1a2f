"""Task templates: one TOML file per task holding every setting (``flickerless/templates/*.toml``).

A template is a plain dict of sections. :func:`load_template` reads a bundled template by name or
any TOML file by path and checks it against :data:`SCHEMA`; :func:`apply_overrides` applies
``--set section.key=value`` strings (``controlnets.0.scale=0.5`` indexes the ControlNet list,
``annotators.pose.window=9`` reaches an annotator's settings). Unknown keys are errors that list the
valid ones. :func:`dumps` writes a resolved template back as TOML (the job folder's settings.toml).
"""

from __future__ import annotations

import copy
import json
import math
from importlib import resources
from pathlib import Path

from ..errors import InputError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, as a package (a dependency there)
    import tomli as tomllib

# What each task does with its inputs; the templates hold the settings (the command line lists these
# without importing the job module, and with it torch).
TASKS = {
    "stylize": "text-guided video stylisation",
    "fashion": "a person model imitating the poses of the target video",
    "image_guided": "stylisation with the style of an image (shuffle ControlNet)",
    "restore": "super-resolution, then re-synthesised detail with the tile ControlNet",
    "render3d": "rendering an untextured 3D video from a prompt",
    "longvideo": "a long video: pose-driven person, average fusion, co-denoised clips (four-module framework)",
}

__all__ = ["SCHEMA", "OPTIONAL", "CONTROLNET_KEYS", "list_templates", "load_template", "apply_overrides", "validate", "dumps",
           "window_value", "split_lora"]


def _is_window(v) -> bool:
    return window_value(v, check=False) is not False


def window_value(v, check: bool = True):
    """A window setting as the engine takes it: an int >= 0, or None for the whole video."""
    if isinstance(v, str) and v.strip().lower() in ("inf", "all", "none"):
        return None
    if isinstance(v, float) and math.isinf(v):
        return None
    if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
        return v
    if check:
        raise InputError(f"a window is an integer >= 0 or \"inf\", got {v!r}")
    return False


_num = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)  # noqa: E731 - TOML has nan, inf
_int = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
_str = lambda v: isinstance(v, str)  # noqa: E731
_strs = lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)  # noqa: E731
_ints = lambda v: isinstance(v, list) and all(_int(x) and x >= 1 for x in v)  # noqa: E731
_seed = lambda v: _int(v) and -(2**63) <= v < 2**64  # noqa: E731 - what torch.Generator.manual_seed takes
_MAX_PATCH = 63  # blend.patchmatch.MAX_PATCH_SIZE, without importing torch to check a template

# section -> key -> (check, what it must be)
SCHEMA: dict[str, dict[str, tuple]] = {
    "model": {
        "base": (_str, "a repo id, diffusers folder or checkpoint file"),
        "lora": (_strs, "a list of \"path[:scale]\" strings"),
        "textual_inversion": (_strs, "a list of embedding files or repo ids"),
        "dtype": (lambda v: v in ("auto", "float16", "bfloat16", "float32"), "auto, float16, bfloat16 or float32"),
    },
    "video": {
        "width": (lambda v: _int(v) and v > 0, "a positive integer"),
        "height": (lambda v: _int(v) and v > 0, "a positive integer"),
        "resize": (lambda v: v in ("area", "crop", "stretch"), "area, crop or stretch"),
        "fps": (lambda v: _num(v) and v >= 0, "a number >= 0 (0: the input's)"),
    },
    "sampling": {
        "steps": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
        "guidance_scale": (_num, "a finite number"),
        "negative_prompt": (_str, "a string"),
        "strength": (lambda v: _num(v) and 0 < v <= 1, "a number in (0, 1]"),
        "seed": (_seed, "an integer from -2**63 to 2**64 - 1"),
        "batch_size": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
        "vae_batch_size": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
        "cross_frame": (lambda v: _strs(v) and set(v) <= {"first", "prev", "self", "next"},
                        "a list of first, prev, self, next ([] disables)"),
    },
    "deflicker": {
        "frequency": (lambda v: _int(v) and v >= 0, "an integer >= 0 (0: never)"),
        "steps": (_ints, "a list of 1-based step numbers"),
        "window": (_is_window, "an integer >= 0 or \"inf\""),
        "final_window": (_is_window, "an integer >= 0 (0: no final pass) or \"inf\""),
        "guide": (lambda v: v in ("input", "self"), "input or self"),
        "patch_sizes": (lambda v: isinstance(v, list) and v and all(_int(x) and 1 <= x <= _MAX_PATCH and x % 2 for x in v),
                        f"a list of odd patch sizes up to {_MAX_PATCH}, e.g. [13, 11, 9, 7, 5]"),
        "iterations": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    },
    "post": {
        "contrast": (lambda v: _num(v) and v > 0, "a number > 0 (1: unchanged)"),
        "sharpen": (lambda v: _num(v) and v >= 0, "a number >= 0 (0: none)"),
    },
}
def _ranges(v) -> bool:
    return isinstance(v, list) and all(
        isinstance(r, list) and len(r) == 3 and _int(r[0]) and _int(r[1]) and isinstance(r[2], str)
        and r[0] >= 0 and (r[1] == -1 or r[1] > r[0]) for r in v)


# sections only some templates have
OPTIONAL: dict[str, dict[str, tuple]] = {
    "longvideo": {
        "clip_length": (lambda v: _int(v) and v >= 0, "an integer >= 0 (0: no co-denoising)"),
        "clip_stride": (lambda v: _int(v) and v >= 0, "an integer >= 0 (0: clip_length // 2)"),
        "merge": (lambda v: v in ("pyramid", "flat"), "pyramid or flat"),
        "prompt_ranges": (_ranges, "a list of [start, end, \"prompt\"] (end -1: to the end)"),
        "fusion_seeds": (lambda v: isinstance(v, list) and all(_seed(x) for x in v),
                         "a list of seeds, integers from -2**63 to 2**64 - 1 ([]: no fusion)"),
        "fusion_step": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
        "w1": (_num, "a finite number"),
        "w2": (_num, "a finite number"),
        "sam_model": (_str, "a SAM repo id or folder"),
    },
}
CONTROLNET_KEYS: dict[str, tuple] = {
    "annotator": (_str, "an annotator name"),
    "model": (_str, "a ControlNet repo id, folder or file (a T2I-Adapter: repo id or folder)"),
    "scale": (_num, "a finite number"),
    "start": (lambda v: _num(v) and 0 <= v <= 1, "a fraction in [0, 1]"),
    "end": (lambda v: _num(v) and 0 <= v <= 1, "a fraction in [0, 1]"),
    "cond_only": (lambda v: isinstance(v, bool), "true or false"),
    "kind": (lambda v: v in ("controlnet", "t2i_adapter"), "controlnet or t2i_adapter (default controlnet)"),
}
TOP = {"task": _str, "description": _str}


def _bundled() -> dict[str, Path]:
    folder = resources.files("flickerless") / "templates"
    return {Path(str(p)).stem: Path(str(p)) for p in folder.iterdir() if str(p).endswith(".toml")}


def list_templates() -> list[tuple[str, str]]:
    """(name, one-line description) of every bundled template, sorted by name."""
    out = []
    for name, path in sorted(_bundled().items()):
        out.append((name, tomllib.loads(path.read_text()).get("description", "")))
    return out


def template_text(name: str) -> str:
    path = _bundled().get(name)
    if path is None:
        raise InputError(f"no template {name!r}; bundled templates: {', '.join(sorted(_bundled()))}")
    return path.read_text()


def _template_file_text(path: Path) -> str:
    """A template file's text: UTF-8 (TOML's encoding), with or without a byte-order mark, or UTF-16 with one
    (PowerShell's `templates show stylize > my.toml` writes that); anything else is said, not a traceback."""
    import codecs

    raw = path.read_bytes()
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"
    else:
        encoding = "utf-8-sig"  # the BOM a Windows editor may add was "not valid TOML (line 1, column 1)"
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text (byte {e.start} is {raw[e.start:e.start + 1]!r}); save the "
                         "template as UTF-8") from None


def load_template(name_or_path: str) -> dict:
    """A bundled template by task name (``stylize``) or a TOML file by path, validated. A task's name is
    its bundled template even where a file or folder of that name is in the working directory (a
    `run restore -o restore` output made every later `run restore` there "template file not found");
    ``./restore`` reads such a file."""
    path = Path(name_or_path)
    from_file = str(name_or_path) not in TASKS and (path.suffix == ".toml" or path.exists())
    if from_file:
        if not path.is_file():
            raise InputError(f"{path}: template file not found")
        text = _template_file_text(path)
    else:
        text = template_text(name_or_path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{name_or_path}: not valid TOML ({e})") from None
    validate(data, where=str(name_or_path))
    _check_task_sections(data, str(name_or_path))
    if from_file:
        _paths_from(data, path.parent)
    return data


# the task each optional section is for
SECTION_TASK = {"longvideo": "longvideo"}


def _check_task_sections(data: dict, where: str) -> None:
    """A task's own section is there, and no other task's: a longvideo template without [longvideo] ran as
    plain generation (no fusion, no co-denoising) without a word, and a [longvideo] table in a stylize
    template was used. (An unknown task is said by the caller.)"""
    task = data["task"]
    if task not in TASKS:
        return
    for section, owner in SECTION_TASK.items():
        if task == owner and section not in data:
            raise InputError(f"{where}: task = {task!r} lacks [{section}] (a template holds every setting; "
                             f"copy it from `flickerless templates show {owner}`)")
        if task != owner and section in data:
            raise InputError(f"{where}: [{section}] is for task = {owner!r} templates, not {task!r}: remove it, or "
                             f"start from `flickerless templates show {owner}`")


def split_lora(text: str) -> tuple[str, float]:
    """``"path[:scale]"`` -> (path, scale); the scale is 1 when the text does not end in ``:NUMBER``
    (a Windows drive's colon, say)."""
    path, _, scale = text.rpartition(":")
    if path:
        try:
            value = float(scale)
        except ValueError:
            value = math.nan
        if math.isfinite(value):
            return path, value
        if Path(path).expanduser().exists() and not Path(text).expanduser().exists():
            # "style.safetensors:x" was looked for as a file named so (after the model had loaded)
            raise InputError(f"LoRA {text!r}: the scale after the last ':' ({scale!r}) is not a finite number; give "
                             f"{path}:0.8, or {path} for a scale of 1")
    return text, 1.0


# where a template names files or folders: (section, key); "controlnets" and "annotators" hold lists/tables
_PATH_KEYS = (("model", "base"), ("model", "textual_inversion"), ("longvideo", "sam_model"))
_ANNOTATOR_PATH_KEYS = ("model", "openpose_model")


def _paths_from(data: dict, folder: Path) -> None:
    """A template file's relative paths name files beside it, as a project's do: where a relative
    model, LoRA, embedding, ControlNet, SAM or annotator path exists from the template's folder, it
    becomes that absolute path (so the run and a later ``--resume`` find it from any directory). A path
    that does not exist there is left as written: a path from the working directory, or a repo id."""
    def here(value: str) -> str:
        if not value or Path(value).is_absolute() or not (folder / value).exists():
            return value
        return str((folder / value).resolve())

    def each(section: dict, key: str) -> None:
        v = section.get(key)
        if isinstance(v, str):
            section[key] = here(v)
        elif isinstance(v, list):
            section[key] = [here(x) if isinstance(x, str) else x for x in v]

    for sec, key in _PATH_KEYS:
        if isinstance(data.get(sec), dict):
            each(data[sec], key)
    model = data.get("model")
    if isinstance(model, dict) and isinstance(model.get("lora"), list):
        out = []
        for item in model["lora"]:
            path, _ = split_lora(item)
            out.append(here(path) + item[len(path):])  # the ":scale" as written
        model["lora"] = out
    for unit in data.get("controlnets", []) or []:
        if isinstance(unit, dict):
            each(unit, "model")
    for settings in (data.get("annotators") or {}).values():
        if isinstance(settings, dict):
            for key in _ANNOTATOR_PATH_KEYS:
                each(settings, key)


def validate(data: dict, where: str = "template") -> None:
    """Raise :class:`InputError` naming the first unknown key or wrong value, and the valid keys."""
    for k, v in data.items():
        if k in TOP:
            if not TOP[k](v):
                raise InputError(f"{where}: {k} must be a string")
        elif k in SCHEMA or k in OPTIONAL:
            keys = SCHEMA.get(k) or OPTIONAL[k]
            if not isinstance(v, dict):
                raise InputError(f"{where}: [{k}] must be a table")
            for kk, vv in v.items():
                _check(keys, kk, vv, f"{k}.", where)
            missing = set(keys) - set(v)
            if missing:
                raise InputError(f"{where}: [{k}] lacks {', '.join(sorted(missing))} (a template holds every setting)")
        elif k == "controlnets":
            if not isinstance(v, list):
                raise InputError(f"{where}: controlnets must be an array of tables ([[controlnets]])")
            for i, unit in enumerate(v):
                if not isinstance(unit, dict):
                    raise InputError(f"{where}: controlnets.{i} = {unit!r}: each ControlNet is a table of "
                                     f"{', '.join(CONTROLNET_KEYS)}")
                for kk, vv in unit.items():
                    _check(CONTROLNET_KEYS, kk, vv, f"controlnets.{i}.", where)
                for need in ("annotator", "model"):
                    if need not in unit:
                        raise InputError(f"{where}: controlnets.{i} needs {need}")
        elif k == "annotators":
            if not isinstance(v, dict) or not all(isinstance(x, dict) for x in v.values()):
                raise InputError(f"{where}: [annotators.NAME] tables hold each annotator's settings")
        else:
            valid = sorted([*TOP, *SCHEMA, *OPTIONAL, "controlnets", "annotators"])
            raise InputError(f"{where}: unknown key {k!r}; valid top-level keys: {', '.join(valid)}")
    for k in ("task", *SCHEMA):
        if k not in data:
            raise InputError(f"{where}: lacks {'[' + k + ']' if k in SCHEMA else k}")


def _check(schema: dict, key: str, value, prefix: str, where: str) -> None:
    if key not in schema:
        raise InputError(f"{where}: unknown key {prefix}{key}; valid keys: "
                         f"{', '.join(prefix + k for k in schema)}")
    ok, what = schema[key]
    if not ok(value):
        raise InputError(f"{where}: {prefix}{key} = {value!r}: must be {what}")


def _parse_value(text: str):
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare string: --set model.base=some/repo


def _list_has(name: str, n: int, before: list[str], after: list[str]) -> str:
    """What a list setting holds, for an index past its end, with the index to give: "there are 1
    controlnets (index 0..0)" was said for controlnets.1 on a template with one ControlNet."""
    one, many = ("ControlNet", "ControlNets") if name == "controlnets" else ("item", "items")
    whose = "the template has" if name == "controlnets" else f"{'.'.join(before)} has"
    if n == 0:
        return f"{whose} no {many}"
    if n == 1:
        return f"{whose} one {one} (index 0)" + (f": give {'.'.join([*before, '0', *after])}" if after else "")
    last = f"{n - 1}" if n > 2 else "1"
    return f"{whose} {n} {many} (index 0 {'or' if n == 2 else 'to'} {last})"


def _whole_list(name: str, items: list, index: str, value) -> str:
    """``--set name=[...]``, the list with item ``index`` made ``value`` (as an index of a list of values
    was meant), quoted for the shell where it holds strings: ``name.0.scale=0.5`` was suggested for
    deflicker.patch_sizes.0=3, a key that does not exist."""
    changed = list(items)
    if index.isdigit():
        changed[int(index):int(index) + 1] = [value]  # past the end: added
    try:
        text = f"{name}=[{','.join(_toml_value(x) for x in changed)}]"
    except InputError:  # a value TOML cannot write back (a date): the list as it is
        text = f"{name}=[{','.join(_toml_value(x) for x in items)}]"
    return f"--set '{text}'" if '"' in text else f"--set {text}"


def apply_overrides(data: dict, overrides) -> dict:
    """A copy of ``data`` with each ``"section.key=value"`` applied (values parsed as TOML, else strings)."""
    out = copy.deepcopy(data)
    if isinstance(overrides, str):  # read a character at a time: "'a' expected section.key=value"
        raise InputError(f"overrides: a list of section.key=value strings, e.g. [{overrides!r}], not one string")
    for item in overrides or ():
        if "=" not in item:
            raise InputError(f"--set {item!r}: expected section.key=value, e.g. sampling.steps=30")
        path, text = item.split("=", 1)
        parts = path.strip().split(".")
        value = _parse_value(text.strip())
        node = out
        if len(parts) == 1 and isinstance(out.get(parts[0]), (dict, list)):  # a whole section replaced by a value
            if type(value) is not type(out[parts[0]]):
                raise InputError(f"--set {path}: {parts[0]} is a section; set a key in it, e.g. "
                                 f"{'controlnets.0.scale=0.5' if parts[0] == 'controlnets' else parts[0] + '.KEY=VALUE'}")
        for i, p in enumerate(parts[:-1]):
            if not isinstance(node, (dict, list)):
                raise InputError(f"--set {path}: {'.'.join(parts[:i])} is a value, not a section")
            if isinstance(node, list):
                if not p.isdigit() or int(p) >= len(node):
                    raise InputError(f"--set {path}: {_list_has(parts[i - 1], len(node), parts[:i], parts[i + 1:])}")
                node = node[int(p)]
            else:
                if p not in node:
                    if parts[0] == "annotators" and i == 1:
                        node[p] = {}
                    else:
                        valid = ", ".join(sorted(k for k in node if isinstance(node[k], (dict, list))))
                        raise InputError(f"--set {path}: unknown section {p!r}; valid: {valid}")
                node = node[p]
        last = parts[-1]
        if isinstance(node, list) and (parts[0] == "controlnets" or any(isinstance(x, dict) for x in node)):
            example = f"{path}.scale=0.5" if last.isdigit() else f"{'.'.join(parts[:-1])}.0.scale=0.5"
            raise InputError(f"--set {path}: give a key inside the list item, e.g. {example}")
        if isinstance(node, list):
            raise InputError(f"--set {path}: {'.'.join(parts[:-1])} is a list of values, given whole, e.g. "
                             f"{_whole_list('.'.join(parts[:-1]), node, last, value)}")
        if not isinstance(node, dict):
            raise InputError(f"--set {path}: {'.'.join(parts[:-1])} is a value, not a section")
        node[last] = value
    validate(out, where="--set")
    return out


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        # a JSON string is a TOML basic string, but for what JSON escapes as UTF-16 surrogate pairs (an emoji
        # in a prompt made settings.toml unreadable) and the DEL character, which TOML wants escaped
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise InputError(f"cannot write {v!r} to TOML")


def dumps(data: dict) -> str:
    """TOML text of a template (scalars, tables, ``[[controlnets]]`` and ``[annotators.NAME]``)."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, (dict, list))]
    for k, v in data.items():
        if isinstance(v, dict) and k != "annotators":
            lines += ["", f"[{k}]"] + [f"{kk} = {_toml_value(vv)}" for kk, vv in v.items()]
    for unit in data.get("controlnets", []):
        lines += ["", "[[controlnets]]"] + [f"{kk} = {_toml_value(vv)}" for kk, vv in unit.items()]
    for name, settings in data.get("annotators", {}).items():
        lines += ["", f"[annotators.{name}]"] + [f"{kk} = {_toml_value(vv)}" for kk, vv in settings.items()]
    return "\n".join(lines) + "\n"
