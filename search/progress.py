"""A study progress bar: trials finished out of the target, pruned count, best score so far."""
from __future__ import annotations

import optuna
from optuna.trial import TrialState
from tqdm.auto import tqdm

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def count(study: optuna.Study, states=FINISHED) -> int:
    return len(study.get_trials(deepcopy=False, states=states))


class StudyProgress:
    """Optuna callback that moves a tqdm bar as trials finish (in this or any other worker)."""

    def __init__(self, study: optuna.Study, target: int, *, enabled: bool = True):
        self.target = target
        self.bar = tqdm(total=target, initial=min(count(study), target), desc="trials", unit="trial",
                        disable=not enabled, dynamic_ncols=True)
        self._refresh(study)

    def _refresh(self, study: optuna.Study) -> None:
        trials = study.get_trials(deepcopy=False)
        done = sum(t.state in FINISHED for t in trials)
        pruned = sum(t.state == TrialState.PRUNED for t in trials)
        failed = sum(t.state == TrialState.FAIL for t in trials)
        values = [t.value for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
        best = f"{max(values):.4f}" if values else "-"
        self.bar.n = min(done, self.target)
        self.bar.set_postfix(pruned=pruned, failed=failed, best=best, refresh=False)
        self.bar.refresh()

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self._refresh(study)

    def close(self) -> None:
        self.bar.close()
