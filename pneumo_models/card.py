"""The model card: what a model is, how it was chosen, and how to feed it, as checked JSON."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

CARD_FILE = "model_card.json"
MODEL_FILE = "model.keras"
PREDICTIONS_FILE = "validation_predictions.csv"
TEST_PREDICTIONS_FILE = "test_predictions.csv"
FORMAT_VERSION = 1
REQUIRED = ("format_version", "model_file", "model_sha256", "threshold", "min_recall", "input_size",
            "class_names", "preprocessing", "metrics", "best_trial", "data", "versions", "created_at",
            "card_sha256")


class ModelFolderError(ValueError):
    """A model folder that cannot be trusted or read; the message is one line."""


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _body_digest(card: dict) -> str:
    body = {k: v for k, v in card.items() if k != "card_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def seal(card: dict) -> dict:
    """Return the card with its own checksum, so any later edit is detected on load."""
    card = dict(card)
    card.pop("card_sha256", None)
    card["card_sha256"] = _body_digest(card)
    return card


def read_card(folder: str | Path) -> dict:
    """Read and verify a model folder's card (and the model file's checksum)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFolderError(f"model folder does not exist: {folder}")
    path = folder / CARD_FILE
    if not path.is_file():
        raise ModelFolderError(f"{folder} has no {CARD_FILE}: not an exported pneumo-search model")
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFolderError(f"{path} is not valid JSON ({exc.__class__.__name__})") from None
    if not isinstance(card, dict):
        raise ModelFolderError(f"{path} is not a model card (expected a JSON object)")
    missing = [k for k in REQUIRED if k not in card]
    if missing:
        raise ModelFolderError(f"{path} lacks {', '.join(missing)}: the card is incomplete or was edited")
    if card["format_version"] != FORMAT_VERSION:
        raise ModelFolderError(f"{folder} is a model folder of format version {card['format_version']!r}; this "
                               f"pneumo-search reads version {FORMAT_VERSION}: re-export it with this version")
    if card["card_sha256"] != _body_digest(card):
        raise ModelFolderError(f"{path} was modified after export (checksum mismatch); re-export the model")
    thr = card["threshold"]
    if not isinstance(thr, (int, float)) or not 0.0 <= thr <= 1.0:
        raise ModelFolderError(f"{path} has threshold {thr!r}; it must be a number in [0, 1]")
    model_path = folder / card["model_file"]
    if not model_path.is_file():
        raise ModelFolderError(f"{folder} lacks {card['model_file']} named by its card")
    if file_sha256(model_path) != card["model_sha256"]:
        raise ModelFolderError(f"{model_path} does not match the checksum in its card (replaced or corrupted)")
    return card
