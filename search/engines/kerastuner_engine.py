"""KerasTuner engines: its Hyperband or Bayesian-optimisation oracle proposes, our training runs.

How it fits together:
- the space is the study's ``spaces.Space``, handed to the oracle through
  ``spaces.kerastuner_adapter.hyperparameters`` (no second copy of the space);
- a ``keras_tuner.Tuner`` subclass runs each trial with ``pneumo_models.training.fit`` (the same
  training, per-epoch recall-constrained accuracy and early stopping as the Optuna engine) and
  returns the trial's best validation recall-constrained accuracy to the oracle;
- every finished KerasTuner trial is then added to the study's Optuna storage
  (``study.add_trial``) with the same params, distributions, intermediate values and user
  attributes as an Optuna trial, plus ``engine_trial_id``, so report/export/predict work unchanged;
- KerasTuner keeps its own state in ``<out>/kerastuner/<project>/`` and resumes from it.

Hyperband continues a promoted configuration from the best-epoch weights of its previous
round, as KerasTuner's own ``Hyperband`` tuner does (weights only; the optimiser starts afresh).
Such a trial is stored with the epochs it trained itself (``epochs``) and its cumulative epochs
as intermediate-value steps. KerasTuner has no notion of a pruned trial: every trial that trains
to its allotted epochs is COMPLETE, one that cannot train (diverged, out of memory, an error) is
FAIL with ``fail_kind``, and one refused before training by ``--max-mmacs`` is PRUNED (KerasTuner
is told it scored 0), all as the Optuna objective records them.
"""
from __future__ import annotations

import gc
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import optuna
from optuna.trial import TrialState

from .base import Engine

OBJECTIVE = "val_rc_accuracy"
HYPERBAND_FACTOR = 3
BAYES_INITIAL_POINTS = 5  # as TPE's n_startup_trials; KerasTuner's default is 3 x dimensions (51 here)


class _Stop(Exception):
    """Raised before a new trial when the study has its trials, the time is up or too many failed."""

    def __init__(self, why: str):
        super().__init__(why)
        self.why = why  # RunOutcome.stopped_by


class _Attrs(dict):
    """Collects user attributes the way an Optuna trial would (for ``objective.record_fit``)."""

    def set_user_attr(self, key, value) -> None:
        self[key] = value


class KerasTunerEngine(Engine):
    default_pruner = "none"
    takes_pruner = False
    supports_workers = False  # the tuner's state lives in one process and one project folder
    takes_starts = False  # its oracle proposes every trial itself

    def __init__(self, name: str, algorithm: str):
        self.name, self.algorithm = name, algorithm
        self.summary = {
            "hyperband": f"KerasTuner HyperbandOracle (factor {HYPERBAND_FACTOR}, max epochs = --max-epochs), "
                         "promoted trials continue from their previous weights",
            "bayes": f"KerasTuner BayesianOptimizationOracle (Gaussian process, UCB; "
                     f"{BAYES_INITIAL_POINTS} random initial points), every trial trained to the end",
        }[algorithm]

    # The study's Optuna sampler and pruner are never asked anything by this engine; they are set
    # so that the study opens like any other (and a stray Optuna worker could not prune).
    def make_sampler(self, settings):
        return optuna.samplers.RandomSampler(seed=settings.seed)

    def make_pruner(self, settings):
        return optuna.pruners.NopPruner()

    def describe_sampler(self, sampler, settings) -> str:
        if self.algorithm == "hyperband":
            return (f"keras_tuner HyperbandOracle(max_epochs={settings.max_epochs}, factor={HYPERBAND_FACTOR}, "
                    f"seed={_oracle_seed(settings)})")
        return (f"keras_tuner BayesianOptimizationOracle(num_initial_points={BAYES_INITIAL_POINTS}, "
                f"alpha=1e-4, beta=2.6, seed={_oracle_seed(settings)})")

    def describe_pruner(self, pruner, settings) -> str:
        if self.algorithm == "hyperband":
            return "none (KerasTuner Hyperband allots each trial its epochs by successive halving)"
        return "none"

    def _oracle(self, settings, hp):
        import keras_tuner

        common = dict(objective=keras_tuner.Objective(OBJECTIVE, direction="max"), hyperparameters=hp,
                      allow_new_entries=False, tune_new_entries=False, seed=_oracle_seed(settings),
                      max_retries_per_trial=0, max_consecutive_failed_trials=10**9)
        if self.algorithm == "hyperband":
            return keras_tuner.oracles.HyperbandOracle(max_epochs=settings.max_epochs, factor=HYPERBAND_FACTOR,
                                                       hyperband_iterations=10**6, **common)
        return keras_tuner.oracles.BayesianOptimizationOracle(max_trials=None, num_initial_points=BAYES_INITIAL_POINTS,
                                                              **common)

    def search(self, study, settings, data, space, progress) -> str:
        from spaces.kerastuner_adapter import hyperparameters

        from ..layout import KERASTUNER_DIR

        directory = Path(settings.out) / KERASTUNER_DIR
        project = study.user_attrs.get("kerastuner_project")
        fresh = project is None or not (directory / project / "oracle.json").exists()
        if fresh:
            # A new project name whenever KerasTuner's state is missing, so engine trial ids never repeat.
            project = f"{settings.study}-{len(study.get_trials(deepcopy=False))}"
            study.set_user_attr("kerastuner_project", project)
        runner = _TrialRunner(study, settings, data, space, project, progress,
                              continues=self.algorithm == "hyperband")
        try:
            with _no_failure_tracebacks():
                tuner = _make_tuner(self._oracle(settings, hyperparameters(space)), runner, directory, project, fresh)
                tuner.search(verbose=0)
        except _Stop as stop:
            return stop.why
        return "engine"  # the oracle ended the search itself (it found no new configuration)


