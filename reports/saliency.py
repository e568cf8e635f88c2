"""Where the model looked: Grad-CAM heat maps, with an occlusion-sensitivity fallback.

Grad-CAM (Selvaraju et al., 2017) weights the feature maps of the last convolutional stage by
the gradient of the pneumonia output with respect to them, keeps the positive evidence and
upsamples it to the X-ray. The gradient is taken through whichever backend Keras 3 runs on
(TensorFlow: ``GradientTape``; PyTorch: autograd; JAX: ``jax.grad``); on an unknown backend, or
a model whose layers cannot be split, an occlusion map is used instead: grey out a patch, see
how much the pneumonia probability drops (forward passes only, works everywhere).

The gradient is taken of the sigmoid output, not its logit: the two differ by the positive
factor p(1-p) per image, which the per-image normalisation to [0, 1] removes.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import numpy as np

from ._imaging import resize_map

GRADCAM = "Grad-CAM"
OCCLUSION = "occlusion sensitivity"
_SKIP_LAYER_TYPES = ("InputLayer", "Dropout", "SpatialDropout2D", "GaussianNoise", "GaussianDropout")


class _SaliencyInfo(NamedTuple):
    maps: np.ndarray          # (N, S, S) float32 in [0, 1], one per image
    method: str               # GRADCAM or OCCLUSION
    layer: str                # feature layer used by Grad-CAM ("" for occlusion)
    note: str                 # why the fallback was used, if it was


def _as_model_input(images: np.ndarray) -> np.ndarray:
    x = np.asarray(images, dtype=np.float32)
    if x.ndim == 3:
        x = x[..., None]
    return x


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "detach"):                       # torch
        return x.detach().cpu().numpy()
    if hasattr(x, "numpy"):                        # tensorflow eager tensor
        return np.asarray(x.numpy())
    return np.asarray(x)                           # jax arrays and anything array-like


def find_feature_layer(model) -> Any:
    """The last layer whose output is a 4-D feature map (the last convolutional stage).

    Prefers the activation/convolution output over a following pooling layer, which keeps
    twice the spatial resolution for the same evidence.
    """
    candidates = []
    for layer in model.layers:
        if type(layer).__name__ in _SKIP_LAYER_TYPES:
            continue
        try:
            shape = layer.output.shape
        except (AttributeError, ValueError):
            continue
        if len(shape) == 4:
            candidates.append(layer)
    if not candidates:
        raise ValueError("the model has no 4-D feature map to explain")
    last = candidates[-1]
    if "Pooling" in type(last).__name__ and len(candidates) > 1:
        return candidates[-2]
    return last


def _grads_tensorflow(grad_model, x):
    import tensorflow as tf

    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        acts, preds = grad_model(x, training=False)
        tape.watch(acts)
        target = tf.reduce_sum(preds[:, 0])
    grads = tape.gradient(target, acts)
    return acts, grads


def _grads_torch(grad_model, x):
    import torch

    with torch.enable_grad():
        acts, preds = grad_model(torch.as_tensor(x), training=False)
        grads = torch.autograd.grad(preds[:, 0].sum(), acts)[0]
    return acts.detach(), grads.detach()


def _grads_jax(model, layer, x):
    import jax
    import jax.numpy as jnp
    import keras

    idx = model.layers.index(layer)
    feature_model = keras.Model(model.inputs, layer.output)
    rest = model.layers[idx + 1:]
    acts = feature_model(x, training=False)

    def head(a):   # only valid for a straight chain of layers, which is checked first
        for later in rest:
            a = later(a, training=False)
        return jnp.sum(a[:, 0])

    return acts, jax.grad(head)(acts)


def _is_chain(model, layer) -> bool:
    """True when every layer after ``layer`` takes exactly the previous layer's output."""
    layers = model.layers
    idx = layers.index(layer)
    for prev, nxt in zip(layers[idx:], layers[idx + 1:]):
        try:
            inbound = nxt._inbound_nodes[0].input_tensors
        except (AttributeError, IndexError):
            return False
        if len(inbound) != 1 or inbound[0] is not prev.output:
            return False
    return True


_BACKENDS: dict[str, Callable] = {"tensorflow": _grads_tensorflow, "torch": _grads_torch}


