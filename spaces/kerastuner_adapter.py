"""Turn a Space into ``keras_tuner.HyperParameters`` (the KerasTuner engines' view of the one space).

    hp = hyperparameters(space)       # declare every dimension once, hand it to an Oracle
    params = values(space, trial.hyperparameters.values)   # back to a flat, Optuna-valid dict

Mapping: IntDim -> ``hp.Int`` (``sampling="log"`` when log), FloatDim -> ``hp.Float`` (idem),
CategoricalDim -> ``hp.Boolean`` for {False, True}, ``hp.Choice`` when the choices share one
type, else ``hp.Choice`` over their JSON texts (decoded back by ``values``), FixedDim ->
``hp.Fixed`` for scalars (list-valued fixed parameters, as in the reference spaces, stay out
of the tuner: they are not searched, and ``space.fixed_values()`` carries them).
"""
from __future__ import annotations

import json

from .dimensions import CategoricalDim, FixedDim, FloatDim, IntDim
from .space import Space

# Parameters KerasTuner's Hyperband oracle adds to a trial's values (not part of the space).
TUNER_KEYS = ("tuner/epochs", "tuner/initial_epoch", "tuner/bracket", "tuner/round", "tuner/trial_id")
_SCALAR = (bool, int, float, str)


def _choice_kind(choices: tuple) -> str:
    if set(choices) == {False, True} and all(isinstance(c, bool) for c in choices):
        return "boolean"
    kinds = {bool if isinstance(c, bool) else (float if isinstance(c, float) else type(c)) for c in choices}
    if len(kinds) == 1 and kinds <= {int, float, str, bool}:
        return "choice"
    if kinds <= {int, float}:  # ints and floats: KerasTuner wants one type
        return "float-choice"
    return "json"


def hyperparameters(space: Space):
    """A ``keras_tuner.HyperParameters`` declaring every dimension of ``space``."""
    import keras_tuner

    hp = keras_tuner.HyperParameters()
    for dim in space.dimensions:
        if isinstance(dim, FixedDim):
            if isinstance(dim.value, _SCALAR):
                hp.Fixed(dim.name, dim.value)
        elif isinstance(dim, IntDim):
            hp.Int(dim.name, dim.low, dim.high, step=dim.step, sampling="log" if dim.log else "linear")
        elif isinstance(dim, FloatDim):
            hp.Float(dim.name, dim.low, dim.high, sampling="log" if dim.log else "linear")
        elif isinstance(dim, CategoricalDim):
            kind = _choice_kind(dim.choices)
            if kind == "boolean":
                hp.Boolean(dim.name, default=dim.choices[0])
            elif kind == "choice":
                hp.Choice(dim.name, list(dim.choices))
            elif kind == "float-choice":
                hp.Choice(dim.name, [float(c) for c in dim.choices])
            else:
                hp.Choice(dim.name, [json.dumps(c) for c in dim.choices], ordered=False)
        else:  # pragma: no cover - Dimension is a closed union
            raise TypeError(f"unknown dimension {dim!r}")
    return hp


def values(space: Space, hp_values: dict) -> dict:
    """The searched parameters of a KerasTuner trial, typed and bounded as ``space`` declares them.

    The result is what ``spaces.optuna_adapter.suggest`` would have returned for the same
    configuration minus the fixed values, so it is valid against ``optuna_adapter.distributions``.
    """
    out: dict = {}
    for dim in space.searched:
        if dim.name not in hp_values:
            raise KeyError(f"KerasTuner trial has no value for {dim.name!r}")
        raw = hp_values[dim.name]
        if isinstance(dim, IntDim):
            out[dim.name] = int(min(max(int(round(raw)), dim.low), dim.high))
        elif isinstance(dim, FloatDim):
            # log sampling can land a rounding error outside [low, high]; Optuna would refuse it
            out[dim.name] = float(min(max(float(raw), dim.low), dim.high))
        else:
            if _choice_kind(dim.choices) == "json":
                raw = json.loads(raw)
            matches = [c for c in dim.choices if c == raw]
            if not matches:
                raise ValueError(f"KerasTuner value {raw!r} is not a choice of {dim.name} {list(dim.choices)}")
            out[dim.name] = matches[0]
    return out
