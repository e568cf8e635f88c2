"""What a run did: the one record every engine, the worker pool and ``run_search`` return."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna

    from pneumo_models.loading import ExportedModel

# Why a run stopped starting trials (RunOutcome.stopped_by):
STOPPED_BY = {
    "trials": "the study holds --trials finished (complete or pruned) trials",
    "timeout": "--timeout came first",
    "failures": "--max-failures failed trials (diverged, out of memory, error) in this run",
    "interrupted": "Ctrl-C or SIGTERM",
    "workers": "the worker processes stopped before the study held its trials",
    "engine": "the engine proposed no more trials (e.g. a KerasTuner oracle found no new configuration)",
}


@dataclass
class RunOutcome:
    """``run_search``'s answer (and, before export and report, an engine's).

    ``failures`` are this run's failed trials that ``--max-failures`` counts, as
    ``(trial number, reason)``; failed trials never count toward ``--trials``. ``problems``: one
    line per worker process that died. ``model_dir``/``report_path`` are None when export/report
    was off or did not happen (e.g. stopped by failures).
    """

    study: "optuna.Study"
    finished_before: int
    finished: int
    stopped_by: str
    failures: list[tuple[int, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    model_dir: Path | None = None
    report_path: Path | None = None

    @classmethod
    def after(cls, study: "optuna.Study", run_id: str, finished_before: int, stopped_by: str,
              problems: list[str] | None = None) -> "RunOutcome":
        """The outcome of a search loop that has just ended on ``study``."""
        from .failures import counted_failures
        from .progress import count

        return cls(study=study, finished_before=finished_before, finished=count(study), stopped_by=stopped_by,
                   failures=[(t.number, t.user_attrs.get("fail_reason", "")) for t in counted_failures(study, run_id)],
                   problems=list(problems or []))

    @property
    def new(self) -> int:
        """Finished trials this run added."""
        return self.finished - self.finished_before

    @cached_property
    def model(self) -> "ExportedModel | None":
        """The exported model, loaded on first use (None when nothing was exported)."""
        if self.model_dir is None:
            return None
        from pneumo_models.loading import load_model

        return load_model(self.model_dir)
