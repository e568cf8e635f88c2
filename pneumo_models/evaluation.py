"""Score a finished model on labelled images it never saw: a test split, or a hospital's own folder.

The block this module returns goes into the model card (``metrics.test``) and into
``evaluation-<name>.json``. It is computed once, after the model, its members and its threshold are
final; nothing here chooses anything. What it holds:

- ``n``, ``counts`` (per class), ``n_patients``;
- ``at_threshold``: accuracy, recall, precision, specificity, F1 and AUC at the exported threshold,
  each with a 95% percentile bootstrap interval, resampling patients where file names carry them;
- ``best_at_floor``: the best accuracy any threshold reaches on this data while recall stays >= the
  floor, with that threshold: how good the ranking is, apart from where the threshold sits;
- ``per_patient`` (where patients are known): the same at patient level, a patient counting as
  pneumonia if any of their images is, and called pneumonia if any image is called so (the
  patient's highest probability);
- ``shift``: the validation figures this data falls outside of, in plain words.
"""
from __future__ import annotations

import csv
import io
from typing import NamedTuple, Sequence

import numpy as np

from . import metrics
from .data import CLASS_NAMES

SELECTION_NOTE = ("validation figures chose the trials, epochs, ensemble members and threshold, so they are "
                  "optimistic; test figures were computed once, after the model was final, and chose nothing")


class PatientScores(NamedTuple):
    patients: list[str]
    y: np.ndarray           # 1 when any image of the patient is pneumonia
    p: np.ndarray           # the patient's highest image probability


def per_patient(y, p, patients: Sequence[str]) -> PatientScores:
    """Aggregate images to patients (positive if any image is; probability = the highest)."""
    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=np.float64)
    order: dict[str, int] = {}
    for pid in patients:
        order.setdefault(pid, len(order))
    idx = np.asarray([order[pid] for pid in patients], dtype=int)
    y_pat = np.zeros(len(order), dtype=int)
    p_pat = np.full(len(order), -np.inf)
    np.maximum.at(y_pat, idx, y)
    np.maximum.at(p_pat, idx, p)
    return PatientScores(list(order), y_pat, p_pat)


def _best_at_floor(y, p, min_recall: float) -> dict:
    rc = metrics.recall_constrained_accuracy(y, p, min_recall)
    return {"accuracy": rc.accuracy, "threshold": rc.threshold, "recall": rc.metrics.recall,
            "specificity": rc.metrics.specificity}


def _counts(y) -> dict[str, int]:
    y = np.asarray(y).astype(int)
    return {name: int(np.sum(y == i)) for i, name in enumerate(CLASS_NAMES)}


def score(y, p, *, threshold: float, min_recall: float, patients: Sequence[str] | None = None,
          resamples: int = 1000, seed: int = 0) -> dict:
    """The evaluation block (see the module docstring). ``patients`` None: every image its own patient."""
    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=np.float64)
    if len(y) == 0:
        raise ValueError("no images to score")
    if y.min() == y.max():
        raise ValueError(f"only {CLASS_NAMES[int(y[0])]} images: scoring needs both classes")
    known = patients is not None and len(set(patients)) < len(patients)
    block = {
        "n": int(len(y)), "n_positive": int(y.sum()), "counts": _counts(y),
        "n_patients": int(len(set(patients))) if patients is not None else int(len(y)),
        "threshold": float(threshold), "min_recall": float(min_recall),
        "at_threshold": metrics.bootstrap_intervals(y, p, threshold, resamples=resamples, seed=seed,
                                                    groups=list(patients) if known else None),
        "best_at_floor": _best_at_floor(y, p, min_recall),
        "interval": ("95% percentile bootstrap over patients (all images of a resampled patient), threshold fixed"
                     if known else "95% percentile bootstrap over images, threshold fixed"),
        "bootstrap_resamples": int(resamples),
    }
    if known:
        pat = per_patient(y, p, patients)
        if pat.y.min() != pat.y.max():
            block["per_patient"] = {
                "n": int(len(pat.y)), "counts": _counts(pat.y),
                "rule": "a patient is pneumonia if any image is; called pneumonia if any image's probability >= threshold",
                "at_threshold": metrics.bootstrap_intervals(pat.y, pat.p, threshold, resamples=resamples, seed=seed),
                "best_at_floor": _best_at_floor(pat.y, pat.p, min_recall)}
    return block


class ShiftFinding(NamedTuple):
    metric: str
    validation: float
    ci95: tuple[float, float]
    other: float
    worse: bool


def shift_findings(validation: dict, other: dict) -> list[ShiftFinding]:
    """Metrics whose value on ``other`` (an evaluation block's ``at_threshold``) falls outside the
    validation interval (the card's ``metrics.validation``)."""
    found = []
    for name in metrics.HEADLINE:
        v, o = validation.get(name), other.get(name)
        if not (isinstance(v, dict) and isinstance(o, dict) and v.get("ci95")):
            continue
        lo, hi = (float(x) for x in v["ci95"])
        val = float(o["value"])
        if not np.isfinite(val) or lo <= val <= hi:
            continue
        found.append(ShiftFinding(name, float(v["value"]), (lo, hi), val, val < lo))
    return found


def shift_warning(validation: dict, other: dict, what: str = "new patients") -> str | None:
    """A plain-words warning when figures on ``other`` fall below their validation intervals."""
    worse = [f for f in shift_findings(validation, other) if f.worse]
    if not worse:
        return None
    parts = [f"{f.metric} {f.other:.3f} against {f.validation:.3f} (validation interval {f.ci95[0]:.3f}-{f.ci95[1]:.3f})"
             for f in worse]
    return f"This model does worse on {what} than validation suggests: " + "; ".join(parts) + "."


def predictions_csv(ids, y, p, patients=None) -> str:
    """id, label, probability (exact repr) and, when given, patient."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["id", "label", "probability"] + (["patient"] if patients is not None else []))
    for i, row in enumerate(zip(ids, y, p)):
        writer.writerow([row[0], int(row[1]), repr(float(row[2]))] + ([patients[i]] if patients is not None else []))
    return buf.getvalue()
