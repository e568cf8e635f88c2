"""Everything a report is drawn from, gathered once: the study, the exported model, the images.

Anything that cannot be found or loaded is recorded in ``ReportInputs.missing`` with a sentence
saying why, and the sections that need it say so instead of failing. Nothing here draws.
"""
from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import optuna
import pandas as pd

CARD_FILE = "model_card.json"
MODEL_FILE = "model.keras"
PREDICTIONS_FILE = "validation_predictions.csv"


class ImageData(NamedTuple):
    """The images the report shows: validation images (matched to predictions by id) for the
    error gallery, training images for the average/variability pictures."""

    x_train: np.ndarray          # (N, S, S) uint8
    y_train: np.ndarray          # (N,) 1 = pneumonia
    x_val: np.ndarray
    y_val: np.ndarray
    ids_val: list[str]
    class_names: list[str]       # ["NORMAL", "PNEUMONIA"]
    source: str = ""


class ExportedModel(NamedTuple):
    """An exported model folder as the report uses it."""

    folder: Path
    card: dict
    predictions: pd.DataFrame | None   # columns id, label, probability
    keras_model: Any                   # keras.Model, or None when it could not be loaded
    problems: list[str]                # sentences about parts that could not be read


class ReportInputs(NamedTuple):
    study: optuna.Study
    model: ExportedModel | None
    images: ImageData | None
    missing: dict[str, str]            # "model" / "images" -> why it is absent, in one sentence


def find_model_dir(study: optuna.Study, out_path: str | os.PathLike) -> Path | None:
    """``<out>/best_model`` next to the report, if it holds a model card of this study."""
    folder = Path(out_path).parent / "best_model"
    card_path = folder / CARD_FILE
    if not card_path.is_file():
        return None
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return folder  # let gather_inputs report the unreadable card
    name = (card.get("study") or {}).get("name") if isinstance(card, dict) else None
    if name is not None and name != study.study_name:
        return None
    return folder


def read_predictions(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path, dtype={"id": str})
    missing = [c for c in ("id", "label", "probability") if c not in df.columns]
    if missing:
        raise ValueError(f"{path.name} lacks column(s) {', '.join(missing)}")
    df["label"] = df["label"].astype(int)
    df["probability"] = df["probability"].astype(float)
    return df[["id", "label", "probability"]]


def _read_card(folder: Path) -> dict:
    """The model card, verified (checksums, required keys) by pneumo_models when installed."""
    try:
        from pneumo_models.card import read_card
    except ImportError:
        read_card = None
    if read_card is not None:
        return dict(read_card(folder))
    card = json.loads((folder / CARD_FILE).read_text(encoding="utf-8"))
    if not isinstance(card, dict) or "threshold" not in card:
        raise ValueError(f"{folder / CARD_FILE} is not a model card")
    return card


def _load_keras_model(folder: Path, card: dict) -> Any:
    try:
        from pneumo_models import load_model
    except ImportError:
        load_model = None
    if load_model is not None:
        return load_model(folder).keras_model
    import keras

    return keras.saving.load_model(folder / card.get("model_file", MODEL_FILE), compile=False)


def load_exported_model(folder: str | os.PathLike) -> tuple[ExportedModel | None, str | None]:
    """(model, None) or (None, reason). A card that fails verification means no model section;
    a card that is fine but whose Keras file fails to load still yields the card and the
    predictions, with the failure listed in ``problems``."""
    folder = Path(folder)
    if not (folder / CARD_FILE).is_file():
        return None, f"No exported model was found at {folder} (no {CARD_FILE})."
    try:
        card = _read_card(folder)
    except Exception as exc:  # noqa: BLE001 - ModelFolderError, JSON errors: say it, go on
        return None, f"The exported model at {folder} cannot be trusted or read: {_first_line(exc)}"
    problems: list[str] = []
    keras_model = None
    try:
        keras_model = _load_keras_model(folder, card)
    except Exception as exc:  # noqa: BLE001
        problems.append(f"The Keras model could not be loaded ({_first_line(exc)}); heat maps are unavailable.")
    predictions = None
    pred_path = folder / PREDICTIONS_FILE
    if pred_path.is_file():
        try:
            predictions = read_predictions(pred_path)
        except (OSError, ValueError) as exc:
            problems.append(f"{PREDICTIONS_FILE} could not be read ({exc}).")
    else:
        problems.append(f"The model folder has no {PREDICTIONS_FILE}; curves need it.")
    return ExportedModel(folder, card, predictions, keras_model, problems), None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


