"""Mixup (Zhang et al. 2018): each training image blended with another one of its batch, labels alike.

A network trained on blends has to score in between two films in between too: it learns smoother,
less over-confident scores, which hold up better when new patients' films differ from the training
ones. Fed to ``model.fit`` as a Keras ``PyDataset`` (any backend); the network's own augmentation
still runs on the blended images.
"""
from __future__ import annotations

import math

import keras
import numpy as np


class MixupBatches(keras.utils.PyDataset):
    """Shuffled batches of (blended images, blended labels[, blended class weights]).

    Each image i is blended with a partner j from its batch: ``lam * x_i + (1 - lam) * x_j`` with
    ``lam ~ Beta(alpha, alpha)`` per image, folded to >= 0.5 so the image keeps most of itself.
    ``sample_weight`` (one per image: class and debias weights) is blended the same way.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, *, batch_size: int, alpha: float,
                 sample_weight: np.ndarray | None = None, seed: int = 0):
        super().__init__()
        if alpha <= 0:
            raise ValueError(f"mixup alpha must be > 0, got {alpha}")
        self.x, self.y = x, np.asarray(y, dtype="float32")
        self.batch_size, self.alpha = int(batch_size), float(alpha)
        self.weights = None if sample_weight is None else np.asarray(sample_weight, dtype="float32")
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(self.y))

    def __len__(self) -> int:
        return math.ceil(len(self.y) / self.batch_size)

    def on_epoch_end(self) -> None:
        self.order = self.rng.permutation(len(self.y))

    def __getitem__(self, index: int):
        idx = np.sort(self.order[index * self.batch_size:(index + 1) * self.batch_size])
        partner = idx[self.rng.permutation(len(idx))]
        lam = self.rng.beta(self.alpha, self.alpha, len(idx)).astype("float32")
        lam = np.maximum(lam, 1.0 - lam)
        shape = (-1,) + (1,) * (self.x.ndim - 1)
        x = lam.reshape(shape) * self.x[idx].astype("float32") + (1 - lam.reshape(shape)) * self.x[partner]
        y = lam * self.y[idx] + (1 - lam) * self.y[partner]
        if self.weights is None:
            return x, y
        return x, y, (lam * self.weights[idx] + (1 - lam) * self.weights[partner]).astype("float32")
