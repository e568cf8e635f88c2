"""Samplers and pruners by name, and their one-line descriptions for reports and cards."""
from __future__ import annotations

import optuna


def make_sampler(seed: int) -> optuna.samplers.BaseSampler:
    # multivariate TPE models the (strong) interactions between depth, width and learning rate;
    # constant_liar keeps parallel workers from proposing what another worker is already running
    # (with one worker nothing else is running, so it changes nothing there)
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=5, constant_liar=True)


def make_pruner(name: str, max_epochs: int) -> optuna.pruners.BasePruner:
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs, reduction_factor=3)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner {name!r}")


def describe(obj) -> str:
    if isinstance(obj, optuna.pruners.HyperbandPruner):
        return (f"HyperbandPruner(min_resource={obj._min_resource}, max_resource={obj._max_resource}, "
                f"reduction_factor={obj._reduction_factor})")
    if isinstance(obj, optuna.pruners.MedianPruner):
        return "MedianPruner(n_startup_trials=5, n_warmup_steps=1)"
    if isinstance(obj, optuna.samplers.TPESampler):
        return "TPESampler(multivariate=True, n_startup_trials=5, constant_liar=True)"
    return type(obj).__name__
