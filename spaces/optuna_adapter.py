"""Turn a Space into Optuna suggestions (the Optuna engine's view of the one space)."""
from __future__ import annotations

import optuna

from .dimensions import CategoricalDim, FixedDim, FloatDim, IntDim
from .space import Space


def suggest(space: Space, trial: optuna.trial.BaseTrial) -> dict:
    """Sample every dimension of ``space`` on ``trial``; fixed values are recorded as user attrs."""
    params: dict = {}
    for dim in space.dimensions:
        if isinstance(dim, FixedDim):
            params[dim.name] = dim.value
        elif isinstance(dim, IntDim):
            params[dim.name] = trial.suggest_int(dim.name, dim.low, dim.high, step=dim.step, log=dim.log)
        elif isinstance(dim, FloatDim):
            params[dim.name] = trial.suggest_float(dim.name, dim.low, dim.high, log=dim.log)
        elif isinstance(dim, CategoricalDim):
            params[dim.name] = trial.suggest_categorical(dim.name, list(dim.choices))
        else:  # pragma: no cover - Dimension is a closed union
            raise TypeError(f"unknown dimension {dim!r}")
    return params


def distributions(space: Space) -> dict[str, optuna.distributions.BaseDistribution]:
    """Optuna distributions of the searched dimensions (to record trials run by other engines)."""
    out: dict = {}
    for dim in space.searched:
        if isinstance(dim, IntDim):
            out[dim.name] = optuna.distributions.IntDistribution(dim.low, dim.high, step=dim.step, log=dim.log)
        elif isinstance(dim, FloatDim):
            out[dim.name] = optuna.distributions.FloatDistribution(dim.low, dim.high, log=dim.log)
        elif isinstance(dim, CategoricalDim):
            out[dim.name] = optuna.distributions.CategoricalDistribution(list(dim.choices))
    return out
