"""The study progress bar: what it counts, and the time left under --timeout instead of a trial-rate estimate."""
import io

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from search.progress import StudyProgress, progress_info


def _study() -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    dist = {"x": FloatDistribution(0, 1)}
    for state, value in [(TrialState.COMPLETE, 0.91), (TrialState.COMPLETE, 0.95), (TrialState.PRUNED, None),
                         (TrialState.FAIL, None), (TrialState.RUNNING, None)]:
        study.add_trial(create_trial(state=state, value=value, params={"x": 0.5}, distributions=dist))
    return study


def test_progress_info_counts_what_trials_counts():
    study = _study()
    info = progress_info(study, target=10, deadline=None, now=0.0)
    assert (info.finished, info.pruned, info.failed, info.best, info.timeout_left) == (3, 1, 1, 0.95, None)
    assert progress_info(study, target=2, deadline=None, now=0.0).finished == 2  # never past the target
    assert progress_info(study, target=10, deadline=100.0, now=40.0).timeout_left == pytest.approx(60.0)
    assert progress_info(study, target=10, deadline=100.0, now=140.0).timeout_left == 0.0
    assert progress_info(optuna.create_study(), target=5, deadline=None, now=0.0).best is None


def _line(timeout) -> str:
    out = io.StringIO()
    bar = StudyProgress(_study(), 100, timeout=timeout, file=out)
    bar.close()
    return out.getvalue().strip().split("\r")[-1]


def test_a_timeout_replaces_the_trial_rate_estimate():
    # a default run (--trials 100, 2 h) stops on its timeout: an estimate for 100 trials would promise a day
    line = _line(7200)
    assert "3/100" in line and "best=0.9500" in line and "pruned=1" in line and "failed=1" in line
    assert "timeout_in=1:59:5" in line or "timeout_in=2:00:00" in line
    assert "<" not in line
    line = _line(None)
    assert "3/100" in line and "<" in line and "timeout_in" not in line
