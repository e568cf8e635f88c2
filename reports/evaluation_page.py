"""A self-contained page for one ``python -m search evaluate`` result (``evaluation-<name>.json``):
the figures on that data beside the model card's validation figures, the same shift warning as
the report, curves, confusion matrices, probability distributions, per-patient figures where the
data names patients, and the files that were skipped.

It is drawn with the report's own pieces: ``reports.scored_sets`` for the sets, ``model_headline``'s
and ``model_curves``' info and draw functions for the table and the figures, ``shift`` for the warning, and
``html._draw_page`` for the page (Plotly embedded once, opens offline).
"""
from __future__ import annotations

import datetime
import html
import os
from pathlib import Path
from typing import NamedTuple

from pneumo_models.atomic import write_text

from ._blocks import HtmlBlock, NoticeBlock, Section
from ._labels import num
from .html import _draw_page, _PageInfo
from .inputs import ModelFolder, read_model_folder
from .model_curves import curve_blocks
from .model_headline import _draw_headline, _get_headline_info
from .scored_sets import ScoredSet, evaluation_set, patient_set, validation_set
from .shift import _draw_shift_warning, _get_shift_info

MAX_SKIPPED_LISTED = 200
SHIFT_WORDS = "new images"          # as `evaluate` prints it


class _EvaluationSummaryInfo(NamedTuple):
    source: str
    split: str
    fingerprint: str
    n: int
    counts: dict[str, int]
    n_patients: int | None
    model_folder: str
    threshold: float
    min_recall: float | None
    created_at: str
    skipped: list[tuple[str, str]]      # (path, reason), at most MAX_SKIPPED_LISTED
    n_skipped: int


def _get_evaluation_summary_info(payload: dict) -> _EvaluationSummaryInfo:
    block, model = payload["evaluation"], payload.get("model") or {}
    skipped = block.get("skipped") or []
    return _EvaluationSummaryInfo(
        source=str(block.get("source", "")), split=str(block.get("split", "")),
        fingerprint=str(block.get("fingerprint", "")), n=int(block["n"]),
        counts={str(k): int(v) for k, v in (block.get("counts") or {}).items()},
        n_patients=int(block["n_patients"]) if block.get("n_patients") is not None else None,
        model_folder=str(model.get("folder", "")),
        threshold=float(block.get("threshold", model.get("threshold"))),
        min_recall=float(block["min_recall"]) if block.get("min_recall") is not None else None,
        created_at=str(model.get("created_at", "")),
        skipped=[(str(s.get("path", "")), str(s.get("reason", ""))) if isinstance(s, dict) else (str(s), "")
                 for s in skipped[:MAX_SKIPPED_LISTED]],
        n_skipped=len(skipped))


def _draw_evaluation_summary(info: _EvaluationSummaryInfo) -> str:
    e = html.escape
    counts = ", ".join(f"{n:,} {c.lower()}" for c, n in info.counts.items())
    rows = [("Data", f"<code>{e(info.source)}</code>"),
            ("Split", e(info.split) or "–"),
            ("Fingerprint", f"<code>{e(info.fingerprint[:16])}</code>" if info.fingerprint else "–"),
            ("X-rays", f'<span data-evaluation="n">{info.n:,}</span>' + (f" ({e(counts)})" if counts else "")),
            ("Patients", "–" if info.n_patients is None else f"{info.n_patients:,}"),
            ("Model", f"<code>{e(info.model_folder)}</code>"
             + (f" <span class=muted>(created {e(info.created_at)})</span>" if info.created_at else "")),
            ("Threshold", f'<span data-evaluation="threshold" data-value="{info.threshold!r}">'
                          f"{num(info.threshold)}</span>"),
            ("Files skipped", f'<span data-evaluation="skipped">{info.n_skipped:,}</span>')]
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    out = f'<table class="kv" data-table="evaluation"><tbody>{body}</tbody></table>'
    if info.skipped:
        items = "".join(f'<li data-skipped="{e(p)}"><code>{e(p)}</code> — {e(r)}</li>' for p, r in info.skipped)
        more = (f"<li>… and {info.n_skipped - len(info.skipped):,} more</li>"
                if info.n_skipped > len(info.skipped) else "")
        out += (f"<details open><summary>Skipped files ({info.n_skipped:,}): unreadable, not scored</summary>"
                f"<ul>{items}{more}</ul></details>")
    return out


def _load_model_folder(payload: dict, model_dir) -> tuple[ModelFolder | None, list[str]]:
    """The evaluated model's card and validation predictions (no Keras model), and sentences about
    what could not be used."""
    folder = model_dir if model_dir is not None else (payload.get("model") or {}).get("folder")
    if not folder:
        return None, ["The evaluated model's folder is unknown, so its validation figures are not shown."]
    model, why = read_model_folder(folder, load_keras=False)
    if model is None:
        return None, [f"Validation figures are not shown: {why}"]
    notes = list(model.problems)
    evaluated = (payload.get("model") or {}).get("card_sha256")
    if evaluated and model.card.get("card_sha256") != evaluated:
        notes.append(f"The model at {folder} is not the one evaluated (its card changed since): its validation "
                     "figures may not belong to this evaluation.")
    return model, notes


