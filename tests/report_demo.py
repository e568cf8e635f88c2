"""Small but real inputs for a report: a study filled with ``optuna.trial.create_trial`` trials
(complete, pruned with learning curves cut short, failed, optionally running), synthetic
chest-X-ray-like images, and a tiny trained Keras model exported with its card and predictions.

The study's trials are drawn from the real ``default`` space (``spaces``), the model is exported
by ``pneumo_models.export.export_model`` with its threshold chosen by ``pneumo_models.metrics``.
Used by the report tests only; nothing here is a mock.
"""
from __future__ import annotations

import datetime
import math
from pathlib import Path

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import TrialState, create_trial
from pneumo_models import metrics
from pneumo_models.evaluation import predictions_csv, score
from pneumo_models.export import export_model

from reports.inputs import ImageData, SplitImages
from spaces import get_space
from spaces.optuna_adapter import distributions

CLASS_NAMES = ["NORMAL", "PNEUMONIA"]

SPACE_NAME = "default"
# The searched dimensions of the real space, as Optuna distributions. The demo's images and model
# are 32 px, so the input size is fixed there (a fixed dimension is not a trial parameter).
SPACE = distributions(get_space(SPACE_NAME).with_overrides(input_size=32))


def data_summary(images: ImageData | None = None, source: str = "synthetic") -> dict:
    """A DataSummary dict as the search stores it in ``study.user_attrs["data"]``."""
    if images is None:
        counts = {"train": {"NORMAL": 1341, "PNEUMONIA": 3875}, "val": {"NORMAL": 234, "PNEUMONIA": 390}}
    else:
        counts = {split: {name: int(np.sum(y == k)) for k, name in enumerate(CLASS_NAMES)}
                  for split, y in (("train", images.y_train), ("val", images.y_val))}
    return {"source": source, "kind": "synthetic", "fingerprint": "0123456789abcdef0123456789abcdef",
            "counts": counts,
            "patients": {s: int(sum(c.values()) * 0.8) for s, c in counts.items()},
            "skipped": [{"path": "train/NORMAL/broken.jpeg", "reason": "not a readable image"}],
            "val_strategy": "patient-grouped split of train, 10%"}


