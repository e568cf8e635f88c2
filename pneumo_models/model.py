"""Build a compiled Keras CNN from a flat parameter dict (one sample of a search space).

Backend-agnostic Keras only: the same code runs under TensorFlow, PyTorch or JAX.
Input is one grayscale channel in 0-255; rescaling and augmentation live inside the model
(augmentation layers are active only in training), output is a sigmoid pneumonia probability.
"""
from __future__ import annotations

import keras

from .backbones import backbone_features
from .backend_fixes import install as _install_backend_fixes
from .layers import PerImageEqualization
from .params import BLOCKS, DEFAULTS, INTENSITY, LR_SCHEDULES, MIN_POOL_SIDE, OPTIMIZERS  # noqa: F401 - re-exported

_install_backend_fixes()  # TensorFlow: no idle wait at epoch ends; PyTorch: batched augmentation (see backend_fixes)


def resolve(params: dict) -> dict:
    """Defaults filled in, unknown keys kept (training reads batch_size, class_weight...)."""
    return {**DEFAULTS, **{k: v for k, v in params.items() if v is not None or k not in DEFAULTS}}


def block_filters(p: dict) -> list[int]:
    if p.get("filters"):
        return [int(f) for f in p["filters"]]
    return [int(min(p["max_filters"], round(p["base_filters"] * p["filter_growth"] ** i)))
            for i in range(int(p["conv_blocks"]))]


def _augmentation(p: dict, seed: int | None) -> list[keras.layers.Layer]:
    layers: list[keras.layers.Layer] = []
    if p["aug_rotation"] > 0:
        layers.append(keras.layers.RandomRotation(p["aug_rotation"], fill_mode="constant", seed=seed))
    if p["aug_shear"] > 0:
        layers.append(keras.layers.RandomShear(x_factor=p["aug_shear"], y_factor=p["aug_shear"],
                                               fill_mode="constant", seed=seed))
    if p["aug_zoom"] > 0:
        layers.append(keras.layers.RandomZoom(p["aug_zoom"], fill_mode="constant", seed=seed))
    if p["aug_crop"] > 0:
        # Framing: in Kermany's training set the pneumonia films are mostly framed tight on the chest
        # and the healthy ones wide (shoulders, neck, abdomen), so framing alone predicts the class,
        # and healthy new patients filmed tight score as pneumonia. A random crop (zoom in, height
        # and width apart, so the aspect ratio varies too) shows healthy chests framed tight.
        crop = (-float(p["aug_crop"]), 0.0)
        layers.append(keras.layers.RandomZoom(height_factor=crop, width_factor=crop, fill_mode="constant", seed=seed))
    if p["aug_shift"] > 0:
        layers.append(keras.layers.RandomTranslation(p["aug_shift"], p["aug_shift"],
                                                     fill_mode="constant", seed=seed))
    if p["aug_flip"]:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if p["aug_contrast"] > 0:
        layers.append(keras.layers.RandomContrast(p["aug_contrast"], value_range=(0, 1), seed=seed))
    if p["aug_brightness"] > 0:
        layers.append(keras.layers.RandomBrightness(p["aug_brightness"], value_range=(0, 1), seed=seed))
    if p["aug_blur"] > 0:  # resolution changes: a random Gaussian blur (sigma up to aug_blur px) on part of the images
        layers.append(keras.layers.RandomGaussianBlur(factor=0.5, kernel_size=5, sigma=(0.01, float(p["aug_blur"])),
                                                      value_range=(0, 1), seed=seed))
    if p["aug_erase"] > 0:
        # Random erasing (Zhong et al. 2020): with this chance a film loses one patch to noise, so no
        # single region (a marker, a lung edge, one opacity) can carry the decision alone
        layers.append(keras.layers.RandomErasing(factor=(float(p["aug_erase"]),) * 2, value_range=(0, 1),
                                                 seed=seed))
    return layers


def _intensity(x, mode: str):
    """Per-image intensity normalisation, after augmentation (so it also sees augmented films)."""
    if mode == "none":
        return x
    if mode == "standardize":  # (x - mean) / std over the whole image: Keras' LayerNormalization, no affine
        return keras.layers.LayerNormalization(axis=(1, 2, 3), center=False, scale=False, epsilon=1e-3,
                                               name="standardize")(x)
    if mode == "equalize":  # each image's own histogram equalised (its intensity CDF)
        return PerImageEqualization(name="equalize")(x)
    raise ValueError(f"unknown intensity {mode!r}; choose one of {INTENSITY}")


