"""Train one model on a Dataset, evaluating recall-constrained accuracy on validation each epoch.

Backend-agnostic: only keras callbacks and numpy. ``fit`` is used both by search trials (with an
``on_epoch`` hook that reports to Optuna and may ask to stop) and by the final retrain.

Images reach ``model.fit`` and ``model.predict`` as the dataset's uint8 pixels; the network's
first layers cast and rescale them on the device (the same numbers as a float32 copy made on the
host, without the copy: 4x less host memory and transfer). ``TrainOptions`` holds the GPU levers
(mixed precision, larger batches with the learning rate scaled, XLA / torch.compile); its
defaults are the plain float32 training, bit for bit.
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import keras
import numpy as np

from . import metrics
from .layout import DEBIAS_MODES, layout_weights
from .batches import TrainingBatches
from .model import build_model, resolve
from .params import HEAD_INITS
from .probe import Probe, start_from_probe

CLASS_WEIGHT_MODES = ("none", "balanced", "sqrt_balanced")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")  # Keras dtype policies
JIT_MODES = ("auto", "on", "off")  # compile(jit_compile=...): Keras' choice, XLA / torch.compile, none
PREDICT_BATCH = 256  # validation images per predict step (times TrainOptions.batch_scale)


@dataclass(frozen=True)
class TrainOptions:
    """How a network is trained, beside its parameters: the GPU levers (README, "Backends and
    throughput"). The defaults are today's float32 training, unchanged.

    - ``precision``: the Keras dtype policy the network is built with. ``mixed_bfloat16`` /
      ``mixed_float16`` compute in 16 bits with float32 weights (the output layer stays float32;
      for float16 Keras wraps the optimizer in a ``LossScaleOptimizer``). The model ``fit``
      returns is always a float32 copy with the trained weights, so what is exported, scored
      and served computes in float32 on any machine.
    - ``batch_scale``: K; the batch size is K times the configuration's, the learning rate K
      times (linear scaling), validation predicted K times as many images per step.
    - ``jit_compile``: ``auto`` = Keras' own choice (XLA on a TensorFlow GPU and on JAX, eager
      on PyTorch); ``on`` = XLA, or ``torch.compile`` under PyTorch; ``off`` = neither.
    """

    precision: str = "float32"
    batch_scale: int = 1
    jit_compile: str = "auto"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; choose one of {PRECISIONS}")
        if isinstance(self.batch_scale, bool) or not isinstance(self.batch_scale, int) or self.batch_scale < 1:
            raise ValueError(f"batch_scale must be a positive whole number, got {self.batch_scale!r}")
        if self.jit_compile not in JIT_MODES:
            raise ValueError(f"unknown jit_compile {self.jit_compile!r}; choose one of {JIT_MODES}")

    @property
    def is_default(self) -> bool:
        return self == TrainOptions()

    @property
    def keras_jit_compile(self):
        return {"auto": "auto", "on": True, "off": False}[self.jit_compile]

    def effective(self, params: dict) -> dict:
        """``params`` (resolved) with the batch size and learning rate this training uses."""
        p = resolve(params)
        if self.batch_scale == 1:
            return p
        return {**p, "batch_size": int(p.get("batch_size", 32)) * self.batch_scale,
                "learning_rate": float(p["learning_rate"]) * self.batch_scale}

    def trial_attrs(self, params: dict) -> dict:
        """What a trial records of its training when the options are not the defaults: the
        searched and the effective batch size and learning rate, the dtype policy, the compile mode."""
        if self.is_default:
            return {}
        p, eff = resolve(params), self.effective(params)
        # ("dtype_policy", not "precision": a trial's "precision" is its positive predictive value)
        return {"dtype_policy": self.precision, "batch_scale": self.batch_scale, "jit_compile": self.jit_compile,
                "batch_size_searched": int(p.get("batch_size", 32)), "batch_size_effective": int(eff.get("batch_size", 32)),
                "learning_rate_searched": float(p["learning_rate"]), "learning_rate_effective": float(eff["learning_rate"])}


@contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Layers made inside the block get Keras dtype policy ``name`` (the process's policy is put back)."""
    if name == "float32":
        yield
        return
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


class TooSlow(Exception):
    """Raised by ``fit`` after the first epoch when the whole training would take longer than
    ``max_seconds`` (the time guard: ``--max-trial-seconds``). ``reason`` is one line."""

    def __init__(self, reason: str, epoch_seconds: float, predicted_seconds: float):
        super().__init__(reason)
        self.reason, self.epoch_seconds, self.predicted_seconds = reason, epoch_seconds, predicted_seconds


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


