"""Retrain the study's best configuration and export it (model, card, validation predictions).

How the final model is made (also stated in README):
- The best trial is the COMPLETE trial with the highest validation recall-constrained accuracy.
- Its full configuration is trained again from scratch on the training split with the trial's
  own seed, for up to the study's max epochs, with the same early stopping; the weights of the
  epoch with the best validation recall-constrained accuracy are kept. (Trials do not keep
  weights: most of them are pruned, and storing every one would cost disk for nothing.)
- The decision threshold (``--threshold-rule``): ``validation`` is the one that gives the best
  validation accuracy among thresholds whose validation recall on pneumonia is >= the floor
  (lowest among ties); ``bootstrap`` (default) lowers it, when needed, to the threshold that keeps
  recall >= the floor in 95% of bootstrap resamples of the validation pneumonia cases, because a
  threshold that just touches the floor on validation misses it on about half of new samples.
- Headline metrics get 95% percentile-bootstrap intervals over validation cases.
"""
from __future__ import annotations

from pathlib import Path

import optuna
from optuna.trial import TrialState
from tqdm.auto import tqdm

from pneumo_models import metrics
from pneumo_models.export import export_model
from pneumo_models.training import FitResult, TrainingDiverged, fit, predict_proba

from .data_access import StudyData
from .errors import UserError
from .study import redact


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial:
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
    if not complete:
        raise UserError(f"study {study.study_name!r} has no complete trial yet: nothing to export")
    return max(complete, key=lambda t: (t.value, -t.number))


def full_params(trial: optuna.trial.FrozenTrial) -> dict:
    return {**trial.user_attrs.get("fixed_params", {}), **trial.params}


def export_best(study: optuna.Study, out_dir: str | Path, *, storage_url: str = "", cache_dir=None,
                progress: bool = True, threshold_rule: str = "bootstrap") -> Path:
    attrs = study.user_attrs
    if "min_recall" not in attrs:
        raise UserError(f"study {study.study_name!r} was not made by pneumo-search (no settings recorded)")
    trial = best_trial(study)
    params = full_params(trial)
    data = StudyData(attrs.get("data_source") or None, val_fraction=attrs["val_fraction"], seed=attrs["seed"],
                     cache_dir=cache_dir, progress=progress)
    if data.info.fingerprint != attrs["fingerprint"]:
        raise UserError(f"the data at {data.info.location} changed since study {study.study_name!r} ran "
                        "(fingerprint differs): export needs the same data")
    dataset = data.at(int(params["input_size"]))
    min_recall, max_epochs = float(attrs["min_recall"]), int(attrs.get("max_epochs", 10))
    seed = int(attrs["seed"]) + trial.number
    bar = tqdm(total=max_epochs, desc=f"retrain trial {trial.number}", unit="epoch", disable=not progress)
    result = FitResult()
    try:
        model, result = fit(params, dataset, max_epochs=max_epochs, min_recall=min_recall,
                            patience=int(attrs.get("patience", 3)), seed=seed, result=result,
                            on_epoch=lambda r: bar.update(1), restore_best=True)
    except TrainingDiverged as exc:
        raise UserError(f"retraining trial {trial.number} diverged ({exc}); export another study") from None
    finally:
        bar.close()
    p_val = predict_proba(model, dataset.x_val)
    rc = metrics.recall_constrained_accuracy(dataset.y_val, p_val, min_recall)
    threshold = metrics.choose_threshold(dataset.y_val, p_val, min_recall, rule=threshold_rule,
                                         seed=int(attrs["seed"]))
    folder = Path(out_dir) / "best_model"
    return export_model(
        folder, model, y_val=dataset.y_val, p_val=p_val, ids_val=dataset.ids_val, threshold=threshold,
        min_recall=min_recall, input_size=int(params["input_size"]), class_names=dataset.class_names,
        best_trial={"number": trial.number, "value": trial.value, "params": params,
                    "attrs": {k: v for k, v in trial.user_attrs.items() if k != "fixed_params"}},
        study={"name": study.study_name, "storage": redact(storage_url), "space": attrs.get("space"),
               "sampler": attrs.get("sampler"), "pruner": attrs.get("pruner"), "engine": attrs.get("engine"),
               "trials_complete": len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))),
               "trials_pruned": len(study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)))},
        data={"source": data.info.location, "kind": data.info.kind, "fingerprint": data.info.fingerprint,
              "val_fraction": attrs["val_fraction"], "split_seed": attrs["seed"],
              "summary": dataset.summary.to_dict()},
        training={"epochs_trained": result.epochs, "best_epoch": result.best.epoch, "seed": seed,
                  "max_epochs": max_epochs, "rc_accuracy_at_best_epoch": result.best.rc.accuracy,
                  "seconds": round(result.seconds, 2),
                  "threshold_rule": threshold_rule, "threshold_validation_rule": rc.threshold,
                  "how": "retrained from scratch on the training split; best-epoch weights on validation; "
                         + ("threshold = best validation accuracy with recall >= min_recall" if threshold_rule == "validation"
                            else "threshold = min(best validation accuracy with recall >= min_recall, "
                                 "threshold keeping recall >= min_recall in 95% of bootstrap resamples)")},
        seed=int(attrs["seed"]))
