"""The study as the single record of a search: open (create or resume) it, load it, read it back.

A study's user attributes hold what it was made with (data fingerprint, space, recall floor,
split, seed, engine, ...). ``open_study`` writes them once and refuses to resume with others;
``searched_data`` reads them back for export and cross-validation.
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import optuna

from .data_access import StudyData
from .errors import UserError
from .requeue import requeue_interrupted_starts
from .storage import make_storage, redact, sqlite_path


# What a study made before an identity attribute existed was searched with.
IDENTITY_BEFORE = {"precision": "float32", "batch_scale": 1, "framing": "full"}


def recorded_training(attrs: dict) -> dict:
    """The training levers a study was searched with (``TrainOptions(**...)``): export and
    cross-validation retrain its recipes the same way. Defaults for studies made before them."""
    from .settings import TRAINING_DEFAULTS

    return {k: v if attrs.get(k) is None else attrs[k] for k, v in TRAINING_DEFAULTS.items()}


def open_study(settings, data: StudyData, space, engine) -> tuple[optuna.Study, list[dict]]:
    """The run's study, created or resumed, with ``engine``'s sampler and pruner; on a fresh study
    the space's start points are enqueued (when the engine takes them), on a resumed one those an
    interruption cut off are queued again. The study and the start points queued again (the caller says so)."""
    storage = make_storage(settings.storage)
    sampler, pruner = engine.make_sampler(settings), engine.make_pruner(settings)
    study = optuna.create_study(study_name=settings.study, storage=storage, sampler=sampler, pruner=pruner,
                                direction="maximize", load_if_exists=True)
    identity = {"fingerprint": data.info.fingerprint, "space": space.name, "overrides": settings.overrides,
                "input_sizes": list(space.input_sizes()),
                "min_recall": settings.min_recall, "val_fraction": settings.val_fraction, "seed": settings.seed,
                "framing": data.framing,
                # the training recipe beside the parameters: a trial's score depends on them
                "precision": settings.precision, "batch_scale": settings.batch_scale}
    existing = {**IDENTITY_BEFORE, **study.user_attrs}  # a study made before these were recorded
    if "fingerprint" in existing and existing.get("engine", "optuna") != settings.engine:
        raise UserError(f"study {settings.study!r} was searched with --engine {existing.get('engine', 'optuna')}, "
                        f"not {settings.engine}: resume it with that engine or use another --study")
    if "fingerprint" in existing:
        clashes = [f"{k} {existing.get(k)!r} (now {v!r})" for k, v in identity.items() if existing.get(k) != v]
        if existing.get("framing") != identity["framing"]:  # the default changed (full -> auto): say how to resume
            clashes.append(f"--framing {existing.get('framing')} resumes it")
        if clashes:
            raise UserError(f"study {settings.study!r} in {redact(settings.storage)} was made with "
                            f"{'; '.join(clashes)}: use another --study or the same options")
        if settings.starts and engine.takes_starts:
            return study, requeue_interrupted_starts(study)
    else:
        for key, value in {**identity, "data_source": data.source or "", "engine": settings.engine,
                           "max_epochs": settings.max_epochs, "patience": settings.patience, "max_mmacs": settings.max_mmacs,
                           "jit_compile": settings.jit_compile, "max_trial_seconds": settings.max_trial_seconds,
                           "sampler": engine.describe_sampler(sampler, settings),
                           "pruner": engine.describe_pruner(pruner, settings),
                           "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}.items():
            study.set_user_attr(key, value)
        if settings.starts and engine.takes_starts and not study.trials:
            for point in space.start_points()[:settings.trials]:  # none left WAITING past --trials
                study.enqueue_trial(point, user_attrs={"start_point": True}, skip_if_exists=True)
    return study, []


def recorded_space(settings) -> str | None:
    """The space the run's study was made with, when the study exists (``--space auto`` resumes it)."""
    path = sqlite_path(settings.storage)
    if path is not None and not Path(path).exists():
        return None
    storage = make_storage(settings.storage, heartbeat=False)
    try:
        return storage.get_study_user_attrs(storage.get_study_id_from_name(settings.study)).get("space")
    except KeyError:
        return None
    finally:
        storage.remove_session()


def load_study(name: str, url: str) -> optuna.Study:
    """A study that a run made, to export, report or cross-validate (no heartbeat: no trial runs)."""
    path = sqlite_path(url)
    if path is not None and not Path(path).exists():
        raise UserError(f"no study storage at {path}; run `python -m search run --study {name}` first or pass --storage")
    try:
        return optuna.load_study(study_name=name, storage=make_storage(url, heartbeat=False))
    except KeyError:
        raise UserError(f"no study named {name!r} in {redact(url)}") from None


def search_record(study: optuna.Study) -> dict:
    """The settings ``open_study`` recorded (its user attributes); refused for a study that
    pneumo-search did not make."""
    attrs = study.user_attrs
    if "min_recall" not in attrs:
        raise UserError(f"study {study.study_name!r} was not made by pneumo-search (no settings recorded)")
    return attrs


def searched_data(study: optuna.Study, *, cache_dir=None, progress: bool = True, needed_by: str = "export") -> StudyData:
    """The data the study was searched on, with its split; refused when the data changed since
    (its fingerprint differs)."""
    attrs = search_record(study)
    data = StudyData(attrs.get("data_source") or None, val_fraction=attrs["val_fraction"], seed=attrs["seed"],
                     cache_dir=cache_dir, progress=progress, framing=attrs.get("framing", "full"))
    if data.info.fingerprint != attrs["fingerprint"]:
        raise UserError(f"the data at {data.info.location} changed since study {study.study_name!r} ran "
                        f"(fingerprint differs): {needed_by} needs the same data")
    return data