def _conv_bn_relu(x, filters: int, p: dict, name: str, relu: bool = True):
    x = keras.layers.Conv2D(filters, int(p["kernel_size"]), padding=p["padding"],
                            use_bias=not p["batch_norm"], name=f"{name}_conv")(x)
    if p["batch_norm"]:
        x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.Activation("relu", name=f"{name}_relu")(x) if relu else x


def _conv_block(x, filters: int, p: dict, name: str):
    if p["block"] == "plain":
        return _conv_bn_relu(x, filters, p, name)
    if p["block"] == "se":
        x = _conv_bn_relu(x, filters, p, name)
        squeeze = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_se_pool")(x)
        squeeze = keras.layers.Dense(max(4, filters // 8), activation="relu", name=f"{name}_se_reduce")(squeeze)
        squeeze = keras.layers.Dense(filters, activation="sigmoid", name=f"{name}_se_expand")(squeeze)
        return keras.layers.Multiply(name=f"{name}_se_scale")([x, squeeze])
    # residual: conv-bn-relu-conv-bn + projected shortcut, then relu (ResNet v1 basic block)
    shortcut = x
    y = _conv_bn_relu(x, filters, p, f"{name}a")
    y = _conv_bn_relu(y, filters, p, f"{name}b", relu=False)
    if p["padding"] == "valid":
        crop = int(p["kernel_size"]) - 1
        shortcut = keras.layers.Cropping2D(crop, name=f"{name}_crop")(shortcut)
    shortcut = keras.layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_proj")(shortcut)
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.Activation("relu", name=f"{name}_out")(y)


# "cosine" is PyTorch's OneCycleLR as benchmarks/finetune_pretrained.py used it (pct_start=0.1): the
# first tenth of the steps warms up from learning_rate / 25, the rest decays along a cosine to zero
WARMUP_SHARE, WARMUP_START = 0.1, 1.0 / 25.0


def learning_rate(params: dict, total_steps: int | None = None):
    """The optimiser's learning rate for ``params``: the number, or for ``lr_schedule="cosine"`` a Keras
    schedule over ``total_steps`` (all of training's optimiser steps: epochs times batches per epoch)."""
    p = resolve(params)
    lr, schedule = float(p["learning_rate"]), p["lr_schedule"]
    if schedule == "constant":
        return lr
    if schedule != "cosine":
        raise ValueError(f"unknown lr_schedule {schedule!r}; choose one of {LR_SCHEDULES}")
    if not total_steps or total_steps < 1:
        raise ValueError("lr_schedule 'cosine' needs the number of training steps (pneumo_models.training.fit passes it)")
    warm = max(1, round(WARMUP_SHARE * total_steps))
    return keras.optimizers.schedules.CosineDecay(
        lr * WARMUP_START, decay_steps=max(1, int(total_steps) - warm), alpha=0.0, warmup_target=lr, warmup_steps=warm)


def make_optimizer(name: str, learning_rate, *, weight_decay: float = 0.0,
                   ema: float = 0.0) -> keras.optimizers.Optimizer:
    """``learning_rate``: a number or a Keras schedule. ``weight_decay``: decoupled decay (Keras' ``weight_decay=``); ``ema`` > 0: the optimiser keeps a
    moving average of the weights with that momentum (Keras' ``use_ema``; see training.fit)."""
    extra = {"weight_decay": float(weight_decay) or None}
    if ema > 0:
        extra.update(use_ema=True, ema_momentum=float(ema))
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate, **extra)
    if name == "adam":
        return keras.optimizers.Adam(learning_rate, **extra)
    if name == "amsgrad":
        return keras.optimizers.Adam(learning_rate, amsgrad=True, **extra)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {OPTIMIZERS}")


def build_network(params: dict, *, seed: int | None = None, name: str = "pneumonia_cnn") -> keras.Model:
    """The uncompiled network."""
    p = resolve(params)
    size = int(p["input_size"])
    inputs = keras.Input((size, size, 1), name="xray")
    x = keras.layers.Rescaling(1.0 / 255.0, name="scale_0_1")(inputs)
    for layer in _augmentation(p, seed):
        x = layer(x)
    side = size
    if p["crop"] > 0:  # the borders hold burnt-in letters, markers and collimator edges, not lungs
        side = size - 2 * int(round(size * float(p["crop"])))
        x = keras.layers.CenterCrop(side, side, name="crop_borders")(x)
    x = _intensity(x, p["intensity"])
    if p["backbone"] != "none":  # a Keras Applications backbone, pooled, then the same head
        if int(p["backbone_side"]) > side:
            # small films (PneumoniaMNIST's 28 px) enlarged to a size the backbone's ImageNet features were made at
            side = int(p["backbone_side"])
            x = keras.layers.Resizing(side, side, interpolation="bilinear", name="enlarge")(x)
        x = backbone_features(x, p["backbone"], side, p["backbone_weights"])
        return _head(x, p, seed, name, inputs)
    if p["block"] not in BLOCKS:
        raise ValueError(f"unknown block {p['block']!r}; choose one of {BLOCKS}")
    for i, filters in enumerate(block_filters(p)):
        x = _conv_block(x, filters, p, f"b{i + 1}")
        if p["padding"] == "valid":
            side -= (int(p["kernel_size"]) - 1) * (2 if p["block"] == "residual" else 1)
        if side // 2 >= MIN_POOL_SIDE:
            x = keras.layers.MaxPooling2D(2, name=f"pool{i + 1}")(x)
            side //= 2
    if p["head"] == "flatten":
        x = keras.layers.Flatten(name="flatten")(x)
    else:
        x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return _head(x, p, seed, name, inputs)


def _head(x, p: dict, seed: int | None, name: str, inputs) -> keras.Model:
    """Dense layer, dropout and the sigmoid output on pooled features."""
    if int(p["dense_units"]) > 0:
        x = keras.layers.Dense(int(p["dense_units"]), activation="relu", name="dense")(x)
    if p["dropout"] > 0:
        x = keras.layers.Dropout(float(p["dropout"]), seed=seed, name="dropout")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="pneumonia", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name)


