"""The default engine: Optuna's multivariate TPE sampler with (by default) Hyperband pruning."""
from __future__ import annotations

from .base import Engine


class OptunaEngine(Engine):
    name = "optuna"
    summary = "Optuna multivariate TPE sampler + Optuna pruner (--pruner, default hyperband)"
    default_pruner = "hyperband"

    def make_sampler(self, settings):
        from .. import pruning

        return pruning.make_sampler(settings.sampler_seed)  # distinct per parallel worker

    def run(self, study, settings, data) -> dict:
        from ..study import run_trials

        return run_trials(study, settings, data)
