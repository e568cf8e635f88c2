"""Retrain the study's best configurations and export the final model (model, card, predictions).

(``pneumo_models.export`` writes the model folder; this module decides what goes in it.)

How the final model is made (also stated in README):
- The best trial is the COMPLETE trial with the highest validation recall-constrained accuracy.
- Its network is the one the trial scored: a COMPLETE trial keeps its best validation epoch's
  network (``<out>/trials/<number>/network.keras``; pruned trials keep nothing). Where that file
  is missing (a study searched elsewhere or by a KerasTuner engine, a full disk) the full
  configuration is trained again from scratch on the training split with the trial's own seed,
  for up to the study's max epochs, with the same early stopping, keeping the best epoch.
- With ``--ensemble K`` the K best distinct COMPLETE trials' networks (kept or retrained that
  way) are the candidates; ``--ensemble-rule top`` keeps all K, ``greedy`` those that lower the
  average's validation log-loss (pneumo_models.ensemble.choose_members), ``auto`` (default)
  ``greedy`` where the K were trained on one loss (label smoothing, class weights, mixup alike:
  then log-loss compares their ranking, not their calibration), else ``top``. ``seeds``
  takes the best trial alone and trains its configuration K-1 more times at export, each from
  its own seed (the spread a configuration has from its seed, averaged out, without the weaker
  configurations the next best trials bring; benchmarks/README.md "Fifteenth round"). The
  members are averaged in one Keras model (pneumo_models.ensemble); threshold and metrics are the
  ensemble's, at the largest member input size.
- The decision threshold (``--threshold-rule``): ``umbrella`` (default) is the highest threshold
  that keeps recall >= the floor on new patients with 95% probability, an order statistic of the
  validation pneumonia scores (Neyman-Pearson umbrella; pneumo_models.metrics.umbrella_threshold):
  the normal class, whose scores shift between sites, does not move it. ``validation`` is the one
  that gives the best validation accuracy among thresholds whose validation recall on pneumonia is
  >= the floor (lowest among ties); ``bootstrap`` lowers that, when needed, to the threshold that
  keeps recall >= the floor in 95% of bootstrap resamples of the validation pneumonia cases.
- Each member's output layer (``--output-layer``): ``refit`` refits it, after training, as an L2-penalised
  logistic regression on the features it reads of the training films (strength by validation log-loss), where
  that lowers validation log-loss (pneumo_models.probe.refit_output_layer); ``trained`` keeps it as training
  left it; ``auto`` (default) refits the networks fine-tuned from a backbone and keeps the CNNs' (README
  "Twentieth round"). Before the members are chosen and the threshold is set, so both see the refitted layers.
- Headline metrics get 95% percentile-bootstrap intervals over validation cases.
- When the data has a test split (and ``test`` is on), the final model is scored on it once, after
  all of the above is fixed (pneumo_models.export calls back here), into the card's ``metrics.test``
  and ``test_predictions.csv``. Nothing before that point decodes a test image.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import optuna
from optuna.trial import TrialState

from pneumo_models import metrics
from pneumo_models.export import export_model
from pneumo_models.ensemble import (build_ensemble, choose_members, ensemble_size, fit_members, refit_output_layers,
                                    refits_output_layer)
from pneumo_models.training import TrainingDiverged, TrainOptions, predict_proba

from .data_access import StudyData
from .errors import UserError
from .layout import MODEL_DIR, TRIAL_NETWORK, TRIALS_DIR
from .objective import trial_seed
from .progress import EpochBar, StepBar
from .runtime import forget_traced_gradients
from .scoring import check_test_split, score_model
from .settings import (ENSEMBLE_RULE_DEFAULT, OUTPUT_LAYER_DEFAULT, THRESHOLD_RULE_DEFAULT, check_ensemble,
                       check_ensemble_rule, check_output_layer)
from .storage import redact
from .study import recorded_training, search_record, searched_data


RULE_TEXT = {
    "validation": "threshold = best validation accuracy with recall >= min_recall",
    "bootstrap": ("threshold = min(best validation accuracy with recall >= min_recall, "
                  "threshold keeping recall >= min_recall in 95% of bootstrap resamples)"),
    "umbrella": ("threshold = the highest validation pneumonia score whose order statistic keeps recall >= "
                 "min_recall on new patients with 95% probability (Neyman-Pearson umbrella; normal scores not used)"),
}


def top_trials(study: optuna.Study, k: int = 1) -> list[optuna.trial.FrozenTrial]:
    """The k best COMPLETE trials, best first (ties: the earlier trial), one per distinct configuration."""
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
    if not complete:
        raise UserError(f"study {study.study_name!r} has no complete trial yet: nothing to export")
    chosen, seen = [], set()
    for t in sorted(complete, key=lambda t: (-t.value, t.number)):
        key = json.dumps(full_params(t), sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            chosen.append(t)
        if len(chosen) == k:
            break
    return chosen


# what shapes a network's training loss, and so its calibration, beyond its ranking
LOSS_PARAMS = ("label_smoothing", "class_weight", "mixup")


def resolve_ensemble_rule(rule: str, recipes: list[dict]) -> str:
    """``auto``: ``greedy`` when every candidate was trained on the same loss (LOSS_PARAMS alike),
    else ``top``. Validation log-loss judges a candidate's ranking only among networks calibrated
    alike: label smoothing or class weights move every probability without changing the order
    (benchmarks/README.md "Fifteenth round"). Any other rule is kept as asked."""
    if rule != "auto":
        return rule
    first = {k: recipes[0].get(k) for k in LOSS_PARAMS}
    return "greedy" if all({k: p.get(k) for k in LOSS_PARAMS} == first for p in recipes) else "top"


SEED_STRIDE = 1_000_003  # a seeds-ensemble member's seed stays clear of every trial's (trial_seed)


def ensemble_plan(study: optuna.Study, k: int, rule: str, base_seed: int) -> tuple[list, list[int]]:
    """The trials whose configurations the export trains (best first) and each network's seed:
    the K best distinct trials with their own seeds, or for ``seeds`` the best trial K times, its
    own seed first, then others at multiples of SEED_STRIDE from it."""
    if rule == "seeds":
        best = top_trials(study, 1)[0]
        return [best] * k, [trial_seed(base_seed, best.number) + SEED_STRIDE * j for j in range(k)]
    trials = top_trials(study, k)
    return trials, [trial_seed(base_seed, t.number) for t in trials]


def full_params(trial: optuna.trial.FrozenTrial) -> dict:
    return {**trial.user_attrs.get("fixed_params", {}), **trial.params}


class Member(NamedTuple):
    """How one exported network was trained: in its trial (kept) or again at export."""
    kept: bool
    epochs: int
    best_epoch: int
    rc_accuracy: float
    seconds: float

    @classmethod
    def of(cls, trial: optuna.trial.FrozenTrial, result) -> "Member":
        if result is not None:
            return cls(False, result.epochs, result.best.epoch, result.best.rc.accuracy, result.seconds)
        a = trial.user_attrs
        return cls(True, int(a.get("epochs", 0)), int(a.get("best_epoch", 0)), float(a.get("rc_accuracy", trial.value)),
                   float(a.get("seconds", 0.0)))


def kept_network(out_dir, trial: optuna.trial.FrozenTrial):
    """The network a COMPLETE trial kept (its best epoch), or None (then it is trained again)."""
    if not trial.user_attrs.get("network_kept"):
        return None
    from pneumo_models.kept import load_network

    return load_network(Path(out_dir) / TRIALS_DIR / str(trial.number) / TRIAL_NETWORK)


def _how(results: list[Member], other_seeds: bool = False) -> str:
    """``other_seeds``: some members are the best trial's configuration trained from other seeds."""
    if other_seeds and len(results) > 1:
        first = "the network its trial kept" if results[0].kept else "retrained with the trial's seed"
        return (f"the best trial's configuration trained {len(results)} times from different seeds ({first}, the "
                "others trained at export on the training split; best epochs on validation), probabilities averaged "
                "in one model; ")
    source = ("the network its trial kept (best epoch on validation)" if all(r.kept for r in results) else
              "retrained from scratch on the training split with the trial's seed (best epoch on validation)"
              if not any(r.kept for r in results) else
              "the networks their trials kept, the others retrained with their trials' seeds (best epochs on validation)")
    if len(results) == 1:
        return f"{source}; "
    return f"the {len(results)} best distinct trials, each {source}, probabilities averaged in one model; "


