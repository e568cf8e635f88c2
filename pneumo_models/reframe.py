"""Healthy films re-framed tight: a class-conditional crop against the framing shortcut.

In Kermany's training set the pneumonia films are mostly framed tight on the chest and the healthy
ones wide (shoulders, neck, abdomen), so framing alone predicts the class (pneumo_models.layout), and
healthy new patients filmed tight score as pneumonia. Cropping every film the same way keeps that
correlation (the pneumonia films only get tighter, and lose lung edges where consolidation shows);
cropping only healthy films shows the network healthy chests framed tight, labelled healthy, so a
tight frame stops meaning pneumonia and the lungs have to tell. The pneumonia films keep their
frame; as many of them are resampled through the same sizes (shrunk to the crop's size and enlarged
back, no crop), so the softness an enlarged crop has is no clue to the class either.
Applied per batch by ``pneumo_models.batches.TrainingBatches`` (it needs the labels, which the
network's own augmentation layers never see); validation, test and serving films are never touched.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

SHARE = 0.5  # share of a batch's films picked: healthy ones re-framed, pneumonia ones resampled


def reframe_healthy(x: np.ndarray, y: np.ndarray, *, max_crop: float, rng: np.random.Generator,
                    share: float = SHARE) -> np.ndarray:
    """A copy of batch ``x`` (N, S, S[, 1]) where about a ``share`` of the films (default half) are
    picked and given a size h x w, each side 1 - U(0, ``max_crop``) of S. A picked healthy film
    (``y`` == 0) is cropped to that size around a point near the centre (jittered by a quarter of the
    margin) and enlarged back to S x S; a picked pneumonia film is shrunk to that size and enlarged
    back (bilinear both)."""
    if not 0 < max_crop < 1:
        raise ValueError(f"reframe must be in (0, 1), got {max_crop}")
    out = np.array(x, copy=True)
    healthy = np.asarray(y) < 0.5
    for i in np.flatnonzero(rng.random(len(y)) < share):
        side = x.shape[1]
        h, w = (max(1, int(round(side * (1 - rng.uniform(0, max_crop))))) for _ in range(2))
        plane = x[i].reshape(side, side)
        if healthy[i]:
            top = (side - h) // 2 + int(rng.integers(-((side - h) // 4), (side - h) // 4 + 1))
            left = (side - w) // 2 + int(rng.integers(-((side - w) // 4), (side - w) // 4 + 1))
            plane = plane[top:top + h, left:left + w]
        else:
            plane = _resize(plane, h, w)
        out[i] = _resize(plane, side, side).reshape(x[i].shape)
    return out


def _resize(plane: np.ndarray, h: int, w: int) -> np.ndarray:
    if plane.dtype == np.uint8:
        return np.asarray(Image.fromarray(plane).resize((w, h), Image.BILINEAR))
    # float films: PIL's 32-bit float mode
    return np.asarray(Image.fromarray(plane.astype("float32"), mode="F").resize((w, h), Image.BILINEAR)).astype(plane.dtype)
