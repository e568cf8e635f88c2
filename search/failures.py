"""Why a trial failed, said one way for every engine, and which failures ``--max-failures`` counts.

A trial that cannot produce a model fails alone, with user attributes ``fail_kind`` and
``fail_reason`` (one line). The kinds:

- ``diverged``: the training loss became NaN or infinite;
- ``out_of_memory``: the backend ran out of (GPU) memory;
- ``error``: any other exception while training;
- ``interrupted``: Ctrl-C or SIGTERM stopped it (the run stops too);
- ``surplus``: it lost a race between workers for the study's last slot;
- ``requeued_twice``: a copy of a start point that two resuming machines both queued again.

Only the first three say something about the configuration or the machine; ``--max-failures``
counts those, of the run that made them (user attribute ``run_id``), never the others nor a
trial failed by heartbeat after its worker died.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna

COUNTED_FAILURES = ("diverged", "out_of_memory", "error")
INTERRUPTED = "interrupted"  # the fail kind of a trial Ctrl-C/SIGTERM cut off (resume re-queues its start point)
INTERRUPTED_REASON = "interrupted (SIGINT/SIGTERM) before it finished"
REQUEUED_TWICE = "requeued_twice"


def is_out_of_memory(exc: BaseException) -> bool:
    """TensorFlow's ResourceExhaustedError, torch's OutOfMemoryError, JAX's RESOURCE_EXHAUSTED..."""
    if isinstance(exc, MemoryError):
        return True
    name, text = type(exc).__name__.lower(), str(exc).lower()
    return ("outofmemory" in name or "resourceexhausted" in name or "out of memory" in text
            or "resource_exhausted" in text or "oom when allocating" in text)


def classify_failure(exc: BaseException) -> tuple[str, str]:
    """``(fail_kind, fail_reason)`` of an exception that ended a trial's training."""
    from pneumo_models.training import TrainingDiverged  # Keras is up: a trial was training

    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED, INTERRUPTED_REASON
    if isinstance(exc, TrainingDiverged):
        return "diverged", str(exc)
    first_line = " ".join(str(exc).split())[:300]
    if is_out_of_memory(exc):
        return "out_of_memory", f"out of memory: {first_line or type(exc).__name__}"
    return "error", f"{type(exc).__name__}: {first_line}"


def counted_failures(study: "optuna.Study", run_id: str | None = None) -> list["optuna.trial.FrozenTrial"]:
    """FAIL trials (of the run ``run_id``, when given) that say something about the search
    (diverged, out of memory, error); not those interrupted, surplus, requeued twice or failed by heartbeat."""
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
            if (run_id is None or t.user_attrs.get("run_id") == run_id)
            and t.user_attrs.get("fail_kind") in COUNTED_FAILURES]


def reason_kind(reason: str) -> str:
    """A failure reason cut to its kind, for a one-line summary of many failures."""
    reason = reason or "unknown"
    if reason.startswith("out of memory"):
        return "out of memory"
    if reason.startswith("training loss became") or "non-finite" in reason:
        return "diverged (loss not finite)"
    return reason.split(":", 1)[0][:60]
