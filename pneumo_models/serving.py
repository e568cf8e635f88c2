"""Serving formats of an exported model: ONNX (ONNX Runtime) and TensorFlow SavedModel (TF Serving).

    export_serving("runs/demo/best_model", ["onnx", "tf_saved_model"])

writes, next to ``model.keras``, ``model.onnx`` and/or ``saved_model/`` through Keras' own
``model.export(path, format=...)``, and ``serving.json``: the formats written, their input and
output names and shapes, the threshold and how to feed them. The card (``model_card.json``) is
sealed and left as it is; ``serving.json`` names the model file's checksum it was made from.

Input: the raw grey image, cropped as the card's ``preprocessing.framing`` says and resized to the card's
input size (bilinear, as ``pneumo_models.data.decode_image`` does), as float32 0-255 of shape (batch, S, S, 1); the
rescaling to 0-1 (and everything else) happens inside the graph. Output: the pneumonia
probability, shape (batch, 1); PNEUMONIA when it is >= the threshold.

What is exported is the inference graph of the same layers and weights: layers that act only in
training (augmentation, dropout) become ``Identity``, as they are at inference, because the
converters cannot express their random ops. An ensemble member trained on smaller images sits
behind an anti-aliased ``Resizing``; TensorFlow computes it with ``ScaleAndTranslate``, which ONNX
has no operator for. It is linear and separable, so it is replaced by its own matrix, read off the
layer (``A @ x @ A.T``, two MatMuls): checked against the layer on random images when built.
Every file written is run once (ONNX Runtime, TensorFlow) on seeded random images and must give
the ``.keras`` model's probabilities to 1e-4 (its difference is recorded), or nothing is written.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import keras
import numpy as np

from .atomic import write_json
from .card import ModelFolderError, file_sha256, read_card
from .export import FRAMING_TEXT

SERVING_FILE = "serving.json"
ONNX_FILE = "model.onnx"
SAVED_MODEL_DIR = "saved_model"
FORMATS = ("onnx", "tf_saved_model")
INPUT_NAME = "xray"
SERVING_FORMAT_VERSION = 1
TOLERANCE = 1e-4          # largest |exported - keras| probability accepted at export
CHECK_IMAGES = 8


class ServingError(ValueError):
    """A serving export that cannot be done; the message is one line."""


# ----------------------------------------------------------------------------- the inference graph
_TRAINING_ONLY = tuple(getattr(keras.layers, n) for n in (
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
    "GaussianDropout", "AlphaDropout") if hasattr(keras.layers, n))


def input_values(card: dict, size: int) -> str:
    """What a serving client feeds the graph: the crop (the card's framing) is not in it, the resize neither."""
    block = card.get("preprocessing", {})
    framing = block.get("framing", "full")
    means = block.get("framing_means") or FRAMING_TEXT.get(framing, "see the model card")  # the card says it
    crop = "no crop" if framing == "full" else f"framing {framing!r}: {means}"
    return (f"the raw grey image (DICOM: after its window; MONOCHROME1 inverted), {crop}, resized to {size}x{size}, "
            "bilinear, squashed, 0-255; the model rescales inside")


def _training_only(layer) -> bool:
    """Layers that are the identity at inference: dropout and noise, and Keras' random image
    augmentation (``RandomFlip``, ``RandomRotation``, ... ``RandomGaussianBlur``)."""
    if isinstance(layer, _TRAINING_ONLY):
        return True
    return type(layer).__name__.startswith("Random") and type(layer).__module__.startswith("keras.")


class SeparableResize(keras.layers.Layer):
    """``y = A @ x @ A.T`` per channel: a square linear, separable resize given by its matrix."""

    def __init__(self, matrix, **kwargs):
        super().__init__(**kwargs)
        self.matrix = np.asarray(matrix, dtype="float32")

    def call(self, x):
        a = keras.ops.convert_to_tensor(self.matrix)
        y = keras.ops.transpose(x, (0, 3, 1, 2))                  # (b, c, S, S)
        y = keras.ops.matmul(keras.ops.matmul(a, y), keras.ops.transpose(a))
        return keras.ops.transpose(y, (0, 2, 3, 1))               # (b, s, s, c)

    def compute_output_shape(self, input_shape):
        side = self.matrix.shape[0]
        return (input_shape[0], side, side, input_shape[3])


def _resize_matrix(layer, size: int) -> np.ndarray:
    """The (s, S) matrix of a square ``Resizing`` from S to s, read off the layer itself."""
    rows = np.zeros((size + 1, size, size, 1), dtype="float32")
    for k in range(size):
        rows[k, k, :, 0] = 1.0                                    # row k ones: A[:, k] * (A @ 1)
    rows[size] = 1.0                                              # all ones: (A @ 1) (A @ 1)^T
    out = keras.ops.convert_to_numpy(layer(rows))[..., 0].astype("float64")
    col = out[size].mean(axis=0)                                  # (A @ 1)_j
    matrix = (out[:size] / col[None, None, :]).mean(axis=2).T      # (s, S)
    x = np.random.default_rng(0).uniform(0, 255, (4, size, size, 1)).astype("float32")
    expected = keras.ops.convert_to_numpy(layer(x))
    got = keras.ops.convert_to_numpy(SeparableResize(matrix)(x))
    if got.shape != expected.shape or np.max(np.abs(got - expected)) > 1e-3:
        raise ServingError(f"layer {layer.name} is not a separable linear resize: it cannot be exported")
    return matrix


def inference_network(model: keras.Model) -> keras.Model:
    """The same layers and weights as an inference-only graph that the converters can express."""
    def clone(layer):
        if _training_only(layer):
            return keras.layers.Identity(name=layer.name)
        if isinstance(layer, keras.layers.Resizing) and getattr(layer, "antialias", False):
            size = int(layer.input.shape[1])
            if layer.input.shape[1] != layer.input.shape[2] or layer.height != layer.width:
                raise ServingError(f"layer {layer.name} resizes to a non-square image: cannot be exported")
            return SeparableResize(_resize_matrix(layer, size), name=layer.name)
        return layer  # shared: the trained weights as they are

    net = keras.models.clone_model(model, clone_function=clone, recursive=True)
    # inference, explicitly: traced for export, nested members would otherwise run in training mode
    # behind a layer without a `training` argument (batch statistics in batch normalisation)
    size = int(model.inputs[0].shape[1])
    inputs = keras.Input((size, size, 1), name=INPUT_NAME)
    return keras.Model(inputs, net(inputs, training=False), name=f"{model.name}_serving")


# ----------------------------------------------------------------------------- export
def _check_images(size: int) -> np.ndarray:
    return np.random.default_rng(20240611).integers(0, 256, (CHECK_IMAGES, size, size, 1)).astype("float32")


def _run_onnx(path: Path, x: np.ndarray) -> tuple[np.ndarray, dict]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inp, out = session.get_inputs()[0], session.get_outputs()[0]
    p = session.run([out.name], {inp.name: x})[0]
    import onnx

    opset = max((o.version for o in onnx.load(str(path), load_external_data=False).opset_import
                 if o.domain in ("", "ai.onnx")), default=None)
    dims = lambda shape: [d if isinstance(d, int) else None for d in shape]  # noqa: E731 - named free dims: None
    return np.asarray(p).reshape(-1), {"input_name": inp.name, "input_shape": dims(inp.shape),
                                       "output_name": out.name, "output_shape": dims(out.shape),
                                       "opset": opset, "runtime": "onnxruntime"}


def _run_saved_model(path: Path, x: np.ndarray) -> tuple[np.ndarray, dict]:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    signature = loaded.signatures["serving_default"]
    (in_name, in_spec), = signature.structured_input_signature[1].items()
    (out_name, out_spec), = signature.structured_outputs.items()
    p = signature(**{in_name: tf.constant(x)})[out_name].numpy()
    shape = lambda spec: [None if d is None else int(d) for d in spec.shape]  # noqa: E731
    return p.reshape(-1), {"signature": "serving_default", "input_name": in_name, "input_shape": shape(in_spec),
                           "output_name": out_name, "output_shape": shape(out_spec),
                           "runtime": "TensorFlow / TensorFlow Serving"}


def _quiet_converters() -> None:
    for name in ("tf2onnx", "tensorflow", "absl"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _tree_sha256(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f.relative_to(path).as_posix().encode() + b"\0" + file_sha256(f).encode() + b"\0")
    return h.hexdigest()


def _write_format(net: keras.Model, fmt: str, folder: Path, size: int, x: np.ndarray, expected: np.ndarray) -> dict:
    spec = [keras.InputSpec(shape=(None, size, size, 1), dtype="float32", name=INPUT_NAME)]
    staging = Path(tempfile.mkdtemp(prefix=f".{fmt}.staging-", dir=folder))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # Keras' tf2onnx shim probes np.object
            return _write_staged(net, fmt, folder, staging, spec, x, expected)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_staged(net, fmt: str, folder: Path, staging: Path, spec, x: np.ndarray, expected: np.ndarray) -> dict:
    if fmt == "onnx":
        target, final = staging / ONNX_FILE, folder / ONNX_FILE
        net.export(str(target), format="onnx", input_signature=spec, verbose=False)
        p, info = _run_onnx(target, x)
    else:
        target, final = staging / SAVED_MODEL_DIR, folder / SAVED_MODEL_DIR
        net.export(str(target), format="tf_saved_model", input_signature=spec, verbose=False)
        p, info = _run_saved_model(target, x)
    diff = float(np.max(np.abs(p - expected)))
    if not np.isfinite(diff) or diff > TOLERANCE:
        raise ServingError(f"the {fmt} export gives probabilities up to {diff:.2g} away from model.keras "
                           f"(more than {TOLERANCE:g}): not written")
    if final.is_dir():
        shutil.rmtree(final)
    os.replace(target, final)
    digest = _tree_sha256(final) if final.is_dir() else file_sha256(final)
    return {"path": final.name, "sha256": digest, **info, "max_abs_diff_vs_keras": diff,
            "checked_on": f"{len(x)} seeded random images"}


def read_serving(folder: str | os.PathLike) -> dict | None:
    """``serving.json`` of a model folder, or None when there is none."""
    import json

    path = Path(folder) / SERVING_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def export_serving(folder: str | os.PathLike, formats, *, keras_model: keras.Model | None = None,
                   on_step: Callable[[str], None] | None = None) -> dict:
    """Write the serving ``formats`` of the exported model in ``folder`` and update ``serving.json``.

    Returns the ``serving.json`` record. Formats written before for the same model file are kept.
    ``on_step`` is called with each step's name as it starts (loading, then each format: tens of
    seconds each on a CPU).
    """
    step = on_step or (lambda name: None)
    folder = Path(folder)
    formats = list(dict.fromkeys(formats))
    unknown = [f for f in formats if f not in FORMATS]
    if not formats or unknown:
        raise ServingError(f"unknown serving format {', '.join(unknown) or '(none)'}; choose {' or '.join(FORMATS)}")
    if keras.backend.backend() != "tensorflow":
        raise ServingError(f"serving export runs under the TensorFlow backend (KERAS_BACKEND is "
                           f"{keras.backend.backend()}); unset KERAS_BACKEND: the model loads under any backend")
    card = read_card(folder)
    size = int(card["input_size"])
    step("load the model, predict the check images")
    if keras_model is None:
        try:
            keras_model = keras.saving.load_model(folder / card["model_file"], safe_mode=True, compile=False)
        except Exception as exc:  # noqa: BLE001 - any failure: not a loadable model
            raise ModelFolderError(f"{folder / card['model_file']} is not a loadable Keras model "
                                   f"({exc.__class__.__name__})") from None
    _quiet_converters()
    net = inference_network(keras_model)
    x = _check_images(size)
    from .training import predict_proba

    expected = predict_proba(keras_model, x[..., 0])
    previous = read_serving(folder) or {}
    kept = previous.get("formats", {}) if previous.get("model_sha256") == card["model_sha256"] else {}
    written = {}
    for fmt in formats:
        step(f"{fmt}: convert, check against the Keras model")
        written[fmt] = _write_format(net, fmt, folder, size, x, expected)
    record = {
        "format_version": SERVING_FORMAT_VERSION,
        "model_file": card["model_file"],
        "model_sha256": card["model_sha256"],
        "card_sha256": card["card_sha256"],
        "threshold": float(card["threshold"]),
        "input_size": size,
        "class_names": list(card["class_names"]),
        "positive_class": card.get("positive_class", list(card["class_names"])[1]),
        "input": {"name": INPUT_NAME, "shape": [None, size, size, 1], "dtype": "float32",
                  "values": input_values(card, size)},
        "output": {"shape": [None, 1], "dtype": "float32",
                   "values": f"pneumonia probability; {list(card['class_names'])[1]} when >= threshold"},
        "formats": {**kept, **written},
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_json(folder / SERVING_FILE, record)
    return record


def serving_files(folder: str | os.PathLike) -> list[Path]:
    """The serving files of a model folder that exist: ``serving.json`` and the formats it names."""
    folder = Path(folder)
    record = read_serving(folder)
    if record is None:
        return []
    files = [folder / SERVING_FILE]
    files += [folder / f["path"] for f in record.get("formats", {}).values() if (folder / f["path"]).exists()]
    return files
