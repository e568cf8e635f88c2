"""What every engine provides: the study's sampler and pruner, their descriptions, and a run loop."""
from __future__ import annotations

import abc

import optuna

from ..outcome import RunOutcome


class Engine(abc.ABC):
    """A search engine: proposes configurations and decides how many epochs each one trains.

    Whatever the engine, trials are stored in the study's Optuna storage with the same
    parameters and user attributes (see ``search.objective.TRIAL_ATTRS``), so report, export
    and predict never need to know which engine ran. An engine owns its loop (``search``);
    ``run`` wraps it the same way for all: progress bar, SIGTERM as Ctrl-C, the ``RunOutcome``.
    """

    name: str = ""
    summary: str = ""
    default_pruner: str = "hyperband"
    takes_pruner: bool = True  # whether --pruner means anything to this engine
    supports_workers: bool = True  # whether several processes may search one study (--workers, --gpus)
    takes_starts: bool = True  # whether a fresh study first runs the space's known-good recipes

    @abc.abstractmethod
    def make_sampler(self, settings) -> optuna.samplers.BaseSampler:
        """The study's Optuna sampler in this process."""

    def make_pruner(self, settings) -> optuna.pruners.BasePruner:
        from .. import pruning

        return pruning.make_pruner(settings.pruner, settings.max_epochs)

    def describe_sampler(self, sampler, settings) -> str:
        from .. import pruning

        return pruning.describe(sampler)

    def describe_pruner(self, pruner, settings) -> str:
        from .. import pruning

        return pruning.describe(pruner)

    @abc.abstractmethod
    def search(self, study: optuna.Study, settings, data, space, progress) -> str:
        """Run trials until the study holds ``settings.trials`` finished ones, ``settings.timeout``
        has passed or this run has ``settings.max_failures`` counted failures; return which
        (``"trials"``, ``"timeout"``, ``"failures"``, or ``"engine"`` when it ran out of proposals).
        ``progress`` (a ``StudyProgress``) is called as an Optuna callback after each trial; an engine
        whose trials reach the storage only as they end names the one in flight (``running_here``)."""

    def run(self, study: optuna.Study, settings, data, space) -> RunOutcome:
        """Top the study up to ``settings.trials`` finished trials in this process.

        Re-running after an interruption resumes: finished trials are kept; a trial cut off
        mid-way is failed (here on Ctrl-C/SIGTERM, by heartbeat when its process died) and not
        counted. Ctrl-C and SIGTERM end the loop with ``stopped_by == "interrupted"``.
        """
        from ..progress import StudyProgress, count
        from ..runtime import sigterm_as_interrupt

        before = count(study)
        progress = StudyProgress(study, settings.trials, enabled=settings.progress, timeout=settings.timeout,
                                 max_epochs=settings.max_epochs)
        try:
            with sigterm_as_interrupt():
                stopped_by = self.search(study, settings, data, space, progress)
        except KeyboardInterrupt:
            stopped_by = "interrupted"
        finally:
            progress.close()
        return RunOutcome.after(study, settings.run_id, before, stopped_by)