def estimate_mmacs(params: dict) -> float:
    """Millions of multiply-accumulates for one image's forward pass (convolutions and dense layers).

    Read off the built network's layer shapes, so it follows every option of the builder. Training
    costs about three times this per image; it is what makes one configuration 100x slower than
    another on a CPU.
    """
    with keras.device("cpu"):  # shapes only (no weights to fetch), and no accelerator memory for them
        model = build_network({**params, "backbone_weights": "none"})
    return _macs(model) / 1e6


def _macs(model: keras.Model) -> int:
    macs = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):  # a nested backbone
            macs += _macs(layer)
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            _, h, w, c_out = layer.output.shape
            kh, kw = layer.kernel_size
            macs += h * w * c_out * kh * kw
        elif isinstance(layer, keras.layers.Conv2D):
            _, h, w, c_out = layer.output.shape
            kh, kw = layer.kernel_size
            macs += h * w * c_out * kh * kw * layer.input.shape[-1] // layer.groups
        elif isinstance(layer, keras.layers.Dense):
            macs += layer.input.shape[-1] * layer.units
    return macs


def compile_model(model: keras.Model, params: dict, *, jit_compile="auto", total_steps: int | None = None) -> keras.Model:
    """``jit_compile``: as Keras' ``compile`` ("auto" = Keras' choice; True = XLA, or torch.compile).
    ``total_steps``: the optimiser steps training will take (a learning-rate schedule needs them)."""
    p = resolve(params)
    model.compile(
        optimizer=make_optimizer(p["optimizer"], learning_rate(p, total_steps), weight_decay=float(p["weight_decay"]),
                                 ema=float(p["ema"])),
        loss=keras.losses.BinaryCrossentropy(label_smoothing=float(p["label_smoothing"])),
        jit_compile=jit_compile,
    )
    return model


def build_model(params: dict, *, seed: int | None = None, jit_compile="auto",
                total_steps: int | None = None) -> keras.Model:
    """A compiled model for one parameter sample (under the process's Keras dtype policy)."""
    return compile_model(build_network(params, seed=seed), params, jit_compile=jit_compile, total_steps=total_steps)
