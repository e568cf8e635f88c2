"""Does the epoch cap cut a study's networks short? Train trials again past the cap, then replay caps.

A design-choice measurement (issue "models that hold up on new patients"), not part of the product.
Most complete trials of the Lite0 default peak at or one epoch before the 10-epoch cap. This trains
each chosen trial's configuration again as its trial did (same data, split, seed and training
levers; with another number of threads than the search had, float sums round differently and the
epochs drift from the trial's) for ``--max-epochs`` epochs without early stopping, and keeps every
epoch's validation and test probabilities (a JSON per run, one trial at a time, so a stopped run
resumes). ``--summarize`` then replays the product's rule for each cap in ``--caps``: the epoch kept
is the best validation recall-constrained accuracy (a tie keeps the earlier epoch) with early
stopping after ``patience`` epochs without improvement (the study's, or ``--patience``); the
threshold comes from validation (``umbrella``); the test split is scored once per cap, for each
network and for the average of all of them. Nothing in the product reads the test split.

    python benchmarks/epoch_cap.py --study kermany-full-lite0 --trials 12 0 --max-epochs 15 \\
        --json runs/exp/epochcap_a.json
    python benchmarks/epoch_cap.py --summarize runs/exp/epochcap_a.json runs/exp/epochcap_b.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the project root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ROOT, machine, scored_once, searched_run, table, trial_splits, write_json  # noqa: E402


def kept_epoch(val_rc: list[float], cap: int, patience: int) -> int:
    """The 1-based epoch the product keeps when training stops at ``cap`` epochs (or earlier, after
    ``patience`` epochs without a strictly better validation recall-constrained accuracy)."""
    best, best_epoch, wait = None, 0, 0
    for epoch, value in enumerate(val_rc[:cap], start=1):
        if best is None or value > best:
            best, best_epoch, wait = value, epoch, 0
        else:
            wait += 1
        if patience and wait >= patience:
            break
    return best_epoch


def _tracker(x_val, x_test, log: list):
    import keras

    from pneumo_models.training import predict_proba

    class Tracker(keras.callbacks.Callback):
        """Every epoch's validation and test probabilities (after the product's evaluator: with an
        EMA of the weights, the averaged weights it validated)."""

        def on_epoch_end(self, epoch, logs=None):
            log.append({"epoch": epoch + 1,
                        "p_val": [round(float(v), 6) for v in predict_proba(self.model, x_val)],
                        "p_test": [round(float(v), 6) for v in predict_proba(self.model, x_test)]})
            print(f"  epoch {epoch + 1}", flush=True)

    return Tracker()


def train(args) -> int:
    from pneumo_models import metrics
    from pneumo_models.training import fit
    from search.objective import trial_seed

    out = Path(args.out or ROOT / "runs" / args.study)
    path = Path(args.json or ROOT / "runs" / "exp" / f"epochcap_{args.study}.json")
    run = searched_run(args.study, out)
    if run is None:
        return 2
    study, attrs, _, min_recall, options = run
    saved = json.loads(path.read_text()) if path.exists() else {}
    done = {m["number"]: m for m in saved.get("members", [])}
    for number in args.trials:
        trial = study.trials[number]
        if number in done:
            continue
        params, dataset, test = trial_splits(run, trial)
        log: list = []
        t0 = time.perf_counter()
        print(f"trial {number}: {args.max_epochs} epochs", flush=True)
        _, result = fit(params, dataset, max_epochs=args.max_epochs, min_recall=min_recall, patience=0,
                        seed=trial_seed(int(attrs["seed"]), number), restore_best=False, options=options,
                        callbacks=[_tracker(dataset.x_val, test.x, log)])
        done[number] = {
            "number": number, "value": trial.value, "params": params,
            "searched_val_rc": [trial.intermediate_values[k] for k in sorted(trial.intermediate_values)],
            "val_rc": [e.rc.accuracy for e in result.history], "val_auc": [e.auc for e in result.history],
            "seconds": round(time.perf_counter() - t0, 1), "epochs": log}
        write_json(path, {"machine": machine(), "command": " ".join(sys.argv), "study": args.study,
                          "min_recall": min_recall, "patience": int(attrs.get("patience", 3)),
                          "max_epochs_searched": int(attrs.get("max_epochs", 10)),
                          "y_val": dataset.y_val.tolist(), "y_test": test.y.tolist(),
                          "members": sorted(done.values(), key=lambda m: -m["value"])})
        m = done[number]
        print(f"trial {number}: val rc {' '.join(f'{v:.3f}' for v in m['val_rc'])} "
              f"(searched: {' '.join(f'{v:.3f}' for v in m['searched_val_rc'])}); "
              "test auc by epoch " + " ".join(f"{metrics.auc(test.y, e['p_test']):.3f}" for e in log), flush=True)
    return 0


def _cells(f: dict) -> list[str]:
    """A summary row's figures (``common.scored_once``'s)."""
    return [f"{f['val_rc']:.4f}", f"{f['val_auc']:.4f}",
            f"{f['test_accuracy']:.3f} / {f['test_recall']:.3f} / {f['test_specificity']:.3f}",
            f"{f['test_auc']:.4f}", f"{f['test_best_at_floor']:.3f}"]


def summarize(paths: list[str], caps: list[int], patience: int | None = None) -> int:
    import numpy as np

    runs = [json.loads(Path(p).read_text()) for p in paths]
    first = runs[0]
    y_val, y_test, min_recall = first["y_val"], first["y_test"], first["min_recall"]
    patience = first["patience"] if patience is None else patience
    if any((r["y_val"], r["y_test"]) != (y_val, y_test) for r in runs):
        raise SystemExit("the runs were not made on the same split")
    members = sorted((m for r in runs for m in r["members"]), key=lambda m: -m["value"])
    rows, results = [], {}
    for cap in caps:
        chosen = []
        for m in members:
            if len(m["epochs"]) < cap:
                raise SystemExit(f"trial {m['number']} was trained for {len(m['epochs'])} epochs, fewer than cap {cap}")
            e = kept_epoch(m["val_rc"], cap, patience)
            kept = m["epochs"][e - 1]
            chosen.append((m, kept, e))
            f = scored_once(y_val, np.asarray(kept["p_val"]), y_test, np.asarray(kept["p_test"]), min_recall)
            results[f"cap{cap}/trial{m['number']}"] = {"kept_epoch": e, **f}
            rows.append([cap, f"trial {m['number']}", e, *_cells(f)])
        p_val = np.mean([np.asarray(ep["p_val"]) for _, ep, _ in chosen], axis=0)
        p_test = np.mean([np.asarray(ep["p_test"]) for _, ep, _ in chosen], axis=0)
        f = scored_once(y_val, p_val, y_test, p_test, min_recall)
        results[f"cap{cap}/average"] = {"trials": [m["number"] for m, _, _ in chosen], **f}
        rows.append([cap, "average of all", " ".join(str(e) for _, _, e in chosen), *_cells(f)])
    for m in members:
        same = [round(a, 4) == round(b, 4) for a, b in zip(m["val_rc"], m["searched_val_rc"])]
        print(f"trial {m['number']}: the first {len(same)} epochs repeat the search's validation figures: "
              f"{sum(same)} of {len(same)}; {m['seconds']:.0f} s for {len(m['epochs'])} epochs")
    print(table(["cap", "network", "kept epoch", "val rc", "val AUC", "test acc / recall / spec", "test AUC",
                 "test best acc@floor"], rows))
    print(f"early stopping replayed: patience {patience}" + (" (none: the cap alone)" if not patience else ""))
    write_json(Path(paths[0]).with_name("epochcap_summary.json"),
               {"machine": machine(), "command": " ".join(sys.argv), "caps": caps, "patience": patience,
                "results": results})
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study")
    ap.add_argument("--out", help="the run folder (default runs/<study>)")
    ap.add_argument("--trials", type=int, nargs="+", help="trial numbers to train again")
    ap.add_argument("--max-epochs", type=int, default=15)
    ap.add_argument("--json", help="where the epochs' predictions go (default runs/exp/epochcap_<study>.json)")
    ap.add_argument("--summarize", nargs="+", metavar="JSON", help="replay caps over these runs' epochs")
    ap.add_argument("--caps", type=int, nargs="+", default=[10, 12, 15])
    ap.add_argument("--patience", type=int, help="early stopping replayed by --summarize (default: the study's; "
                                                   "0 = none, the cap alone)")
    args = ap.parse_args(argv)
    if args.summarize:
        return summarize(args.summarize, args.caps, args.patience)
    if not (args.study and args.trials):
        ap.error("--study and --trials are needed to train (or --summarize JSON ...)")
    return train(args)


if __name__ == "__main__":
    raise SystemExit(main())