def _gradcam(model, images: np.ndarray, batch_size: int = 16) -> tuple[np.ndarray, str]:
    import keras

    backend = keras.backend.backend()
    layer = find_feature_layer(model)
    x_all = _as_model_input(images)
    maps = []
    grad_model = None
    if backend in _BACKENDS:
        grad_model = keras.Model(model.inputs, [layer.output, model.outputs[0]])
    elif backend == "jax":
        if not _is_chain(model, layer):
            raise ValueError("Grad-CAM on JAX needs a straight chain of layers after the feature map")
    else:
        raise ValueError(f"no gradient routine for the {backend!r} backend")
    for start in range(0, len(x_all), batch_size):
        x = x_all[start:start + batch_size]
        if backend == "jax":
            acts, grads = _grads_jax(model, layer, x)
        else:
            acts, grads = _BACKENDS[backend](grad_model, x)
        a, g = _to_numpy(acts).astype(np.float64), _to_numpy(grads).astype(np.float64)
        weights = g.mean(axis=(1, 2), keepdims=True)              # (N, 1, 1, C)
        cam = np.maximum((weights * a).sum(axis=-1), 0.0)          # (N, h, w)
        maps.append(cam)
    cams = np.concatenate(maps, axis=0) if maps else np.zeros((0, 1, 1))
    if not np.all(np.isfinite(cams)):
        raise ValueError("Grad-CAM produced non-finite values")
    return cams, layer.name


def _occlusion(predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray, grid: int = 8) -> np.ndarray:
    """Drop in pneumonia probability when each patch is replaced by the image's mean grey.

    Patches are 1/4 of the side, moved in steps of 1/``grid``; positive = evidence for pneumonia.
    """
    x_all = _as_model_input(images)
    n, h, w, _ = x_all.shape
    ph, pw = max(1, h // 4), max(1, w // 4)
    ys = np.linspace(0, h - ph, grid).round().astype(int)
    xs = np.linspace(0, w - pw, grid).round().astype(int)
    base = np.asarray(predict(x_all), dtype=np.float64).reshape(n)
    out = np.zeros((n, h, w), dtype=np.float64)
    hits = np.zeros((h, w), dtype=np.float64)
    for y0 in ys:
        for x0 in xs:
            hits[y0:y0 + ph, x0:x0 + pw] += 1
    for i in range(n):
        fill = x_all[i].mean()
        batch = np.repeat(x_all[i:i + 1], len(ys) * len(xs), axis=0)
        k = 0
        for y0 in ys:
            for x0 in xs:
                batch[k, y0:y0 + ph, x0:x0 + pw, :] = fill
                k += 1
        drops = base[i] - np.asarray(predict(batch), dtype=np.float64).reshape(-1)
        k = 0
        for y0 in ys:
            for x0 in xs:
                out[i, y0:y0 + ph, x0:x0 + pw] += drops[k]
                k += 1
    return np.maximum(out / np.maximum(hits, 1.0), 0.0)


def _normalise(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    out = np.zeros((len(maps),) + size, dtype=np.float32)
    for i, m in enumerate(maps):
        up = resize_map(m, *size) if m.shape != size else m.astype(np.float32)
        up = np.maximum(up, 0.0)
        top = float(up.max())
        out[i] = up / top if top > 0 else up
    return out


def _ensemble_gradcam(model, images: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, str]:
    """Grad-CAM of a network, or for an ensemble (pneumo_models.ensemble) the mean of its members'
    maps, each computed on the images at that member's input size."""
    from pneumo_models.data import resize_array
    from pneumo_models.ensemble import ensemble_members, member_size

    members = ensemble_members(model)
    if len(members) == 1:
        cams, layer = _gradcam(model, images)
        return _normalise(cams, size), layer
    total, layers = np.zeros((len(images),) + tuple(size), dtype=np.float32), []
    for member in members:
        side = member_size(member)
        x = images if side == images.shape[1] else np.stack([resize_array(im, side) for im in images])
        cams, layer = _gradcam(member, x)
        total += _normalise(cams, size)
        layers.append(f"{member.name}/{layer}")
    return _normalise(total / len(members), size), "mean of " + ", ".join(layers)


def _get_saliency_info(model, images: np.ndarray, *, method: str = "auto") -> _SaliencyInfo:
    """Heat maps for ``images`` ((N,S,S) uint8, as the model takes them).

    ``method``: "auto" (Grad-CAM, occlusion if Grad-CAM is not possible), "gradcam" or "occlusion".
    """
    images = np.asarray(images)
    size = images.shape[1:3]
    if len(images) == 0:
        return _SaliencyInfo(np.zeros((0,) + size, np.float32), GRADCAM, "", "")
    note = ""
    if method in ("auto", "gradcam"):
        try:
            cams, layer = _ensemble_gradcam(model, images, size)
            return _SaliencyInfo(cams, GRADCAM, layer, "")
        except Exception as exc:  # noqa: BLE001 - any failure: fall back to forward passes only
            if method == "gradcam":
                raise
            note = f"Grad-CAM was not possible ({str(exc).splitlines()[0] or exc.__class__.__name__}); " \
                   "occlusion sensitivity is shown instead."

    def predict(x: np.ndarray) -> np.ndarray:
        return _to_numpy(model.predict_on_batch(x)).reshape(-1) if len(x) <= 64 else \
            np.asarray(model.predict(x, batch_size=64, verbose=0)).reshape(-1)

    maps = _occlusion(predict, images)
    return _SaliencyInfo(_normalise(maps, size), OCCLUSION, "", note)
