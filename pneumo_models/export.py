"""Write an exported model folder: model.keras, model_card.json, validation_predictions.csv (and
test_predictions.csv when the data has a test split).

The folder is staged beside its final place and swapped in at the end, so an interrupted export
never leaves a half-written model where a user (or `load_model`) would find it.
"""
from __future__ import annotations

import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

import keras
import numpy as np

from . import metrics
from .atomic import staged_folder, write_json, write_text
from .card import CARD_FILE, FORMAT_VERSION, MODEL_FILE, PREDICTIONS_FILE, TEST_PREDICTIONS_FILE, file_sha256, seal
from .evaluation import SELECTION_NOTE, predictions_csv
from .ensemble import uncompiled_copy

PREPROCESSING = {
    "color": "converted to one grayscale channel (16-bit images scaled to 8 bit)",
    "resize": "bilinear, squashed to input_size x input_size (no padding)",
    "dtype": "uint8 0-255; the model rescales to 0-1 internally",
    "helper": "pneumo_models.data.decode_image / resize_array, with framing=<framing>",
}
FRAMING_TEXT = {
    "full": "the whole film (no crop)",
    "lungs": "each film cropped to a box around its lung fields before the resize (pneumo_models/data/framing.py)",
    "centre": "each film cropped to its central square (side: the shorter side) before the resize, as MedMNIST "
              "made its images",
}


def preprocessing(framing: str = "full") -> dict:
    """The card's ``preprocessing`` block: how to turn any image into the model's input (with the lung
    box's version where films are cropped to their lungs, so a loader with another box can say so)."""
    from .data.framing import framing_version

    block = {**PREPROCESSING, "framing": framing, "framing_means": FRAMING_TEXT[framing]}
    version = framing_version(framing)
    return block if version is None else {**block, "framing_version": version}


def library_versions() -> dict:
    import optuna
    import sklearn

    return {"python": platform.python_version(), "keras": keras.__version__,
            "backend": keras.backend.backend(), "optuna": optuna.__version__,
            "numpy": np.__version__, "scikit-learn": sklearn.__version__,
            "platform": sys.platform}


def export_model(folder: str | Path, model: keras.Model, *, y_val, p_val, ids_val, threshold: float,
                 min_recall: float, input_size: int, class_names, best_trial: dict, study: dict,
                 data: dict, training: dict, bootstrap_resamples: int = 1000, seed: int = 0,
                 score_test=None, test_status: str = "the data has no test split", framing: str = "full") -> Path:
    """Stage the model folder and publish it at once.

    ``score_test(model)``, when given, is called after the model, its threshold and its validation
    metrics are final and written to the staging folder, and returns ``(block, csv_text)``: the
    test split's evaluation block (``metrics.test`` in the card) and its predictions file.
    """
    y = np.asarray(y_val).astype(int)
    p = np.asarray(p_val, dtype=float)
    validation = metrics.bootstrap_intervals(y, p, threshold, resamples=bootstrap_resamples, seed=seed)
    with staged_folder(folder) as staged:  # published whole at the end, removed on any failure
        # architecture and weights only: a nested optimizer (e.g. torch's Adam) would make the file
        # unloadable under another backend, and inference needs no compile state
        uncompiled_copy(model).save(staged / MODEL_FILE)
        write_text(staged / PREDICTIONS_FILE, predictions_csv(ids_val, y, p))
        test = None
        if score_test is not None:
            sys.audit("pneumo_search.export.final", str(folder), float(threshold))
            test, test_csv = score_test(model)
            write_text(staged / TEST_PREDICTIONS_FILE, test_csv)
            test_status = "scored once, after the model and its threshold were final"
        card = {
            "format_version": FORMAT_VERSION,
            "model_file": MODEL_FILE,
            "model_sha256": file_sha256(staged / MODEL_FILE),
            "threshold": float(threshold),
            "min_recall": float(min_recall),
            "input_size": int(input_size),
            "class_names": list(class_names),
            "positive_class": list(class_names)[1],
            "preprocessing": preprocessing(framing),
            "metrics": {"validation": validation, "n": int(len(y)), "n_positive": int(y.sum()),
                        "bootstrap_resamples": int(bootstrap_resamples), "interval": "95% percentile bootstrap over cases, threshold fixed",
                        "test": test, "test_status": test_status, "note": SELECTION_NOTE},
            "best_trial": best_trial,
            "study": study,
            "data": data,
            "training": training,
            "versions": library_versions(),
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        write_json(staged / CARD_FILE, seal(card))
    return Path(folder)
