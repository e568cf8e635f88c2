"""``python -m search export-serving MODEL_DIR --format onnx|tf_saved_model``: what the command does.

Writes the serving formats next to ``model.keras`` (``pneumo_models.serving``), then attaches the
card and the serving files to the model's study as Optuna artifacts (``search.artifacts``) when the
study can be found: ``--storage``, else ``<MODEL_DIR>/../study.db``, else the storage the card
names. A model whose study cannot be opened is still exported (a note says so).
"""
from __future__ import annotations

import sys
from pathlib import Path

from .errors import UserError
from .progress import StepBar


def _study_of(model_dir: Path, card: dict, storage: str | None, study_name: str | None):
    """(study, storage URL) of the model, or (None, reason)."""
    from .layout import STUDY_DB
    from .storage import default_url, sqlite_path
    from .study import load_study

    recorded = card.get("study") or {}
    name = study_name or recorded.get("name")
    if not name:
        return None, "the card names no study"
    candidates = [storage] if storage else []
    if not storage:
        if (model_dir.parent / STUDY_DB).is_file():
            candidates.append(default_url(model_dir.parent))
        url = recorded.get("storage") or ""
        if url and "***" not in url and (sqlite_path(url) is None or sqlite_path(url).is_file()):
            candidates.append(url)
    if not candidates:
        return None, f"no storage found for study {name!r} (pass --storage)"
    try:
        return load_study(name, candidates[0]), candidates[0]
    except UserError as exc:
        if storage:
            raise
        return None, str(exc)


def export_serving_step(model_dir: Path, formats: list[str], *, storage: str | None = None,
                        study_name: str | None = None, artifacts: bool = True, progress: bool = True) -> dict:
    """Export, print what was written, attach to the study; returns the serving record."""
    from pneumo_models.card import read_card
    from pneumo_models.serving import ServingError, export_serving

    model_dir = Path(model_dir)
    card = read_card(model_dir)
    try:
        with StepBar(1 + len(set(formats)), "export-serving", enabled=progress) as steps:
            record = export_serving(model_dir, formats, on_step=steps.start)
    except ServingError as exc:
        raise UserError(str(exc)) from None
    for fmt in formats:
        f = record["formats"][fmt]
        print(f"{fmt}: {model_dir / f['path']} (input {f['input_name']} {f['input_shape']}, output "
              f"{f['output_name']} {f['output_shape']}; largest difference to model.keras "
              f"{f['max_abs_diff_vs_keras']:.1e})")
    print(f"serving.json: {model_dir / 'serving.json'} (threshold {record['threshold']:.4f}, input "
          f"{record['input_size']}x{record['input_size']} grey, float 0-255)")
    if artifacts:
        study, where = _study_of(model_dir, card, storage, study_name)
        if study is None:
            print(f"not attached to a study: {where}", file=sys.stderr)
        else:
            from .artifacts import attach_run

            attach_run(study, model_dir.parent, model_dir=model_dir, report=None, storage_url=where)
    return record
