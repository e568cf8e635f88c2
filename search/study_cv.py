"""`python -m search cv`: patient-grouped k-fold cross-validation of the recipe a study would ship.

(``pneumo_models.crossval`` makes the folds and trains them; this module picks the recipe.)
"""
from __future__ import annotations

import time
from pathlib import Path

import optuna

from pneumo_models.atomic import write_json
from pneumo_models.crossval import cross_validate, pool

from .errors import UserError
from .final_model import aligned_sizes, full_params, top_trials
from .layout import CV_FILE
from .progress import EpochBar
from .runtime import clear_backend_session
from .settings import OUTPUT_LAYER_DEFAULT, THRESHOLD_RULE_DEFAULT, check_ensemble, check_output_layer
from .study import recorded_training, search_record, searched_data


def crossvalidate_study(study: optuna.Study, out_dir: str | Path, *, folds: int = 5, trial_number: int | None = None,
                        cache_dir=None, progress: bool = True, threshold_rule: str = THRESHOLD_RULE_DEFAULT,
                        ensemble: int = 1, overrides: dict | None = None, file: str | Path | None = None,
                        output_layer: str = OUTPUT_LAYER_DEFAULT) -> dict:
    """Cross-validate the recipe export would ship: the best trial (or ``trial_number``), or with
    ``ensemble`` K the K best distinct trials averaged; ``overrides`` replace parameters of every
    member (what-if: e.g. another class weighting)."""
    if folds < 2:
        raise UserError(f"--folds must be at least 2, got {folds}")
    attrs = search_record(study)
    if trial_number is None:
        trials = top_trials(study, check_ensemble(ensemble))
    else:
        if ensemble != 1:
            raise UserError("give either --trial N or --ensemble K, not both")
        trials = [t for t in study.get_trials(deepcopy=False) if t.number == trial_number and t.params]
        if not trials:
            raise UserError(f"study {study.study_name!r} has no trial {trial_number} with parameters")
    recipes = [{**full_params(t), **(overrides or {})} for t in trials]
    data = searched_data(study, cache_dir=cache_dir, progress=progress, needed_by="cross-validation")
    aligned_sizes(data, recipes)
    sizes = sorted({int(p["input_size"]) for p in recipes})
    max_epochs = int(attrs.get("max_epochs", 10))
    what = f"trial {trials[0].number}" if len(trials) == 1 else "trials " + ",".join(str(t.number) for t in trials)
    per_fold = max_epochs * len(recipes)
    bar = EpochBar(folds * per_fold, f"{folds}-fold CV of {what}", enabled=progress)

    def on_fold(k, fold):
        clear_backend_session()  # as between trials: the fold's networks are done with
        bar.say(acc=f"{fold['accuracy']:.3f}", recall=f"{fold['recall']:.3f}")
        bar.reach(per_fold * (k + 1))  # over the epochs that early stopping skipped

    start = time.perf_counter()
    try:
        result = cross_validate(recipes,
                                {s: pool(data.at(s)) for s in sizes}, folds=folds,
                                max_epochs=max_epochs, min_recall=float(attrs["min_recall"]),
                                patience=int(attrs.get("patience", 3)), seed=int(attrs["seed"]),
                                threshold_rule=threshold_rule, on_fold=on_fold,
                                on_epoch=bar.epoch, on_batch=bar.batch, options=_train_options(attrs),
                                output_layer=check_output_layer(output_layer))
    finally:
        bar.close()
    report = {"study": study.study_name, "trial": trials[0].number, "trials": [t.number for t in trials],
              "ensemble": len(recipes), "overrides": overrides or {}, "params": recipes[0],
              "members": recipes, "folds_k": folds,
              "grouping": "patient (file-name ids); stratified by class", "threshold_rule": threshold_rule,
              "output_layer": output_layer,
              "min_recall": attrs["min_recall"], "data_source": data.info.location,
              "fingerprint": data.info.fingerprint, "wall_seconds": round(time.perf_counter() - start, 1),
              **result.to_dict()}
    write_json(Path(file) if file else Path(out_dir) / CV_FILE, report)
    return report


def _train_options(attrs: dict):
    from pneumo_models.training import TrainOptions

    return TrainOptions(**recorded_training(attrs))  # the folds train as the study's trials did


def format_cv(report: dict) -> str:
    s = report["summary"]
    what = (f"trial {report['trial']}" if report.get("ensemble", 1) == 1
            else f"an ensemble of trials {', '.join(str(n) for n in report['trials'])}")
    if report.get("overrides"):
        what += " with " + ", ".join(f"{k}={v}" for k, v in report["overrides"].items())
    lines = [f"{report['folds_k']}-fold patient-grouped CV of {what} "
             f"({report['wall_seconds']:.0f} s); threshold rule {report['threshold_rule']}, "
             f"recall floor {report['min_recall']}",
             f"  {'metric':<18}{'mean':>8}{'std':>8}{'min':>8}{'max':>8}"]
    for name in ("accuracy", "recall", "specificity", "balanced_accuracy", "auc", "rc_accuracy"):
        m = s[name]
        lines.append(f"  {name:<18}{m['mean']:>8.4f}{m['std']:>8.4f}{m['min']:>8.4f}{m['max']:>8.4f}")
    return "\n".join(lines)
