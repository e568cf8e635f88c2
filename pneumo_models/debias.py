"""Training weights that take away what a film's coarse layout says about its class.

In Kermany's training set the class can be read off the layout of a film alone, before any lung
detail: a linear model on 4x4 block means of the image (16 numbers: where the bright body and the
dark air are, how tight the film is framed) separates pneumonia from healthy with validation AUC
0.94, and it calls healthy children of the test patients pneumonia far more often than healthy
validation children (README, "Holding up on new patients"). A network learns that shortcut first.

``layout_weights`` fits that layout-only model out of fold (scikit-learn) and weights each training
image by the inverse of the probability it gives the image's true class, normalised within each
class: films whose layout is typical of their class count less, films framed like the other class
(a healthy chest filmed tight) count more, so layout alone no longer pays (importance weighting
against a known bias, as in Nam et al. 2020 / Clark et al. 2019's bias-only models).
"""
from __future__ import annotations

import numpy as np

DEBIAS_MODES = ("none", "layout")
LAYOUT_BLOCKS = 4   # a film summarised by 4 x 4 block means
MAX_WEIGHT = 10.0   # no image counts more than 10 times the average of its class


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
