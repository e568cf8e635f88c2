"""Patient-grouped, stratified validation split (sklearn StratifiedGroupKFold)."""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

from .errors import DataError


def n_splits_for(val_fraction: float) -> int:
    """round(1 / val_fraction) folds; DataError unless that is at least 2."""
    try:
        vf = float(val_fraction)
    except (TypeError, ValueError):
        raise DataError(f"val_fraction must be a number in (0, 0.5], got {val_fraction!r}") from None
    if not 0.0 < vf < 1.0 or round(1.0 / vf) < 2:
        raise DataError(f"val_fraction must be in (0, 0.5] so that at least 2 folds exist, got {val_fraction!r}")
    return int(round(1.0 / vf))


def grouped_folds(labels, groups, n_splits: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """All folds of StratifiedGroupKFold(n_splits, shuffle, seed): (train_idx, held_out_idx) pairs."""
    from sklearn.model_selection import StratifiedGroupKFold  # slow import: only when splitting

    y = np.asarray(labels)
    g = np.asarray(list(groups))
    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*least populated class.*", category=UserWarning)
        return [(np.sort(a), np.sort(b)) for a, b in cv.split(np.zeros(len(y)), y, g)]


def grouped_split(
    labels: Sequence[int] | np.ndarray, groups: Sequence[str], val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, val_idx): one fold of StratifiedGroupKFold(round(1/val_fraction), shuffle, seed).

    No group (patient) lands on both sides.  The first fold holding both classes is
    used (the first fold when none does), so validation AUC stays defined.
    """
    n_splits = n_splits_for(val_fraction)
    y = np.asarray(labels)
    g = np.asarray(list(groups))
    if len(y) != len(g):
        raise ValueError("labels and groups differ in length")
    n_groups = len(np.unique(g)) if len(g) else 0
    if n_groups < n_splits:
        raise DataError(
            f"only {n_groups} patient(s) in the training pool; a patient-grouped {100 / n_splits:.0f}% "
            f"validation split needs at least {n_splits}"
        )
    folds = grouped_folds(y, g, n_splits, seed)
    classes = np.unique(y)
    for train_idx, val_idx in folds:
        if len(np.unique(y[val_idx])) == len(classes):
            return np.sort(train_idx), np.sort(val_idx)
    train_idx, val_idx = folds[0]
    return np.sort(train_idx), np.sort(val_idx)
