"""The DiffSynth task pipelines (stylize, fashion, image_guided, restore, render3d): templates and jobs."""

from .templates import TASKS, apply_overrides, list_templates, load_template

__all__ = ["TASKS", "run_job", "job_folder", "target_size", "load_template", "list_templates", "apply_overrides"]


def __getattr__(name):  # the job module brings torch: imported on first use
    if name in ("run_job", "job_folder", "target_size"):
        from . import job

        return getattr(job, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
