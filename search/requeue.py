"""Start points an interruption cut off, queued again on resume, and run whole once.

A start point that Ctrl-C/SIGTERM cut off (FAIL, ``fail_kind`` ``interrupted``) is queued again when the study
is resumed (``requeue_interrupted_starts``, called by ``study.open_study``). Two machines resuming one study at
the same moment may both queue it: each copy records the trial it runs again (``REQUEUE_OF``), and the
objective fails a copy at once (``requeued_twice``) when an earlier one still holds the point
(``requeued_earlier``).
"""
from __future__ import annotations

import optuna
from optuna.trial import TrialState

from .failures import INTERRUPTED

REQUEUE_OF = "requeue_of"  # user attribute of a re-queued start point: the number of the trial it runs again
HOLDS = (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED)  # a trial holding its point


def _point_key(point: dict) -> frozenset:  # parameter values are numbers and strings: hashable
    return frozenset(point.items())


def interrupted_starts(trials) -> list[tuple[int, dict]]:
    """``(trial number, point)`` of each start point that Ctrl-C/SIGTERM cut off (FAIL, ``fail_kind``
    ``interrupted``) and that no other trial holds (waiting, running or finished), once per point, in
    the trials' order. One that failed otherwise (diverged, out of memory, an error) is not: it would
    fail again."""
    held = {_point_key(t.system_attrs.get("fixed_params", t.params)) for t in trials if t.state in HOLDS}
    again: list[tuple[int, dict]] = []
    for t in trials:
        point = t.system_attrs.get("fixed_params")
        if (t.state == TrialState.FAIL and t.user_attrs.get("start_point") and point is not None
                and t.user_attrs.get("fail_kind") == INTERRUPTED and _point_key(point) not in held):
            held.add(_point_key(point))
            again.append((t.number, point))
    return again


def requeue_interrupted_starts(study: optuna.Study) -> list[dict]:
    """Queue again the start points an interruption cut off (``interrupted_starts``): on resume each start
    point runs whole once. Each queued trial records the trial it runs again (``REQUEUE_OF``): two machines
    resuming one study at the same moment may both queue it, and the later copy then steps back when a
    worker takes it (``requeued_earlier``). The points queued again, in their trials' order."""
    again = interrupted_starts(study.get_trials(deepcopy=False))
    for number, point in again:
        study.enqueue_trial(point, user_attrs={"start_point": True, REQUEUE_OF: number})
    return [point for _, point in again]


def requeued_earlier(trial: optuna.Trial) -> int | None:
    """For a trial that runs an interrupted start point again, the number of an earlier trial that runs
    the same one and still holds it (waiting, running or finished), else None: then this trial is a copy."""
    of = trial.user_attrs.get(REQUEUE_OF)
    if of is None:
        return None
    return next((t.number for t in trial.study.get_trials(deepcopy=False) if t.number < trial.number
                 and t.user_attrs.get(REQUEUE_OF) == of and t.state in HOLDS), None)
