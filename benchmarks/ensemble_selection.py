"""Which trials should an ensemble average? Retrain every complete trial of a study, then compare rules.

A design-choice measurement (issue "models that hold up on new patients"), not part of the product.
The export averages the K trials with the best validation recall-constrained accuracy; that figure
saturates (0.96-0.97 for most complete trials), so the K best may be near-copies of one another.
This retrains each COMPLETE trial as the export would (its own seed, best-epoch weights on
validation), keeps its validation and test probabilities (in a JSON beside the study's runs, one
member at a time, so a stopped run resumes), and then scores selection rules that see validation
only: the K best by the search's objective (today's rule, K = 1, 3, 5), all trials, greedy forward
selection with replacement (Caruana et al. 2004) on validation log-loss or AUC, figures that keep
their resolution where the objective saturates, and greedy selection on log-loss without
replacement among the 3 or 5 best only. The test split judges the rules, once
each; nothing in the product reads it.

A trial that kept its network (``<out>/trials/<n>/network.keras``, what the export averages) is scored
as kept, not retrained: seconds instead of a training each, and the exact network the export used.

Members are averaged each at its own input size (the exported ensemble resizes from the largest one
inside the model; the difference is a resize).

    python benchmarks/ensemble_selection.py --study kermany-auto-60-s2
    python benchmarks/ensemble_selection.py --study pmnist-s0 --test-data ../shared/data/chest_xray
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the project root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, parse_study_args, scored_once, searched_run, table, trial_splits, write_json  # noqa: E402

GREEDY_STEPS = 10


def rules(members: list[dict], y_val) -> dict[str, list[int]]:
    from pneumo_models import metrics
    from pneumo_models.ensemble import choose_members

    by_objective = list(range(len(members)))  # members are stored best trial first
    out = {f"top{k}": by_objective[:k] for k in (1, 3, 5) if k <= len(members)}
    out["all"] = by_objective
    p_val = [m["p_val"] for m in members]
    # with replacement (a member added again weighs more), up to GREEDY_STEPS picks
    out["greedy-logloss"] = choose_members(p_val, y_val, replace=True, max_members=GREEDY_STEPS).members
    out["greedy-auc"] = choose_members(p_val, y_val, loss=lambda y, p: -metrics.auc(y, p), replace=True,
                                       max_members=GREEDY_STEPS).members
    for k in (3, 5):  # what the export does (--ensemble-rule greedy, --ensemble K): prune its K best by log-loss
        if k <= len(members):
            out[f"greedy-logloss-top{k}"] = choose_members(p_val[:k], y_val).members
    return out


def score_rule(members, picks, y_val, y_test, min_recall) -> dict:
    """The average of ``members[picks]``: its validation log-loss, then ``common.scored_once``."""
    import numpy as np

    from pneumo_models.metrics import log_loss

    p_val = np.mean([members[i]["p_val"] for i in picks], axis=0)
    p_test = np.mean([members[i]["p_test"] for i in picks], axis=0)
    return {"trials": [members[i]["number"] for i in picks], "val_logloss": log_loss(y_val, p_val),
            **scored_once(y_val, p_val, y_test, p_test, min_recall)}


def main(argv=None) -> int:
    args, out, path = parse_study_args(__doc__, argv, "ensemble")

    import numpy as np

    from pneumo_models import metrics
    from pneumo_models.training import fit, predict_proba
    from search.final_model import kept_network, top_trials
    from search.objective import trial_seed

    run = searched_run(args.study, out)
    if run is None:
        return 2
    study, attrs, _, min_recall, options = run
    trials = top_trials(study, k=len(study.trials))
    saved = json.loads(path.read_text()) if path.exists() else {}
    members = {m["number"]: m for m in saved.get("members", [])}
    y_val = y_test = None
    for rank, trial in enumerate(trials, start=1):
        params, dataset, test = trial_splits(run, trial, args.test_data)
        size = int(params["input_size"])
        if y_val is not None and (y_val, y_test) != (dataset.y_val.tolist(), test.y.tolist()):
            raise SystemExit(f"the splits at {size} px are not in the same order as at the other sizes")
        y_val, y_test = dataset.y_val.tolist(), test.y.tolist()
        if trial.number in members:
            continue
        t0 = time.perf_counter()
        model = kept_network(out, trial)
        kept, epochs = model is not None, trial.user_attrs.get("epochs")
        if not kept:
            model, result = fit(params, dataset, max_epochs=int(attrs.get("max_epochs", 10)), min_recall=min_recall,
                                patience=int(attrs.get("patience", 3)), seed=trial_seed(int(attrs["seed"]), trial.number),
                                restore_best=True, options=options)
            epochs = result.epochs
        p_val, p_test = predict_proba(model, dataset.x_val), predict_proba(model, test.x)
        members[trial.number] = {
            "number": trial.number, "rank": rank, "value": trial.value, "input_size": size,
            "kept": kept,
            "epochs": epochs, "seconds": round(time.perf_counter() - t0, 1),
            "val_auc": metrics.auc(dataset.y_val, p_val), "test_auc": metrics.auc(test.y, p_test),
            "p_val": p_val.tolist(), "p_test": p_test.tolist()}
        print(f"trial {trial.number} (rank {rank}, objective {trial.value:.4f}, {size} px): val auc "
              f"{members[trial.number]['val_auc']:.4f}, test auc {members[trial.number]['test_auc']:.4f}, "
              f"{'kept' if members[trial.number]['kept'] else 'retrained'}, {members[trial.number]['seconds']} s",
              flush=True)
        write_json(path, {"machine": machine(), "command": " ".join(sys.argv), "study": args.study,
                          "y_val": y_val, "y_test": y_test, "members": sorted(members.values(), key=lambda m: m["rank"])})
    ordered = sorted(members.values(), key=lambda m: m["rank"])
    results = {name: score_rule(ordered, picks, y_val, y_test, min_recall)
               for name, picks in rules(ordered, np.asarray(y_val)).items()}
    write_json(path, {"machine": machine(), "command": " ".join(sys.argv), "study": args.study, "y_val": y_val,
                      "y_test": y_test, "members": ordered, "rules": results})
    print(table(["rule", "trials", "val AUC", "val log-loss", "thr", "test acc / recall / spec", "test AUC",
                 "test best acc@floor"],
                [[name, " ".join(map(str, r["trials"])), f"{r['val_auc']:.4f}", f"{r['val_logloss']:.4f}",
                  f"{r['threshold']:.3f}", f"{r['test_accuracy']:.3f} / {r['test_recall']:.3f} / "
                  f"{r['test_specificity']:.3f}", f"{r['test_auc']:.4f}", f"{r['test_best_at_floor']:.4f}"]
                 for name, r in results.items()]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
