"""The Optuna objective: sample a configuration, train it, report each epoch, record the outcome."""
from __future__ import annotations

import optuna

from pneumo_models.training import FitResult, StopTraining, TrainingDiverged, fit
from spaces import Space
from spaces.optuna_adapter import suggest

from .data_access import StudyData

# Trial user attributes every engine records (the report and export read these).
TRIAL_ATTRS = ("rc_accuracy", "auc", "recall", "precision", "specificity", "threshold",
               "epochs", "best_epoch", "seconds", "n_params")


class TrialFailed(RuntimeError):
    """A trial that cannot produce a model (diverged, out of memory): it fails alone."""


def record_fit(trial, result) -> None:
    best = result.best
    attrs = {"epochs": result.epochs, "seconds": round(result.seconds, 3), "n_params": result.n_params}
    if best is not None:
        m = best.rc.metrics
        attrs.update(rc_accuracy=best.rc.accuracy, auc=best.auc, recall=m.recall, precision=m.precision,
                     specificity=m.specificity, threshold=best.rc.threshold, best_epoch=best.epoch)
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


class Objective:
    def __init__(self, space: Space, data: StudyData, *, max_epochs: int, min_recall: float,
                 patience: int, seed: int):
        self.space, self.data = space, data
        self.max_epochs, self.min_recall, self.patience, self.seed = max_epochs, min_recall, patience, seed

    def __call__(self, trial: optuna.Trial) -> float:
        params = suggest(self.space, trial)
        trial.set_user_attr("fixed_params", self.space.fixed_values())
        dataset = self.data.at(int(params["input_size"]))
        pruned = {}

        def on_epoch(res) -> None:
            trial.report(res.rc.accuracy, res.epoch)
            if trial.should_prune():
                pruned["epoch"] = res.epoch
                raise StopTraining(f"pruned at epoch {res.epoch}")

        result = FitResult()
        try:
            fit(params, dataset, max_epochs=self.max_epochs, min_recall=self.min_recall,
                patience=self.patience, seed=self.seed + trial.number, on_epoch=on_epoch,
                restore_best=False, result=result)
        except StopTraining:
            raise optuna.TrialPruned(f"pruned at epoch {pruned.get('epoch')}") from None
        except TrainingDiverged as exc:
            trial.set_user_attr("fail_reason", str(exc))
            raise TrialFailed(str(exc)) from None
        except MemoryError:
            trial.set_user_attr("fail_reason", "out of memory")
            raise TrialFailed("out of memory") from None
        except Exception as exc:  # backend OOMs (ResourceExhaustedError, torch OOM) have no common base
            if "out of memory" in str(exc).lower() or "resourceexhausted" in type(exc).__name__.lower():
                trial.set_user_attr("fail_reason", f"out of memory: {str(exc).splitlines()[0][:200]}")
                raise TrialFailed("out of memory") from None
            raise
        finally:
            record_fit(trial, result)
        return result.best.rc.accuracy