def _input_size_for_images(study: optuna.Study, model: ExportedModel | None) -> int | None:
    if model is not None and model.card.get("input_size"):
        return int(model.card["input_size"])
    try:
        best = study.best_trial
        if "input_size" in best.params:
            return int(best.params["input_size"])
    except ValueError:
        pass
    for t in study.get_trials(deepcopy=False):
        if "input_size" in t.params:
            return int(t.params["input_size"])
    return None


def load_images(study: optuna.Study, model: ExportedModel | None) -> tuple[ImageData | None, str | None]:
    """Reload the study's data set (cached by pneumo_models) at the model's input size."""
    attrs = study.user_attrs
    if "data_source" in attrs:
        source = attrs["data_source"] or None          # "" / None: the default (PneumoniaMNIST) source
    elif model is not None and (model.card.get("data") or {}).get("source"):
        source = model.card["data"]["source"]
    else:
        return None, "The study does not record its data source, so no images can be shown."
    size = _input_size_for_images(study, model)
    if size is None:
        return None, "No image size is known for this study yet, so no images can be shown."
    try:
        from pneumo_models.data import load_dataset
    except ImportError as exc:
        return None, f"The data loader (pneumo_models.data) is not available: {exc}."
    kwargs: dict = {}
    if "download" in inspect.signature(load_dataset).parameters:
        kwargs["download"] = False                      # a report never downloads data
    if attrs.get("val_fraction") is not None:
        kwargs["val_fraction"] = float(attrs["val_fraction"])
    if attrs.get("seed") is not None:
        kwargs["seed"] = int(attrs["seed"])
    try:
        ds = load_dataset(source, size, progress=False, **kwargs)
    except Exception as exc:  # noqa: BLE001 - DataError, OSError, moved folders: say it, go on
        where = source if source is not None else "the default data source"
        return None, f"The images at {where} could not be loaded: {_first_line(exc)}"
    return ImageData(
        x_train=np.asarray(ds.x_train), y_train=np.asarray(ds.y_train).astype(int),
        x_val=np.asarray(ds.x_val), y_val=np.asarray(ds.y_val).astype(int),
        ids_val=[str(i) for i in ds.ids_val], class_names=list(ds.class_names), source=str(source),
    ), None


def gather_inputs(
    study: optuna.Study,
    model_dir: str | os.PathLike | None = None,
    *,
    images: ImageData | None = None,
    load_data: bool = True,
) -> ReportInputs:
    """Collect what a report needs. ``images`` may be given directly (skips the data loader)."""
    missing: dict[str, str] = {}
    model = None
    if model_dir is None:
        missing["model"] = ("No model has been exported for this study yet (the search may still be "
                            "running, or stopped before its export).")
    else:
        model, why = load_exported_model(model_dir)
        if why:
            missing["model"] = why
    if images is None:
        if load_data:
            images, why = load_images(study, model)
            if why:
                missing["images"] = why
        else:
            missing["images"] = "Images were not loaded for this report."
    return ReportInputs(study=study, model=model, images=images, missing=missing)


def missing_model_notice(inputs: "ReportInputs", what: str) -> str | None:
    """``"<what> is missing: <why>"`` when the study has no exported model to show, else None."""
    if inputs.model is not None:
        return None
    return f"{what} is missing: " + inputs.missing.get("model", "No model has been exported for this study.")