def _layer_text(layers: list) -> str:
    refitted = sum(isinstance(x, dict) and x["kept"] for x in layers)
    if not refitted:
        return ""
    which = "its output layer" if len(layers) == 1 else (
        "every member's output layer" if refitted == len(layers) else f"{refitted} of {len(layers)} members' output layers")
    return (f"{which} refitted on the training films' features as an L2-penalised logistic regression "
            "(strength by validation log-loss); ")


ENSEMBLE_RULE_TEXT = {
    "greedy": ("of the K best trials, those that lower the average's validation log-loss: forward selection "
               "from the one with the lowest, adding the one that lowers it most while one does"),
    "top": "the K best trials, all of them",
    "seeds": "the best trial's configuration, K networks from different seeds (its kept network the first)",
}


def _choose(networks, recipes: list[dict], data: StudyData, greedy: bool) -> tuple[list[int], list]:
    """Which candidates the ensemble keeps (indices) and the greedy steps ([] unless ``greedy``: the
    ``greedy`` rule over more than one candidate)."""
    if not greedy:
        return list(range(len(networks))), []
    splits = [data.at(int(p["input_size"])) for p in recipes]  # one split, in one order, at every size
    choice = choose_members([predict_proba(n, s.x_val) for n, s in zip(networks, splits)], splits[0].y_val)
    return choice.members, choice.steps


