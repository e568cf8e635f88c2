"""The baseline: uniform random search, each trial trained to the end (no pruning unless asked)."""
from __future__ import annotations

import optuna

from .optuna_engine import OptunaEngine


class RandomEngine(OptunaEngine):
    name = "random"
    summary = "Optuna RandomSampler, no pruning (the plain random-search baseline; --pruner can add one)"
    default_pruner = "none"

    def make_sampler(self, settings):
        return optuna.samplers.RandomSampler(seed=settings.sampler_seed)

    def describe_sampler(self, sampler, settings) -> str:
        return f"RandomSampler(seed={settings.seed})"

    def search(self, study, settings, data, space, progress) -> str:
        # A resumed study must not replay the first run's draws: offset the seed by the trials so far.
        study.sampler = optuna.samplers.RandomSampler(
            seed=settings.sampler_seed + len(study.get_trials(deepcopy=False)))
        return super().search(study, settings, data, space, progress)
