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
    "backbone": "none",         # a Keras Applications backbone instead of the conv blocks (pneumo_models.backbones)
    "backbone_weights": "none", # "imagenet": the backbone starts from Keras' ImageNet weights (--weights imagenet)
    "backbone_side": 0,         # the side the backbone sees: inputs smaller than this are enlarged (bilinear) inside
                                # the model first (0: the input's own side)
    "block": "plain",           # "plain" conv, "residual" (two convs + shortcut) or "se" (squeeze-excitation)
    "padding": "same",
    "batch_norm": False,
    "dense_units": 128,
    "dropout": 0.3,
    "head": "gap",              # "gap" (global average pooling) or "flatten"
    "optimizer": "adam",
    "learning_rate": 1e-3,
    "lr_schedule": "constant",  # "constant", or "cosine": warm up over the first tenth of the training steps from
                                # learning_rate / 25, then a cosine decay to zero at the last epoch (one-cycle)
    "head_init": "random",      # "probe": the output layer starts as a logistic regression fitted on the network's
                                # starting features (linear probing, then fine-tuning: pneumo_models.probe)
    "label_smoothing": 0.0,
    "weight_decay": 0.0,        # decoupled weight decay of the optimiser (AdamW-style; Keras' weight_decay=)
    "ema": 0.0,                 # momentum of an exponential moving average of the weights (0 = off): the
                                # averaged weights are the ones validated, kept and exported
    "debias": "none",           # "layout": training weights against the coarse-layout shortcut (pneumo_models.layout)
    "mixup": 0.0,               # mixup's alpha: training images blended in pairs, labels alike (0 = off)
    "reframe": 0.0,             # healthy training films re-framed tight: half of them cropped to keep 1 - U(0, reframe)
                                # of each side, resized back (pneumo_models.reframe; 0 = off)
    "aug_rotation": 0.0,        # fraction of a full turn (0.05 = +-18 degrees)
    "aug_zoom": 0.0,
    "aug_crop": 0.0,            # random crop-and-resize: each side keeps 1 - U(0, aug_crop) of the film, height
                                # and width apart (framing and aspect ratio vary; see model._augmentation)
    "aug_shift": 0.0,
    "aug_contrast": 0.0,
    "aug_brightness": 0.0,
    "aug_shear": 0.0,
    "aug_blur": 0.0,            # largest Gaussian-blur sigma in pixels (softer, lower-resolution films)
    "aug_flip": False,
    "aug_erase": 0.0,           # chance that a film gets one random patch (2-33% of it) replaced by noise
    "intensity": "none",        # per-image intensity normalisation inside the model (see INTENSITY)
    "crop": 0.0,                # share of each border cut off inside the model (burnt-in text, markers, collimation)
}

OPTIMIZERS = ("rmsprop", "adam", "amsgrad")
LR_SCHEDULES = ("constant", "cosine")
HEAD_INITS = ("random", "probe")
BACKBONE_CHOICES = ("none", "mobilenetv2", "efficientnetb0", "densenet121", "resnet50v2", "efficientnet-lite0")
BACKBONE_WEIGHTS = ("none", "imagenet")
MIN_BACKBONE_SIDE = 32  # the smallest input every backbone accepts
BLOCKS = ("plain", "residual", "se")
# "none": pixels / 255; "standardize": each image to zero mean and unit variance after augmentation
# (a film's exposure and contrast, which differ between machines and sites, are taken out);
# "equalize": each image's own histogram equalised (its tone curve taken out as well).
INTENSITY = ("none", "standardize", "equalize")
MIN_POOL_SIDE = 4  # stop halving the feature map below this side
CLASS_WEIGHTS = ("none", "balanced", "sqrt_balanced")  # as pneumo_models.training.CLASS_WEIGHT_MODES
PADDINGS = ("same", "valid")
HEADS = ("gap", "flatten")

