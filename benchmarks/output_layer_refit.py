"""Does refitting each network's output layer after training hold up on new patients? Kept networks, both ways.

A design-choice measurement (issue "models that hold up on new patients"), not part of the product. For every
COMPLETE trial of a study that kept its network, the network is scored as training left it and after
``pneumo_models.probe.refit_output_layer`` (what ``--output-layer refit``, the default, does at export: an
L2-penalised logistic regression on its features of the training films, kept where it lowers validation
log-loss): validation figures, the product's threshold rule, the test split once at that threshold. Then the
export's own choice among the 3 best trials (``--ensemble-rule auto``: greedy on validation log-loss where they
were trained on one loss, else all three) and its threshold, both ways; and a third way, "ranked": the 3
networks with the lowest validation log-loss after the refit, whatever their trials' values (the search ranks
trials by accuracy at the recall floor with their trained output layers; this asks whether ranking them by the
refitted layers the export ships would choose better networks). Nothing trains; the test split chooses nothing.

    python benchmarks/output_layer_refit.py --study kermany-cw0-1h
    python benchmarks/output_layer_refit.py --study pmnist-refit --test-data ../shared/data/chest_xray
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the project root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, parse_study_args, scored_once, searched_run, table, trial_splits, write_json  # noqa: E402

CANDIDATES = 3  # the export's default --ensemble


def exported(members: list[dict], way: str, y_val, y_test, min_recall: float) -> dict:
    """The export's choice among the first ``CANDIDATES`` of ``members`` by its rule (``--ensemble-rule auto``:
    "greedy" on validation log-loss where they were trained on one loss, else "top": all) and its scores, with
    the members' probabilities of ``way`` ("trained" or "refit")."""
    import numpy as np

    from pneumo_models.ensemble import choose_members
    from search.final_model import resolve_ensemble_rule

    best = members[:CANDIDATES]
    rule = resolve_ensemble_rule("auto", [m["params"] for m in best])
    p_val = [np.asarray(m[way]["p_val"]) for m in best]
    p_test = [np.asarray(m[way]["p_test"]) for m in best]
    chosen = choose_members(p_val, np.asarray(y_val)).members if rule == "greedy" else list(range(len(best)))
    scored = scored_once(y_val, np.mean([p_val[i] for i in chosen], axis=0), y_test,
                         np.mean([p_test[i] for i in chosen], axis=0), min_recall)
    return {"rule": rule, "trials": [best[i]["number"] for i in chosen], **scored}


def main(argv=None) -> int:
    args, out, path = parse_study_args(__doc__, argv, "output_layer")

    from pneumo_models.metrics import log_loss
    from pneumo_models.probe import refit_output_layer
    from pneumo_models.training import class_weights, model_input, predict_proba
    from search.final_model import full_params, kept_network, top_trials

    run = searched_run(args.study, out)
    if run is None:
        return 2
    members, y_val, y_test = [], None, None
    for trial in top_trials(run.study, k=len(run.study.trials)):
        if not trial.user_attrs.get("network_kept"):
            continue
        network = kept_network(out, trial)
        if network is None:
            continue
        params, split, test = trial_splits(run, trial, args.test_data)
        y_val, y_test = split.y_val.tolist(), test.y.tolist()
        member = {"number": trial.number, "value": trial.value, "input_size": int(params["input_size"]),
                  "params": full_params(trial)}
        for way in ("trained", "refit"):
            start = time.perf_counter()
            if way == "refit":
                member["output_layer"] = refit_output_layer(
                    network, model_input(split.x_train), split.y_train, model_input(split.x_val), split.y_val,
                    class_weight=class_weights(split.y_train, params.get("class_weight", "none"))).as_dict()
            p_val, p_test = predict_proba(network, split.x_val), predict_proba(network, test.x)
            member[way] = {**scored_once(y_val, p_val, y_test, p_test, run.min_recall),
                           "val_log_loss": log_loss(y_val, p_val), "seconds": round(time.perf_counter() - start, 1),
                           "p_val": p_val.tolist(), "p_test": p_test.tolist()}
        members.append(member)
        print(f"trial {trial.number}: val log-loss {member['trained']['val_log_loss']:.4f} -> "
              f"{member['refit']['val_log_loss']:.4f}, test auc {member['trained']['test_auc']:.4f} -> "
              f"{member['refit']['test_auc']:.4f}", flush=True)
    if not members:
        print(f"error: no trial of study {args.study!r} kept its network", file=sys.stderr)
        return 2
    exports = {way: exported(members, way, y_val, y_test, run.min_recall) for way in ("trained", "refit")}
    by_refit = sorted(members, key=lambda m: (m["refit"]["val_log_loss"], m["number"]))
    exports["ranked"] = exported(by_refit, "refit", y_val, y_test, run.min_recall)
    write_json(path, {"machine": machine(), "command": " ".join(sys.argv), "study": args.study, "y_val": y_val,
                      "y_test": y_test, "members": members, "exports": exports})
    rows = [[f"trial {m['number']}", way, f"{m[way]['val_log_loss']:.4f}", f"{m[way]['val_auc']:.4f}",
             f"{m[way]['threshold']:.3f}", f"{m[way]['test_accuracy']:.3f} / {m[way]['test_recall']:.3f} / "
             f"{m[way]['test_specificity']:.3f}", f"{m[way]['test_auc']:.4f}"]
            for m in members for way in ("trained", "refit")]
    rows += [[f"export ({e['rule']}): trials {' '.join(map(str, e['trials']))}", way, "", f"{e['val_auc']:.4f}",
              f"{e['threshold']:.3f}", f"{e['test_accuracy']:.3f} / {e['test_recall']:.3f} / "
              f"{e['test_specificity']:.3f}", f"{e['test_auc']:.4f}"] for way, e in exports.items()]
    print(table(["network", "output layer", "val log-loss", "val AUC", "thr", "test acc / recall / spec",
                 "test AUC"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
