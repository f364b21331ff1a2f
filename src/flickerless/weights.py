"""Finding weights offline (models, ControlNets, annotators, SAM, CLIP): a local folder, a single file, or a Hugging Face repo id (its
local cache when ``HF_HUB_OFFLINE=1`` or the network is unreachable). Missing weights raise
:class:`~flickerless.errors.ModelNotFoundError` naming the id, where it was looked for, and how to supply it."""

from __future__ import annotations

import functools
import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from .errors import ModelNotFoundError

# the CLIP the metrics load by default (here, not in metrics.clip, so that the command line names it
# without importing torch)
DEFAULT_CLIP = "openai/clip-vit-large-patch14"

__all__ = ["offline", "local_only", "hf_cache", "not_found", "load_transformers", "find_file", "dtype_kwarg",
           "quiet_library_notes", "quiet_model_loading"]

# the releases from which diffusers' and transformers' loaders take ``dtype=`` and warn at every
# ``torch_dtype=`` (checked in their wheels: diffusers 0.39 lacks it, 0.40 has it; transformers 4.55 / 4.56)
_DTYPE_SINCE = {"diffusers": (0, 40), "transformers": (4, 56)}


class _Drop(logging.Filter):
    """Drops the records of one logger whose message holds ``text``; its other records pass."""

    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record) -> bool:
        return self.text not in record.getMessage()


def _drop(logger: str, text: str) -> None:
    log = logging.getLogger(logger)
    if not any(isinstance(f, _Drop) and f.text == text for f in log.filters):
        log.addFilter(_Drop(text))


def quiet_library_notes() -> None:
    """Two notes of the libraries that tell the user nothing to act on, dropped. transformers 5 says,
    once per class, that an image processor "requires torchvision (not installed); falling back to
    ...Pil" when diffusers imports its IP-Adapter loader: two lines at every
    model load telling the user to install a package nothing here needs (the PIL processors do the same
    work). That one message is dropped; transformers' other warnings (weights not loaded, ...) stay.
    So is diffusers' note, at each LoRA load, that a LoRA has no text-encoder part ("No LoRA keys
    associated to CLIPTextModel ... safe to ignore"), which a UNet-only LoRA (as `flickerless train`
    makes) always gave, even under -q; its note for a LoRA with nothing for the UNet stays."""
    _drop("transformers.utils.import_utils", "requires torchvision (not installed)")
    _drop("diffusers.loaders.lora_base", "No LoRA keys associated to CLIPTextModel")


def quiet_model_loading(with_diffusers: bool = True) -> None:
    """No progress bars from the libraries that load models (diffusers' "Loading pipeline components",
    transformers' "Loading weights", huggingface_hub's downloads): what a quiet run (``-q``,
    ``progress=False``) asks. Process-wide, as those libraries keep it. transformers and the hub read
    ``HF_HUB_DISABLE_PROGRESS_BARS`` when imported (imported already: switched off here too); diffusers
    has only its switch, so it is imported for it unless ``with_diffusers`` is False (a command that
    loads no diffusers model)."""
    import sys

    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    if with_diffusers:
        import diffusers.utils.logging  # noqa: F401
    for name in ("transformers.utils.logging", "diffusers.utils.logging", "huggingface_hub.utils"):
        module = sys.modules.get(name)
        switch = getattr(module, "disable_progress_bar", None) or getattr(module, "disable_progress_bars", None)
        if switch is not None:
            switch()


def dtype_kwarg(library: str, dtype) -> dict:
    """The keyword a ``from_pretrained`` of ``library`` (``"diffusers"`` or ``"transformers"``) takes
    its dtype by: ``{"dtype": dtype}`` where the installed release has it, ``{"torch_dtype": dtype}``
    for older ones (which do not know ``dtype``), so that neither kind warns at each load."""
    import re
    from importlib.metadata import version

    m = re.match(r"(\d+)\.(\d+)", version(library))
    new = m is not None and (int(m[1]), int(m[2])) >= _DTYPE_SINCE[library]
    return {"dtype" if new else "torch_dtype": dtype}


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


@functools.lru_cache(maxsize=1)
def _hub_reachable() -> bool:
    """One quick TCP connect to the hub (3 s), so that an offline machine does not sit through
    huggingface_hub's retries before the local cache is used."""
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=3).close()
        return True
    except OSError:
        return False


def local_only() -> bool:
    """Use only the local Hugging Face cache: HF_HUB_OFFLINE=1, or the hub cannot be reached."""
    return offline() or not _hub_reachable()


def _hub_note() -> str:
    if offline():
        return " (HF_HUB_OFFLINE=1: hub not asked)"
    return " (hub unreachable: not asked)" if not _hub_reachable() else " and the hub"


def hf_cache() -> str:
    try:
        from huggingface_hub.constants import HF_HUB_CACHE

        return str(HF_HUB_CACHE)
    except Exception:  # pragma: no cover
        return os.path.expanduser("~/.cache/huggingface/hub")


def _first_line(err: Exception) -> str:
    s = str(err).strip()
    return f" ({type(err).__name__}: {s.splitlines()[0] if s else ''})"


def not_found(what: str, model: str, remedy: str, err: Exception | None = None, places: list[str] | None = None
              ) -> ModelNotFoundError:
    local = Path(model)
    if places is None:
        places = [f"local path {local.resolve()} ({'exists but holds no usable weights' if local.exists() else 'missing'})"]
        if not local.exists():
            places.append(f"Hugging Face cache {hf_cache()}" + _hub_note())
    return ModelNotFoundError(f"{what} {model!r} not found; looked in: {'; '.join(places)}. {remedy}"
                              + (_first_line(err) if err is not None else ""))