# What each parameter can take at all, whatever a space searches: a value fixed with `--set` must fit
# here (a space's range is where the search looks; a what-if outside it, say learning_rate=1000 to
# force divergence, stays allowed). (kind, low, high, low_open, high_open) or ("choice", choices).
INF = float("inf")
DOMAINS: dict = {
    "input_size": ("int", 8, 1024, False, False),
    "conv_blocks": ("int", 1, 12, False, False),
    "base_filters": ("int", 1, 1024, False, False),
    "filter_growth": ("number", 0.25, 4.0, False, False),
    "filters": ("filters",),
    "max_filters": ("int", 1, 8192, False, False),
    "kernel_size": ("int", 1, 15, False, False),
    "backbone": ("choice", BACKBONE_CHOICES),
    "backbone_weights": ("choice", BACKBONE_WEIGHTS),
    "backbone_side": ("int", 0, 1024, False, False),
    "block": ("choice", BLOCKS),
    "padding": ("choice", PADDINGS),
    "batch_norm": ("bool",),
    "dense_units": ("int", 0, 8192, False, False),
    "dropout": ("number", 0.0, 1.0, False, True),
    "head": ("choice", HEADS),
    "optimizer": ("choice", OPTIMIZERS),
    "learning_rate": ("number", 0.0, INF, True, True),
    "label_smoothing": ("number", 0.0, 1.0, False, True),
    "weight_decay": ("number", 0.0, 1.0, False, True),
    "ema": ("number", 0.0, 1.0, False, True),
    "lr_schedule": ("choice", LR_SCHEDULES),
    "head_init": ("choice", HEAD_INITS),
    "mixup": ("number", 0.0, 10.0, False, False),
    "reframe": ("number", 0.0, 1.0, False, True),
    "debias": ("choice", ("none", "layout")),
    "aug_rotation": ("number", 0.0, 1.0, False, False),
    "aug_zoom": ("number", 0.0, 1.0, False, True),
    "aug_crop": ("number", 0.0, 1.0, False, True),
    "aug_shift": ("number", 0.0, 1.0, False, True),
    "aug_contrast": ("number", 0.0, 1.0, False, False),
    "aug_brightness": ("number", 0.0, 1.0, False, False),
    "aug_shear": ("number", 0.0, 1.0, False, False),
    "aug_blur": ("number", 0.0, 20.0, False, False),
    "aug_flip": ("bool",),
    "aug_erase": ("number", 0.0, 1.0, False, False),
    "intensity": ("choice", INTENSITY),
    "crop": ("number", 0.0, 0.5, False, True),
    "batch_size": ("int", 1, 4096, False, False),
    "class_weight": ("choice", CLASS_WEIGHTS),
}


def _describe(domain: tuple) -> str:
    kind = domain[0]
    if kind == "choice":
        return "one of " + ", ".join(map(str, domain[1]))
    if kind == "bool":
        return "true or false"
    if kind == "filters":
        return "a list of positive whole numbers, e.g. [16,32,64], or null"
    low, high, low_open, high_open = domain[1:]
    what = "a whole number" if kind == "int" else "a number"
    if high == INF:
        return f"{what} {'>' if low_open else '>='} {low:g}"
    return f"{what} in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def value_problem(name: str, value) -> str | None:
    """Why ``value`` cannot be parameter ``name`` (one line), or None when it can (or ``name`` has no
    domain here). The CLI refuses ``--set NAME=VALUE`` with this before any study starts."""
    domain = DOMAINS.get(name)
    if domain is None:
        return None
    kind = domain[0]
    want = _describe(domain)
    if kind == "choice":
        return None if (isinstance(value, str) and value in domain[1]) else f"takes {want}; got {value!r}"
    if kind == "bool":
        return None if isinstance(value, bool) else f"takes {want}; got {value!r}"
    if kind == "filters":
        ok = value is None or (isinstance(value, list) and value and all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value))
        return None if ok else f"takes {want}; got {value!r}"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind == "int" and not isinstance(value, int)):
        return f"takes {want}; got {value!r}"
    low, high, low_open, high_open = domain[1:]
    if value != value or (value < low or (low_open and value == low)) or (value > high or (high_open and value == high)):
        return f"takes {want}; got {value!r}"
    return None
