"""The default engine: Optuna's multivariate TPE sampler with (by default) Hyperband pruning.

Its loop runs in a lone process and in each worker of a parallel or distributed search: before
starting a trial it checks that finished + running trials are fewer than N (else it waits for the
trials in flight, failing stale ones whose worker died), and the objective checks again once its
trial is visible to the others (see ``objective.Objective``), so several workers on one study end
with exactly N finished trials.
"""
from __future__ import annotations

import time

from .base import Engine


class OptunaEngine(Engine):
    name = "optuna"
    summary = "Optuna multivariate TPE sampler + Optuna pruner (--pruner, default hyperband)"
    default_pruner = "hyperband"

    def make_sampler(self, settings):
        from .. import pruning

        return pruning.make_sampler(settings.sampler_seed)  # distinct per parallel worker

    def search(self, study, settings, data, space, progress) -> str:
        import optuna
        from optuna.trial import TrialState

        from ..failures import counted_failures
        from ..layout import TRIALS_DIR
        from ..objective import Objective, TrialFailed
        from ..progress import count
        from ..runtime import raise_if_terminated
        from ..storage import GRACE_INTERVALS, heartbeat_seconds

        objective = Objective(space, data, max_epochs=settings.max_epochs, min_recall=settings.min_recall,
                              patience=settings.patience, seed=settings.seed, target=settings.trials,
                              trials_dir=settings.out / TRIALS_DIR, run_id=settings.run_id,
                              # a fixed recipe the user chose runs as it is; the guard is for searches
                              max_mmacs=settings.max_mmacs if space.searched else None,
                              options=settings.train_options(), max_seconds=settings.max_trial_seconds,
                              on_report=lambda: progress(study, None), on_batch=progress.within_epoch)
        start = time.monotonic()
        poll = min(5.0, max(0.5, heartbeat_seconds() / 2))
        waiting_said = False
        while True:
            raise_if_terminated()
            finished = count(study)
            if finished >= settings.trials:
                return "trials"
            if len(counted_failures(study, settings.run_id)) >= settings.max_failures:
                return "failures"
            if settings.timeout is not None and time.monotonic() - start >= settings.timeout:
                return "timeout"
            running = count(study, (TrialState.RUNNING,))
            if finished + running >= settings.trials:
                # The last trials are in flight in other workers, or in a dead one until its
                # heartbeat goes stale: then it is failed (and re-queued) here and a slot opens.
                if not waiting_said:
                    from tqdm.auto import tqdm

                    tqdm.write(f"waiting for {running} running trial(s) to finish (a trial whose worker died "
                               f"is failed after {GRACE_INTERVALS * heartbeat_seconds()} s without heartbeat)")
                    waiting_said = True
                optuna.storages.fail_stale_trials(study)
                progress(study, None)
                time.sleep(poll)
                continue
            study.optimize(objective, n_trials=1, callbacks=[progress], catch=(TrialFailed,),
                           gc_after_trial=True)
