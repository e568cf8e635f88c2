"""Data, model building, training, metrics and export/load for pneumonia CNNs.

    from pneumo_models import load_model
    m = load_model("runs/default/best_model")
    m.predict_files(["xray.jpeg"])
"""
from __future__ import annotations

__all__ = ["load_model", "build_model", "ExportedModel", "ModelFolderError"]


def __getattr__(name):  # keep `import pneumo_models` light: Keras loads only when needed
    if name in ("load_model", "ExportedModel"):
        from . import loading
        return getattr(loading, name)
    if name == "build_model":
        from .model import build_model
        return build_model
    if name == "ModelFolderError":
        from .card import ModelFolderError
        return ModelFolderError
    raise AttributeError(name)
