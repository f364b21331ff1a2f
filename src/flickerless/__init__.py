"""flickerless: flicker-free video from image diffusion models.

Public entry points: :func:`deflicker` (patch blending, DiffSynth eqs 8-12), :func:`evaluate` (the
paper's metrics, :mod:`flickerless.metrics`).
"""

from .blend.deflicker import deflicker
from .blend.patchmatch import PatchMatchOptions
from .errors import DeviceError, FlickerlessError, InputError, OutputError
from .metrics import evaluate

__all__ = ["deflicker", "evaluate", "PatchMatchOptions", "FlickerlessError", "InputError", "OutputError", "DeviceError"]
__version__ = "0.1.0"
