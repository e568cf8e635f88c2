"""Everything a report is drawn from, gathered once: the study, the exported model, the images
(and, when the model was scored on the data's test split, the test images).

Anything that cannot be found or loaded is recorded in ``ReportInputs.missing`` with a sentence
saying why, and the sections that need it say so instead of failing. Nothing here draws.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import optuna
import pandas as pd
from pneumo_models.card import CARD_FILE, PREDICTIONS_FILE, TEST_PREDICTIONS_FILE, read_card


class ImageData(NamedTuple):
    """The images the report shows: validation images (matched to predictions by id) for the
    error gallery when the model has no test predictions, training images for the
    average/variability pictures."""

    x_train: np.ndarray          # (N, S, S) uint8
    y_train: np.ndarray          # (N,) 1 = pneumonia
    x_val: np.ndarray
    y_val: np.ndarray
    ids_val: list[str]
    class_names: list[str]       # ["NORMAL", "PNEUMONIA"]
    source: str = ""


class SplitImages(NamedTuple):
    """One labelled split's images (the test split), matched to predictions by id."""

    x: np.ndarray                # (N, S, S) uint8
    y: np.ndarray                # (N,) 1 = pneumonia
    ids: list[str]
    split: str                   # "test"
    fingerprint: str = ""
    patients: list[str] | None = None   # one per image, where the file names tell them


class ModelFolder(NamedTuple):
    """An exported model folder as the report reads it: its card, predictions and (when it loads)
    Keras model, with what could not be read. Not ``pneumo_models.loading.ExportedModel``, the
    loaded model a run returns."""

    folder: Path
    card: dict
    predictions: pd.DataFrame | None   # columns id, label, probability
    keras_model: Any                   # keras.Model, or None when it could not be loaded
    problems: list[str]                # sentences about parts that could not be read
    test_predictions: pd.DataFrame | None = None   # id, label, probability, patient (test split), if scored

    @property
    def test_block(self) -> dict | None:
        """The card's ``metrics.test`` evaluation block, or None when the test split was not scored."""
        block = (self.card.get("metrics") or {}).get("test")
        return block if isinstance(block, dict) and block.get("at_threshold") else None


class ReportInputs(NamedTuple):
    study: optuna.Study
    model: ModelFolder | None
    images: ImageData | None
    missing: dict[str, str]            # "model" / "images" / "test-images" -> why it is absent, in one sentence
    test_images: SplitImages | None = None   # loaded only when the model has test predictions


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
    """id, label, probability (and patient, when the file has it)."""
    df = pd.read_csv(path, dtype={"id": str, "patient": str})
    missing = [c for c in ("id", "label", "probability") if c not in df.columns]
    if missing:
        raise ValueError(f"{path.name} lacks column(s) {', '.join(missing)}")
    df["label"] = df["label"].astype(int)
    df["probability"] = df["probability"].astype(float)
    return df[["id", "label", "probability"] + (["patient"] if "patient" in df.columns else [])]


def _read_card(folder: Path) -> dict:
    """The model card, verified (checksums, required keys) by pneumo_models."""
    return dict(read_card(folder))


def _load_keras_model(folder: Path) -> Any:
    from pneumo_models import load_model   # Keras loads only when a model is shown

    return load_model(folder).keras_model


def read_model_folder(folder: str | os.PathLike, *,
                        load_keras: bool = True) -> tuple[ModelFolder | None, str | None]:
    """(model, None) or (None, reason). A card that fails verification means no model section;
    a card that is fine but whose Keras file fails to load still yields the card and the
    predictions, with the failure listed in ``problems``. ``load_keras`` False: card and
    predictions only (``keras_model`` None, no problem recorded)."""
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
        keras_model = _load_keras_model(folder) if load_keras else None
    except Exception as exc:  # noqa: BLE001
        problems.append(f"The Keras model could not be loaded ({_first_line(exc)}); heat maps are unavailable.")
    predictions = _read_optional(folder / PREDICTIONS_FILE, problems, missing="curves need it")
    test_predictions = _read_optional(folder / TEST_PREDICTIONS_FILE, problems)
    return ModelFolder(folder, card, predictions, keras_model, problems, test_predictions), None