def training_weights(x, y, class_weight: dict | None, debias: str, *, seed: int = 0) -> np.ndarray | None:
    """Per-image weights: the class weights times the ``debias`` weights (pneumo_models.layout), or None
    when neither applies. ``fit`` feeds them with mixup, re-framing or debiasing; otherwise Keras' own
    ``class_weight`` path is used, as before either existed."""
    if debias in (None, "none"):
        if class_weight is None:
            return None
        return np.where(np.asarray(y) > 0, class_weight[1], class_weight[0]).astype("float32")
    if debias not in DEBIAS_MODES:
        raise ValueError(f"unknown debias {debias!r}; choose one of {DEBIAS_MODES}")
    weights = layout_weights(x, y, seed=seed)
    if class_weight is not None:
        weights = weights * np.where(np.asarray(y) > 0, class_weight[1], class_weight[0])
    return weights.astype("float32")


@dataclass
class EpochResult:
    epoch: int                      # 1-based
    loss: float
    rc: metrics.RecallConstrained
    auc: float
    seconds: float                  # since training began, this epoch's validation included
    val_seconds: float = 0.0        # this epoch's validation pass (one predict call)


@dataclass
class FitResult:
    history: list[EpochResult] = field(default_factory=list)
    best: EpochResult | None = None
    seconds: float = 0.0
    n_params: int = 0
    stopped_early: bool = False
    probe: Probe | None = None      # the logistic regression the output layer started from (head_init="probe")

    @property
    def epochs(self) -> int:
        return len(self.history)


def model_input(x: np.ndarray) -> np.ndarray:
    """Images as the model takes them: (N, S, S, 1); uint8 pixels stay uint8 (the model casts them
    to float on the device, exactly: 0-255 are whole numbers in every float type), others float32."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    return x if x.dtype == np.uint8 else x.astype("float32")


def predict_proba(model: keras.Model, x: np.ndarray, batch_size: int = PREDICT_BATCH) -> np.ndarray:
    return np.asarray(model.predict(model_input(x), batch_size=batch_size, verbose=0), dtype="float32").reshape(-1)


class _EpochEvaluator(keras.callbacks.Callback):
    """Evaluate on validation after each epoch; keep the best weights; stop on patience/hook."""

    def __init__(self, x_val, y_val, min_recall, patience, on_epoch, result: FitResult, *,
                 predict_batch: int = PREDICT_BATCH, max_epochs: int = 0, max_seconds: float | None = None):
        super().__init__()
        self.x_val, self.y_val = model_input(x_val), y_val  # the same array every epoch, no copy
        self.min_recall, self.patience, self.on_epoch = min_recall, patience, on_epoch
        self.predict_batch, self.max_epochs, self.max_seconds = predict_batch, max_epochs, max_seconds
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
        val_started = time.perf_counter()
        p = predict_proba(self.model, self.x_val, batch_size=self.predict_batch)
        val_seconds = time.perf_counter() - val_started
        if not np.all(np.isfinite(p)):
            self.error = TrainingDiverged(f"validation predictions became non-finite at epoch {epoch + 1}")
            self.model.stop_training = True
            return
        res = EpochResult(epoch + 1, loss, metrics.recall_constrained_accuracy(self.y_val, p, self.min_recall),
                          metrics.auc(self.y_val, p), time.perf_counter() - self.started, val_seconds)
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
        if res.epoch == 1 and self.max_seconds and self.max_epochs > 1:
            predicted = res.seconds * self.max_epochs
            if predicted > self.max_seconds:
                self.error = TooSlow(
                    f"stopped after its first epoch: {res.seconds:.1f} s x {self.max_epochs} epochs = "
                    f"{predicted:.0f} s predicted > --max-trial-seconds {self.max_seconds:g}",
                    res.seconds, predicted)
                self.model.stop_training = True
                return
        if self.patience and self.wait >= self.patience:
            self.result.stopped_early = True
            self.model.stop_training = True


class _BatchProgress(keras.callbacks.Callback):
    """``on_batch(done, steps)`` after each training batch: ``done`` of the epoch's ``steps`` batches;
    ``(0, steps)`` as the epoch's batches end (its validation pass follows). It reads no logs, so it is
    safe for Keras' callback thread and never makes a step wait for the host."""

    async_safe = True

    def __init__(self, on_batch: Callable[[int, int], None]):
        super().__init__()
        self.on_batch = on_batch

    def _steps(self) -> int:
        return int((self.params or {}).get("steps") or 0)

    def on_train_batch_end(self, batch, logs=None):
        self.on_batch(batch + 1, self._steps())

    def on_epoch_end(self, epoch, logs=None):
        self.on_batch(0, self._steps())


