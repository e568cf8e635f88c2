"""What every engine provides: the study's sampler and pruner, their descriptions, and a run loop."""
from __future__ import annotations

import optuna


def sigterm_as_interrupt(signum, frame):
    """A SIGTERM handler: stop like Ctrl-C, so finished trials are kept and the run can resume."""
    raise KeyboardInterrupt


class Engine:
    """A search engine: proposes configurations and decides how many epochs each one trains.

    Whatever the engine, trials are stored in the study's Optuna storage with the same
    parameters and user attributes (see ``search.objective.TRIAL_ATTRS``), so report, export
    and predict never need to know which engine ran.
    """

    name: str = ""
    summary: str = ""
    default_pruner: str = "hyperband"
    takes_pruner: bool = True  # whether --pruner means anything to this engine
    supports_workers: bool = True  # whether several processes may search one study (--workers, --gpus)
    takes_starts: bool = True  # whether a fresh study first runs the space's known-good recipes

    def make_sampler(self, settings) -> optuna.samplers.BaseSampler:
        raise NotImplementedError

    def make_pruner(self, settings) -> optuna.pruners.BasePruner:
        from .. import pruning

        return pruning.make_pruner(settings.pruner, settings.max_epochs)

    def describe_sampler(self, sampler, settings) -> str:
        from .. import pruning

        return pruning.describe(sampler)

    def describe_pruner(self, pruner, settings) -> str:
        from .. import pruning

        return pruning.describe(pruner)

    def run(self, study: optuna.Study, settings, data) -> dict:
        """Top the study up to ``settings.trials`` finished trials; return the counts of what ran.

        The dict has ``finished_before``, ``finished_now`` and ``failed_here``.
        """
        raise NotImplementedError