def _stand_in_card(payload: dict) -> dict:
    """What the headline table needs when the model card cannot be read: the evaluation's own record."""
    block, model = payload["evaluation"], payload.get("model") or {}
    return {"threshold": float(block.get("threshold", model.get("threshold"))), "min_recall": block.get("min_recall"),
            "input_size": model.get("input_size"), "created_at": model.get("created_at", ""), "metrics": {}}


def _get_evaluation_page_info(payload: dict, model_dir=None) -> _PageInfo:
    block = payload["evaluation"]
    model, notes = _load_model_folder(payload, model_dir)
    card = model.card if model is not None else _stand_in_card(payload)
    evaluated = evaluation_set(payload)
    patients = patient_set(evaluated)
    sets: list[ScoredSet] = ([validation_set(model)] if model is not None else []) + [evaluated]
    validation = sets[0] if model is not None else None
    headline = _get_headline_info(card, validation.y if validation else None, validation.p if validation else None,
                                  others=[evaluated] + ([patients] if patients is not None else []))
    if headline.columns:        # the card's note speaks of its test split; this is other data
        headline = headline._replace(selection_note=(
            f"validation figures chose the trials, epochs, ensemble members and threshold, so they are "
            f"optimistic; the figures on {evaluated.label} were computed after the model was final and chose "
            "nothing"))
    summary = _get_evaluation_summary_info(payload)
    shift = _get_shift_info(card, block, SHIFT_WORDS)

    top: list = []
    if shift.warning:
        top.append(HtmlBlock("shift-warning", _draw_shift_warning(shift)))
    top += [NoticeBlock(f"model-problem-{i}", note, missing=model is None) for i, note in enumerate(notes)]
    top.append(HtmlBlock("evaluation-summary", _draw_evaluation_summary(summary)))

    threshold = float(card["threshold"])
    min_recall = float(card["min_recall"]) if card.get("min_recall") is not None else None
    class_names = list(card.get("class_names") or ["NORMAL", "PNEUMONIA"])
    figures: list = [HtmlBlock("headline-metrics", _draw_headline(headline))]
    if headline.disagreements:
        figures.append(NoticeBlock("model-disagree", "The validation predictions file does not reproduce the "
                                   "card's numbers (the card is shown): " + "; ".join(headline.disagreements) + ".",
                                   missing=False))
    for column in headline.columns:
        if column.disagreements:
            figures.append(NoticeBlock(f"model-disagree-{column.key}", f"The {column.title} predictions do not "
                                       "reproduce the evaluation's numbers (the evaluation is shown): "
                                       + "; ".join(column.disagreements) + ".", missing=False))
    if validation is not None and not validation.has_curves:
        figures.append(NoticeBlock("model-curves", "Validation curves are missing: the model folder has no usable "
                                   "validation predictions."))
    if not evaluated.has_curves:
        figures.append(NoticeBlock("evaluation-curves", "Curves are missing: the evaluation holds no predictions "
                                   "of both classes."))
    figures += curve_blocks(sets, threshold, min_recall, class_names)
    sections = [
        Section("summary", "Summary", top, intro=f"The exported model scored on {summary.n:,} X-rays it was not "
                "chosen on."),
        Section("figures", "Figures", figures, intro="Validation (which chose the model) beside the evaluated "
                "data (which chose nothing). Headline numbers are copied from the model card and the evaluation."),
    ]
    if patients is not None:
        rule = str((block.get("per_patient") or {}).get("rule", ""))
        per = curve_blocks([patients], threshold, min_recall, class_names, key_prefix="patients-")
        if not per:
            per = [NoticeBlock("patients-curves", "Per-patient curves are missing: the evaluation's predictions "
                               "do not name patients.")]
        sections.append(Section("patients", "Per patient", per,
                                intro=(f"The same data counted by patient: {rule}." if rule else
                                       "The same data counted by patient.")))
    missing = [(s.id, b.key, b.message) for s in sections for b in s.missing]
    now = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    return _PageInfo(f"Pneumonia model evaluation: {evaluated.label}", f"Generated {now}", sections, missing, {})


def write_evaluation_page(path: str | os.PathLike, payload: dict, *,
                          model_dir: str | os.PathLike | None = None) -> Path:
    """Write the page of an ``evaluate`` result (``payload``: evaluation-<name>.json's content) to
    ``path`` atomically. ``model_dir``: the evaluated model folder (default: the payload's)."""
    return write_text(path, _draw_page(_get_evaluation_page_info(payload, model_dir)), permissions=0o644)  # readable like the report
