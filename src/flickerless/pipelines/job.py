"""One video job: a task template + a clip + a prompt -> a video, with a job folder that survives.

``run_job`` resolves the settings (template, then the caller's model/ControlNet choices, then
``--set`` overrides), reads the clip at the template's size, computes the control videos with
:mod:`flickerless.control`, runs the :class:`~flickerless.diffusion.VideoPipeline` and writes the
output. Next to the output it keeps a job folder (``out.mp4`` -> ``out.job/``):

    settings.toml      the resolved settings (what ran, to rerun or share)
    job.json           the inputs (clip, frames, prompt, style image), the settings' hash and the output
    controls/K_NAME/   the control frames of ControlNet K, as PNGs
    latents.pt         the latents after the last finished denoising step
    frames/NNNNN.png   each finished frame, written as soon as it is final

``resume=True`` continues an interrupted job from what is there (control frames, the latents of
the last finished step, finished frames) and gives the same frames as an uninterrupted run; a job
folder with progress in it is never overwritten without ``resume`` or ``restart``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from ..blend.frames import to_hwc_uint8
from ..errors import DeviceError, InputError, ModelNotFoundError, OutputError, out_of_memory
from ..video import write_whole
from ..weights import quiet_model_loading
from .templates import TASKS, apply_overrides, dumps, load_template, split_lora, window_value

log = logging.getLogger("flickerless")

__all__ = ["PER_FRAME", "run_job", "resolve_settings", "read_clip", "job_folder", "job_of", "target_size", "parse_frames",
           "TASKS"]

# The per-frame ablation of DiffSynth's Table 3 and Figure 3: the same job with every frame generated on
# its own (no cross-frame attention, no in-iteration deflicker, no final pass).
PER_FRAME = ["sampling.cross_frame=[]", "deflicker.frequency=0", "deflicker.steps=[]", "deflicker.final_window=0"]


def parse_frames(text: str | None) -> tuple[int, int | None]:
    """``"START:END"`` (either may be empty) -> (start, end or None)."""
    if not text:
        return 0, None
    if ":" not in text and text.strip().isdigit():  # `train`/`segment --frames N` mean the first N: said, not guessed
        n = int(text)
        raise InputError(f"--frames {text}: give a range START:END, e.g. :{n} for the first {n} frames or {n}: for "
                         f"frame {n} on")
    try:
        a, b = text.split(":") if ":" in text else (text, "")
        start = int(a) if a.strip() else 0
        end = int(b) if b.strip() else None
    except ValueError:
        raise InputError(f"--frames {text!r}: expected START:END, e.g. 0:120 or 30: (frame numbers)") from None
    if start < 0 or (end is not None and end <= start):
        raise InputError(f"--frames {text!r}: need 0 <= START < END")
    return start, end


def resolve_settings(template: str, model: str | None = None, controlnets: dict[str, str] | None = None,
                     lora: list[str] | None = None, overrides: list[str] | None = None) -> dict:
    """Template, then the explicit choices, then ``--set`` overrides (which win), validated. A single
    LoRA or override may be given as a string."""
    if isinstance(controlnets, (list, tuple)) and not controlnets:  # none, said as an empty list
        controlnets = {}
    if controlnets is not None and not isinstance(controlnets, Mapping):  # a list failed on .items()
        raise InputError(f"controlnets is a mapping {{annotator: model}}, e.g. {{'canny': path}}, got "
                         f"{type(controlnets).__name__}")
    # paths as pathlib gives them (a Path failed in json.dumps, deep inside, or was refused as not a string)
    model = os.fspath(model) if isinstance(model, os.PathLike) else model
    if controlnets:
        controlnets = {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in controlnets.items()}
    lora = os.fspath(lora) if isinstance(lora, os.PathLike) else lora
    if isinstance(lora, (list, tuple)):
        lora = [os.fspath(v) if isinstance(v, os.PathLike) else v for v in lora]
    # a string was read a character at a time ("--set 's': expected section.key=value")
    lora, overrides = ([v] if isinstance(v, str) else v for v in (lora, overrides))
    for what, v in (("lora", lora), ("overrides", overrides)):
        if v is not None and not (isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v)):
            raise InputError(f"{what} is a list of strings, e.g. {_EXAMPLES[what]}, got {v!r}")
    s = load_template(template)
    if s["task"] not in TASKS:
        raise InputError(f"template task {s['task']!r} is not one of {', '.join(TASKS)}")
    sets = []
    if model:
        sets.append(f"model.base={json.dumps(model)}")
    for name, cn in (controlnets or {}).items():
        idx = [i for i, u in enumerate(s.get("controlnets", [])) if u["annotator"] == name]
        if not idx:
            have = ", ".join(u["annotator"] for u in s.get("controlnets", [])) or "none"
            raise InputError(f"--controlnet {name}=...: the {s['task']} template has no {name} ControlNet (it has: {have})")
        sets += [f"controlnets.{i}.model={json.dumps(cn)}" for i in idx]
    if lora:
        sets.append(f"model.lora={json.dumps(list(lora))}")
    given = s.get("annotators", {})
    task = s["task"]
    s = apply_overrides(s, sets + list(overrides or []))
    if s["task"] != task:  # `--set task=...` ran the template's task and wrote the other into settings.toml
        raise InputError(f"--set task={s['task']}: a template's task is not a setting; give that task's template "
                         f"(flickerless run {s['task'] if s['task'] in TASKS else 'TASK'} ...)")
    _check_together(s, given)
    for item in s["model"]["lora"]:  # a bad scale, said before the model loads
        split_lora(item)
    return s


_EXAMPLES = {"lora": "['style.safetensors:0.8']", "overrides": "['sampling.steps=20']"}


def _frames_range(frames) -> str | None:
    """run_job's ``frames`` as the command line's ``"START:END"``: given so, or as ``(START, END)`` or a
    slice (either end None), as Python has it. A lone number is refused, as ``--frames N`` is: the
    first N frames, or frame N on? (A tuple failed on .strip(), a number on ``in``.)"""
    if frames is None or isinstance(frames, str):
        return frames
    if isinstance(frames, slice) and frames.step in (None, 1):
        frames = (frames.start, frames.stop)
    whole = (lambda v: isinstance(v, (int, np.integer)) and not isinstance(v, bool))
    if isinstance(frames, (tuple, list)) and len(frames) == 2 and all(v is None or whole(v) for v in frames):
        start, end = frames
        return f"{0 if start is None else int(start)}:{'' if end is None else int(end)}"
    n = int(frames) if whole(frames) else 120
    raise InputError(f"frames is a range, \"START:END\" or (START, END), e.g. (0, {n}) or \":{n}\" for the first {n} "
                     f"frames, got {frames!r}")


def _check_together(s: dict, given: dict | None = None) -> None:
    """What each setting's own check cannot see, refused before any work: annotator settings (the
    names and types the annotators take), ControlNet ranges that end before they start, and deflicker
    steps past the run's steps (either of which would silently do nothing)."""
    from ..blend.patchmatch import PatchMatchOptions
    from ..control import get_annotator
    from ..diffusion.pipeline import check_deflicker_steps, denoising_steps

    used = {u["annotator"] for u in s.get("controlnets", [])} | ({"pose"} if s.get("longvideo") else set())
    for name, kw in s.get("annotators", {}).items():
        get_annotator(name, **kw)
        if name not in used and (given or {}).get(name) != kw:  # --set annotators.pose.window=9 on a template
            # without pose was taken silently (the template's own tables for ControlNets removed are not said)
            log.warning("annotators.%s: no ControlNet of the %s template uses the %s annotator, so its settings do "
                        "nothing (its ControlNets: %s)", name, s["task"], name,
                        ", ".join(sorted(u["annotator"] for u in s.get("controlnets", []))) or "none")
    for i, u in enumerate(s.get("controlnets", [])):
        if u.get("start", 0.0) > u.get("end", 1.0):
            raise InputError(f"controlnets.{i}: start {u['start']:g} is after end {u['end']:g} (fractions of the "
                             "denoising run), so it would never apply")
    samp = s["sampling"]
    check_deflicker_steps(s["deflicker"]["steps"], samp["steps"], samp["strength"])
    # PatchMatch's own checks (sizes largest first), said before the model loads rather than at the first pass
    PatchMatchOptions(patch_sizes=tuple(s["deflicker"]["patch_sizes"]), iterations=s["deflicker"]["iterations"])
    lv = s.get("longvideo")
    if lv:  # said after the pose annotation, SAM and the model loading before, with a job folder left
        # counted in the steps this strength takes, as the engine does (checked against sampling.steps, a
        # fusion_step past them at strength < 1 failed after the pose, SAM and model loading, unnamed)
        total = denoising_steps(samp["steps"], samp["strength"])
        if lv["fusion_seeds"] and lv["fusion_step"] >= total:
            taken = f"{samp['steps']} steps" + (f" at strength {samp['strength']:g}" if total < samp["steps"] else "")
            fix = (f"--set longvideo.fusion_step=N with 1 <= N <= {total - 1}" if total > 1 else
                   "raise sampling.steps or sampling.strength, or turn fusion off with longvideo.fusion_seeds=[]")
            raise InputError(f"longvideo.fusion_step {lv['fusion_step']} is not below the {total} denoising steps this "
                             f"run takes ({taken}): {fix}")
        if lv["clip_length"] and lv["clip_stride"] > lv["clip_length"]:
            raise InputError(f"longvideo.clip_stride {lv['clip_stride']} is larger than clip_length {lv['clip_length']}: "
                             "frames between clips would not be denoised")