def _read_optional(path: Path, problems: list[str], missing: str | None = None) -> pd.DataFrame | None:
    """A predictions file, or None with a sentence in ``problems`` (a missing file is only one when
    ``missing`` says why it is needed)."""
    if not path.is_file():
        if missing:
            problems.append(f"The model folder has no {path.name}; {missing}.")
        return None
    try:
        return read_predictions(path)
    except (OSError, ValueError) as exc:
        problems.append(f"{path.name} could not be read ({exc}).")
        return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


def _input_size_for_images(study: optuna.Study, model: ModelFolder | None) -> int | None:
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


_NO_SOURCE = object()


def _data_source(study: optuna.Study, model: ModelFolder | None):
    """The study's data source (None: the default PneumoniaMNIST), or _NO_SOURCE when unknown."""
    attrs = study.user_attrs
    if "data_source" in attrs:
        return attrs["data_source"] or None             # "" / None: the default (PneumoniaMNIST) source
    if model is not None and (model.card.get("data") or {}).get("source"):
        return model.card["data"]["source"]
    return _NO_SOURCE


def _framing(study: optuna.Study, model: ModelFolder | None) -> str:
    """How the images were cropped before the resize: the model's card, else the study's record."""
    if model is not None and (model.card.get("preprocessing") or {}).get("framing"):
        return str(model.card["preprocessing"]["framing"])
    return str(study.user_attrs.get("framing") or "full")


def load_images(study: optuna.Study, model: ModelFolder | None) -> tuple[ImageData | None, str | None]:
    """Reload the study's data set (cached by pneumo_models) at the model's input size."""
    attrs = study.user_attrs
    source = _data_source(study, model)
    if source is _NO_SOURCE:
        return None, "The study does not record its data source, so no images can be shown."
    size = _input_size_for_images(study, model)
    if size is None:
        return None, "No image size is known for this study yet, so no images can be shown."
    from pneumo_models.data import load_dataset

    kwargs: dict = {"download": False, "framing": _framing(study, model)}  # a report never downloads data
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


def load_test_images(study: optuna.Study, model: ModelFolder) -> tuple[SplitImages | None, str | None]:
    """Decode the data's test split (cached by pneumo_models) at the model's input size, to show
    the test X-rays the model got wrong. Never downloads."""
    source = _data_source(study, model)
    if source is _NO_SOURCE:
        source = (model.test_block or {}).get("source", _NO_SOURCE)
    if source is _NO_SOURCE:
        return None, "The study does not record its data source, so no test images can be shown."
    from pneumo_models.data import load_split

    try:
        split = load_split(source, int(model.card["input_size"]), "test", cache_dir=None, progress=False,
                           download=False, framing=_framing(study, model))
    except Exception as exc:  # noqa: BLE001 - DataError, OSError, moved folders: say it, go on
        where = source if source is not None else "the default data source"
        return None, f"The test images at {where} could not be loaded: {_first_line(exc)}"
    return SplitImages(np.asarray(split.x), np.asarray(split.y).astype(int), [str(i) for i in split.ids],
                       "test", str(split.info.fingerprint),
                       [str(p) for p in split.patients] if split.patients_known else None), None


def gather_inputs(
    study: optuna.Study,
    model_dir: str | os.PathLike | None = None,
    *,
    images: ImageData | None = None,
    test_images: SplitImages | None = None,
    load_data: bool = True,
) -> ReportInputs:
    """Collect what a report needs. ``images`` (and ``test_images``) may be given directly (skips
    the data loader for them). Test images are loaded only for a model with test predictions."""
    missing: dict[str, str] = {}
    model = None
    if model_dir is None:
        missing["model"] = ("No model has been exported for this study yet (the search may still be "
                            "running, or stopped before its export).")
    else:
        model, why = read_model_folder(model_dir)
        if why:
            missing["model"] = why
    def load(key: str, what: str, loader):
        if not load_data:
            missing[key] = f"{what} were not loaded for this report."
            return None
        loaded, why = loader(study, model)
        if why:
            missing[key] = why
        return loaded

    if images is None:
        images = load("images", "Images", load_images)
    if test_images is None and model is not None and model.test_predictions is not None:
        test_images = load("test-images", "Test images", load_test_images)
    return ReportInputs(study=study, model=model, images=images, missing=missing, test_images=test_images)


def missing_model_notice(inputs: "ReportInputs", what: str) -> str | None:
    """``"<what> is missing: <why>"`` when the study has no exported model to show, else None."""
    if inputs.model is not None:
        return None
    return f"{what} is missing: " + inputs.missing.get("model", "No model has been exported for this study.")