@contextmanager
def _no_failure_tracebacks():
    """KerasTuner prints the traceback of every failed trial (its ``config.DEBUG`` is on): the
    trial's one-line ``fail_reason`` and the run's summary say it already."""
    try:
        from keras_tuner.src import config
    except ImportError:  # another layout: its tracebacks stay
        yield
        return
    previous, config.DEBUG = getattr(config, "DEBUG", True), False
    try:
        yield
    finally:
        config.DEBUG = previous


def _oracle_seed(settings) -> int:
    return settings.seed + 1  # KerasTuner reads a seed of 0 as "no seed"


def _make_tuner(oracle, runner: "_TrialRunner", directory: Path, project: str, fresh: bool):
    import keras_tuner

    class StudyTuner(keras_tuner.Tuner):
        """A Tuner whose trials are our ``fit``; the oracle only proposes values and epochs."""

        def pre_create_trial(self):
            runner.check_stop()

        def run_trial(self, trial, *args, **kwargs):
            return runner.run(trial, self)

        def on_trial_end(self, trial):
            from ..runtime import clear_backend_session

            super().on_trial_end(trial)
            clear_backend_session()  # as after an Optuna trial: TensorFlow keeps graph state otherwise
            gc.collect()

    return StudyTuner(oracle=oracle, directory=str(directory), project_name=project, overwrite=fresh)


