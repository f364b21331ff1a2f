"""The DiffSynth task pipelines (stylize, fashion, image_guided, restore, render3d): templates and jobs."""

from .job import TASKS, job_folder, run_job, target_size
from .templates import apply_overrides, list_templates, load_template

__all__ = ["TASKS", "run_job", "job_folder", "target_size", "load_template", "list_templates", "apply_overrides"]
