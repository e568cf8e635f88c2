"""The output layer as a logistic regression on the network's own features: before fine-tuning (linear
probing, then fine-tuning: ``start_from_probe``) and after it (``refit_output_layer``, below).

A network fine-tuned from ImageNet weights starts with a random output layer, and its first
gradients, pushed back through the backbone, serve that random layer: they move the pretrained
features before the head is any good, and what moves is what the features carried to new data
(Kumar et al. 2022, "Fine-tuning can distort pretrained features and underperform out-of-distribution").
With ``head_init="probe"`` the output layer starts instead as a logistic regression (scikit-learn's)
fitted on the network's starting features of the training films, so fine-tuning begins from a head
that already separates the classes and changes the features less. Measured on Lite0 at 128 px (README
"Fourteenth round": two seeds, validation and the test half both lower than with a random head), it
is an option, not a default.

Both read the features the output layer reads (after the pooling and any dense layer; dropout
is off outside training) of the unaugmented training films, standardised, with the trial's class
weights. The L2 strength is the one of ``PROBE_CS`` with the lowest validation log-loss: validation
is what the search selects on, and nothing here reads a test split.
"""
from __future__ import annotations

import time
from typing import NamedTuple

import keras
import numpy as np

from .metrics import log_loss

OUTPUT_LAYER = "pneumonia"  # pneumo_models.model._head's sigmoid output
PROBE_CS = (0.001, 0.01, 0.1, 1.0)  # inverse L2 strengths tried (scikit-learn's C, on standardised features)


class Probe(NamedTuple):
    """The logistic regression the output layer started from."""

    c: float                    # the L2 strength kept (scikit-learn's C)
    val_log_loss: float         # its validation log-loss, and for each C tried, in PROBE_CS order
    val_log_losses: tuple[float, ...]
    val_auc: float              # its validation AUC: how well the starting features rank already
    seconds: float


