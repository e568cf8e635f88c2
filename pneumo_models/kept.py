"""A trained network kept on disk: a complete trial's best-epoch weights, so that the export
averages the very networks the search scored instead of training them again.

Saved as architecture and weights only (``ensemble.uncompiled_copy``: loadable under any backend),
atomically (a reader finds the whole file or none), loaded in Keras' safe mode.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import keras

from .ensemble import uncompiled_copy


def save_network(model: keras.Model, path: str | os.PathLike) -> Path:
    """Write ``model`` to ``path`` (a ``.keras`` file), replacing any file there in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".keras", dir=path.parent)
    os.close(fd)
    try:
        uncompiled_copy(model).save(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_network(path: str | os.PathLike) -> keras.Model | None:
    """The network saved at ``path``; None when there is none or it does not load (then train it again)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception:  # noqa: BLE001 - a damaged or foreign file: the caller retrains instead
        return None
