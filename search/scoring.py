"""Score an exported model on labelled images it was not chosen on: the data's test split at the end
of `run`/`export`, or any folder or .npz with `python -m search evaluate` (external validation).

The test split is checked from its file listing before a run trains anything (so a broken one is
refused at once), but its pixels are decoded only here, after the model and threshold are final.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from pneumo_models import evaluation
from pneumo_models.data import DataError, listed_counts, load_split

from .errors import UserError
from .progress import StepBar

SCORE_STEPS = 3  # the steps score_model names (images, prediction, figures)


class Scored(NamedTuple):
    block: dict                 # pneumo_models.evaluation.score(...) plus where the images came from
    ids: list[str]
    y: np.ndarray
    p: np.ndarray
    patients: list[str]

    def predictions_csv(self) -> str:
        return evaluation.predictions_csv(self.ids, self.y, self.p, self.patients)


def check_test_split(source, *, cache_dir=None) -> dict[str, int] | None:
    """The test split's listed class counts (None: the data has none). A test split that is empty or
    lists one class only is a UserError now, before hours of search, not at the end."""
    try:
        counts = listed_counts(source, "test", cache_dir=cache_dir)
    except DataError as exc:
        raise UserError(str(exc)) from None
    if counts is None:
        return None
    if not sum(counts.values()):
        raise UserError("the data's test split holds no images (.jpeg, .jpg, .png or DICOM); add images or pass --no-test")
    lacking = [name for name, n in counts.items() if n == 0]
    if lacking:
        raise UserError(f"the data's test split holds no {' or '.join(lacking)} images, so it cannot be scored "
                        f"({sum(counts.values())} images, all of the other class); pass --no-test to skip it")
    return counts


def score_model(keras_model, source, *, split: str, input_size: int, threshold: float, min_recall: float,
                cache_dir=None, progress: bool = True, seed: int = 0, download: bool = True,
                framing: str = "full", on_step: Callable[[str], None] | None = None) -> Scored:
    """Decode ``split`` of ``source`` at the model's input size and framing, predict, score at ``threshold``;
    ``on_step`` is called with each of these SCORE_STEPS steps' names as it starts."""
    from pneumo_models.training import predict_proba  # Keras: only once there is a model to run

    step = on_step or (lambda name: None)
    step(f"the {split} images")
    try:
        images = load_split(source, input_size, split, cache_dir=cache_dir, progress=progress, download=download,
                            framing=framing)
    except DataError as exc:
        raise UserError(str(exc)) from None
    step(f"predict {len(images.y)} images")
    p = predict_proba(keras_model, images.x)
    step("figures with bootstrap intervals")
    block = evaluation.score(images.y, p, threshold=threshold, min_recall=min_recall,
                             patients=images.patients if images.patients_known else None, seed=seed)
    block["source"] = images.info.location
    block["split"] = split
    block["framing"] = framing
    block["fingerprint"] = images.info.fingerprint
    block["skipped"] = images.skipped
    return Scored(block, list(images.ids), np.asarray(images.y).astype(int), p, list(images.patients))


def evaluation_name(source: str, split: str) -> str:
    """``evaluation-<name>.json``'s name: the data's folder or file stem, and the split unless 'all'."""
    stem = Path(str(source).rstrip("/")).name
    stem = stem[:-4] if stem.lower().endswith(".npz") else stem
    name = stem if split == "all" else f"{stem}-{split}"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "data"


class Evaluated(NamedTuple):
    payload: dict               # evaluation-<name>.json's content: model, evaluation block, predictions
    card: dict                  # the evaluated model's card
    json_path: Path
    page_path: Path


def evaluate_model(model_dir, data, *, split: str | None = None, name: str | None = None, cache_dir=None,
                   progress: bool = True) -> Evaluated:
    """``python -m search evaluate``: score an exported model on labelled images at its threshold and
    write ``evaluation-<name>.json`` and ``.html`` next to it. ``split`` None: the test split of a
    split folder or npz, everything in a plain ``<CLASS>/`` folder."""
    from pneumo_models import load_model

    with StepBar(SCORE_STEPS + 2, "evaluate", enabled=progress) as steps:
        steps.start("load the model")
        model = load_model(model_dir)
        return _evaluate(model, model_dir, data, split, name, cache_dir, progress, steps)


def _evaluate(model, model_dir, data, split, name, cache_dir, progress, steps) -> Evaluated:
    from pneumo_models.atomic import write_json
    from pneumo_models.data import available_splits
    from reports import write_evaluation_page

    try:
        splits = available_splits(data, cache_dir=cache_dir, download=False)
    except DataError as exc:
        if str(exc).startswith(("no NORMAL", "no PNEUMONIA")):
            raise UserError(f"{data} does not hold the model's classes ({', '.join(model.class_names)}): "
                            f"{exc}") from None
        raise
    split = split or ("all" if splits == ["all"] else "test")
    if split not in splits:
        raise UserError(f"{data} has no {split} split (it holds: {', '.join(splits)}); pass --split")
    scored = score_model(model.keras_model, data, split=split, input_size=model.input_size,
                         threshold=model.threshold, min_recall=float(model.card["min_recall"]),
                         cache_dir=cache_dir, progress=progress, download=False, framing=model.framing,
                         on_step=steps.start)
    steps.start("the evaluation's JSON and page")
    name = name or evaluation_name(scored.block["source"], split)
    payload = {"model": {"folder": str(model_dir), "card_sha256": model.card["card_sha256"],
                         "threshold": model.threshold, "input_size": model.input_size,
                         "created_at": model.card["created_at"]},
               "evaluation": scored.block,
               "predictions": [{"id": i, "label": int(y), "probability": float(p), "patient": pat}
                               for i, y, p, pat in zip(scored.ids, scored.y, scored.p, scored.patients)]}
    json_path = write_json(Path(model_dir) / f"evaluation-{name}.json", payload)
    page = write_evaluation_page(Path(model_dir) / f"evaluation-{name}.html", payload, model_dir=model_dir)
    return Evaluated(payload, model.card, Path(json_path), Path(page))
