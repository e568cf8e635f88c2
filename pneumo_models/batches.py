"""Training batches made one at a time on the host, for what needs the labels: healthy films
re-framed (pneumo_models.reframe) and mixup (pneumo_models.mixup). Fed to ``model.fit`` as a Keras
``PyDataset`` (any backend) in place of the image array; without either, ``fit`` passes the array."""
from __future__ import annotations

import math

import keras
import numpy as np

from .mixup import mixup
from .reframe import reframe_healthy


class TrainingBatches(keras.utils.PyDataset):
    """Shuffled batches of (images, labels[, per-image weights]), each re-framed and then blended when
    asked. ``reframe``: largest share of a side cropped off healthy films (0: off); ``mixup``: Beta alpha
    (0: off; images come out float32 then, uint8 otherwise)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, *, batch_size: int, mixup: float = 0.0,
                 reframe: float = 0.0, sample_weight: np.ndarray | None = None, seed: int = 0):
        super().__init__()
        if mixup < 0 or not 0 <= reframe < 1:
            raise ValueError(f"mixup must be >= 0 and reframe in [0, 1); got {mixup}, {reframe}")
        self.x, self.y = x, np.asarray(y, dtype="float32")
        self.batch_size, self.mixup, self.reframe = int(batch_size), float(mixup), float(reframe)
        self.weights = None if sample_weight is None else np.asarray(sample_weight, dtype="float32")
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(self.y))

    def __len__(self) -> int:
        return math.ceil(len(self.y) / self.batch_size)

    def on_epoch_end(self) -> None:
        self.order = self.rng.permutation(len(self.y))

    def __getitem__(self, index: int):
        idx = np.sort(self.order[index * self.batch_size:(index + 1) * self.batch_size])
        x, y = self.x[idx], self.y[idx]
        w = None if self.weights is None else self.weights[idx]
        if self.reframe > 0:
            x = reframe_healthy(x, y, max_crop=self.reframe, rng=self.rng)
        if self.mixup > 0:
            x, y, w = mixup(x, y, w, alpha=self.mixup, rng=self.rng)
        return (x, y) if w is None else (x, y, w)