def target_size(h: int, w: int, settings: dict, multiple: int = 8) -> tuple[int, int]:
    """The size frames are generated at: the template's width x height (``stretch``/``crop``), or
    the clip's aspect ratio at about as many pixels (``area``), in multiples of ``multiple``."""
    W, H, mode = settings["video"]["width"], settings["video"]["height"], settings["video"]["resize"]
    if mode != "area":
        return _rounded(H, multiple), _rounded(W, multiple)
    return _area_size(h, w, W * H, multiple)


def _rounded(v: float, multiple: int) -> int:
    """``v`` to the nearest multiple of ``multiple``, at least one."""
    return max(multiple, int(round(v / multiple)) * multiple)


def _sides_rounded_apart(h: int, w: int, area: float, multiple: int = 8) -> tuple[int, int]:
    """The aspect of ``h`` x ``w`` at ``area`` pixels, each side rounded on its own: the rule before
    :func:`_area_size` (a job it made resumes at its size), and a strip's whose narrow side is held."""
    scale = (area / (w * h)) ** 0.5
    return _rounded(h * scale, multiple), _rounded(w * scale, multiple)


def _area_size(h: int, w: int, area: float, multiple: int = 8) -> tuple[int, int]:
    """(height, width) in multiples of ``multiple`` with the aspect of ``h`` x ``w``, at about ``area`` pixels.
    Each side rounded on its own bent the aspect by up to 12% on a small template (16:9 at 160x128 made
    192x104, 3.8% too wide, and the output plays stretched by that): the narrow side's multiples within 7% of
    its length at ``area`` are tried, each with the wide side nearest in aspect, and the one nearest in aspect
    taken where it costs little in pixel count (1% of aspect weighs as 4% of pixels). The narrow side is the
    one stepped: stepping the height of a portrait strip (3x4000) rounded its width to 16 and bent it 10%, and
    h x w is w x h turned. Where the narrow side is a few multiples the pixel count moves more (a 16x16
    template makes 640x272 40x16, 2.5x its pixels); a strip whose narrow side is under ``multiple`` keeps it."""
    if h > w:  # portrait: the landscape size turned, so that each is the other's transpose
        return _area_size(w, h, area, multiple)[::-1]
    aspect = w / h
    ideal = (area / aspect) ** 0.5  # the height (the narrow side) at exactly the area
    if ideal < multiple:  # a strip whose narrow side is held at `multiple`: no aspect to keep
        return _sides_rounded_apart(h, w, area, multiple)
    best = None
    lo, hi = max(1, math.floor(ideal * 0.93 / multiple)), max(1, math.ceil(ideal * 1.07 / multiple))
    for k in range(lo, hi + 1):
        ch = k * multiple
        cw = max(multiple, int(round(ch * aspect / multiple)) * multiple)
        cost = abs(math.log(cw / ch / aspect)) + 0.25 * abs(math.log(cw * ch / area))  # 1% of aspect ~ 4% of area
        if best is None or cost < best[0]:
            best = (cost, ch, cw)
    return best[1], best[2]


def _say_rounded(settings: dict, size: tuple[int, int], multiple: int = 8) -> None:
    """Say where ``crop``/``stretch`` make another size than the template's width x height: 130x90 became
    128x88 without a word (``area`` only keeps about its pixel count, as the README says)."""
    W, H, mode = settings["video"]["width"], settings["video"]["height"], settings["video"]["resize"]
    if mode != "area" and tuple(size) != (H, W):
        log.info("video.resize=%s: %dx%d is made %dx%d (the model works in multiples of %d pixels)", mode, W, H,
                 size[1], size[0], multiple)


def _fit(frame: np.ndarray, size: tuple[int, int], mode: str, pixel_aspect: float = 1.0) -> np.ndarray:
    """A frame at ``size`` (``crop``: the centre of its shown shape; else stretched), in one resample;
    ``pixel_aspect``: how much wider than high a stored pixel is shown (anamorphic video)."""
    from ..video import resize_frame

    if mode == "crop":
        frame = _crop(frame, size, pixel_aspect)
    return resize_frame(frame, tuple(size)) if frame.shape[:2] != tuple(size) else frame


def _crop_size(h: int, w: int, size: tuple[int, int], pixel_aspect: float = 1.0) -> tuple[int, int]:
    """(height, width) of the centre of an ``h`` x ``w`` frame that has the shown aspect of ``size`` (H, W)."""
    H, W = size
    s = max(H / h, W / (w * pixel_aspect))  # output pixels per shown pixel
    return min(h, int(round(H / s))), min(w, int(round(W / s / pixel_aspect)))


def _crop(frame: np.ndarray, size: tuple[int, int], pixel_aspect: float = 1.0) -> np.ndarray:
    """The centre of ``frame`` with the shown aspect of ``size`` (H, W), at the frame's own pixels: what
    ``_fit(..., "crop")`` resizes, and what restore super-resolves from (so both show the same part)."""
    h, w = frame.shape[:2]
    ch, cw = _crop_size(h, w, size, pixel_aspect)
    y, x = (h - ch) // 2, (w - cw) // 2
    return frame[y : y + ch, x : x + cw]