def fit(params: dict, data, *, max_epochs: int, min_recall: float = 0.95, patience: int = 3,
        seed: int = 0, on_epoch: Callable[[EpochResult], None] | None = None,
        on_batch: Callable[[int, int], None] | None = None,
        callbacks: list | None = None, restore_best: bool = True,
        result: FitResult | None = None, options: TrainOptions | None = None,
        max_seconds: float | None = None) -> tuple[keras.Model, FitResult]:
    """Build and train a model for ``params`` on ``data`` (a pneumo_models.data.Dataset).

    Returns the model (with the best epoch's weights when ``restore_best``; computing in float32
    whatever ``options.precision`` trained it in) and a FitResult. Raises TrainingDiverged on
    NaN/inf loss, re-raises StopTraining from ``on_epoch``, and raises TooSlow after the first
    epoch when that epoch's seconds times ``max_epochs`` exceed ``max_seconds`` (None: no limit);
    pass ``result`` to keep the epochs trained so far when that happens. ``on_batch(done, steps)``:
    how far the epoch in progress is (a progress bar's; an epoch is minutes on a CPU).
    """
    options = options or TrainOptions()
    p = options.effective(params)
    keras.utils.set_random_seed(seed)
    batch_size = int(p.get("batch_size", 32))
    total_steps = int(max_epochs) * math.ceil(len(data.x_train) / batch_size)  # what a learning-rate schedule spans
    with dtype_policy(options.precision):
        model = build_model(p, seed=seed, jit_compile=options.keras_jit_compile, total_steps=total_steps)
    result = result if result is not None else FitResult()
    result.n_params = int(model.count_params())
    weights = class_weights(data.y_train, p.get("class_weight", "none"))
    head_init = p.get("head_init", "random")
    if head_init not in HEAD_INITS:
        raise ValueError(f"unknown head_init {head_init!r}; choose one of {HEAD_INITS}")
    if head_init == "probe":  # before the evaluator starts its clock: epoch times stay epochs'
        result.probe = start_from_probe(model, model_input(data.x_train), data.y_train, model_input(data.x_val),
                                        data.y_val, class_weight=weights, batch_size=PREDICT_BATCH * options.batch_scale,
                                        train_batch_size=batch_size)
    evaluator = _EpochEvaluator(data.x_val, data.y_val, min_recall, patience, on_epoch, result,
                                predict_batch=PREDICT_BATCH * options.batch_scale, max_epochs=int(max_epochs),
                                max_seconds=max_seconds)
    x_train = model_input(data.x_train)  # uint8 (a view of the dataset's array): no float32 copy on the host
    y_train = np.asarray(data.y_train).astype("float32")
    # with an EMA of the weights, Keras swaps the averaged weights in at each epoch's end, before the
    # evaluator: they are the ones validated, kept as the best epoch's and restored
    ema = [keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if float(p.get("ema") or 0) > 0 else []
    sample_weight = training_weights(data.x_train, data.y_train, weights, p.get("debias", "none"), seed=seed)
    mix, reframe = float(p.get("mixup") or 0), float(p.get("reframe") or 0)
    if mix > 0 or reframe > 0:  # batches made one at a time on the host (they need the labels)
        feed = dict(x=TrainingBatches(x_train, y_train, batch_size=batch_size, mixup=mix, reframe=reframe,
                                      sample_weight=sample_weight, seed=seed))
    elif p.get("debias", "none") != "none":
        feed = dict(x=x_train, y=y_train, batch_size=batch_size, shuffle=True, sample_weight=sample_weight)
    else:
        feed = dict(x=x_train, y=y_train, batch_size=batch_size, shuffle=True, class_weight=weights)
    start = time.perf_counter()
    batches = [_BatchProgress(on_batch)] if on_batch is not None else []  # before the evaluator: 0 while it runs
    model.fit(**feed, epochs=int(max_epochs),
              callbacks=[*ema, *batches, evaluator, _nan_guard(options), *(callbacks or [])], verbose=0)
    result.seconds = time.perf_counter() - start
    if evaluator.error is not None:
        raise evaluator.error
    if not result.history:
        raise TrainingDiverged("training stopped before the first epoch finished (loss not finite)")
    if restore_best and evaluator.best_weights is not None:
        model.set_weights(evaluator.best_weights)
    if options.precision != "float32":
        model = float32_copy(model, p, seed=seed, total_steps=total_steps)
    return model, result


def _nan_guard(options: TrainOptions) -> keras.callbacks.Callback:
    """Keras' TerminateOnNaN (a diverging trial stops within its epoch). With the GPU levers on it
    is marked safe for Keras' callback thread: under PyTorch and JAX the training loop then does not
    wait for each step's loss on the host (TensorFlow runs batch callbacks in line either way)."""
    guard = keras.callbacks.TerminateOnNaN()
    if not options.is_default:
        guard.async_safe = True
    return guard


def float32_copy(model: keras.Model, params: dict, *, seed: int | None = None,
                 total_steps: int | None = None) -> keras.Model:
    """The network of ``params`` under the float32 policy with ``model``'s weights (a mixed-precision
    model keeps float32 weights already: the copy computes what it computed, in float32)."""
    copy = build_model(params, seed=seed, total_steps=total_steps)
    copy.set_weights(model.get_weights())
    return copy