def check_available(model: str, what: str, remedy: str, index_file: str = "model_index.json") -> None:
    """Before any work (reading the clip, annotating it): a model that loading would not find raises the
    :class:`ModelNotFoundError` loading would. A local path that is missing; a repo id that is not in the
    Hugging Face cache where only the cache is used (offline). Online, a repo id is left to the loading,
    which may download it. Cheap: no weights are read."""
    path = Path(model)
    if path.exists():
        return
    if looks_like_path(model):
        raise not_found(what, model, remedy)  # a path, not a repo id
    if local_only():
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(model, index_file)
        except Exception:  # noqa: BLE001 - an odd id or hub version: the loading says what is wrong
            return
        if not isinstance(cached, str):
            raise not_found(what, model, remedy + download_hint(model))


def load_transformers(loader, model: str, what: str, setting: str, remedy: str | None = None, **kw):
    """``loader(model_or_path, local_files_only=..., **kw)`` with missing weights turned into a
    ModelNotFoundError; ``setting`` is the annotator setting that takes another model (``remedy``: how
    to supply it, where it is not a transformers folder)."""
    path = Path(model)
    try:
        return loader(str(path) if path.exists() else model, local_files_only=path.exists() or local_only(), **kw)
    except (OSError, ValueError) as e:  # transformers/huggingface_hub raise these for missing repos and files
        raise not_found(what, model, (remedy or transformers_remedy(setting)) + download_hint(model) + ".", e) from e


def transformers_remedy(setting: str) -> str:
    """How to supply a transformers model that an annotator setting ``setting`` names."""
    return f"Pass {setting}=<Hugging Face id, or local folder with config.json, the weights and preprocessor_config.json>"


def weights_identity(model) -> str:
    """What identifies a model's weights for a cache key: a local file's or folder's files (path, size,
    mtime), so weights replaced at the same path are not taken for the old ones; else the value as
    given (a repo id)."""
    import hashlib

    path = Path(str(model))
    if not path.exists():
        return str(model)
    h = hashlib.sha256(str(path.resolve()).encode())
    for f in [path] if path.is_file() else sorted(path.rglob("*")):
        if f.is_file():
            st = f.stat()
            h.update(f"{f.relative_to(path) if f != path else f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def download_hint(model: str, lead: str = ", or") -> str:
    """``", or download it once with `hf download ID`"`` for what may be a repo id; nothing for a
    local path (a missing folder named as a download told the user to fetch ``/data/nosam``)."""
    if looks_like_path(model) or Path(str(model)).expanduser().exists():
        return ""
    if "/" not in str(model):  # the models this tool loads are all owner/name; "sd15" is a folder not there
        return f"{lead} give a Hugging Face repo id as owner/name (e.g. stable-diffusion-v1-5/stable-diffusion-v1-5)"
    return f"{lead} download it once with `{hub_cli()} download {model}`"


def torchvision_install(*also: str) -> str:
    """The pip line for the torchvision made for the installed torch (torch 2.x pairs with torchvision
    0.(x+15), the same patch: 2.13.0 with 0.28.0), and the packages ``also``: a plain `pip install
    torchvision` replaces a CPU torch with the newest CUDA build (several GB)."""
    import re

    import torch

    m = re.match(r"2\.(\d+)\.(\d+)", torch.__version__)
    pin = f"torchvision==0.{int(m.group(1)) + 15}.{m.group(2)}" if m else "torchvision"
    line = " ".join(("pip install", pin, *also))
    return f"`{line}` (the torchvision of torch {torch.__version__.split('+')[0]}, from the index your torch came from)"


def hub_cli() -> str:
    """The download command of the huggingface_hub installed: ``hf`` from 0.34 (``huggingface-cli``,
    which 1.0 dropped, before)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        major, minor = (int(p) for p in version("huggingface_hub").split(".")[:2])
    except (PackageNotFoundError, ValueError):
        return "hf"
    return "hf" if (major, minor) >= (0, 34) else "huggingface-cli"


def looks_like_path(model: str) -> bool:
    """True for strings that can only be a local path (not a Hugging Face ``namespace/name`` id)."""
    m = str(model)
    return m.startswith(("/", ".", "~")) or "\\" in m or m.count("/") > 1 or Path(m).suffix in (".pth", ".pt", ".safetensors", ".bin", ".ckpt")


def find_file(model: str, filename: str, what: str, remedy: str) -> Path:
    """A weights file: ``model`` itself when it is a file, ``model/filename`` when it is a folder,
    else ``filename`` from the Hugging Face repo ``model`` (local cache first / only when offline)."""
    path = Path(model).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        hits = [path / filename, *sorted(path.rglob(filename))]
        for h in hits:
            if h.is_file():
                return h
        raise not_found(what, model, remedy, places=[f"folder {path.resolve()} (no {filename} inside)"])
    if looks_like_path(model):
        raise not_found(what, model, remedy)
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(model, filename, local_files_only=local_only()))
    except Exception as e:  # huggingface_hub: validation, offline, not-found and connection errors
        raise not_found(what, model, remedy, e, places=[
            f"local path {path.resolve()} (missing)",
            f"{filename} of the Hugging Face repo {model!r} in {hf_cache()}" + _hub_note(),
        ]) from e
