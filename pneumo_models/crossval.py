"""Patient-grouped k-fold cross-validation of one training recipe: a full parameter dict, or
several whose networks are averaged (an ensemble, as export builds it).

One validation split misleads: its few hundred patients give a noisy score, and the search has
already been tuned to it. Here the whole pool (train + validation) is cut into k stratified folds
with every patient in one fold only. For each fold, the recipe trains on the other folds, with a
patient-grouped inner split of them for early stopping and for the threshold (chosen by the same
rule as export), and is then scored on the held-out fold it never saw: accuracy, sensitivity and
specificity at that threshold, AUC, and the held-out recall-constrained accuracy (threshold chosen
with hindsight; an upper bound). ``output_layer`` refits networks' output layers on the fold's training films
before the threshold, as the export does (``ensemble.refit_output_layers``; default: none).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Callable, Mapping, Sequence

import numpy as np

from . import metrics
from .data.split import grouped_folds, grouped_split
from .ensemble import build_ensemble, ensemble_size, fit_members, refit_output_layers
from .training import predict_proba

FOLD_METRICS = ("accuracy", "recall", "specificity", "balanced_accuracy", "precision", "auc", "rc_accuracy",
                "threshold")


@dataclass
class CVResult:
    folds: list[dict] = field(default_factory=list)

    def summary(self) -> dict[str, dict[str, float]]:
        out = {}
        for name in FOLD_METRICS:
            vals = np.array([f[name] for f in self.folds], dtype=float)
            out[name] = {"mean": float(vals.mean()), "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0,
                         "min": float(vals.min()), "max": float(vals.max())}
        return out

    def to_dict(self) -> dict:
        return {"folds": self.folds, "summary": self.summary()}


def pool(dataset) -> SimpleNamespace:
    """Train and validation of a Dataset as one pool of images, labels and patient ids."""
    return SimpleNamespace(x=np.concatenate([np.asarray(dataset.x_train), np.asarray(dataset.x_val)]),
                           y=np.concatenate([np.asarray(dataset.y_train), np.asarray(dataset.y_val)]),
                           groups=list(dataset.patients_train) + list(dataset.patients_val))


def cross_validate(recipe: dict | Sequence[dict], data: SimpleNamespace | Mapping[int, SimpleNamespace], *,
                   folds: int = 5, max_epochs: int = 10, min_recall: float = 0.95, patience: int = 3,
                   seed: int = 0, threshold_rule: str = "umbrella", inner_val_fraction: float = 0.2,
                   on_fold: Callable[[int, dict], None] | None = None,
                   on_epoch: Callable | None = None, on_batch: Callable | None = None, options=None,
                   output_layer: str = "trained") -> CVResult:
    """``recipe``: one parameter dict, or several (an ensemble averaging one network per dict).
    ``data``: a pool, or pools by input size holding the same images in the same order.
    ``options``: the ``training.TrainOptions`` the networks train with (None: the defaults)."""
    recipes = [recipe] if isinstance(recipe, Mapping) else list(recipe)
    pools = data if isinstance(data, Mapping) else {int(recipes[0]["input_size"]): data}
    missing = {int(p["input_size"]) for p in recipes} - set(pools)
    if missing:
        raise ValueError(f"no pool at input sizes {sorted(missing)}")
    first = next(iter(pools.values()))
    for other in pools.values():
        if not np.array_equal(other.y, first.y) or list(other.groups) != list(first.groups):
            raise ValueError("pools at different input sizes must hold the same images in the same order")
    size = ensemble_size(recipes)
    result = CVResult()
    groups = np.asarray(first.groups)
    y = first.y
    for k, (train_idx, test_idx) in enumerate(grouped_folds(y, groups, folds, seed)):
        fit_rel, val_rel = grouped_split(y[train_idx], groups[train_idx], inner_val_fraction, seed + k)
        fit_idx, val_idx = train_idx[fit_rel], train_idx[val_rel]

        def split_at(side: int, fit_idx=fit_idx, val_idx=val_idx) -> SimpleNamespace:
            x = pools[side].x
            return SimpleNamespace(x_train=x[fit_idx], y_train=y[fit_idx], x_val=x[val_idx], y_val=y[val_idx])

        networks, fitted = fit_members(recipes, split_at, max_epochs=max_epochs, min_recall=min_recall,
                                       patience=patience, seeds=[seed + k + 1000 * i for i in range(len(recipes))],
                                       on_epoch=on_epoch, on_batch=on_batch, options=options)
        layers = refit_output_layers(networks, recipes, split_at, choice=output_layer)
        model = build_ensemble(networks)
        y_val = y[val_idx]
        p_val = predict_proba(model, pools[size].x[val_idx])
        threshold = metrics.choose_threshold(y_val, p_val, min_recall, rule=threshold_rule, seed=seed + k)
        y_test = y[test_idx]
        p_test = predict_proba(model, pools[size].x[test_idx])
        at = metrics.metrics_at(y_test, p_test, threshold)
        fold = {"fold": k + 1, "n_test": int(len(test_idx)), "n_test_patients": int(len(set(groups[test_idx]))),
                "accuracy": at.accuracy, "recall": at.recall, "specificity": at.specificity,
                "balanced_accuracy": (at.recall + at.specificity) / 2,  # what the class mix does not sway
                "precision": at.precision, "auc": metrics.auc(y_test, p_test),
                "rc_accuracy": metrics.recall_constrained_accuracy(y_test, p_test, min_recall).accuracy,
                "threshold": threshold, "epochs": sum(f.epochs for f in fitted),
                "best_epoch": [f.best.epoch for f in fitted] if len(fitted) > 1 else fitted[0].best.epoch,
                "seconds": round(sum(f.seconds for f in fitted), 1),
                "output_layers": layers,
                # kept so that any other threshold rule can be scored on the same models afterwards
                "inner_val": {"y": y_val.astype(int).tolist(), "p": np.round(p_val, 6).tolist()},
                "held_out": {"y": y_test.astype(int).tolist(), "p": np.round(p_test, 6).tolist()}}
        result.folds.append(fold)
        if on_fold is not None:
            on_fold(k, fold)
    return result
