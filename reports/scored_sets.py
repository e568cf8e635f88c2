"""The sets of X-rays a model was scored on, each as one plain tuple: its labels, probabilities and
headline figures with intervals.

``validation`` (chose the model; figures from the card's ``metrics.validation``), ``test`` (the
data's test split, scored once after the export; the card's ``metrics.test``) and an
``evaluation`` of other data (``python -m search evaluate``). The model-evaluation figures are
drawn from a list of these, so validation alone, validation beside test and validation beside an
evaluation share one code path. Nothing here draws.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from pneumo_models.evaluation import per_patient

from .inputs import ModelFolder

# how each set is drawn: colour, line dash
SET_STYLES = {"validation": ("#1f77b4", "solid"), "test": ("#e6550d", "dash"),
              "evaluation": ("#e6550d", "dash"), "patients": ("#756bb1", "dot")}


def called_positive(p: np.ndarray, threshold: float) -> np.ndarray:
    """The model card's rule: pneumonia when probability >= threshold."""
    return np.asarray(p, dtype=np.float64) >= float(threshold)


class ScoredSet(NamedTuple):
    key: str                          # "validation", "test", "evaluation", "evaluation-patients", ...
    label: str                        # for legends and headings: "Validation", "Test", "Test patients", ...
    words: str                        # mid-sentence: "validation X-rays", "test patients", ...
    y: np.ndarray | None              # 1 = pneumonia; None when the predictions are absent
    p: np.ndarray | None              # probability of pneumonia
    ids: list[str]
    metrics: dict                     # {name: {"value", "ci95"}}: the card's, never recomputed
    block: dict | None                # the evaluation block (None for validation)
    chose: bool                       # True: these figures chose the model (validation)
    style: str                        # key of SET_STYLES
    patients: list[str] | None = None  # one per X-ray, where known

    @property
    def unit(self) -> str:
        """What one case is: "X-rays", or "patients" for a per-patient view."""
        return "patients" if self.key.endswith("-patients") else "X-rays"

    @property
    def has_curves(self) -> bool:
        return self.y is not None and len(self.y) > 0 and int(self.y.min()) != int(self.y.max())


def _arrays(df: pd.DataFrame | None) -> tuple[np.ndarray | None, np.ndarray | None, list[str], list[str] | None]:
    if df is None or not len(df):
        return None, None, [], None
    patients = None
    if "patient" in df.columns and not df["patient"].isna().any():
        patients = df["patient"].astype(str).tolist()
    return (df["label"].to_numpy(dtype=int), df["probability"].to_numpy(dtype=np.float64),
            df["id"].astype(str).tolist(), patients)


def validation_set(model: ModelFolder) -> ScoredSet:
    y, p, ids, _ = _arrays(model.predictions)
    metrics = (model.card.get("metrics") or {}).get("validation") or {}
    return ScoredSet("validation", "Validation", "validation X-rays", y, p, ids, metrics, None, True, "validation")


def test_set(model: ModelFolder) -> ScoredSet | None:
    """The test split's set when the card holds ``metrics.test`` (curves need test_predictions.csv)."""
    block = model.test_block
    if block is None:
        return None
    y, p, ids, patients = _arrays(model.test_predictions)
    return ScoredSet("test", "Test", "test X-rays", y, p, ids, block["at_threshold"], block, False, "test", patients)


def model_sets(model: ModelFolder) -> list[ScoredSet]:
    """Validation, then test where the card has it."""
    test = test_set(model)
    return [validation_set(model)] + ([test] if test is not None else [])


def evaluation_label(block: dict) -> str:
    """The evaluated data in a few words: its folder or file name, and the split unless 'all'."""
    stem = Path(str(block.get("source") or "evaluated data").rstrip("/")).name or "evaluated data"
    split = block.get("split")
    return stem if split in (None, "", "all") else f"{stem} ({split})"


def evaluation_set(payload: dict) -> ScoredSet:
    """An ``evaluate`` result: its block and its predictions."""
    block = payload["evaluation"]
    df = pd.DataFrame(payload.get("predictions") or [], columns=["id", "label", "probability", "patient"])
    y, p, ids, patients = _arrays(df)
    label = evaluation_label(block)
    return ScoredSet("evaluation", label, f"{label} X-rays", y, p, ids, block["at_threshold"], block, False,
                     "evaluation", patients)


def patient_set(images: ScoredSet) -> ScoredSet | None:
    """The per-patient view of a test or evaluation set, where its block has one: a patient is
    pneumonia if any image is, and its probability is its highest (``pneumo_models.evaluation``)."""
    per = (images.block or {}).get("per_patient")
    if not isinstance(per, dict) or not per.get("at_threshold"):
        return None
    y = p = None
    ids: list[str] = []
    if images.y is not None and images.patients is not None:
        scores = per_patient(images.y, images.p, images.patients)
        y, p, ids = scores.y, scores.p, scores.patients
    words = images.words.replace("X-rays", "patients") if "X-rays" in images.words else f"{images.words} patients"
    return ScoredSet(f"{images.key}-patients", f"{images.label} patients", words, y, p, ids, per["at_threshold"],
                     per, False, "patients", ids)
