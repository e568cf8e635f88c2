"""The Optuna objective: sample a configuration, train it, report each epoch, record the outcome.

A trial that cannot produce a model fails alone, with its reason in the user attributes
``fail_reason`` (one line) and ``fail_kind`` (see ``search.failures``); the study goes on. What a trial writes on disk lives in
``<out>/trials/<number>/`` (trial numbers are unique in a study, so workers never collide):
``epochs.jsonl`` (one line per epoch, written as it ends), ``trial.json`` (outcome), for a complete
trial ``network.keras`` (its best epoch's network, which the export averages rather than training
it again) and, for an unexpected error, ``error.txt`` (the traceback).
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.trial import TrialState

from pneumo_models.model import estimate_mmacs
from pneumo_models.training import FitResult, StopTraining, TooSlow, TrainOptions, fit
from spaces import Space
from spaces.optuna_adapter import suggest

from .data_access import StudyData
from .failures import INTERRUPTED, INTERRUPTED_REASON, REQUEUED_TWICE, classify_failure
from .layout import TRIAL_NETWORK
from .progress import quietly
from .runtime import clear_backend_session, free_accelerator_memory
from .requeue import requeued_earlier

# Trial user attributes every engine records (the report and export read these).
TRIAL_ATTRS = ("rc_accuracy", "auc", "recall", "precision", "specificity", "threshold",
               "epochs", "best_epoch", "seconds", "n_params")
CLAIMS = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)


def trial_seed(study_seed: int, trial_number: int) -> int:
    """The seed a trial's network is trained from: the study's seed plus the trial's number, so
    that the export (or a benchmark) that trains a trial's configuration again gets its network."""
    return study_seed + trial_number


class TrialFailed(RuntimeError):
    """A trial that cannot produce a model (diverged, out of memory, ...): it fails alone."""


def record_fit(trial, result) -> None:
    best = result.best
    attrs = {"epochs": result.epochs, "seconds": round(result.seconds, 3), "n_params": result.n_params}
    if best is not None:
        m = best.rc.metrics
        attrs.update(rc_accuracy=best.rc.accuracy, auc=best.auc, recall=m.recall, precision=m.precision,
                     specificity=m.specificity, threshold=best.rc.threshold, best_epoch=best.epoch)
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


def worker_label() -> str:
    """Which process ran a trial: ``host/pid``, plus the GPU it saw (``CUDA_VISIBLE_DEVICES``)."""
    label = f"{socket.gethostname()}/{os.getpid()}"
    gpu = os.environ.get("CUDA_VISIBLE_DEVICES")
    return f"{label} gpu {gpu}" if gpu not in (None, "") else label


