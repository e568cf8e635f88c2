"""Mixup (Zhang et al. 2018): each training image blended with another one of its batch, labels alike.

A network trained on blends has to score in between two films in between too: it learns smoother,
less over-confident scores, which hold up better when new patients' films differ from the training
ones. Applied per batch by ``pneumo_models.batches.TrainingBatches``; the network's own augmentation
still runs on the blended images.
"""
from __future__ import annotations

import numpy as np


def mixup(x: np.ndarray, y: np.ndarray, weights: np.ndarray | None, *, alpha: float, rng: np.random.Generator):
    """One batch blended: image i with a partner j of the batch, ``lam * x_i + (1 - lam) * x_j`` with
    ``lam ~ Beta(alpha, alpha)`` per image, folded to >= 0.5 so each image keeps most of itself; labels
    and per-image ``weights`` (class and debias weights; None: none) are blended the same way.
    Returns float32 (images, labels, weights or None)."""
    if alpha <= 0:
        raise ValueError(f"mixup alpha must be > 0, got {alpha}")
    partner = rng.permutation(len(y))
    lam = rng.beta(alpha, alpha, len(y)).astype("float32")
    lam = np.maximum(lam, 1.0 - lam)
    shape = (-1,) + (1,) * (x.ndim - 1)
    blended = lam.reshape(shape) * x.astype("float32") + (1 - lam.reshape(shape)) * x[partner].astype("float32")
    labels = (lam * y + (1 - lam) * y[partner]).astype("float32")
    if weights is None:
        return blended, labels, None
    return blended, labels, (lam * weights + (1 - lam) * weights[partner]).astype("float32")