def make_study(storage: str | None, *, name: str = "demo", n_trials: int = 12, max_epochs: int = 6,
               seed: int = 0, min_recall: float = 0.95, running: int = 0, n_failed: int | None = None,
               images: ImageData | None = None) -> optuna.Study:
    """A maximise study shaped like a pneumo-search one, trials added with ``create_trial``.

    About a third of the trials are pruned (their learning curves stop early), one in ten
    failed; ``running`` trials are left RUNNING with a partial curve, as in a live study.
    """
    rng = np.random.default_rng(seed)
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize",
                                load_if_exists=False)
    study.set_user_attr("data", data_summary(images))
    for key, value in {"data_source": "synthetic", "val_fraction": 0.1, "seed": seed, "space": SPACE_NAME,
                       "min_recall": min_recall, "max_epochs": max_epochs, "sampler": "TPESampler(seed=0)",
                       "pruner": "MedianPruner(n_warmup_steps=2)", "engine": "optuna",
                       "started_at": "2025-01-06T09:00:00+00:00"}.items():
        study.set_user_attr(key, value)
    clock = datetime.datetime(2025, 1, 6, 9, 0, 0)
    n_failed = max(1, n_trials // 10) if n_failed is None else n_failed
    fail_at = set(rng.choice(np.arange(2, max(3, n_trials)), size=min(n_failed, max(0, n_trials - 2)),
                             replace=False).tolist()) if n_trials > 2 else set()
    trials = []
    for i in range(n_trials + running):
        params = {k: _sample(d, rng) for k, d in SPACE.items()}
        quality = (0.78 + 0.05 * (params["conv_blocks"] - 2) / 3 - 0.6 * abs(math.log10(params["learning_rate"]) + 3) / 10
                   + 0.03 * params["batch_norm"] - 0.04 * abs(params["dropout"] - 0.25) + rng.normal(0, 0.015))
        final = float(np.clip(quality, 0.5, 0.97))
        curve = {e: float(np.clip(final - (0.25 * math.exp(-0.7 * (e - 1))) + rng.normal(0, 0.01), 0.3, 0.99))
                 for e in range(1, max_epochs + 1)}
        start = clock
        is_running = i >= n_trials
        if is_running:
            state = TrialState.RUNNING
            curve = {e: v for e, v in curve.items() if e <= 2}
        elif i in fail_at:
            state = TrialState.FAIL
            curve = {}
        elif i >= 3 and final < 0.80 and rng.random() < 0.8:
            state = TrialState.PRUNED
            stop = int(rng.integers(2, max(3, max_epochs - 1)))
            curve = {e: v for e, v in curve.items() if e <= stop}
        else:
            state = TrialState.COMPLETE
        epochs = len(curve)
        seconds = 20.0 * max(1, epochs) * (1 + 0.5 * params["conv_blocks"])
        attrs: dict = {"epochs": epochs, "seconds": seconds, "n_params": int(10_000 * params["conv_blocks"]
                                                                              * params["base_filters"] / 16)}
        if curve:
            best_epoch = max(curve, key=curve.get)
            best = curve[best_epoch]
            attrs.update(rc_accuracy=best, auc=min(0.999, best + 0.08), recall=min(1.0, min_recall + 0.01),
                         precision=best + 0.02, specificity=max(0.0, best - 0.15),
                         threshold=float(rng.uniform(0.2, 0.6)))
        if state == TrialState.FAIL:
            attrs["fail_reason"] = "TrainingDiverged: the loss became NaN at epoch 1"
        value = max(curve.values()) if state == TrialState.COMPLETE else None
        trial = create_trial(state=state, value=value, params=params, distributions=SPACE,
                             user_attrs=attrs, intermediate_values=curve)
        trial.datetime_start = start
        clock = start + datetime.timedelta(seconds=seconds)
        if not is_running:
            trial.datetime_complete = clock
        trials.append(trial)
    if running:   # a live study: its running trials started moments ago
        shift = datetime.datetime.now() - trials[-1].datetime_start - datetime.timedelta(seconds=30)
        for trial in trials:
            trial.datetime_start += shift
            if trial.datetime_complete is not None:
                trial.datetime_complete += shift
        study.set_user_attr("started_at", trials[0].datetime_start.isoformat(timespec="seconds"))
    for trial in trials:
        study.add_trial(trial)
    return study


def _sample(dist, rng):
    if isinstance(dist, CategoricalDistribution):
        return dist.choices[int(rng.integers(len(dist.choices)))]
    if isinstance(dist, IntDistribution):
        return int(rng.integers(dist.low, dist.high + 1))
    if dist.log:
        return float(math.exp(rng.uniform(math.log(dist.low), math.log(dist.high))))
    return float(rng.uniform(dist.low, dist.high))


def _picture(rng: np.random.Generator, sick: bool, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = 170 + 30 * (1 - np.abs(xx - 0.5) * 2) + rng.normal(0, 12, (size, size))
    for cx in (0.3, 0.7):
        lung = ((xx - cx) / 0.16) ** 2 + ((yy - 0.5) / 0.3) ** 2 < 1
        img[lung] -= 90
    if sick:
        for _ in range(int(rng.integers(1, 3))):
            cx, cy = rng.choice([0.3, 0.7]) + rng.normal(0, 0.04), 0.45 + rng.normal(0, 0.12)
            blob = np.exp(-(((xx - cx) / 0.08) ** 2 + ((yy - cy) / 0.1) ** 2))
            img += 75 * blob
    return np.clip(img, 0, 255).astype(np.uint8)


def _split(rng: np.random.Generator, n: int, prefix: str, size: int, label_noise: float):
    y = (np.arange(n) % 3 != 0).astype(int)
    y = y[rng.permutation(n)]
    x = np.stack([_picture(rng, bool(v), size) for v in y])
    y = np.where(rng.random(n) < label_noise, 1 - y, y)   # some cases look like the other class
    ids = [f"{prefix}/{CLASS_NAMES[v]}/case-{i:04d}.jpeg" for i, v in enumerate(y)]
    return x, y, ids


def make_images(size: int = 32, n_train: int = 160, n_val: int = 48, seed: int = 0,
                label_noise: float = 0.12) -> ImageData:
    """Chest-X-ray-like pictures: two dark lungs on a bright body; pneumonia adds bright patches
    (consolidation) inside a lung. A third of each split is normal, as in the real data, and a
    fraction ``label_noise`` of the labels disagree with the picture, so the model makes errors."""
    rng = np.random.default_rng(seed)
    x_train, y_train, _ = _split(rng, n_train, "train", size, label_noise)
    x_val, y_val, ids_val = _split(rng, n_val, "val", size, label_noise)
    return ImageData(x_train, y_train, x_val, y_val, ids_val, list(CLASS_NAMES), "synthetic")


def make_test_images(size: int = 32, n: int = 48, seed: int = 1, label_noise: float = 0.12,
                     shift: float = 0.0) -> SplitImages:
    """A test split drawn like ``make_images``' splits, two X-rays per patient. ``shift`` in [0, 1)
    washes the pictures out towards grey (another scanner, say), so a model trained on the others
    does worse on them: the case the report's warning is for."""
    rng = np.random.default_rng(seed)
    x, y, ids = _split(rng, n, "test", size, label_noise)
    if shift:
        x = np.clip(x.astype(np.float64) * (1 - shift) + 140 * shift, 0, 255).astype(np.uint8)
    patients = [f"patient-{i // 2:04d}" for i in range(n)]
    return SplitImages(x, y, ids, "test", f"demo-test-{seed}-{shift}", patients)


def build_model(size: int):
    """Input (S,S,1) 0-255, rescaled inside, two conv blocks, sigmoid pneumonia output."""
    import keras

    inputs = keras.Input((size, size, 1), name="xray")
    x = keras.layers.Rescaling(1.0 / 255.0, name="scale_0_1")(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(x)
    x = keras.layers.MaxPooling2D(2, name="pool1")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.MaxPooling2D(2, name="pool2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="pneumonia")(x)
    return keras.Model(inputs, outputs, name="demo_cnn")


def export_demo_model(folder: str | Path, study: optuna.Study, images: ImageData, *, epochs: int = 12,
                      min_recall: float = 0.95, resamples: int = 200, seed: int = 0,
                      test_images: SplitImages | None = None) -> Path:
    """Train the tiny model briefly and write ``model.keras``, ``model_card.json`` and
    ``validation_predictions.csv`` with pneumo_models' exporter. With
    ``test_images``, the final model is scored on them once, as a run scores the data's test split:
    the card's ``metrics.test`` and ``test_predictions.csv``."""
    import keras

    keras.utils.set_random_seed(seed)
    size = int(images.x_train.shape[1])
    model = build_model(size)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="binary_crossentropy")
    model.fit(images.x_train[..., None].astype("float32"), images.y_train, epochs=epochs, batch_size=16,
              verbose=0)
    p = np.asarray(model.predict(images.x_val[..., None].astype("float32"), verbose=0)).reshape(-1)
    y = images.y_val.astype(int)
    threshold = metrics.choose_threshold(y, p.astype(np.float64), min_recall, rule="validation")
    try:
        best = study.best_trial
        best_trial = {"number": best.number, "value": best.value, "params": best.params}
    except ValueError:
        best_trial = {"number": None, "value": None, "params": {}}
    study_info = {"name": study.study_name, "direction": "maximize", "n_trials": len(study.trials)}
    data = {"source": images.source, "fingerprint": "0123456789abcdef", "summary": study.user_attrs.get("data")}

    def score_test(final_model):
        return score_split(final_model, test_images, threshold=threshold, min_recall=min_recall,
                           resamples=resamples, seed=seed)

    return export_model(Path(folder), model, y_val=y, p_val=p, ids_val=images.ids_val, threshold=threshold,
                        min_recall=min_recall, input_size=size, class_names=CLASS_NAMES,
                        best_trial=best_trial, study=study_info, data=data,
                        training={"epochs": epochs}, bootstrap_resamples=resamples, seed=seed,
                        score_test=score_test if test_images is not None else None)


def score_split(model, split: SplitImages, *, threshold: float, min_recall: float, resamples: int = 200,
                seed: int = 0, source: str = "synthetic") -> tuple[dict, str]:
    """(evaluation block, predictions CSV) of ``model`` on ``split``, as ``search evaluate`` makes them
    (``pneumo_models.evaluation``)."""
    p = np.asarray(model.predict(split.x[..., None].astype("float32"), verbose=0), dtype=np.float64).reshape(-1)
    block = score(split.y, p, threshold=threshold, min_recall=min_recall, patients=split.patients,
                  resamples=resamples, seed=seed)
    block.update(source=source, split=split.split, fingerprint=split.fingerprint, skipped=[])
    return block, predictions_csv(split.ids, split.y, p, split.patients)
