"""Self-contained HTML study reports (Plotly, opens offline by double click).

    from reports import write_report
    write_report(study, "runs/default/report.html", model_dir="runs/default/best_model")

Sections, in page order: Summary, Search diagnostics, Exported model, Error analysis, Data.
A study that is still running, or whose best model was never exported, still gets a report:
the sections that need the missing parts say what is missing. When the exported model was scored
on the data's test split, its figures stand beside validation's and the gallery shows test X-rays.

    from reports import write_evaluation_page
    write_evaluation_page("runs/default/best_model/evaluation-x.html", payload, model_dir="runs/default/best_model")

draws one ``python -m search evaluate`` result (``evaluation-<name>.json``) the same way.
"""
from __future__ import annotations

import os
from pathlib import Path

import optuna

from .inputs import ImageData, ModelFolder, ReportInputs, SplitImages, find_model_dir, gather_inputs

__all__ = ["write_report", "render_report", "write_evaluation_page", "gather_inputs", "find_model_dir",
           "ReportInputs", "ImageData", "SplitImages", "ModelFolder", "REPORT_FILE"]

REPORT_FILE = "report.html"


def write_report(study: optuna.Study, out_path: str | os.PathLike, *,
                 model_dir: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """Write the report of ``study`` to ``out_path`` (a file, or a folder to hold ``report.html``).

    ``model_dir`` is the exported model folder; when None, ``best_model/`` beside the report is used
    if it holds a model card of this study. Images are reloaded through
    ``pneumo_models.data.load_dataset`` (cached). Returns the path written.
    """
    out = Path(out_path)
    if out.is_dir():
        out = out / REPORT_FILE
    if model_dir is None:
        model_dir = find_model_dir(study, out)
    from .html import _write_page

    return _write_page(gather_inputs(study, model_dir), out, progress=progress)


def render_report(inputs: ReportInputs, out_path: str | os.PathLike, *, progress: bool = False) -> Path:
    """Write the report from already gathered inputs (e.g. images given directly)."""
    from .html import _write_page

    return _write_page(inputs, out_path, progress=progress)


def write_evaluation_page(path: str | os.PathLike, payload: dict, *,
                          model_dir: str | os.PathLike | None = None) -> Path:
    """Write the self-contained page of one ``evaluate`` result (``evaluation-<name>.json``'s
    content) to ``path``, atomically; ``model_dir`` gives the model card's validation figures
    (default: the folder the payload names). Returns the path written."""
    from .evaluation_page import write_evaluation_page as _write

    return _write(path, payload, model_dir=model_dir)
