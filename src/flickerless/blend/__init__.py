"""Patch blending: PatchMatch NNF, remap, blend, pair schedules. Pure torch; knows nothing of diffusion."""

from .deflicker import MODES, deflicker, run_deflicker
from .detail import restore_detail
from .patchmatch import PatchMatchOptions, remap, vote

__all__ = ["deflicker", "run_deflicker", "MODES", "PatchMatchOptions", "remap", "vote", "restore_detail"]
