"""flickerless: flicker-free video from image diffusion models.

Public entry points, one per layer: :func:`deflicker` (patch blending, DiffSynth eqs 8-12),
:class:`VideoPipeline` (the diffusion engine, eqs 2-7), :func:`annotate` (control frames),
:func:`run_job` (a task from its template), :func:`evaluate` (the paper's metrics); and the
modules :mod:`flickerless.segment` (SAM masks) and :mod:`flickerless.train` (fine-tuning). The heavy
ones import on first use, so ``import flickerless`` stays quick.
"""

from .errors import DeviceError, FlickerlessError, InputError, ModelNotFoundError, OutputError
from .weights import quiet_library_notes

quiet_library_notes()

# imported on first use: each brings torch (5 s on a GPU host), which `flickerless --help` and
# `flickerless info` do without
_LAZY = {
    "deflicker": ("blend.deflicker", "deflicker"),
    "PatchMatchOptions": ("blend.patchmatch", "PatchMatchOptions"),
    "evaluate": ("metrics", "evaluate"),
    "VideoPipeline": ("diffusion", "VideoPipeline"),
    "annotate": ("control", "annotate"),
    "run_job": ("pipelines", "run_job"),
}

__all__ = ["FlickerlessError", "InputError", "OutputError", "DeviceError", "ModelNotFoundError", *_LAZY]
__version__ = "0.2.0"


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    raise AttributeError(f"module 'flickerless' has no attribute {name!r}")
