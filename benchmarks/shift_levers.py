"""Which design choices hold up on new patients? Train one recipe with variants, score validation and test.

A design-choice measurement (issue "models that hold up on new patients"), not part of the product:
each variant is trained on the patient-grouped training split, its threshold is chosen on validation
by every threshold rule, and then it is scored once on the data's test split. The test split only
judges which defaults ship; nothing in the product reads it.

    python benchmarks/shift_levers.py --data ../shared/data/chest_xray --variants base standardize
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

VARIANTS = {
    "base": {},
    "standardize": {"intensity": "standardize"},
    "strong-photometric": {"aug_contrast": 0.4, "aug_brightness": 0.3, "aug_blur": 1.0},
    "standardize+geometric": {"intensity": "standardize", "aug_rotation": 0.05, "aug_zoom": 0.15,
                              "aug_shift": 0.1, "aug_blur": 1.0},
    "128px": {"input_size": 128},
    "standardize-128px": {"intensity": "standardize", "input_size": 128},
    "balanced": {"class_weight": "balanced"},
    "crop": {"crop": 0.1},
    "crop-standardize": {"crop": 0.1, "intensity": "standardize"},
    "adam-wide-aug": {"optimizer": "adam", "aug_rotation": 0.05, "aug_zoom": 0.15, "aug_shift": 0.1},
    "standardize-balanced": {"intensity": "standardize", "class_weight": "balanced"},
    "equalize": {"intensity": "equalize"},
    "ema": {"ema": 0.99},
    "weight-decay": {"weight_decay": 0.05},
    # Keras' decay is decoupled and scaled by the learning rate (w -= lr * wd * w each step): at the
    # recipes' 1.2e-4 to 2.5e-4 only wd of order 1 shrinks the weights by a visible fraction in 10 epochs
    "ema+wd0.5": {"ema": 0.99, "weight_decay": 0.5},
    "ema+wd1": {"ema": 0.99, "weight_decay": 1.0},
    "equalize+ema": {"intensity": "equalize", "ema": 0.99},
    "framing": {"aug_crop": 0.3},
    "framing-strong": {"aug_crop": 0.45},
    "debias": {"debias": "layout"},
    "debias+framing": {"debias": "layout", "aug_crop": 0.3},
    "mixup": {"mixup": 0.2},
    "mixup+ema": {"mixup": 0.2, "ema": 0.99},
    "standardize+ema": {"intensity": "standardize", "ema": 0.99},
    "reframe+ema": {"reframe": 0.3, "ema": 0.99},
    "reframe-strong+ema": {"reframe": 0.45, "ema": 0.99},
    "reframe+ema-128px": {"reframe": 0.3, "ema": 0.99, "input_size": 128},
    "erase+ema": {"aug_erase": 0.5, "ema": 0.99},
    # one-cycle learning rate (warm-up, then a cosine to zero) peaking at finetune_pretrained.py's 3e-4
    "cosine+ema": {"lr_schedule": "cosine", "learning_rate": 3e-4, "ema": 0.99},
    "cosine+ema-128px": {"lr_schedule": "cosine", "learning_rate": 3e-4, "ema": 0.99, "input_size": 128},
    # what the weaker searched Lite0 trials had and the start recipe has not (benchmarks/README.md "Thirteenth round")
    "ema-128px": {"ema": 0.99, "input_size": 128},  # the pretrained space's start recipe as a CPU run trains it
    "smoothing+ema-128px": {"label_smoothing": 0.065, "ema": 0.99, "input_size": 128},
    "balanced+ema-128px": {"class_weight": "balanced", "ema": 0.99, "input_size": 128},
    "probe+ema-128px": {"head_init": "probe", "ema": 0.99, "input_size": 128},
    "smoothing+ema": {"label_smoothing": 0.065, "ema": 0.99},
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(SHARED / "chest_xray"))
    ap.add_argument("--test-data", help="where the test split is (default: --data); PneumoniaMNIST has none here: "
                                        "../shared/data/chest_xray at 28 px is the stand-in")
    ap.add_argument("--recipe", default="kermany", choices=("kermany", "pneumoniamnist", "lite0"),
                    help="the start point: the default space's two recipes, or EfficientNet-Lite0 fine-tuned from "
                         "ImageNet weights (downloaded once) at 160 px")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--framing", default="full", choices=("full", "lungs"),
                    help="crop every film (training, validation and test) to its lung fields before the resize")
    ap.add_argument("--split-seed", type=int, default=0,
                    help="which patient-grouped validation split (a run's --seed draws the split of that seed)")
    ap.add_argument("--max-epochs", type=int, default=10)
    ap.add_argument("--patience", type=int, default=3)
    ap.add_argument("--min-recall", type=float, default=0.95)
    ap.add_argument("--json", default=str(DEFAULT_OUT / "shift_levers.json"))
    args = ap.parse_args(argv)

    import numpy as np

    from pneumo_models import metrics
    from pneumo_models.data import load_dataset, load_split
    from pneumo_models.training import fit, predict_proba
    from spaces.catalog import KERMANY_96PX, LITE0_160PX, PNEUMONIAMNIST_28PX

    base = dict({"kermany": KERMANY_96PX, "pneumoniamnist": PNEUMONIAMNIST_28PX,
                 "lite0": {**LITE0_160PX, "backbone_weights": "imagenet"}}[args.recipe])
    rows, raw, loaded = [], [], {}
    path = Path(args.json)
    if path.exists():
        raw = json.loads(path.read_text()).get("runs", [])
    for name in args.variants:
        for seed in args.seeds:
            params = {**base, **VARIANTS[name]}
            size = int(params.get("input_size", 28))
            params["input_size"] = size
            if size not in loaded:
                loaded[size] = (load_dataset(args.data, size, progress=False, framing=args.framing,
                                             seed=args.split_seed),
                                load_split(args.test_data or args.data, size, "test", progress=False,
                                           framing=args.framing))
            data, test = loaded[size]
            t0 = time.perf_counter()
            model, result = fit(params, data, max_epochs=args.max_epochs, min_recall=args.min_recall,
                                patience=args.patience, seed=seed)
            p_val = predict_proba(model, data.x_val)
            p_test = predict_proba(model, test.x)
            entry = {"variant": name, "seed": seed, "split_seed": args.split_seed, "params": params,
                     "framing": args.framing, "epochs": result.epochs, "best_epoch": result.best.epoch,
                     "seconds": round(time.perf_counter() - t0, 1),
                     "history": [{"epoch": e.epoch, "val_auc": e.auc, "val_rc": e.rc.accuracy} for e in result.history],
                     "probe": result.probe._asdict() if result.probe else None,
                     "val_auc": metrics.auc(data.y_val, p_val), "test_auc": metrics.auc(test.y, p_test),
                     "val_rc": metrics.recall_constrained_accuracy(data.y_val, p_val, args.min_recall).accuracy,
                     "test_rc": metrics.recall_constrained_accuracy(test.y, p_test, args.min_recall).accuracy,
                     "rules": {}, "p_val": p_val.tolist(), "y_val": data.y_val.tolist(),
                     "p_test": p_test.tolist(), "y_test": test.y.tolist()}
            for rule in metrics.THRESHOLD_RULES:
                thr = metrics.choose_threshold(data.y_val, p_val, args.min_recall, rule=rule)
                m = metrics.metrics_at(test.y, p_test, thr)
                entry["rules"][rule] = {"threshold": thr, "test_accuracy": m.accuracy, "test_recall": m.recall,
                                        "test_specificity": m.specificity}
            raw = [r for r in raw if not (r["variant"] == name and r["seed"] == seed and r["params"] == params
                                          and r.get("framing", "full") == args.framing
                                          and r.get("split_seed", 0) == args.split_seed)]
            raw.append(entry)
            write_json(path, {"machine": machine(), "command": " ".join(sys.argv), "runs": raw})
            r = entry["rules"]
            print(f"{name} seed {seed}: val auc {entry['val_auc']:.4f} rc {entry['val_rc']:.4f} | test auc "
                  f"{entry['test_auc']:.4f} best-rc {entry['test_rc']:.4f} | "
                  + " ".join(f"{k}: thr {v['threshold']:.3f} acc {v['test_accuracy']:.3f} rec {v['test_recall']:.3f} "
                             f"spec {v['test_specificity']:.3f}" for k, v in r.items())
                  + f" | {entry['epochs']} ep {entry['seconds']} s", flush=True)
            rows.append([name, seed, f"{entry['val_auc']:.4f}", f"{entry['test_auc']:.4f}", f"{entry['test_rc']:.4f}",
                         *[f"{v['test_accuracy']:.3f}/{v['test_recall']:.3f}" for v in r.values()]])
    print(table(["variant", "seed", "val AUC", "test AUC", "test best acc@floor",
                 *[f"test acc/recall ({k})" for k in metrics.THRESHOLD_RULES]], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