def features(model: keras.Model, *xs: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """What ``model``'s output layer reads, for each image array of ``xs`` (inference mode: no
    augmentation, no dropout)."""
    reader = keras.Model(model.inputs, model.get_layer(OUTPUT_LAYER).input)
    return [np.asarray(reader.predict(x, batch_size=batch_size, verbose=0), dtype="float64") for x in xs]


def _batch_norms(layer) -> list:
    if isinstance(layer, keras.layers.BatchNormalization):
        return [layer]
    return [bn for inner in getattr(layer, "layers", ()) for bn in _batch_norms(inner)]


def adapt_batch_norm(model: keras.Model, x: np.ndarray, *, batch_size: int) -> int:
    """Set every batch normalisation's moving statistics to the mean of its training-mode batch statistics
    over ``x`` (one pass, training mode: augmentation on, as in training), instead of ImageNet's.

    Fine-tuning normalises with each batch's own statistics, so the features the output layer
    meets in training are the films' and not those ImageNet's moving statistics give: a probe
    fitted on the latter starts fine-tuning with a head that does not fit (README "Fourteenth
    round"). Returns the number of layers adapted (0: nothing to do)."""
    norms = _batch_norms(model)
    if not norms:
        return 0
    momenta = [bn.momentum for bn in norms]
    try:
        for k, start in enumerate(range(0, len(x), batch_size)):
            for bn in norms:
                bn.momentum = k / (k + 1)  # a running mean of the batches' statistics: the first replaces ImageNet's
            model(x[start:start + batch_size], training=True)
    finally:
        for bn, momentum in zip(norms, momenta):
            bn.momentum = momentum
    return len(norms)


class _Logistic(NamedTuple):
    """A logistic regression fitted on standardised features, as weights on the raw ones."""

    kernel: np.ndarray
    bias: float
    c: float                          # its L2 strength: the C of PROBE_CS with the lowest validation log-loss
    val_log_loss: float
    val_log_losses: tuple[float, ...]  # every C's, in PROBE_CS order
    p_val: np.ndarray                 # its validation probabilities


def _fit_logistic(f_train, y_train, f_val, y_val, class_weight: dict | None) -> _Logistic:
    """A logistic regression on standardised features for each C of PROBE_CS; the one with the lowest
    validation log-loss."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(f_train)
    z_train, z_val = scaler.transform(f_train), scaler.transform(f_val)
    fits, p_vals = [], []
    for c in PROBE_CS:
        fits.append(LogisticRegression(C=c, class_weight=class_weight, max_iter=2000).fit(z_train, y_train))
        p_vals.append(fits[-1].predict_proba(z_val)[:, 1])
    losses = [log_loss(y_val, p) for p in p_vals]
    best = int(np.argmin(losses))
    # the regression on standardised features, as weights on the raw ones: w / scale, b - sum(w * mean / scale)
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    kernel = fits[best].coef_.reshape(-1) / scale
    bias = float(fits[best].intercept_[0] - np.sum(kernel * scaler.mean_))
    return _Logistic(kernel, bias, float(PROBE_CS[best]), losses[best], tuple(losses), p_vals[best])


def _set_output_layer(model: keras.Model, fitted: _Logistic) -> None:
    model.get_layer(OUTPUT_LAYER).set_weights([fitted.kernel.reshape(-1, 1).astype("float32"),
                                               np.asarray([fitted.bias], dtype="float32")])


def _labels(y) -> np.ndarray:
    return np.asarray(y).reshape(-1).astype(int)


def start_from_probe(model: keras.Model, x_train, y_train, x_val, y_val, *, class_weight: dict | None = None,
                     batch_size: int = 256, train_batch_size: int = 32) -> Probe:
    """Fit a logistic regression on ``model``'s features and set its output layer to it (in place), after
    adapting its batch normalisation to the training films (``adapt_batch_norm``, batches of
    ``train_batch_size``); ``batch_size``: images per prediction step."""
    from sklearn.metrics import roc_auc_score

    start = time.perf_counter()
    adapt_batch_norm(model, x_train, batch_size=train_batch_size)  # the batches training normalises with
    f_train, f_val = features(model, x_train, x_val, batch_size=batch_size)
    y_val = _labels(y_val)
    fitted = _fit_logistic(f_train, _labels(y_train), f_val, y_val, class_weight)
    _set_output_layer(model, fitted)
    return Probe(c=fitted.c, val_log_loss=fitted.val_log_loss, val_log_losses=fitted.val_log_losses,
                 val_auc=float(roc_auc_score(y_val, fitted.p_val)), seconds=time.perf_counter() - start)


class Refit(NamedTuple):
    """What ``refit_output_layer`` did to a trained network's output layer."""

    kept: bool                  # the logistic regression replaced the trained layer (it lowered validation log-loss)
    c: float                    # its L2 strength (scikit-learn's C on standardised features)
    val_log_loss_trained: float  # validation log-loss with the layer training left
    val_log_loss_refit: float    # ... and with the logistic regression
    seconds: float

    def as_dict(self) -> dict:
        return {"kept": self.kept, "c": self.c, "val_log_loss_trained": round(self.val_log_loss_trained, 6),
                "val_log_loss_refit": round(self.val_log_loss_refit, 6), "seconds": round(self.seconds, 1)}


def refit_output_layer(model: keras.Model, x_train, y_train, x_val, y_val, *, class_weight: dict | None = None,
                       batch_size: int = 256) -> Refit:
    """After training: refit ``model``'s output layer (in place) as a strongly regularised logistic regression on
    the features it reads, of the unaugmented training films, where that lowers validation log-loss.

    Fine-tuning leaves an output layer that leans hard on the few features that separate the training films,
    which it has all but memorised; an L2-penalised regression on the same features, its strength chosen on
    validation log-loss, spreads the weight over many (it is the last-layer retraining of Kirichenko et al. 2023,
    on the training films), so a shift in a few of them moves a new patient's score less. The network's other
    weights, batch normalisation included, stay as training left them. Measured on ten kept Lite0 networks (README
    "Twentieth round"): validation log-loss lower on all ten, test-half AUC higher on nine."""
    start = time.perf_counter()
    f_train, f_val = features(model, x_train, x_val, batch_size=batch_size)
    y_val = _labels(y_val)
    w_trained, b_trained = model.get_layer(OUTPUT_LAYER).get_weights()
    p_trained = 1.0 / (1.0 + np.exp(-(f_val @ w_trained.astype("float64").reshape(-1) + float(b_trained[0]))))
    trained = log_loss(y_val, p_trained)
    fitted = _fit_logistic(f_train, _labels(y_train), f_val, y_val, class_weight)
    kept = fitted.val_log_loss < trained
    if kept:
        _set_output_layer(model, fitted)
    return Refit(kept=kept, c=fitted.c, val_log_loss_trained=trained, val_log_loss_refit=fitted.val_log_loss,
                 seconds=time.perf_counter() - start)

