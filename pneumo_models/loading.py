"""Load an exported model folder with one call and predict on arrays or image files."""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import keras
import numpy as np

from .card import ModelFolderError, read_card
from .training import predict_proba as _predict


@dataclass
class FilePrediction:
    path: str
    probability: float | None
    label: str | None
    error: str | None = None


@dataclass
class ExportedModel:
    keras_model: keras.Model
    card: dict
    folder: Path

    @property
    def threshold(self) -> float:
        return float(self.card["threshold"])

    @property
    def input_size(self) -> int:
        return int(self.card["input_size"])

    @property
    def framing(self) -> str:
        """How images are cropped before the resize (``"full"``, ``"lungs"`` or ``"centre"``); cards before
        framing: full."""
        return str(self.card["preprocessing"].get("framing", "full"))

    @property
    def class_names(self) -> list[str]:
        return list(self.card["class_names"])

    def preprocess(self, images) -> np.ndarray:
        """Films of any size, uint8 (N,H,W) or (N,H,W,C) -> (N,S,S) uint8, as in training (same framing).
        Give whole films: with ``framing == "lungs"`` an array that is already the model's input would
        be cropped twice (run ``keras_model`` on those, as ``pneumo_models.training.predict_proba`` does)."""
        from .data import resize_array

        if isinstance(images, np.ndarray) and images.ndim in (3, 4):
            batch = images
        else:
            batch = list(images)
        out = np.empty((len(batch), self.input_size, self.input_size), dtype=np.uint8)
        for i, image in enumerate(batch):
            out[i] = resize_array(np.asarray(image), self.input_size, self.framing)
        return out

    def predict_proba(self, images) -> np.ndarray:
        """Pneumonia probability for each image."""
        return _predict(self.keras_model, self.preprocess(images))

    def predict_files(self, paths: Sequence[str | os.PathLike], *, progress: bool = False,
                      chunk: int = 256) -> list[FilePrediction]:
        """Probability and label (at the exported threshold) per file; unreadable files get an error.
        Files are read and predicted ``chunk`` at a time (a hospital's folder need not fit in memory
        decoded); ``progress``: a bar over the files."""
        from tqdm.auto import tqdm

        results: list[FilePrediction] = []
        with tqdm(total=len(paths), desc="predict", unit="file", disable=not progress) as bar:
            for start in range(0, len(paths), chunk):
                part = paths[start:start + chunk]
                results += self._predict_chunk(part)
                bar.update(len(part))
        return results

    def _predict_chunk(self, paths: Sequence[str | os.PathLike]) -> list[FilePrediction]:
        from .data import DataError, decode_image

        results: list[FilePrediction | None] = [None] * len(paths)
        ok_idx, ok_images = [], []
        for i, path in enumerate(paths):
            try:
                ok_images.append(decode_image(path, self.input_size, self.framing))
                ok_idx.append(i)
            except (OSError, DataError, ValueError) as exc:
                results[i] = FilePrediction(str(path), None, None, f"{exc}".splitlines()[0])
        if ok_images:
            probs = _predict(self.keras_model, np.stack(ok_images))
            for i, p in zip(ok_idx, probs):
                label = self.class_names[1] if p >= self.threshold else self.class_names[0]
                results[i] = FilePrediction(str(paths[i]), float(p), label)
        return results  # type: ignore[return-value]


def load_model(folder: str | os.PathLike) -> ExportedModel:
    """Load ``<out>/best_model`` (card verified, Keras safe mode on)."""
    folder = Path(folder)
    card = read_card(folder)
    path = folder / card["model_file"]
    try:
        model = keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:  # noqa: BLE001 - any failure here means "not a loadable model"
        raise ModelFolderError(f"{path} is not a loadable Keras model ({exc.__class__.__name__})") from None
    _warn_if_framed_otherwise(card, folder)
    return ExportedModel(model, card, folder)


def _warn_if_framed_otherwise(card: dict, folder: Path) -> None:
    """A model trained on lung crops of another box version still loads (the crops differ by a few
    pixels), but its figures were measured on crops this installation would not make."""
    from .data.framing import FRAMING_VERSION, framing_version

    made_with = card["preprocessing"].get("framing_version")
    if framing_version(card["preprocessing"].get("framing", "full")) is not None and made_with not in (None, FRAMING_VERSION):
        warnings.warn(f"{folder} was trained on lung crops of box version {made_with}; this pneumo-search crops "
                      f"with version {FRAMING_VERSION}, so its predictions may differ a little from the card's "
                      f"figures: re-export it, or predict with the version that made it", UserWarning, stacklevel=3)