def _retrain_label(retrained: list[int], other_seeds: bool) -> str:
    """The progress bar's words for the networks trained at export (their trials' numbers)."""
    numbers = list(dict.fromkeys(retrained))
    if other_seeds and len(numbers) == 1:
        return f"train trial {numbers[0]}'s configuration from {len(retrained)} seed{'s' * (len(retrained) > 1)}"
    return f"retrain trial{'s' * (len(numbers) > 1)} {', '.join(map(str, numbers))}"


def aligned_sizes(data: StudyData, recipes: list[dict]) -> None:
    """Every member's input size must give the same split (the ensemble is scored at one size)."""
    sizes = sorted({int(p["input_size"]) for p in recipes})
    ids = [list(data.at(s).ids_val) for s in sizes]
    if any(other != ids[0] for other in ids[1:]):
        raise UserError(f"the validation split differs between input sizes {sizes}; export with --ensemble 1")


def export_best(study: optuna.Study, out_dir: str | Path, *, storage_url: str = "", cache_dir=None,
                progress: bool = True, threshold_rule: str = THRESHOLD_RULE_DEFAULT, ensemble: int = 1,
                ensemble_rule: str = ENSEMBLE_RULE_DEFAULT, output_layer: str = OUTPUT_LAYER_DEFAULT,
                test: bool = True) -> Path:
    attrs = search_record(study)
    study_seed = int(attrs["seed"])  # the sampler's, the split's and (with the trial number) each trial's
    asked = check_ensemble_rule(ensemble_rule)
    trials, seeds = ensemble_plan(study, check_ensemble(ensemble), ensemble_rule, study_seed)
    recipes = [full_params(t) for t in trials]
    ensemble_rule = resolve_ensemble_rule(asked, recipes)
    data = searched_data(study, cache_dir=cache_dir, progress=progress, needed_by="export")
    aligned_sizes(data, recipes)
    has_test = test and check_test_split(data.source, cache_dir=cache_dir) is not None
    min_recall, max_epochs = float(attrs["min_recall"]), int(attrs.get("max_epochs", 10))
    what = f"trial {trials[0].number}" if len({t.number for t in trials}) == 1 else f"{len(trials)} best trials"
    # a trial's kept network stands for its configuration from the trial's own seed, and for nothing else
    own_seed = [s == trial_seed(study_seed, t.number) for t, s in zip(trials, seeds)]
    greedy = ensemble_rule == "greedy" and len(trials) > 1
    refit = any(refits_output_layer(check_output_layer(output_layer), p) for p in recipes)
    after = StepBar(3 + refit + greedy + has_test, "export", enabled=progress)  # 1-2 min on a CPU with kept networks
    after.start(f"the network{'s' * (len(trials) > 1)} the trials kept")
    kept = [kept_network(out_dir, t) if own else None for t, own in zip(trials, own_seed)]
    retrained = [t.number for t, k in zip(trials, kept) if k is None]
    if retrained:
        after.rename(f"{_retrain_label(retrained, not all(own_seed))} (below)")
    bar = EpochBar(max_epochs * len(retrained), _retrain_label(retrained, not all(own_seed)),
                   enabled=progress and bool(retrained))
    done = []

    def on_member(i, result):  # a trained member is never traced again: its train step's graphs can go
        if result is not None:
            forget_traced_gradients()
            done.append(i)
            bar.reach(max_epochs * len(done))  # over the epochs that early stopping skipped

    try:
        networks, fitted = fit_members(
            recipes, data.at, max_epochs=max_epochs, min_recall=min_recall, patience=int(attrs.get("patience", 3)),
            seeds=seeds, on_epoch=bar.epoch, on_batch=bar.batch, on_member=on_member, ready=kept,
            options=TrainOptions(**recorded_training(attrs)))  # as the trials trained; float32 models out
    except TrainingDiverged as exc:
        raise UserError(f"retraining {what} diverged ({exc}); export another study or fewer --ensemble") from None
    finally:
        bar.close()
    results = [Member.of(t, r) for t, r in zip(trials, fitted)]
    candidates = list(dict.fromkeys(t.number for t in trials))
    if refit:
        after.start("refit output layers on the training films")
    layers = refit_output_layers(networks, recipes, data.at, choice=output_layer, step=after.rename)
    if greedy:
        after.start(f"choose members: {len(networks)} networks on validation")
    chosen, steps = _choose(networks, recipes, data, greedy)
    trials, recipes, seeds, own_seed, results, networks, layers = ([xs[i] for i in chosen] for xs in (
        trials, recipes, seeds, own_seed, results, networks, layers))
    after.start(f"the {'ensemble' if len(networks) > 1 else 'network'} on validation: threshold")
    model = build_ensemble(networks)
    size = ensemble_size(recipes)
    dataset = data.at(size)
    p_val = predict_proba(model, dataset.x_val)
    rc = metrics.recall_constrained_accuracy(dataset.y_val, p_val, min_recall)
    threshold = metrics.choose_threshold(dataset.y_val, p_val, min_recall, rule=threshold_rule,
                                         seed=study_seed)
    members = [{"number": t.number, "value": t.value, "input_size": int(p["input_size"]), "seed": s,
                "network": ("kept from its trial" if r.kept else "retrained" if own
                            else "trained at export from another seed"),
                "epochs_trained": r.epochs, "best_epoch": r.best_epoch,
                "rc_accuracy_at_best_epoch": r.rc_accuracy, "output_layer": layer, "params": p}
               for t, p, s, own, r, layer in zip(trials, recipes, seeds, own_seed, results, layers)]
    first, result = trials[0], results[0]
    folder = Path(out_dir) / MODEL_DIR

    def score_test(final_model):
        after.start("the test split, once")
        scored = score_model(final_model, data.source, split="test", input_size=size, threshold=threshold,
                             min_recall=min_recall, cache_dir=cache_dir, progress=progress, seed=study_seed,
                             framing=data.framing)
        return scored.block, scored.predictions_csv()

    after.start("validation intervals (bootstrap), the model folder")
    with after:
        return export_model(
            folder, model, y_val=dataset.y_val, p_val=p_val, ids_val=dataset.ids_val, threshold=threshold,
            min_recall=min_recall, input_size=size, class_names=dataset.class_names,
            best_trial={"number": first.number, "value": first.value, "params": recipes[0],
                        "attrs": {k: v for k, v in first.user_attrs.items() if k != "fixed_params"}},
            study={"name": study.study_name, "storage": redact(storage_url), "space": attrs.get("space"),
                   "sampler": attrs.get("sampler"), "pruner": attrs.get("pruner"), "engine": attrs.get("engine"),
                   "trials_complete": len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))),
                   "trials_pruned": len(study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)))},
            data={"source": data.info.location, "kind": data.info.kind, "fingerprint": data.info.fingerprint,
                  "val_fraction": attrs["val_fraction"], "split_seed": attrs["seed"], "framing": data.framing,
                  "summary": dataset.summary.to_dict(),
                  "layout_check": (study.user_attrs.get("data") or {}).get("layout_check")},
            training={"epochs_trained": result.epochs, "best_epoch": result.best_epoch, "seed": seeds[0],
                      "max_epochs": max_epochs, "rc_accuracy_at_best_epoch": result.rc_accuracy,
                      "seconds": round(sum(r.seconds for r in results), 2),
                      "threshold_rule": threshold_rule, "threshold_validation_rule": rc.threshold,
                      "output_layer": output_layer,
                      "ensemble": {"size": len(members), "combine": "mean of the members' probabilities",
                                   "rule": ENSEMBLE_RULE_TEXT[ensemble_rule], "rule_name": ensemble_rule,
                                   "rule_asked": asked, "candidates": candidates,
                                   "selection": [{"trials": [candidates[i] for i in step],
                                                  "val_log_loss": round(loss, 6)} for step, loss in steps],
                                   "members": members},
                      "how": _how(results, not all(own_seed)) + _layer_text(layers) + RULE_TEXT[threshold_rule]},
            seed=study_seed, score_test=score_test if has_test else None,
            test_status="the data has no test split" if test else "not scored (--no-test)", framing=data.framing)