def job_folder(output) -> Path:
    """``out.mp4`` -> ``out.job``; another video keeps its type, ``out.gif`` -> ``out.gif.job``; a folder of
    PNGs ``frames`` -> ``frames.png.job``. (Outputs that differed only in their type, out.mp4, out.gif and
    the folder out, shared out.job: one refused the other, and the --restart it advised deleted the
    other's job.) An .mp4 keeps its whole name where dropping ``.mp4`` would give another output's folder:
    ``a.gif.mp4`` (``a.gif``'s), ``xx.png.mp4`` (the PNG folder ``xx``'s) or ``K.MP4`` (``K.mp4``'s)."""
    from ..video import WRITE_VIDEO_EXTS

    out = Path(output)
    ext = out.suffix.lower()
    if out.suffix == ".mp4" and Path(out.stem).suffix.lower() not in {*WRITE_VIDEO_EXTS, ".gif", ".png"}:
        return out.with_name(out.stem + ".job")
    return out.with_name(out.name + (".job" if ext in WRITE_VIDEO_EXTS or ext == ".gif" else ".png.job"))


def _recorded_output(job: Path) -> str | None:
    """The output a job folder records it belongs to (its name); None where it records none (made by an
    earlier version) or cannot be read."""
    try:
        return json.loads((job / "job.json").read_text(encoding="utf-8")).get("output")
    except (OSError, ValueError, AttributeError):
        return None


def job_of(output, resume: bool = False) -> Path:
    """The job folder a run of ``output`` works in: :func:`job_folder`'s, or, to resume, one an earlier
    version kept for it where that is not there: ``out.job`` for any ``out.*`` or folder ``out`` (it records
    no output, and --resume checks its inputs and settings as any job's), or the one this output had before
    :func:`job_folder` gave it its own (``a.gif.mp4``'s ``a.gif.job``, recording it). Only one with work in it
    is taken: an empty one was taken by --resume of any output of that name, which then started over there
    and claimed it (recording that output), out of its own job folder."""
    job = Path(job_folder(output))
    out = Path(output)
    earlier = out.with_name((out.stem if out.suffix else out.name) + ".job")
    if (resume and earlier != job and not job.exists() and (earlier / "job.json").is_file()
            and has_progress(earlier) and _recorded_output(earlier) in (None, out.name)):
        return earlier
    return job


def _case_blind(path: Path) -> bool:
    """Whether the file system holding ``path`` (which exists) takes its name in other letter case for the same
    file (macOS, Windows): there K.mp4 and K.MP4 are one output; on Linux they are two, and were said to be one."""
    other = path.with_name(path.name.swapcase())
    try:
        return other != path and os.path.samefile(path, other)
    except OSError:  # no such file: the cases are told apart
        return False


def _job_marked(job: Path) -> bool:
    """Whether ``job`` is a job folder (it holds job.json) or empty: what a run may take over or delete.
    Any other folder at that name (a user's ``take1.job`` of notes) is never written into or deleted."""
    return not job.exists() or (job / "job.json").exists() or (job.is_dir() and not any(job.iterdir()))


def _job_lock(job: Path):
    """``job``'s lock (:class:`~flickerless.video.OutputLock` on the folder) for a run's length: a second run
    of the same output at once is refused. It deleted the first's job folder, which had no progress yet,
    then finished the first's latents with its own prompt: both wrote wrong frames and exited 0."""
    from ..video import OutputLock

    return OutputLock(job, (f"{job}: another run of this output", " is working in it; wait for it to end, or give "
                                                                   "another output"))


def _available_memory() -> int:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not on Linux
        return 1 << 62


