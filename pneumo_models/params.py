"""The parameters ``build_model`` understands, with their defaults (no Keras import: the CLI checks
``--set`` names with these before any backend starts)."""
from __future__ import annotations

# Every parameter build_model understands, with the value used when a space leaves it out.
DEFAULTS: dict = {
    "input_size": 64,
    "conv_blocks": 3,
    "base_filters": 32,
    "filter_growth": 2.0,
    "filters": None,            # explicit per-block filters (reference spaces); overrides base/growth
    "max_filters": 256,
    "kernel_size": 3,
    "block": "plain",           # "plain" conv, "residual" (two convs + shortcut) or "se" (squeeze-excitation)
    "padding": "same",
    "batch_norm": False,
    "dense_units": 128,
    "dropout": 0.3,
    "head": "gap",              # "gap" (global average pooling) or "flatten"
    "optimizer": "adam",
    "learning_rate": 1e-3,
    "label_smoothing": 0.0,
    "aug_rotation": 0.0,        # fraction of a full turn (0.05 = +-18 degrees)
    "aug_zoom": 0.0,
    "aug_shift": 0.0,
    "aug_contrast": 0.0,
    "aug_brightness": 0.0,
    "aug_shear": 0.0,
    "aug_blur": 0.0,            # largest Gaussian-blur sigma in pixels (softer, lower-resolution films)
    "aug_flip": False,
    "intensity": "none",        # per-image intensity normalisation inside the model (see INTENSITY)
    "crop": 0.0,                # share of each border cut off inside the model (burnt-in text, markers, collimation)
}

OPTIMIZERS = ("rmsprop", "adam", "amsgrad")
BLOCKS = ("plain", "residual", "se")
# "none": pixels / 255; "standardize": each image to zero mean and unit variance after augmentation
# (a film's exposure and contrast, which differ between machines and sites, are taken out).
INTENSITY = ("none", "standardize")
MIN_POOL_SIDE = 4  # stop halving the feature map below this side
