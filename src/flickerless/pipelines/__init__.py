"""The DiffSynth task pipelines (stylize, fashion, image_guided, restore, render3d): templates and jobs."""

from .templates import TASKS, apply_overrides, list_templates, load_template

_FROM_JOB = ("run_job", "job_folder", "target_size")  # the job module brings torch: imported on first use
__all__ = ["TASKS", *_FROM_JOB, "load_template", "list_templates", "apply_overrides"]


def __getattr__(name):
    if name in _FROM_JOB:
        from . import job

        return getattr(job, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