def check_memory(num_frames: int, size: tuple[int, int], num_controls: int, available: int | None = None) -> None:
    """Refuse, before any work, a clip that cannot fit in host memory at this size: the clip
    (float32), each control video (float16) and the output frames (float32) are held at once."""
    px = num_frames * 3 * size[0] * size[1]
    need = px * (4 + 2 * num_controls + 4 + 4)  # input, controls, decoded output, a deflicker copy
    avail = _available_memory() if available is None else available
    if need > 0.8 * avail:
        gib = 1 << 30
        raise InputError(
            f"{num_frames} frames at {size[1]}x{size[0]} need about {need / gib:.1f} GiB of host memory, "
            f"{avail / gib:.1f} GiB is available: process a part with --frames START:END, generate smaller "
            f"(--set video.width=... --set video.height=...), or use fewer ControlNets"
        )


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _comparable(settings: dict) -> dict:
    """``settings`` with each local path (model, LoRA, embedding, ControlNet, SAM, annotator weights) as the
    path it resolves to, what a resumed job compares: ``m/`` (as tab completion gives it), ``../x/m`` from
    another directory and a symlink to ``m`` are the same weights, and were refused as other settings. Repo
    ids are left as written; the files themselves are compared by job.json's "weights"."""
    from .templates import _ANNOTATOR_PATH_KEYS, _PATH_KEYS

    def local(v):
        if not isinstance(v, str) or not v:
            return v
        p = Path(v).expanduser()
        return str(p.resolve()) if p.exists() else v

    def each(section, key):
        if isinstance(section, dict) and key in section:
            v = section[key]
            section[key] = [local(x) for x in v] if isinstance(v, list) else local(v)

    s = json.loads(json.dumps(settings, default=str))
    for sec, key in _PATH_KEYS:
        each(s.get(sec), key)
    model = s.get("model")
    if isinstance(model, dict) and isinstance(model.get("lora"), list):
        model["lora"] = [local(split_lora(t)[0]) + t[len(split_lora(t)[0]):] if isinstance(t, str) else t
                         for t in model["lora"]]
    for unit in s.get("controlnets", []) or []:
        each(unit, "model")
    for kw in (s.get("annotators") or {}).values():
        for key in _ANNOTATOR_PATH_KEYS:
            each(kw, key)
    return s


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _same_settings(job: Path, settings: dict) -> bool:
    """Whether the job folder's settings.toml, its local paths resolved, is ``settings``: a job of the
    version before paths were resolved was hashed as written, and one resumed with ``m/`` for ``m`` was
    refused with two hashes."""
    from .templates import tomllib

    try:
        old = tomllib.loads((job / "settings.toml").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return _flat(_comparable(old)) == _flat(_comparable(settings))


def _changed_settings(job: Path, settings: dict) -> str:
    """The settings that differ from those the job folder was made with, as ``key (old -> new)``."""
    from .templates import tomllib

    try:
        old = _flat(_comparable(tomllib.loads((job / "settings.toml").read_text(encoding="utf-8"))))
    except (OSError, ValueError):
        return ""
    new = _flat(_comparable(settings))
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    said = [f"{k} ({old.get(k)!r} -> {new.get(k)!r})" for k in keys[:4]]
    return ", ".join(said) + (", ..." if len(keys) > 4 else "")


def _local_weights(settings: dict, model_config, style_image) -> list[tuple[str, object]]:
    """(the setting or option that names it, path) of each file or folder of weights (and the style image)
    a job reads; repo ids and None among them."""
    m = settings["model"]
    named = [("model.base", m["base"]), *(("model.lora", split_lora(t)[0]) for t in m["lora"]),
             *(("model.textual_inversion", t) for t in m.get("textual_inversion", [])),
             *((f"controlnets.{i}.model", u["model"]) for i, u in enumerate(settings.get("controlnets", []))),
             ("--config", model_config), ("--style-image", style_image)]
    lv = settings.get("longvideo")
    if lv:
        named.append(("longvideo.sam_model", lv.get("sam_model")))
    return named


def _local_stamps(settings: dict, model_config, style_image) -> dict:
    """What the local weights and images a job reads are (size and time of each file), by path: a LoRA
    retrained at the same path (``train --overwrite``) since a stop is refused on --resume, as a changed
    clip is, rather than finishing the old latents with the new weights. Repo ids are left out."""
    out = {}
    for _, p in _local_weights(settings, model_config, style_image):
        if p is None or not Path(p).exists():
            continue
        p = Path(p)
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        h = hashlib.blake2b(digest_size=8)
        for f in files:
            st = f.stat()
            h.update(f"{f.relative_to(p) if p.is_dir() else f.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
        out[str(p.resolve())] = h.hexdigest()
    return out


def _changed_weights(old: dict, meta: dict, settings: dict) -> str:
    """The weights whose files changed at their path since the stop, as the setting that names each and its
    path (``model.lora (/w/style.safetensors) changed at its path``): "a model, LoRA or ControlNet changed"
    left the user to guess which; "" where none is found. A path in only one of the two (a ControlNet given at
    another path) is no change at a path: the settings' own difference names that switch."""
    a, b = old.get("weights") or {}, meta.get("weights") or {}
    names = {}
    for what, p in _local_weights(settings, meta.get("model_config"), meta.get("style_image")):
        if p is not None and Path(p).exists():
            names.setdefault(str(Path(p).resolve()), f"{what} ({p})")
    changed = [names.get(p, p) for p in sorted(set(a) & set(b)) if a[p] != b[p]]
    return f"{', '.join(changed)} changed at {'its path' if len(changed) == 1 else 'their paths'}" if changed else ""


def _to_tensor(frames) -> torch.Tensor:
    """uint8 ``(T, H, W, 3)`` frames (array or list) -> float16 ``(T, 3, H, W)`` in [0, 1]."""
    from ..control import to_tensor

    return to_tensor(np.stack(frames) if isinstance(frames, list) else frames).half()


def _to_uint8(t: torch.Tensor) -> np.ndarray:
    return to_hwc_uint8(t).cpu().numpy()


def _save_png(path: Path, img: np.ndarray) -> None:
    from PIL import Image

    tmp = path.with_suffix(".tmp.png")
    Image.fromarray(img).save(tmp)
    os.replace(tmp, path)  # a frame on disk is always whole


def _load_pngs(folder: Path, n: int) -> list[np.ndarray] | None:
    from PIL import Image

    files = [folder / f"{i:05d}.png" for i in range(n)]
    if not all(f.exists() for f in files):
        return None
    return [np.asarray(Image.open(f).convert("RGB")) for f in files]


@dataclass
class _Inputs:
    frames: np.ndarray  # uint8 (T, H, W, 3) at the generation size
    fps: float
    video_id: str
    native: np.ndarray | None = None  # the clip at its own size, cropped as the frames are (restore: super-resolved from these)
    sound_start: float | None = None  # seconds into the clip where the frames' sound starts; None: no sound kept
    times: np.ndarray | None = None  # a variable-rate clip's frame times (video.frame_times), from the first read


def _generation_size(info, settings: dict, multiple: int = 8) -> tuple[int, int]:
    """(H, W) a clip of :class:`~flickerless.video.VideoInfo` ``info`` is generated at: an anamorphic clip
    with square pixels, at the shape it is shown."""
    return target_size(*_shown_size(info), settings, multiple)


def _shown_size(info) -> tuple[int, int]:
    """(H, W) of a clip as it is shown: an anamorphic clip's width at its pixels' shape."""
    return info.height, max(1, round(info.width * float(info.pixel_aspect)))


def _resumed_size(job: Path, info, settings: dict, resume: bool, restart: bool,
                  multiple: int = 8) -> tuple[int, int] | None:
    """The size a job to resume was made at, where an earlier version's area mode gave it, each side rounded on
    its own (before the sides were chosen together): its --resume, the same inputs and settings, was refused
    for "other size (168x120 -> 160x120)", and its work could only be deleted. None for any other job."""
    if not resume or restart or settings["video"]["resize"] != "area" or not has_progress(job):
        return None
    try:
        old = json.loads((job / "job.json").read_text(encoding="utf-8"))
        size = tuple(old["size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    h, w = _shown_size(info)
    now = target_size(h, w, settings, multiple)
    if size == now or size != _sides_rounded_apart(h, w, settings["video"]["width"] * settings["video"]["height"],
                                                   multiple):
        return None
    if old.get("settings") not in (_hash(_comparable(settings)), _hash(settings)) and not _same_settings(job, settings):
        return None  # other settings: refused as such, at the size this version gives
    log.info("%s was made at %dx%d by an earlier version's area sizing (this one makes %dx%d): resumed at %dx%d",
             job, size[1], size[0], now[1], now[0], size[1], size[0])
    return size


def read_clip(video, frames: tuple[int, int | None], settings: dict, multiple: int = 8,
              keep_native: bool = False, info=None, size: tuple[int, int] | None = None) -> _Inputs:
    """The frames ``start:end`` of a clip at the generation size of ``settings`` (``.frames``,
    uint8 ``(T, H, W, 3)``), its fps and an identity for the annotator cache. ``info``: the clip's
    :func:`~flickerless.video.probe`, where the caller has it; ``size``: (H, W) to read it at instead
    (a resumed job's own)."""
    from ..video import READ_VERSION, frame_times, has_audio, iter_frames, probe, say_colour, warn_about_input

    info = probe(video) if info is None else info
    warn_about_input(video, info)
    say_colour(video, info, kept=False)
    start, end = frames
    aspect = float(info.pixel_aspect)
    size = _generation_size(info, settings, multiple) if size is None else tuple(size)
    _say_rounded(settings, size, multiple)
    out, native = [], []
    for f in iter_frames(video, start, end):
        out.append(_fit(f, size, settings["video"]["resize"], aspect))
        if keep_native:  # restore super-resolves these: cropped as the frames are, else its output was stretched
            native.append(_crop(f, size, aspect) if settings["video"]["resize"] == "crop" else f)
    if not out:
        raise InputError(f"{video}: no frames in the range {start}:{'' if end is None else end} "
                         f"(the clip has {info.frames or 'an unknown number of'} frames)")
    if end is not None and start + len(out) < end:  # said, as deflicker says it, not fewer frames without a word
        log.warning("--frames %d:%d: the clip has %d frames; frames %d-%d are done", start, end, start + len(out),
                    start, start + len(out) - 1)
    from ..control.cache import input_stamp

    # a folder is its images (rewritten in place, one keeps the folder's own stat; and the folder's
    # changes with a job folder or notes put beside them, which refused a --resume)
    # and how it was fitted to the size: a crop and a stretch to one size shared their annotations (the
    # default, area, is left out, so the annotations and jobs made before stay theirs)
    fitted = [] if settings["video"]["resize"] == "area" else [settings["video"]["resize"]]
    vid = _hash([str(Path(video).resolve()), *input_stamp(video), start, end, size, READ_VERSION, *fitted])
    fps = settings["video"]["fps"] or info.fps
    # the clip's sound goes with its frames unless the frame rate is changed: the frames are written at the new
    # rate, not resampled, so they last another time than their sound and would drift from it
    sound = start / info.fps if abs(fps - info.fps) < 1e-3 else None
    if sound is None and has_audio(video):  # left out without a word, the output looked like it had lost it
        log.warning("the clip's sound is left out: video.fps %g changes the timing (the clip is %g fps, and its "
                    "frames are not resampled, so they would no longer line up with the sound)", fps, info.fps)
    # a variable-rate clip (phone footage): each frame is written at its own time, the sound in step
    times = frame_times(video, info.frames) if not settings["video"]["fps"] else None
    if times is not None:
        times = times[start:start + len(out) + 1]
        sound = times[0]
    return _Inputs(np.stack(out), fps, vid, np.stack(native) if keep_native else None, sound, times)


def _as_setting(e: InputError | ModelNotFoundError, name: str) -> InputError | ModelNotFoundError:
    """An annotator's missing-weights (or package) error as ``run`` says it: its remedy is the
    annotator's Python argument (``Pass model=...``, ``backend="openpose"``); here it is a setting
    (``--set annotators.NAME.model=...``)."""
    setting = re.search(r"\bPass (?:\w+ )?(\w*model)=", str(e))
    text = re.sub(r"\bPass (\w+ )?(\w*model|method)=", f"Set annotators.{name}.\\2=", str(e))
    text = text.replace("method='sobel'", f"annotators.{name}.method=\"sobel\"")
    text = re.sub(r'\bbackend="(\w+)"', f'--set annotators.{name}.backend="\\1"', text)
    if setting:
        text += f" (on the command line: --set annotators.{name}.{setting.group(1)}=\"...\")"
    return type(e)(text)


def _annotator_settings(name: str, settings: dict, size, native, progress=True, device=None) -> dict:
    """The settings annotator ``name`` runs with on frames of generation size ``size`` (H, W); ``native``:
    the clip's own size where it is kept (restore), which the tile annotator super-resolves from."""
    kw = dict(settings.get("annotators", {}).get(name, {}))
    kw.setdefault("progress", progress)
    if device is not None:
        kw.setdefault("device", str(device))
    if name == "tile" and native is not None and "scale" not in kw:
        kw.setdefault("size", tuple(size))
    return kw


def _check_annotators(units: list[dict], settings: dict, info, job: Path, resume: bool, size=None) -> None:
    """Before the clip is read: an annotator whose weights (or package) are missing says so now, not
    after the reading and the annotators before it. Skipped for a unit whose control frames a resumed
    job already holds."""
    from ..control import get_annotator

    size = _generation_size(info, settings) if size is None else size
    native = None
    if settings["task"] == "restore":  # the size read_clip keeps the clip at
        native = (info.height, info.width)
        if settings["video"]["resize"] == "crop":
            native = _crop_size(*native, size, float(info.pixel_aspect))
    names = [(k, u["annotator"]) for k, u in enumerate(units)]
    lv = settings.get("longvideo")
    if lv and lv["fusion_seeds"]:
        names.append((None, "pose"))  # the fusion's SAM prompts
    for k, name in names:
        if resume and k is not None and any((job / "controls" / f"{k}_{name}").glob("*.png")):
            continue
        kw = _annotator_settings(name, settings, size, native)
        ann = get_annotator(name, **kw)  # its settings' own errors name them already
        try:
            ann.check_weights(native if name == "tile" and native else size)
        except (ModelNotFoundError, InputError) as e:  # missing weights, or a missing package
            raise _as_setting(e, name) from e


def _annotate(unit: dict, inputs: _Inputs, settings: dict, style_image, cache_dir, progress, device):
    """The control frames of one ControlNet unit, ``(T, 3, H, W)`` float16 at the generation size."""
    from .. import control

    name = unit["annotator"]
    frames, video_id = inputs.frames, inputs.video_id
    native = inputs.native.shape[1:3] if inputs.native is not None else None
    kw = _annotator_settings(name, settings, inputs.frames.shape[1:3], native, progress, device)
    if name == "tile" and native is not None:
        frames = inputs.native  # restore: super-resolve the clip from its own pixels up to the generation size
    if name == "shuffle":  # one style image, shuffled once, the same control for every frame
        if style_image is None:
            raise InputError("the shuffle ControlNet needs a style image: give style_image (--style-image PATH)")
        from ..video import load_image

        img = _fit(load_image(Path(style_image)), inputs.frames.shape[1:3], "crop")
        one = control.annotate(name, img[None], cache=False, **kw)
        return _to_tensor(one).expand(len(inputs.frames), -1, -1, -1).contiguous()
    try:
        out = control.annotate(name, frames, cache=True, cache_dir=cache_dir, video_id=video_id, **kw)
    except ModelNotFoundError as e:
        raise _as_setting(e, name) from e
    t = _to_tensor(out)
    size = tuple(inputs.frames.shape[1:3])
    if tuple(t.shape[2:]) != size:
        t = torch.nn.functional.interpolate(t.float(), size=size, mode="bicubic", antialias=True).clamp(0, 1).half()
    return t


def _holding_the_job_lock(run):
    """``run`` (:func:`run_job`) with its output's job folder locked for its length (:func:`_job_lock`)."""
    @functools.wraps(run)
    def locked(template, video, output, *args, **kwargs):
        if not Path(output).name:  # "-o ." or "/": said by the output's own check (job_folder has no name to use)
            return run(template, video, output, *args, **kwargs)
        job = job_of(output, kwargs.get("resume", False))
        if not job.parent.is_dir():  # said by the output's own check
            return run(template, video, output, *args, **kwargs)
        with _job_lock(job):
            return run(template, video, output, *args, **kwargs)
    return locked


@_holding_the_job_lock
def run_job(template: str, video, output, prompt: str = "", *, model: str | None = None, model_config: str | None = None,
            controlnets: dict[str, str] | None = None, lora: list[str] | None = None,
            overrides: list[str] | None = None, frames: str | tuple | None = None, style_image=None,
            device=None, resume: bool = False, restart: bool = False, cache_dir=None,
            progress: bool = True, pipeline=None, stop_after_step: int | None = None, codec: str | None = None,
            crf: int = 17) -> Path:
    """Run one task; returns the output path. ``video``: a clip's path. ``frames``: ``"START:END"`` or
    ``(START, END)``, either end None. ``controlnets``: ``{annotator: model}``. ``model_config``: for a
    single-file model, a diffusers folder or repo id of its architecture (its configs). ``codec``, ``crf``:
    a video output's (see :class:`flickerless.video.VideoWriter`). ``pipeline`` reuses a loaded
    VideoPipeline (tests); ``stop_after_step`` interrupts the job after that denoising step, as a crash
    would (tests)."""
    from ..blend.deflicker import resolve_device
    from ..diffusion import DeflickerSchedule, VideoPipeline
    from ..diffusion.sampler import remembering_deflicker

    if not isinstance(video, (str, os.PathLike)):  # frames in memory failed in Path() with a TypeError
        raise InputError(f"video is a clip's path (a video file or a folder of frames), got {type(video).__name__}: "
                         "write frames first (flickerless.video.write(path, frames))")
    frames = _frames_range(frames)
    settings = resolve_settings(template, model, controlnets, lora, overrides)
    task = settings["task"]
    if task == "image_guided" and style_image is None:
        raise InputError("the image_guided task takes its style from an image: give style_image (--style-image PATH)")
    if style_image is not None and not Path(style_image).is_file():
        raise InputError(f"{style_image}: style image not found")
    if style_image is not None and not any(u["annotator"] == "shuffle" for u in settings.get("controlnets", [])):
        # it was ignored without a word
        raise InputError(f"--style-image: the {task} template has no shuffle ControlNet to take it (the image_guided "
                         "template has)")
    from ..video import check_output, check_output_is_not_input

    check_output(output, codec)  # before any work: a generation must not end in "cannot write .avi"
    if pipeline is None:  # and the device and models, found missing after the clip was read and annotated
        from ..weights import check_available

        resolve_device(device)
        check_available(settings["model"]["base"], "model", "Supply a local diffusers folder or a single "
                        ".safetensors/.ckpt file")
        for u in settings.get("controlnets", []):
            what = "T2I-Adapter" if u.get("kind") == "t2i_adapter" else "ControlNet"
            check_available(u["model"], f"{what} ({u['annotator']})", f"Give --controlnet {u['annotator']}=ID or a "
                            "local folder", index_file="config.json")
        lv = settings.get("longvideo")
        if lv and lv["fusion_seeds"]:
            check_available(lv["sam_model"], "SAM model", "Set longvideo.sam_model to a SAM repo id or a local folder",
                            index_file="config.json")
    output = Path(output)
    check_output_is_not_input(output, video=video, style_image=style_image)
    job = job_of(output, resume)
    legacy = job_of(output, True)
    if legacy != job and has_progress(legacy):  # it was refused (use --resume); then recomputed without a word
        log.warning("%s holds a job an earlier version kept for %s or another output of that name: this run "
                    "starts its own in %s; --resume continues that one if it is this output's", legacy, output.name,
                    job)
    start_end = parse_frames(frames)
    units = settings.get("controlnets", [])
    from ..video import probe

    # from the clip's header, before it is read: a clip too long at this size was read whole first (3.4 GB
    # and 23 s before the refusal; larger, the reading itself could run out of memory)
    info = probe(video)
    size = _resumed_size(job, info, settings, resume, restart) or _generation_size(info, settings)
    if info.frames:
        first, last = start_end[0], min(info.frames, start_end[1] or info.frames)
        check_memory(max(0, last - first), size, len(units))
    _check_annotators(units, settings, info, job, resume, size)
    inputs = read_clip(video, start_end, settings, multiple=8, keep_native=task == "restore", info=info, size=size)
    T, H, W = inputs.frames.shape[:3]
    check_memory(T, (H, W), len(units))
    meta = {"video": str(Path(video).resolve()), "video_id": inputs.video_id, "frames": list(start_end),
            "prompt": prompt, "style_image": str(style_image) if style_image else None,
            "settings": _hash(_comparable(settings)), "size": [H, W], "num_frames": T,
            "weights": _local_stamps(settings, model_config, style_image), "output": output.name}
    if model_config is not None:
        meta["model_config"] = str(model_config)
    _prepare_job_folder(job, meta, settings, resume, restart)

    # control videos (kept in the job folder; the annotators also cache them across jobs)
    controls = []
    for k, unit in enumerate(units):
        folder = job / "controls" / f"{k}_{unit['annotator']}"
        saved = _load_pngs(folder, T)
        if saved is not None:
            controls.append(_to_tensor(saved))
            continue
        frames_u8 = [_to_uint8(fr) for fr in _annotate(unit, inputs, settings, style_image, cache_dir, progress,
                                                       device)]
        folder.mkdir(parents=True, exist_ok=True)
        for i, fr in enumerate(frames_u8):
            _save_png(folder / f"{i:05d}.png", fr)
        controls.append(_to_tensor(frames_u8))  # the PNGs' pixels: exactly what a resumed job will read

    clip = _to_tensor(inputs.frames)
    if task == "restore":
        tile = [i for i, u in enumerate(units) if u["annotator"] == "tile"]
        if tile:
            clip = controls[tile[0]].clone()  # the super-resolved frames are the img2img input
    # units of kind "t2i_adapter" condition through T2I-Adapters, the others through ControlNets
    adapter = [u.get("kind", "controlnet") == "t2i_adapter" for u in units]
    cn_units = [u for u, a in zip(units, adapter) if not a]
    ad_units = [u for u, a in zip(units, adapter) if a]
    cn_controls = [c for c, a in zip(controls, adapter) if not a]
    ad_controls = [c for c, a in zip(controls, adapter) if a]
    frames_dir = job / "frames"
    frames_dir.mkdir(exist_ok=True)
    done = _load_pngs(frames_dir, T)
    if done is None:
        samp, dfl, post = settings["sampling"], settings["deflicker"], settings["post"]
        if pipeline is None:
            if not progress:  # quiet: no loading bars from diffusers/transformers either
                quiet_model_loading()
            dev = resolve_device(device)
            dtype = None if settings["model"]["dtype"] == "auto" else getattr(torch, settings["model"]["dtype"])
            pipeline = VideoPipeline.from_pretrained(
                settings["model"]["base"], controlnets=[u["model"] for u in cn_units],
                adapters=[u["model"] for u in ad_units], device=dev, dtype=dtype,
                lora=[split_lora(x) for x in settings["model"]["lora"]],
                textual_inversion=list(settings["model"]["textual_inversion"]),
                cross_frame=tuple(samp["cross_frame"]) or None, batch_size=samp["batch_size"],
                vae_batch_size=samp["vae_batch_size"], **({} if model_config is None else {"config": model_config}))
        self_guided = dfl["guide"] == "self"

        # F of eqs 2-7 and the final pass, with a progress bar; its passes share PatchMatch fields
        remembering = remembering_deflicker(patch_sizes=tuple(dfl["patch_sizes"]), iterations=dfl["iterations"],
                                            progress=progress)

        def deflicker_fn(fr, g, w):
            return remembering(fr, None if self_guided else g, w)
        schedule = DeflickerSchedule(frequency=dfl["frequency"] or None, steps=dfl["steps"] or None,
                                     window=window_value(dfl["window"]))
        ckpt = job / "latents.pt"
        fields = job / "matches.pt"  # the deflicker's PatchMatch fields, so a resumed job continues exactly
        state = torch.load(ckpt, weights_only=True) if ckpt.exists() else None
        lv = settings.get("longvideo")
        newest = _newest_candidate(job, lv) if state is None else None  # (path, what it holds), read once here
        kept = _kept_fields(job, state if state is not None else newest[1] if newest else None)
        if kept is not None:
            remembering.matches.load_state_dict(kept)
        # the version of the fields on disk and their token, which each checkpoint records (None: none yet;
        # fields an earlier version kept have no token: they are saved again, with one, at the next step)
        saved = [remembering.matches.version if kept is None or "token" in kept else None,
                 None if kept is None else kept.get("token")]

        def save(path: Path, obj) -> None:
            try:
                write_whole(path, lambda tmp: torch.save(obj, tmp))
            except (OSError, RuntimeError) as e:  # torch.save says a full disk as a RuntimeError
                raise OutputError(f"{path}: saving the progress failed ({str(e).splitlines()[0]}); is the disk "
                                  f"full? what was done is kept in {job}: free some space and rerun with --resume"
                                  ) from None

        def keep(path: Path, obj: dict) -> None:
            """Save a checkpoint with the token of its fields, the fields first if they changed (under a
            second name until the checkpoint is saved): a stop between the two saves left a step's fields
            with the step before's latents, and --resume gave other frames than an uninterrupted run."""
            if remembering.matches.version != saved[0]:
                token = os.urandom(8).hex()
                save(_next_fields(job), {**remembering.matches.state_dict(), "token": token})
                save(path, {**obj, "fields": token})
                os.replace(_next_fields(job), fields)
                saved[:] = [remembering.matches.version, token]
            else:
                save(path, {**obj, "fields": saved[1]})

        def on_step(step, latents):
            keep(ckpt, {"step": step, "latents": latents.cpu()})
            if stop_after_step is not None and step >= stop_after_step:
                raise KeyboardInterrupt(f"stopped after step {step}")

        def on_frame(i, fr):
            _save_png(frames_dir / f"{i:05d}.png", _to_uint8(fr))

        final = dfl["final_window"]
        kw = dict(prompt=prompt, negative_prompt=samp["negative_prompt"], steps=samp["steps"],
                  guidance_scale=samp["guidance_scale"], strength=samp["strength"],
                  controls=cn_controls, control_scales=[u.get("scale", 1.0) for u in cn_units],
                  control_ranges=[(u.get("start", 0.0), u.get("end", 1.0)) for u in cn_units],
                  control_cond_only=[u.get("cond_only", False) for u in cn_units],
                  adapter_controls=ad_controls, adapter_scales=[u.get("scale", 1.0) for u in ad_units],
                  adapter_ranges=[(u.get("start", 0.0), u.get("end", 1.0)) for u in ad_units],
                  adapter_cond_only=[u.get("cond_only", False) for u in ad_units],
                  schedule=schedule, deflicker=deflicker_fn, final_window=0 if final == 0 else window_value(final),
                  contrast=post["contrast"], sharpen=post["sharpen"], progress=progress)
        seed, start, latents = samp["seed"], 0, None
        if lv:
            kw.update(_longvideo_kwargs(lv, T, prompt, start=start_end[0]))
        if state is not None:
            start, latents = state["step"], state["latents"]
            if lv and lv["fusion_seeds"]:
                seed = lv["fusion_seeds"][0]
        t0 = time.time()
        try:
            if lv and lv["fusion_seeds"] and state is None:  # average fusion (eq 11) at step k, then on from there
                seed, start, latents = _fuse(pipeline, clip, inputs, lv, kw, settings, cache_dir, device, progress,
                                             job, keep, dict([newest]) if newest else {})
            pipeline(clip, seed=seed, on_frame=on_frame, on_step=on_step, latents=latents, start_step=start, **kw)
        except Exception as e:  # noqa: BLE001 - only running out of memory is said here
            if not out_of_memory(e):
                raise
            raise DeviceError(
                f"out of memory generating {T} frames at {W}x{H} (UNet and VAE batches, {samp['batch_size']} and "
                f"{samp['vae_batch_size']} frames, are halved on their own where they do not fit, down to 1): free "
                f"the GPU of other work and rerun with --resume (progress is kept in {job}), or generate smaller "
                f"(--set video.width=N --set video.height=N) with --restart") from None
        log.info("generated %d frames in %.1f s (%.2f s/frame)", T, time.time() - t0, (time.time() - t0) / T)
        done = _load_pngs(frames_dir, T)
    _write_output(output, done, inputs.fps, video if inputs.sound_start is not None else None, inputs.sound_start or 0.0,
                  inputs.times, codec=codec, crf=crf)
    return output


def _longvideo_kwargs(lv: dict, frames: int, prompt: str = "", start: int = 0) -> dict:
    """The co-denoising arguments of VideoPipeline from a template's [longvideo] table, for a run of
    ``frames`` frames from the clip's frame ``start`` (``--frames START:END``). Prompt ranges count in
    the clip's frame numbers, as --frames does (they counted from START: with --frames 100:150 a range
    [120, -1] began at clip frame 220), so ranges written for the whole clip work on any part of it:
    each is cut to the run's frames, and one outside them is left out (said). A range's text replaces
    ``prompt`` for its frames: where they cover every frame and a prompt was given, that is said."""
    ranges = []
    for a, b, text in lv["prompt_ranges"]:
        if a >= start + frames or (b != -1 and b <= start):
            log.warning("longvideo: the prompt range [%d, %d] %r is outside this run's frames %d:%d of the clip: "
                        "left out", a, b, text, start, start + frames)
            continue
        a, b = max(0, a - start), None if b == -1 or b - start >= frames else b - start
        ranges.append((a, b, text))
    from ..diffusion.codenoise import say_unused_prompt

    say_unused_prompt(prompt, ranges, frames, "longvideo: ")  # here, before the models load
    kw = {"prompt_ranges": ranges or None}
    if lv["clip_length"]:
        kw.update(clip_length=lv["clip_length"], clip_stride=lv["clip_stride"] or None, merge=lv["merge"])
    return kw


def _fuse(pipeline, clip, inputs: _Inputs, lv: dict, kw: dict, settings: dict, cache_dir, device, progress,
          job: Path, keep, loaded: dict | None = None) -> tuple:
    """Average fusion: one candidate per seed denoised to step k, their backgrounds (SAM masks of
    the person, prompted by the pose keypoints of the driving video) averaged, the first seed's
    foreground kept (eq 11). Returns (seed, k, fused latents) to continue from. Each candidate is kept
    in the job folder as it is made (``keep(path, latents)``), so that an interrupted job resumes at the
    next candidate, not at the first. ``loaded``: candidates already read, by path (the newest, whose
    fields token the resumed job took), not read again."""
    from .. import control
    from ..diffusion import average_fusion
    from ..segment import segment

    pose = dict(settings.get("annotators", {}).get("pose", {}))
    pose.setdefault("progress", progress)
    kp = control.keypoints(inputs.frames, cache_dir=cache_dir, video_id=inputs.video_id, **pose)
    masks = segment(_to_tensor(inputs.frames).float(), keypoints=kp, model=lv["sam_model"],
                    device=None if device is None else str(device), progress=progress,
                    cache_dir=None if cache_dir is None else Path(cache_dir) / "masks",
                    if_empty="the fusion then averages the whole frame as background (the longvideo template is "
                             "for clips of a person; --set longvideo.fusion_seeds=[] turns the fusion off)")
    k = lv["fusion_step"]  # below the steps taken: checked with the settings (_check_together)
    seeds = lv["fusion_seeds"]
    log.info("average fusion: %d candidates to step %d, backgrounds averaged", len(seeds), k)
    cands = []
    for i, s in enumerate(seeds):
        path = _fusion_path(job, lv, i)
        if path.exists():
            log.info("average fusion: candidate %d (seed %d) from %s", i + 1, s, path)
            c = (loaded or {}).get(path)
            c = torch.load(path, weights_only=True) if c is None else c
            cands.append(c["latents"] if isinstance(c, dict) else c)  # (an earlier version kept the tensor alone)
            continue
        cands.append(pipeline(clip, seed=s, end_step=k, output_type="latents", **kw).cpu())
        keep(path, {"latents": cands[-1]})
    return seeds[0], k, average_fusion(torch.stack(cands), masks, 0, lv["w1"], lv["w2"])


def _fusion_path(job: Path, lv: dict, i: int) -> Path:
    return job / f"fusion_{i}_seed{lv['fusion_seeds'][i]}_step{lv['fusion_step']}.pt"


def _next_fields(job: Path) -> Path:
    return job / "matches.next.pt"


def _newest_candidate(job: Path, lv: dict | None) -> tuple[Path, object] | None:
    """The last fusion candidate a stopped longvideo job kept (they are made in order), as (path, what it
    holds), or None. (What it holds goes on to the fusion: it read the file again, latents of the whole
    clip.)"""
    if not lv or not lv["fusion_seeds"]:
        return None
    found = [p for p in (_fusion_path(job, lv, i) for i in range(len(lv["fusion_seeds"]))) if p.exists()]
    return (found[-1], torch.load(found[-1], weights_only=True)) if found else None


def _kept_fields(job: Path, checkpoint) -> dict | None:
    """The PatchMatch fields saved with ``checkpoint`` (the newest latents a stopped job kept): those whose
    token it records, in ``matches.pt`` or, where the stop came before they were renamed there,
    ``matches.next.pt``. A checkpoint of an earlier version (no token) takes ``matches.pt``. Fields of
    another step are dropped, said, rather than continued from."""
    if checkpoint is None:
        return None
    token = checkpoint.get("fields", False) if isinstance(checkpoint, dict) else False
    if token is None:  # saved before the first deflicker pass
        return None
    for path in (job / "matches.pt", _next_fields(job)):
        if path.exists():
            kept = torch.load(path, weights_only=True)
            if token is False or kept.get("token") == token:
                if path != job / "matches.pt":
                    os.replace(path, job / "matches.pt")  # their usual name, as the stop would have left them
                return kept
    if token is not False:
        log.warning("%s: the PatchMatch fields kept are not those of the latents kept; the next deflicker pass "
                    "searches afresh, so the frames may differ slightly from an uninterrupted run", job)
    return None


def has_progress(job: Path) -> bool:
    """Whether a job folder holds generation work: latents of a finished step, fusion candidates or
    finished frames (control frames are also in the annotation cache, and cheap to make again)."""
    return ((job / "latents.pt").exists() or any(job.glob("fusion_*.pt"))
            or any((job / "frames").glob("*.png")))


def _prepare_job_folder(job: Path, meta: dict, settings: dict, resume: bool, restart: bool) -> None:
    """The job folder of an output: made, resumed (``resume``, the same inputs and settings), or emptied
    (``restart``). One that holds no generation work yet (a run that stopped at a missing model or
    device, before its first step) is taken over by any run: it has nothing to protect, and refusing it
    sent a corrected command to --resume, which then refused other settings."""
    meta_file = job / "job.json"
    if not _job_marked(job):  # a folder of the user's at that name: never written into, nor deleted by --restart
        raise OutputError(f"{job}: exists and is not a flickerless job folder (no job.json), and the job of this output "
                          "would be kept there; move it away, or give another output")
    owner = _recorded_output(job) if job.exists() else None
    if (owner is not None and owner != meta["output"] and owner.casefold() == meta["output"].casefold()
            and _case_blind(job)):  # names that differ in case are one file here (macOS, Windows)
        raise OutputError(f"{job}: holds the job of {owner}, and this file system does not tell {owner} from "
                          f"{meta['output']} (letter case), so they are one output; give it as {owner} to continue "
                          "that job, or give another output name")
    if owner is not None and owner != meta["output"] and job_of(job.parent / owner, True) == job != job_folder(
            job.parent / owner):  # K.MP4's job, kept by an earlier version in K.job, K.mp4's folder now
        raise OutputError(f"{job}: holds the job an earlier version kept there for {owner}, another output, and the "
                          f"job of {meta['output']} would be kept there; continue that job with --resume for "
                          f"{owner}, or move that job folder away (or give another output name)")
    if owner is not None and owner != meta["output"]:  # never resumed, taken over or deleted for another output
        raise OutputError(f"{job}: holds the job of {owner}, another output, and the job of {meta['output']} would be "
                          "kept there; give another output name (or move that job folder away)")
    if job.exists() and restart:
        shutil.rmtree(job)
    elif job.exists() and meta_file.exists():
        try:
            old = json.loads(meta_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None
        if not has_progress(job):
            if old != meta:
                log.info("%s: an earlier run stopped before generating anything: starting over", job)
                shutil.rmtree(job)
        elif old is None:
            raise InputError(f"{meta_file} is unreadable (cut short by a full disk?): the job's inputs and settings "
                             "cannot be checked; restart (--restart) starts over (its frames are deleted)")
        elif not resume:
            raise InputError(f"{job} holds an earlier job for this output: continue it with resume (--resume), "
                             "or start over with restart (--restart; its frames are deleted)")
        else:
            # a job folder of an earlier version: weights not recorded
            same = {"weights": "weights" not in old, "output": True,  # (the output: checked above)
                    # an earlier version hashed the settings as written, local paths not resolved
                    "settings": old.get("settings") == _hash(settings)}
            if not same["settings"] and _same_settings(job, settings):
                same["settings"] = True  # an earlier version's hash, of its paths as written: the same resolved
            diff = [k for k in meta if old.get(k) != meta[k] and not same.get(k)]
            if "frames" in diff or "video" in diff:  # what follows from another range or clip is not said again
                diff = [k for k in diff if k not in ("video_id", "num_frames", "size")]
            if "size" in diff or "settings" in diff:  # the frames' digest is of their size and resizing too
                diff = [k for k in diff if k != "video_id"] or diff
            if diff:
                named = _changed_settings(job, settings) if "settings" in diff else ""
                weights = _changed_weights(old, meta, settings) if "weights" in diff else ""
                if "weights" in diff and not weights and len(diff) > 1:  # weights at other paths: said by the rest
                    diff.remove("weights")
                diff = [f"settings: {named}" if k == "settings" and named else f"weights: {weights} since the stop"
                        if k == "weights" and weights else _meta_change(k, old, meta) for k in diff]
                raise InputError(f"resume (--resume): {job} was made with other {'; '.join(diff)}; run with the same "
                                 "inputs and settings (see its settings.toml and job.json), or restart (--restart)")
            if owner is None and meta.get("output"):  # an earlier version's: out.mp4, out.gif and the PNG folder out all kept theirs there
                log.warning("%s: a job an earlier version kept, which records not which output it was for; its "
                            "inputs and settings are this run's, so it is resumed as %s's (only that output's from "
                            "now on)", job, meta["output"])
                write_whole(meta_file, json.dumps({**old, "output": meta["output"]}, indent=2))
            log.info("resuming the job in %s", job)
            return
    job.mkdir(parents=True, exist_ok=True)
    write_whole(job / "settings.toml", dumps(settings))  # (as UTF-8, whatever the locale: a prompt's emoji)
    write_whole(meta_file, json.dumps(meta, indent=2))


def _meta_change(key: str, old: dict, new: dict) -> str:
    """A job's input that differs from the stopped job's, as told with both values (it named the key
    alone, an internal one at that: "other video_id; frames; num_frames")."""
    def frames(v):
        return "all" if not v else f"{v[0]}:{'' if v[1] is None else v[1]}"

    a, b = old.get(key), new.get(key)
    if key == "weights":
        return "weights (a model, LoRA or ControlNet changed at its path)"
    if key == "video_id":
        return "video frames (the clip changed since the stop)"
    if key == "frames":
        return f"--frames ({frames(a)} -> {frames(b)})"
    if key == "size":
        return "size ({} -> {})".format(*("x".join(map(str, v[::-1])) if v else v for v in (a, b)))
    if key == "num_frames":
        return f"frame count ({a} -> {b})"
    return f"{key.replace('_', ' ')} ({a!r} -> {b!r})"


def _write_output(output: Path, frames: list[np.ndarray], fps: float, audio=None, audio_start: float = 0.0,
                  times=None, codec: str | None = None, crf: int = 17) -> None:
    from ..video import VideoWriter

    with VideoWriter(output, fps=fps, audio=audio, audio_start=audio_start, times=times, codec=codec, crf=crf) as w:
        for f in frames:
            w.write(f)
    size = f" {frames[0].shape[1]}x{frames[0].shape[0]}" if len(frames) else ""  # the size area mode chose, said
    log.info("wrote %s (%d frames%s, %.4g fps)", output, len(frames), size, fps)  # 29.97, not 30
