"""Which validation figure predicts how a network does on new patients? Random networks, every signal.

A design-choice measurement (issue "models that hold up on new patients"), not part of the product. The
search's objective (recall-constrained accuracy on validation) saturates at 0.97-0.98, so it may not
tell robust networks from brittle ones. This trains random configurations of a space on the
patient-grouped training split, records every candidate selection signal on validation (recall-
constrained accuracy, AUC, log-loss, Brier score), scores each network once on the test split, and
reports how well each signal ranks the networks by their test figures (Spearman correlation) and
what choosing the top k by each signal would have given. The test split only judges which objective
ships; nothing in the product reads it.

    python benchmarks/selection_signals.py --data ../shared/data/pneumoniamnist.npz \\
        --test-data ../shared/data/chest_xray --networks 30
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the project root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import DEFAULT_OUT, SHARED, machine, table, write_json  # noqa: E402

# name -> (trial/json key, higher is better)
SIGNALS = {"rc accuracy (today's objective)": ("val_rc", True), "AUC": ("val_auc", True),
           "log-loss": ("val_logloss", False), "Brier": ("val_brier", False),
           "rc accuracy, validation re-framed": ("val_reframed_rc", True),
           "AUC, validation re-framed": ("val_reframed_auc", True)}
REFRAME_VAL = 0.3  # every healthy validation film cropped tight, every pneumonia one resampled
OUTCOMES = {"test AUC": "test_auc", "test best acc@floor": "test_rc", "test acc (umbrella)": "test_acc_umbrella"}


def val_signals(y, p, min_recall: float) -> dict:
    import numpy as np
    from sklearn.metrics import brier_score_loss, log_loss

    from pneumo_models import metrics

    p = np.clip(np.asarray(p, dtype="float64"), 1e-7, 1 - 1e-7)
    return {"val_rc": metrics.recall_constrained_accuracy(y, p, min_recall).accuracy,
            "val_auc": metrics.auc(y, p), "val_logloss": float(log_loss(y, p, labels=[0, 1])),
            "val_brier": float(brier_score_loss(y, p))}


def summarise(runs: list[dict], top_k: int) -> tuple[list, list]:
    """Spearman correlation of each signal with each test outcome, and the test figures of the top k."""
    import numpy as np
    from scipy.stats import spearmanr

    corr_rows, pick_rows = [], []
    for name, (key, higher) in SIGNALS.items():
        if any(key not in r for r in runs):  # a JSON begun before this signal was recorded
            print(f"{name}: not in every network's record, left out", flush=True)
            continue
        s = np.array([r[key] for r in runs]) * (1 if higher else -1)
        row = [name]
        for okey in OUTCOMES.values():
            rho = spearmanr(s, [r[okey] for r in runs]).statistic
            row.append(f"{rho:+.2f}")
        corr_rows.append(row)
        top = np.argsort(-s, kind="stable")[:top_k]
        pick_rows.append([name, *[f"{np.mean([runs[i][okey] for i in top]):.3f}" for okey in OUTCOMES.values()]])
    return corr_rows, pick_rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(SHARED / "pneumoniamnist.npz"))
    ap.add_argument("--test-data", default=str(SHARED / "chest_xray"),
                    help="where the test split is (PneumoniaMNIST has none here: chest_xray at 28 px stands in)")
    ap.add_argument("--space", default="default")
    ap.add_argument("--input-size", type=int, default=28)
    ap.add_argument("--networks", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-epochs", type=int, default=10)
    ap.add_argument("--patience", type=int, default=3)
    ap.add_argument("--min-recall", type=float, default=0.95)
    ap.add_argument("--top-k", type=int, default=3)
    ap.add_argument("--json", default=str(DEFAULT_OUT / "selection_signals.json"))
    args = ap.parse_args(argv)

    import numpy as np
    import optuna

    from pneumo_models import metrics
    from pneumo_models.data import load_dataset, load_split
    from pneumo_models.reframe import reframe_healthy
    from pneumo_models.training import fit, predict_proba
    from spaces import get_space
    from spaces.optuna_adapter import suggest

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = get_space(args.space)
    data = load_dataset(args.data, args.input_size, progress=False)
    test = load_split(args.test_data, args.input_size, "test", progress=False)
    x_val_reframed = reframe_healthy(data.x_val, data.y_val, max_crop=REFRAME_VAL,
                                     rng=np.random.default_rng(args.seed), share=1.0)
    path = Path(args.json)
    runs = json.loads(path.read_text())["runs"] if path.exists() else []
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=args.seed))
    for i in range(args.networks):
        trial = study.ask()
        params = {**suggest(space, trial), "input_size": args.input_size}
        if any(r["params"] == params for r in runs):
            continue
        t0 = time.perf_counter()
        try:
            model, result = fit(params, data, max_epochs=args.max_epochs, min_recall=args.min_recall,
                                patience=args.patience, seed=args.seed)
        except Exception as exc:  # a diverged or impossible configuration: not a signal either way
            print(f"network {i}: failed ({type(exc).__name__}: {exc})", flush=True)
            continue
        p_val, p_test = predict_proba(model, data.x_val), predict_proba(model, test.x)
        p_reframed = predict_proba(model, x_val_reframed)
        thr = metrics.choose_threshold(data.y_val, p_val, args.min_recall, rule="umbrella")
        at = metrics.metrics_at(test.y, p_test, thr)
        entry = {"params": params, "epochs": result.epochs, "seconds": round(time.perf_counter() - t0, 1),
                 **val_signals(data.y_val, p_val, args.min_recall),
                 "val_reframed_rc": metrics.recall_constrained_accuracy(data.y_val, p_reframed,
                                                                        args.min_recall).accuracy,
                 "val_reframed_auc": metrics.auc(data.y_val, p_reframed),
                 "test_auc": metrics.auc(test.y, p_test),
                 "test_rc": metrics.recall_constrained_accuracy(test.y, p_test, args.min_recall).accuracy,
                 "test_acc_umbrella": at.accuracy, "test_recall_umbrella": at.recall,
                 "p_val": p_val.tolist(), "p_test": p_test.tolist()}
        runs.append(entry)
        write_json(path, {"machine": machine(), "command": " ".join(sys.argv), "y_val": data.y_val.tolist(),
                          "y_test": test.y.tolist(), "runs": runs})
        print(f"network {i}: val rc {entry['val_rc']:.3f} auc {entry['val_auc']:.4f} logloss "
              f"{entry['val_logloss']:.3f} re-framed rc {entry['val_reframed_rc']:.3f} auc "
              f"{entry['val_reframed_auc']:.4f} | test auc {entry['test_auc']:.4f} best {entry['test_rc']:.3f} "
              f"umbrella {at.accuracy:.3f}/{at.recall:.3f} | {entry['seconds']} s", flush=True)
    if len(runs) >= 3:
        corr, picks = summarise(runs, args.top_k)
        print(f"{len(runs)} networks; Spearman correlation of each validation signal with test figures:")
        print(table(["signal", *OUTCOMES], corr))
        print(f"mean test figures of the top {args.top_k} networks by each signal:")
        print(table(["signal", *OUTCOMES], picks))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
