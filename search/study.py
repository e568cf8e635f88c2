"""Open (create or resume) a study and run it until it holds N finished trials.

The same loop runs in a lone process and in each worker of a parallel or distributed search:
before starting a trial a worker checks that finished + running trials are fewer than N (else it
waits for the trials in flight, failing stale ones whose worker died), and the objective checks
again once its trial is visible to the others (see ``objective.Objective``), so several workers
on one study end with exactly N finished trials.
"""
from __future__ import annotations

import signal
import time
from datetime import datetime, timezone

import optuna
from optuna.trial import TrialState

from .data_access import StudyData
from .engines import get_engine
from .errors import UserError
from .progress import FINISHED, StudyProgress, count
from .settings import RunSettings
from .storage import GRACE_INTERVALS, heartbeat_seconds, make_storage, redact  # noqa: F401 - make_storage/redact re-exported

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
                           "max_epochs": settings.max_epochs, "patience": settings.patience, "max_mmacs": settings.max_mmacs,
                           "sampler": engine.describe_sampler(sampler, settings),
                           "pruner": engine.describe_pruner(pruner, settings),
                           "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}.items():
            study.set_user_attr(key, value)
        if settings.starts and engine.takes_starts and not study.trials:
            for point in space.start_points()[:settings.trials]:  # none left WAITING past --trials
                study.enqueue_trial(point, user_attrs={"start_point": True}, skip_if_exists=True)
    return study


# Failures that say something about the configuration or the machine (counted by --max-failures),
# unlike "interrupted", "surplus" (lost a race for the last slot) or a dead worker's (heartbeat).
COUNTED_FAILURES = ("diverged", "out_of_memory", "error")


def _sigterm_as_interrupt(signum, frame):
    raise KeyboardInterrupt


def counted_failures(study: optuna.Study, run_id: str | None = None) -> list[optuna.trial.FrozenTrial]:
    """FAIL trials (of the run ``run_id``, when given) that say something about the search
    (diverged, out of memory, error); not those interrupted, surplus or failed by heartbeat."""
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
            if (run_id is None or t.user_attrs.get("run_id") == run_id)
            and t.user_attrs.get("fail_kind") in COUNTED_FAILURES]


def run_trials(study: optuna.Study, settings: RunSettings, data: StudyData) -> dict:
    """Top the study up to ``settings.trials`` finished (complete or pruned) trials.

    Returns counts of what this call did. Re-running after an interruption resumes: finished
    trials are kept, a trial cut off mid-way is failed (here on Ctrl-C/SIGTERM, by heartbeat when
    its process died) and not counted. Stops early after ``settings.max_failures`` failed trials
    (diverged, out of memory, error) or at ``settings.timeout``.
    """
    from .objective import Objective, TrialFailed

    space = settings.build_space(data.info.resolution)
    objective = Objective(space, data, max_epochs=settings.max_epochs, min_recall=settings.min_recall,
                          patience=settings.patience, seed=settings.seed, target=settings.trials,
                          trials_dir=settings.out / "trials", run_id=settings.run_id,
                          # a fixed recipe the user chose runs as it is; the guard is for searches
                          max_mmacs=settings.max_mmacs if space.searched else None)
    start = time.monotonic()
    before = count(study)
    failed_before = count(study, (TrialState.FAIL,))
    progress = StudyProgress(study, settings.trials, enabled=settings.progress)
    poll = min(5.0, max(0.5, heartbeat_seconds() / 2))
    stopped_by = None
    waiting_said = False
    previous = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        while True:
            finished = count(study)
            if finished >= settings.trials:
                break
            if len(counted_failures(study, settings.run_id)) >= settings.max_failures:
                stopped_by = "failures"
                break
            if settings.timeout is not None and time.monotonic() - start >= settings.timeout:
                stopped_by = "timeout"
                break
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
    finally:
        signal.signal(signal.SIGTERM, previous)
        progress.close()
    failures = counted_failures(study, settings.run_id)
    return {"finished_before": before, "finished_now": count(study),
            "failed_here": count(study, (TrialState.FAIL,)) - failed_before,
            "failures": [(t.number, t.user_attrs.get("fail_reason", "")) for t in failures],
            "stopped_by": stopped_by}
