"""Words and number formats a clinician reads: metric names, parameter names, percentages."""
from __future__ import annotations

import math

# Headline metrics in the order the model card lists them, with clinical names.
METRIC_LABELS: dict[str, str] = {
    "accuracy": "Accuracy",
    "recall": "Sensitivity (pneumonia recall)",
    "specificity": "Specificity",
    "precision": "Positive predictive value (precision)",
    "f1": "F1 score",
    "auc": "Area under the ROC curve (AUC)",
}
PERCENT_METRICS = frozenset({"accuracy", "recall", "specificity", "precision", "f1", "rc_accuracy"})

PARAM_LABELS: dict[str, str] = {
    "conv_blocks": "convolution blocks",
    "base_filters": "filters in first block",
    "filter_growth": "filter growth per block",
    "filters": "filters per block",
    "kernel_size": "kernel size",
    "batch_norm": "batch normalisation",
    "dense_units": "dense units",
    "dropout": "dropout",
    "optimizer": "optimiser",
    "learning_rate": "learning rate",
    "batch_size": "batch size",
    "input_size": "image size (pixels)",
    "augment": "augmentation",
    "class_weight": "class weighting",
    "head": "classifier head",
    "label_smoothing": "label smoothing",
}

TRIAL_METRIC_LABELS: dict[str, str] = {
    "rc_accuracy": "accuracy at recall floor",
    "auc": "AUC",
    "recall": "sensitivity",
    "precision": "precision",
    "specificity": "specificity",
    "threshold": "threshold",
    "epochs": "epochs trained",
    "best_epoch": "best epoch",
    "seconds": "training seconds",
    "n_params": "model parameters",
}


def objective_label(min_recall: float | None) -> str:
    """The study's objective in words, e.g. 'Accuracy with pneumonia recall ≥ 95%'."""
    if min_recall is None:
        return "Recall-constrained accuracy"
    return f"Accuracy with pneumonia recall ≥ {pct(min_recall, digits=0)}"


def param_label(name: str) -> str:
    return PARAM_LABELS.get(name, name.replace("_", " "))


def is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(float(x))


def pct(x, digits: int = 1) -> str:
    """0.9623 -> '96.2%'; missing/NaN -> '–'."""
    if not is_number(x):
        return "–"
    return f"{100.0 * float(x):.{digits}f}%"


def num(x, digits: int = 3) -> str:
    if not is_number(x):
        return "–" if x is None else str(x)
    if isinstance(x, int):
        return f"{x:,}"
    return f"{float(x):.{digits}f}"


def metric_value(name: str, x) -> str:
    """How a headline metric is printed on the page (AUC as 0.xxx, the rest as percentages)."""
    return pct(x) if name in PERCENT_METRICS else num(x, 3)


def metric_interval(name: str, ci) -> str:
    if not ci or len(ci) != 2:
        return "–"
    return f"{metric_value(name, ci[0])} – {metric_value(name, ci[1])}"


def duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "–"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    if h:
        return f"{h} h {m:02d} min"
    if m:
        return f"{m} min {s:02d} s"
    return f"{s} s"
