"""Train one model on a Dataset, evaluating recall-constrained accuracy on validation each epoch.

Backend-agnostic: only keras callbacks and numpy. ``fit`` is used both by search trials (with an
``on_epoch`` hook that reports to Optuna and may ask to stop) and by the final retrain.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import keras
import numpy as np

from . import metrics
from .model import build_model, resolve

CLASS_WEIGHT_MODES = ("none", "balanced", "sqrt_balanced")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class StopTraining(Exception):
    """Raised by an ``on_epoch`` hook to end training early (e.g. a pruned trial)."""


def class_weights(y: np.ndarray, mode: str) -> dict[int, float] | None:
    if mode in (None, "none"):
        return None
    if mode not in CLASS_WEIGHT_MODES:
        raise ValueError(f"unknown class_weight {mode!r}; choose one of {CLASS_WEIGHT_MODES}")
    counts = np.bincount(np.asarray(y, dtype=int), minlength=2).astype(float)
    weights = len(y) / (2.0 * np.maximum(counts, 1.0))
    if mode == "sqrt_balanced":
        weights = np.sqrt(weights)
    return {0: float(weights[0]), 1: float(weights[1])}


@dataclass
class EpochResult:
    epoch: int                      # 1-based
    loss: float
    rc: metrics.RecallConstrained
    auc: float
    seconds: float


@dataclass
class FitResult:
    history: list[EpochResult] = field(default_factory=list)
    best: EpochResult | None = None
    seconds: float = 0.0
    n_params: int = 0
    stopped_early: bool = False

    @property
    def epochs(self) -> int:
        return len(self.history)


def predict_proba(model: keras.Model, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    return np.asarray(model.predict(x.astype("float32"), batch_size=batch_size, verbose=0)).reshape(-1)


class _EpochEvaluator(keras.callbacks.Callback):
    """Evaluate on validation after each epoch; keep the best weights; stop on patience/hook."""

    def __init__(self, x_val, y_val, min_recall, patience, on_epoch, result: FitResult):
        super().__init__()
        self.x_val, self.y_val = x_val, y_val
        self.min_recall, self.patience, self.on_epoch = min_recall, patience, on_epoch
        self.result = result
        self.best_weights = None
        self.wait = 0
        self.started = time.perf_counter()
        self.error: BaseException | None = None

    def on_epoch_end(self, epoch, logs=None):
        loss = float((logs or {}).get("loss", float("nan")))
        if not math.isfinite(loss):
            self.error = TrainingDiverged(f"training loss became {loss} at epoch {epoch + 1}")
            self.model.stop_training = True
            return
        p = predict_proba(self.model, self.x_val)
        if not np.all(np.isfinite(p)):
            self.error = TrainingDiverged(f"validation predictions became non-finite at epoch {epoch + 1}")
            self.model.stop_training = True
            return
        res = EpochResult(epoch + 1, loss, metrics.recall_constrained_accuracy(self.y_val, p, self.min_recall),
                          metrics.auc(self.y_val, p), time.perf_counter() - self.started)
        self.result.history.append(res)
        improved = self.result.best is None or res.rc.accuracy > self.result.best.rc.accuracy
        if improved:
            self.result.best = res
            self.best_weights = self.model.get_weights()
            self.wait = 0
        else:
            self.wait += 1
        if logs is not None:
            logs["val_rc_accuracy"] = res.rc.accuracy
        try:
            if self.on_epoch is not None:
                self.on_epoch(res)
        except StopTraining as exc:
            self.error = exc
            self.model.stop_training = True
            return
        if self.patience and self.wait >= self.patience:
            self.result.stopped_early = True
            self.model.stop_training = True


def fit(params: dict, data, *, max_epochs: int, min_recall: float = 0.95, patience: int = 3,
        seed: int = 0, on_epoch: Callable[[EpochResult], None] | None = None,
        callbacks: list | None = None, restore_best: bool = True,
        result: FitResult | None = None) -> tuple[keras.Model, FitResult]:
    """Build and train a model for ``params`` on ``data`` (a pneumo_models.data.Dataset).

    Returns the model (with the best epoch's weights when ``restore_best``) and a FitResult.
    Raises TrainingDiverged on NaN/inf loss and re-raises StopTraining from ``on_epoch``; pass
    ``result`` to keep the epochs trained so far when that happens.
    """
    p = resolve(params)
    keras.utils.set_random_seed(seed)
    model = build_model(p, seed=seed)
    result = result if result is not None else FitResult()
    result.n_params = int(model.count_params())
    evaluator = _EpochEvaluator(data.x_val, data.y_val, min_recall, patience, on_epoch, result)
    x_train = np.asarray(data.x_train)[..., None].astype("float32")
    y_train = np.asarray(data.y_train).astype("float32")
    start = time.perf_counter()
    model.fit(x_train, y_train, batch_size=int(p.get("batch_size", 32)), epochs=int(max_epochs),
              shuffle=True, class_weight=class_weights(data.y_train, p.get("class_weight", "none")),
              callbacks=[evaluator, keras.callbacks.TerminateOnNaN(), *(callbacks or [])], verbose=0)
    result.seconds = time.perf_counter() - start
    if evaluator.error is not None:
        raise evaluator.error
    if not result.history:
        raise TrainingDiverged("training stopped before the first epoch finished (loss not finite)")
    if restore_best and evaluator.best_weights is not None:
        model.set_weights(evaluator.best_weights)
    return model, result