class _TrialRunner:
    """Runs one KerasTuner trial with our training and records it in the Optuna study."""

    def __init__(self, study, settings, data, space, project: str, progress, continues: bool):
        from spaces.optuna_adapter import distributions

        self.study, self.settings, self.data, self.space = study, settings, data, space
        self.project, self.progress, self.continues = project, progress, continues
        self.distributions = distributions(space)
        self.started = time.monotonic()
        self.recorded = {t.user_attrs["engine_trial_id"]: t for t in study.get_trials(deepcopy=False)
                         if "engine_trial_id" in t.user_attrs}

    def check_stop(self) -> None:
        """Before each new trial, the same three checks as the Optuna engine's loop, in its order."""
        from ..failures import counted_failures
        from ..progress import count
        from ..runtime import raise_if_terminated

        raise_if_terminated()
        s = self.settings
        if count(self.study) >= s.trials:
            raise _Stop("trials")
        if len(counted_failures(self.study, s.run_id)) >= s.max_failures:
            raise _Stop("failures")
        if s.timeout is not None and time.monotonic() - self.started >= s.timeout:
            raise _Stop("timeout")

    def _weights_path(self, tuner, trial_id: str) -> Path:
        return Path(tuner.get_trial_dir(trial_id)) / "best_epoch_weights.npz"

    def run(self, kt_trial, tuner) -> float:
        import keras_tuner

        from pneumo_models.model import estimate_mmacs
        from pneumo_models.training import FitResult, TooSlow, fit
        from spaces.kerastuner_adapter import values

        from ..failures import classify_failure
        from ..objective import record_fit, trial_seed, worker_label
        from ..runtime import free_accelerator_memory

        engine_id = f"{self.project}/{kt_trial.trial_id}"
        if engine_id in self.recorded:  # recorded before an interruption: do not train it again
            done = self.recorded[engine_id]
            if done.state == TrialState.COMPLETE:
                return float(done.value)
            if done.state == TrialState.PRUNED:
                return 0.0
            raise keras_tuner.errors.FailedTrialError(done.user_attrs.get("fail_reason", "failed before"))

        hpv = dict(kt_trial.hyperparameters.values)
        params = values(self.space, hpv)
        full = {**self.space.fixed_values(), **params}
        first = int(hpv.get("tuner/initial_epoch", 0))
        last = int(hpv.get("tuner/epochs", self.settings.max_epochs))
        previous = hpv.get("tuner/trial_id")
        number = len(self.study.get_trials(deepcopy=False))  # the number add_trial will give it
        seed = trial_seed(self.settings.seed, number)
        callbacks = []
        if previous is not None:
            path = self._weights_path(tuner, previous)
            if path.exists():
                callbacks.append(_LoadWeights(path))
        intermediate: dict[int, float] = {}

        def on_epoch(res) -> None:
            intermediate[first + res.epoch] = res.rc.accuracy
            self.progress.running_here(self.study, number, first + res.epoch)

        attrs = _Attrs(fixed_params=self.space.fixed_values(), engine_trial_id=engine_id, seed=seed,
                       kerastuner={"epochs": last, "initial_epoch": first,
                                   "bracket": hpv.get("tuner/bracket"), "round": hpv.get("tuner/round"),
                                   "continues": f"{self.project}/{previous}" if previous is not None else None,
                                   "weights_loaded": bool(callbacks)},
                       worker=worker_label(), run_id=self.settings.run_id)  # --max-failures counts this run's
        started = datetime.now()
        mmacs = estimate_mmacs(full)
        attrs["mmacs"] = round(mmacs, 3)
        max_mmacs = self.settings.max_mmacs if self.space.searched else None
        if max_mmacs and mmacs > max_mmacs:
            # Refused before training, as the Optuna engines do; KerasTuner is told it scored 0 so
            # that its oracle learns to avoid the region (Optuna's TPE learns it from the PRUNED state).
            attrs["pruned_reason"] = (f"refused before training: {mmacs:.0f} million multiply-adds per image "
                                      f"> --max-mmacs {max_mmacs:g}")
            self._record(params, attrs, {}, started, None, state=TrialState.PRUNED)
            return 0.0
        options = self.settings.train_options()
        attrs.update(options.trial_attrs(full))  # searched and effective batch size and learning rate
        result = FitResult()
        fail_kind, fail_reason, model = None, None, None
        self.progress.running_here(self.study, number, first)  # named as training starts, as Optuna's are
        try:
            model, _ = fit(full, self.data.at(int(full["input_size"])), max_epochs=max(1, last - first),
                           min_recall=self.settings.min_recall, patience=self.settings.patience, seed=seed,
                           on_epoch=on_epoch, callbacks=callbacks, restore_best=True, result=result,
                           on_batch=lambda done, steps: self.progress.within_epoch(number, done, steps),
                           options=options, max_seconds=self.settings.max_trial_seconds)
        except TooSlow as exc:
            # The time guard, as in the Optuna engines: PRUNED with its reason; KerasTuner is told 0.
            record_fit(attrs, result)
            if "best_epoch" in attrs:
                attrs["best_epoch"] += first
            attrs["pruned_reason"] = exc.reason
            self._record(params, attrs, intermediate, started, None, state=TrialState.PRUNED)
            return 0.0
        except Exception as exc:  # noqa: BLE001 - one trial's error must not end a long search (as in Optuna's)
            fail_kind, fail_reason = classify_failure(exc)
            if fail_kind == "out_of_memory":
                free_accelerator_memory()
        record_fit(attrs, result)
        if "best_epoch" in attrs:
            attrs["best_epoch"] += first  # cumulative, like the intermediate-value steps
        if fail_reason is not None:
            attrs.update(fail_kind=fail_kind, fail_reason=fail_reason)
            self._record(params, attrs, intermediate, started, None, state=TrialState.FAIL)
            raise keras_tuner.errors.FailedTrialError(fail_reason)
        if self.continues:
            _save_weights(model, self._weights_path(tuner, kt_trial.trial_id))
        value = float(result.best.rc.accuracy)
        self._record(params, attrs, intermediate, started, value, state=TrialState.COMPLETE)
        return value

    def _record(self, params, attrs, intermediate, started, value, *, state) -> None:
        trial = optuna.trial.create_trial(
            state=state, value=value,
            params=params, distributions=self.distributions, user_attrs=dict(attrs),
            intermediate_values=intermediate)
        trial.datetime_start, trial.datetime_complete = started, datetime.now()
        self.study.add_trial(trial)
        self.recorded[attrs["engine_trial_id"]] = trial
        self.progress.running_here(self.study, None)


def _save_weights(model, path: Path) -> None:
    """The model's weights (layers only, not the optimiser's state), as KerasTuner's checkpoint keeps."""
    import numpy as np

    from pneumo_models.atomic import atomic_file

    with atomic_file(path, "wb") as fh:
        np.savez(fh, *model.get_weights())


class _LoadWeights:
    """A Keras callback that loads a previous trial's best-epoch weights before training starts."""

    def __new__(cls, path: Path):
        import keras
        import numpy as np

        class LoadWeights(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                with np.load(path) as saved:
                    self.model.set_weights([saved[f"arr_{i}"] for i in range(len(saved.files))])

        return LoadWeights()

