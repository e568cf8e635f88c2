"""Open (create or resume) a study and run it until it holds N finished trials."""
from __future__ import annotations

import signal
from datetime import datetime, timezone

import optuna
from optuna.storages import RDBStorage
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from .data_access import StudyData
from .engines import get_engine
from .errors import UserError
from .objective import Objective, TrialFailed
from .progress import FINISHED, StudyProgress, count
from .settings import RunSettings

# Attributes that define what a study measures: resuming with other values would mix apples and pears.
HEARTBEAT_SECONDS = 20


def make_storage(url: str, *, heartbeat: bool = True) -> optuna.storages.BaseStorage:
    """An RDB storage with heartbeats, so a killed worker's trial is failed and retried."""
    kwargs = {}
    if url.startswith("sqlite"):
        from pathlib import Path

        path = url.split(":///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    if heartbeat:
        kwargs.update(heartbeat_interval=HEARTBEAT_SECONDS, grace_period=3 * HEARTBEAT_SECONDS)
        if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):  # optuna >= 4.9
            kwargs["heartbeat_stale_trial_callback"] = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2)
        else:
            kwargs["failed_trial_callback"] = optuna.storages.RetryFailedTrialCallback(max_retry=2)
    try:
        return RDBStorage(url, **kwargs)
    except Exception as exc:  # bad URL, unreachable server, missing driver
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot open storage {redact(url)}: {first[:200]}") from None


def redact(url: str) -> str:
    """The storage URL without its password (for messages, reports and cards)."""
    import re

    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def open_study(settings: RunSettings, data: StudyData) -> optuna.Study:
    space = settings.build_space(data.info.resolution)
    storage = make_storage(settings.storage)
    engine = get_engine(settings.engine)
    sampler, pruner = engine.make_sampler(settings), engine.make_pruner(settings)
    study = optuna.create_study(study_name=settings.study, storage=storage, sampler=sampler, pruner=pruner,
                                direction="maximize", load_if_exists=True)
    identity = {"fingerprint": data.info.fingerprint, "space": space.name, "overrides": settings.overrides,
                "input_sizes": list(space.input_sizes()),
                "min_recall": settings.min_recall, "val_fraction": settings.val_fraction, "seed": settings.seed}
    existing = study.user_attrs
    if "fingerprint" in existing and existing.get("engine", "optuna") != settings.engine:
        raise UserError(f"study {settings.study!r} was searched with --engine {existing.get('engine', 'optuna')}, "
                        f"not {settings.engine}: resume it with that engine or use another --study")
    if "fingerprint" in existing:
        clashes = [f"{k} {existing.get(k)!r} (now {v!r})" for k, v in identity.items() if existing.get(k) != v]
        if clashes:
            raise UserError(f"study {settings.study!r} in {redact(settings.storage)} was made with "
                            f"{'; '.join(clashes)}: use another --study or the same options")
    else:
        for key, value in {**identity, "data_source": data.source or "", "engine": settings.engine,
                           "max_epochs": settings.max_epochs, "patience": settings.patience,
                           "sampler": engine.describe_sampler(sampler, settings),
                           "pruner": engine.describe_pruner(pruner, settings),
                           "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}.items():
            study.set_user_attr(key, value)
    return study


def _sigterm_as_interrupt(signum, frame):
    raise KeyboardInterrupt


def run_trials(study: optuna.Study, settings: RunSettings, data: StudyData) -> dict:
    """Top the study up to ``settings.trials`` finished (complete or pruned) trials.

    Returns counts of what this call did. Re-running after an interruption resumes: finished
    trials are kept, a trial cut off mid-way is failed (by heartbeat or here) and not counted.
    """
    space = settings.build_space(data.info.resolution)
    objective = Objective(space, data, max_epochs=settings.max_epochs, min_recall=settings.min_recall,
                          patience=settings.patience, seed=settings.seed)
    before = count(study)
    failed_before = count(study, (TrialState.FAIL,))
    progress = StudyProgress(study, settings.trials, enabled=settings.progress)
    stop_at_target = MaxTrialsCallback(settings.trials, states=FINISHED)
    previous = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        while count(study) < settings.trials:
            if count(study, (TrialState.FAIL,)) - failed_before >= settings.max_failures:
                break
            study.optimize(objective, n_trials=settings.trials - count(study), timeout=settings.timeout,
                           callbacks=[stop_at_target, progress], catch=(TrialFailed,),
                           gc_after_trial=True)
            if settings.timeout is not None:
                break
    finally:
        signal.signal(signal.SIGTERM, previous)
        progress.close()
    return {"finished_before": before, "finished_now": count(study),
            "failed_here": count(study, (TrialState.FAIL,)) - failed_before}