class TrialFiles:
    """The files of one trial under ``<trials_dir>/<number>/`` (nothing when trials_dir is None)."""

    def __init__(self, trials_dir: Path | None, number: int):
        self.folder = Path(trials_dir) / str(number) if trials_dir is not None else None
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            (self.folder / "epochs.jsonl").write_text("")  # a retried number never exists; a rerun restarts
            (self.folder / TRIAL_NETWORK).unlink(missing_ok=True)

    def epoch(self, res) -> None:
        if self.folder is None:
            return
        line = {"epoch": res.epoch, "loss": res.loss, "rc_accuracy": res.rc.accuracy,
                "threshold": res.rc.threshold, "auc": res.auc, "seconds": round(res.seconds, 3)}
        with open(self.folder / "epochs.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(line) + "\n")

    def finish(self, **outcome) -> None:
        if self.folder is None:
            return
        from pneumo_models.atomic import write_json

        write_json(self.folder / "trial.json", outcome)

    def keep_network(self, model) -> bool:
        """Save a complete trial's best-epoch network for the export; False when it could not be
        (no folder, a full disk: the export then trains the recipe again, nothing is lost)."""
        if self.folder is None:
            return False
        from pneumo_models.kept import save_network

        try:
            save_network(model, self.folder / TRIAL_NETWORK)
        except Exception as exc:  # noqa: BLE001 - the trial's score stands either way
            print(f"warning: trial {self.folder.name}'s network not kept ({' '.join(str(exc).split())[:200]}); "
                  "the export will train it again", file=sys.stderr, flush=True)
            return False
        return True

    def error(self, text: str) -> None:
        if self.folder is not None:
            (self.folder / "error.txt").write_text(text, encoding="utf-8")


class Objective:
    def __init__(self, space: Space, data: StudyData, *, max_epochs: int, min_recall: float,
                 patience: int, seed: int, target: int | None = None, trials_dir: Path | None = None,
                 max_mmacs: float | None = None, run_id: str | None = None,
                 options: TrainOptions | None = None, max_seconds: float | None = None,
                 on_report: Callable[[], None] | None = None,
                 on_batch: Callable[[int, int, int], None] | None = None):
        """``target``: the study's --trials; a trial started once that many are finished or running
        (a race between workers for the last slot) fails at once as ``surplus``, so parallel workers
        end with exactly ``target`` finished trials. ``trials_dir``: where per-trial files go.
        ``options``: the training levers (--precision, --batch-scale, --jit-compile);
        ``max_seconds``: the time guard (--max-trial-seconds), pruning after the first epoch;
        ``on_report``: called as training starts and after each epoch is reported to the storage (the
        progress bar's refresh); ``on_batch(number, done, steps)``: after each training batch (how far
        the trial is into its epoch, for the bar)."""
        self.space, self.data = space, data
        self.max_epochs, self.min_recall, self.patience, self.seed = max_epochs, min_recall, patience, seed
        self.target, self.trials_dir, self.run_id = target, trials_dir, run_id
        self.max_mmacs = max_mmacs  # refuse configurations costlier than this per image (None/0: no limit)
        self.options, self.max_seconds, self.on_report = options or TrainOptions(), max_seconds, on_report
        self.on_batch = on_batch

    def _tell(self) -> None:
        """``on_report``, which must not fail a trial (``progress.quietly``)."""
        if self.on_report is not None:
            quietly(self.on_report)

    def _batch_hook(self, number: int) -> Callable[[int, int], None] | None:
        if self.on_batch is None:
            return None
        return lambda done, steps: quietly(lambda: self.on_batch(number, done, steps))

    def _surplus(self, trial: optuna.Trial) -> bool:
        if self.target is None:
            return False
        return len(trial.study.get_trials(deepcopy=False, states=CLAIMS)) > self.target

    def _fail(self, trial, files: TrialFiles, kind: str, reason: str, started: float, params: dict):
        trial.set_user_attr("fail_kind", kind)
        trial.set_user_attr("fail_reason", reason)
        files.finish(number=trial.number, state="FAIL", fail_kind=kind, fail_reason=reason, params=params,
                     worker=worker_label(), seconds=round(time.perf_counter() - started, 3))
        return TrialFailed(reason)

    def __call__(self, trial: optuna.Trial) -> float:
        try:
            return self._run(trial)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM, at any point of the trial: Optuna fails it, the run stops
            trial.set_user_attr("fail_kind", INTERRUPTED)
            trial.set_user_attr("fail_reason", INTERRUPTED_REASON)
            raise

    def _run(self, trial: optuna.Trial) -> float:
        if self.run_id:  # the command that ran it: --max-failures counts this run's failures only
            trial.set_user_attr("run_id", self.run_id)
        if self._surplus(trial):
            # Claims are checked after this trial became visible: of two workers racing for the last
            # slot, the later one sees both and steps back (rarely both; the slot is then retaken).
            trial.set_user_attr("fail_kind", "surplus")
            trial.set_user_attr("fail_reason", f"surplus: the study already had {self.target} trials "
                                               "finished or running when this one started")
            raise TrialFailed("surplus")
        earlier = requeued_earlier(trial)
        if earlier is not None:  # two machines resuming at once both queued this start point again
            trial.set_user_attr("fail_kind", REQUEUED_TWICE)
            trial.set_user_attr("fail_reason", f"requeued twice: trial {earlier} runs this start point again")
            raise TrialFailed(REQUEUED_TWICE)
        started = time.perf_counter()
        trial.set_user_attr("worker", worker_label())
        params = suggest(self.space, trial)
        trial.set_user_attr("fixed_params", self.space.fixed_values())
        files = TrialFiles(self.trials_dir, trial.number)
        mmacs = estimate_mmacs(params)
        trial.set_user_attr("mmacs", round(mmacs, 3))
        if self.max_mmacs and mmacs > self.max_mmacs:
            # Pruned before any training (the sampler learns to avoid the region; it cost nothing).
            reason = (f"refused before training: {mmacs:.0f} million multiply-adds per image "
                      f"> --max-mmacs {self.max_mmacs:g}")
            trial.set_user_attr("pruned_reason", reason)
            files.finish(number=trial.number, state="PRUNED", pruned_reason=reason, params=params,
                         worker=worker_label(), seconds=round(time.perf_counter() - started, 3))
            raise optuna.TrialPruned(reason)
        dataset = self.data.at(int(params["input_size"]))
        for key, value in self.options.trial_attrs(params).items():
            trial.set_user_attr(key, value)  # searched and effective batch size and learning rate
        self._tell()  # the bar names the trial now, not after its first epoch (minutes on a CPU)
        pruned = {}
        # A start point (a known-good recipe) runs whole: on one device the trials run one after another,
        # and Hyperband (brackets by a hash of the study's name) promotes only the best of fewer than three
        # at a rung, so a second start point sharing the first's bracket went on only while it led it (one
        # validation film decided it once). The pruner is still asked, so its rungs record this trial's
        # values for the trials after it.
        runs_whole = bool(trial.user_attrs.get("start_point"))

        def on_epoch(res) -> None:
            files.epoch(res)
            trial.report(res.rc.accuracy, res.epoch)
            self._tell()
            if trial.should_prune():
                if runs_whole:
                    if "would_stop_at" not in pruned:  # kept: the epoch the pruner would have stopped it
                        pruned["would_stop_at"] = res.epoch
                        trial.set_user_attr("pruner_would_stop_at", res.epoch)
                    return
                pruned["epoch"] = res.epoch
                raise StopTraining(f"pruned at epoch {res.epoch}")

        result = FitResult()
        try:
            model, _ = fit(params, dataset, max_epochs=self.max_epochs, min_recall=self.min_recall,
                           patience=self.patience, seed=trial_seed(self.seed, trial.number), on_epoch=on_epoch,
                           on_batch=self._batch_hook(trial.number), restore_best=True, result=result,
                           options=self.options, max_seconds=self.max_seconds)
            if files.keep_network(model):  # the network the trial scored is the one the export averages
                trial.set_user_attr("network_kept", True)
            del model
        except TooSlow as exc:
            # Pruned with a reason, like the cost guard; its first epoch is reported and kept.
            trial.set_user_attr("pruned_reason", exc.reason)
            files.finish(number=trial.number, state="PRUNED", pruned_at_epoch=1, pruned_reason=exc.reason,
                         params=params, worker=worker_label(), seconds=round(time.perf_counter() - started, 3))
            raise optuna.TrialPruned(exc.reason) from None
        except StopTraining:
            files.finish(number=trial.number, state="PRUNED", pruned_at_epoch=pruned.get("epoch"),
                         params=params, worker=worker_label(), seconds=round(time.perf_counter() - started, 3))
            raise optuna.TrialPruned(f"pruned at epoch {pruned.get('epoch')}") from None
        except Exception as exc:  # noqa: BLE001 - one trial's error must not end a long search
            kind, reason = classify_failure(exc)
            if kind == "out_of_memory":
                free_accelerator_memory()
            elif kind == "error":
                files.error(traceback.format_exc())
            raise self._fail(trial, files, kind, reason, started, params) from None
        finally:
            record_fit(trial, result)
            clear_backend_session()
        files.finish(number=trial.number, state="COMPLETE", value=result.best.rc.accuracy, params=params,
                     epochs=result.epochs, best_epoch=result.best.epoch, worker=worker_label(),
                     seconds=round(time.perf_counter() - started, 3))
        return result.best.rc.accuracy

