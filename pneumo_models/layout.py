"""What a film's coarse layout alone says about its class: a check that shows it, and training
weights that take it away.

In Kermany's training set the class can be read off the layout of a film alone, before any lung
detail: a linear model on 4x4 block means of the image (16 numbers: where the bright body and the
dark air are, how tight the film is framed) separates pneumonia from healthy with validation AUC
0.94, and it calls healthy children of the test patients pneumonia far more often than healthy
validation children (README, "Holding up on new patients"). A network learns that shortcut first.

``layout_check`` fits that layout-only model on the training split and scores it on validation: a
run prints it (and warns when it is high), the card and the report keep it, so a user sees the
shortcut before any test split exists. On films cropped to their lungs (``framing="lungs"``) there is
no framing left to read: the block means are coarse lung density, which held up on the test
patients (benchmarks/README.md "Sixth round"), so the check is reported without the warning.
``layout_weights`` fits the same model out of fold (scikit-learn) and weights each training
image by the inverse of the probability it gives the image's true class, normalised within each
class: films whose layout is typical of their class count less, films framed like the other class
(a healthy chest filmed tight) count more, so layout alone no longer pays (importance weighting
against a known bias, as in Nam et al. 2020 / Clark et al. 2019's bias-only models).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

DEBIAS_MODES = ("none", "layout")
LAYOUT_BLOCKS = 4   # a film summarised by 4 x 4 block means
MAX_WEIGHT = 10.0   # no image counts more than 10 times the average of its class
WARN_AUC = 0.8      # a layout-only validation AUC from here up gets a warning


class LayoutCheck(NamedTuple):
    """How well a model that sees only each film's ``blocks`` x ``blocks`` block means separates the
    classes on validation (trained on the training split)."""

    blocks: int
    val_auc: float
    healthy_median: float      # its median pneumonia probability for healthy validation films
    pneumonia_median: float    # ... and for pneumonia validation films
    framing: str = "full"      # the films it saw: "lungs" when cropped to their lung fields

    def to_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self._asdict().items()}


def layout_features(x: np.ndarray, blocks: int = LAYOUT_BLOCKS) -> np.ndarray:
    """(N, blocks * blocks) block means in [0, 1] of (N, S, S[, 1]) images (S cut to a multiple of blocks)."""
    x = np.asarray(x)
    n, side = len(x), x.shape[1]
    cell = side // blocks
    x = x.reshape(n, side, side)[:, :cell * blocks, :cell * blocks].astype("float32")
    return x.reshape(n, blocks, cell, blocks, cell).mean(axis=(2, 4)).reshape(n, -1) / 255.0


def layout_weights(x: np.ndarray, y: np.ndarray, *, blocks: int = LAYOUT_BLOCKS, seed: int = 0) -> np.ndarray:
    """Per-image training weights (mean 1 within each class) against the layout shortcut."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    y = np.asarray(y).astype(int)
    counts = np.bincount(y, minlength=2)
    if counts.min() < 5:  # too few of a class to fit anything: no weighting
        return np.ones(len(y), dtype="float32")
    folds = StratifiedKFold(n_splits=min(5, int(counts.min())), shuffle=True, random_state=seed)
    prob = cross_val_predict(LogisticRegression(max_iter=2000), layout_features(x, blocks), y, cv=folds,
                             method="predict_proba")
    p_true = np.clip(prob[np.arange(len(y)), y], 1e-3, 1.0)
    weights = 1.0 / p_true
    for c in (0, 1):
        weights[y == c] /= weights[y == c].mean()
    weights = np.minimum(weights, MAX_WEIGHT)
    for c in (0, 1):
        weights[y == c] /= weights[y == c].mean()
    return weights.astype("float32")


def layout_model(x_train, y_train, *, blocks: int = LAYOUT_BLOCKS):
    """The layout-only model: ``predict(x)`` gives each image's pneumonia probability from its block means."""
    from sklearn.linear_model import LogisticRegression

    fitted = LogisticRegression(max_iter=2000).fit(layout_features(x_train, blocks), np.asarray(y_train).astype(int))
    return lambda x: fitted.predict_proba(layout_features(x, blocks))[:, 1]


def layout_check(x_train, y_train, x_val, y_val, *, blocks: int = LAYOUT_BLOCKS,
                 framing: str = "full") -> LayoutCheck | None:
    """The layout-only model's validation figures (None when a split lacks a class) on films of
    ``framing``."""
    from .metrics import auc

    y_train, y_val = np.asarray(y_train).astype(int), np.asarray(y_val).astype(int)
    if len(set(y_train.tolist())) < 2 or len(set(y_val.tolist())) < 2:
        return None
    p = layout_model(x_train, y_train, blocks=blocks)(x_val)
    return LayoutCheck(blocks, float(auc(y_val, p)), float(np.median(p[y_val == 0])), float(np.median(p[y_val == 1])),
                       framing)


def describe(check: LayoutCheck) -> str:
    if check.framing == "lungs":
        return (f"layout check (films cropped to their lungs): a model that sees only each lung box's "
                f"{check.blocks} x {check.blocks} block means (coarse density; no framing left, no lung detail) "
                f"separates the classes on validation with AUC {check.val_auc:.3f}")
    return (f"layout check: a model that sees only each film's {check.blocks} x {check.blocks} block means "
            f"(framing, where body and air are; no lung detail) separates the classes on validation with "
            f"AUC {check.val_auc:.3f}")


def layout_warning(check: LayoutCheck | None) -> str | None:
    """One line when the framing alone predicts the class well, else None (never on films cropped to
    their lungs: what their block means see is lung density, not framing)."""
    if check is None or check.val_auc < WARN_AUC or check.framing == "lungs":
        return None
    return (f"the films' coarse layout alone predicts the class on validation (AUC {check.val_auc:.2f}): a "
            "network can score high by reading framing instead of lungs, and validation from the same "
            "source cannot tell; only a test split of other patients shows whether the model holds up")
