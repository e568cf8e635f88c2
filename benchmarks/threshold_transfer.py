"""Where an exported model's threshold lands on new patients, and why: four looks at one model's predictions.

A design-choice measurement (issue "models that hold up on new patients"), not part of the product. It
reads an exported model folder's ``validation_predictions.csv`` and ``test_predictions.csv`` (what the
export and its one test scoring wrote) and trains nothing:

1. **rules**: each threshold rule of the product (``umbrella``, ``validation``, ``bootstrap``) chosen on
   validation, then the test split once;
2. **tails**: the pneumonia films by subtype (bacterial / viral, from Kermany's file names) and the
   healthy ones, validation beside test: their share, recall at the exported threshold, the low tail of
   the pneumonia scores and the high tail of the healthy ones (which side of the threshold moved);
3. **label errors**: validation films the model contradicts with confidence (confident learning's
   class-conditional thresholds, Northcutt, Jiang & Chuang 2021: a film labelled pneumonia whose
   probability of health is at least the healthy films' mean), and the ``umbrella`` threshold without
   them: is the low tail of validation's pneumonia scores grading errors?
4. **a site's own threshold**: the test patients split in two at random, ``umbrella`` chosen on one half
   (as a hospital with about a hundred labelled patients of its own could), scored on the other; the
   mean and the 5th-95th percentiles over ``--splits`` splits. What a local recalibration would buy.

Everything on the test split here judges a design; the product never reads it to choose.

    python benchmarks/threshold_transfer.py runs/kermany-160-1h/best_model
    python benchmarks/threshold_transfer.py runs/kermany-full-lite0/best_model --json runs/exp/thr_full.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the project root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks.common import ROOT, machine, table, write_json  # noqa: E402

RULES = ("umbrella", "validation", "bootstrap")


def _at(y, p, threshold) -> dict:
    from pneumo_models import metrics

    m = metrics.metrics_at(y, p, threshold)
    return {"threshold": float(threshold), "accuracy": m.accuracy, "recall": m.recall, "specificity": m.specificity}


def rules(y_val, p_val, y_test, p_test, min_recall: float, seed: int = 0) -> dict[str, dict]:
    from pneumo_models import metrics

    out = {}
    for rule in RULES:
        threshold = metrics.choose_threshold(y_val, p_val, min_recall, rule=rule, seed=seed)
        out[rule] = {**_at(y_test, p_test, threshold), "val_recall": _at(y_val, p_val, threshold)["recall"]}
    return out


def subtype(ids) -> np.ndarray:
    """``bacteria`` / ``virus`` from Kermany's pneumonia file names (``person1_bacteria_1``), else ``other``."""
    names = np.asarray([str(i).lower() for i in ids])
    return np.where(np.char.find(names, "virus") >= 0, "virus",
                    np.where(np.char.find(names, "bacteria") >= 0, "bacteria", "other"))


def tails(ids, y, p, threshold: float) -> dict[str, dict]:
    """Per group (each pneumonia subtype, and ``healthy``): films, share of the class, share called
    pneumonia at ``threshold``, and the 10th / 50th / 90th percentiles of the scores."""
    y, p = np.asarray(y), np.asarray(p, dtype=float)
    kinds = np.where(y == 1, subtype(ids), "healthy")
    out = {}
    for kind in sorted(set(kinds)):
        q = p[kinds == kind]
        out[kind] = {"n": int(q.size), "share_of_class": float(q.size / np.sum(y == (kind != "healthy"))),
                     "called_pneumonia": float(np.mean(q >= threshold)),
                     **{f"p{k}": float(np.percentile(q, k)) for k in (10, 50, 90)}}
    return out


def contradicted(y, p) -> np.ndarray:
    """Confident learning's label issues for two classes: films whose probability of the other class is
    at least that class's mean self-confidence (its films' mean probability of their own label)."""
    y, p = np.asarray(y), np.asarray(p, dtype=float)
    sure_pneumonia, sure_healthy = p[y == 1].mean(), (1 - p[y == 0]).mean()
    return ((y == 1) & (1 - p >= sure_healthy)) | ((y == 0) & (p >= sure_pneumonia))


def site_thresholds(y, p, patients, min_recall: float, splits: int) -> dict:
    """Split the patients in halves ``splits`` times: ``umbrella`` on one half, scored on the other."""
    from pneumo_models import metrics

    y, p, patients = np.asarray(y), np.asarray(p, dtype=float), np.asarray(patients)
    people = np.unique(patients)
    scored = []
    for s in range(splits):
        half = np.isin(patients, np.random.default_rng(s).permutation(people)[: len(people) // 2])
        threshold = metrics.choose_threshold(y[half], p[half], min_recall, rule="umbrella")
        scored.append(_at(y[~half], p[~half], threshold))
    out = {"splits": splits, "patients_per_half": len(people) // 2}
    for key in ("threshold", "accuracy", "recall", "specificity"):
        values = np.array([s[key] for s in scored])
        out[key] = {"mean": float(values.mean()), "p5": float(np.percentile(values, 5)),
                    "p95": float(np.percentile(values, 95))}
    out["recall_below_floor"] = float(np.mean([s["recall"] < min_recall for s in scored]))
    return out


def main(argv=None) -> int:
    import pandas as pd

    from pneumo_models import metrics

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="an exported model folder whose run scored a test split (best_model/)")
    ap.add_argument("--splits", type=int, default=300, help="random halvings of the test patients (default: 300)")
    ap.add_argument("--json", help="where the results go (default runs/exp/threshold_<run>.json)")
    args = ap.parse_args(argv)
    folder = Path(args.model)
    files = [folder / "model_card.json", folder / "validation_predictions.csv", folder / "test_predictions.csv"]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        print(f"error: {folder} has no {', '.join(missing)} (an exported model whose run scored a test split)",
              file=sys.stderr)
        return 2
    card = json.loads(files[0].read_text())
    val, test = pd.read_csv(files[1]), pd.read_csv(files[2])
    floor, threshold = float(card["min_recall"]), float(card["threshold"])
    y_val, p_val, y_test, p_test = (val.label.to_numpy(), val.probability.to_numpy(),
                                    test.label.to_numpy(), test.probability.to_numpy())
    issues = contradicted(y_val, p_val)
    cleaned = metrics.choose_threshold(y_val[~issues], p_val[~issues], floor, rule="umbrella")
    patients = test.patient if "patient" in test else test.id
    result = {"machine": machine(), "command": " ".join(sys.argv), "model": str(folder), "min_recall": floor,
              "exported_threshold": threshold,
              "rules": rules(y_val, p_val, y_test, p_test, floor),
              "tails": {"validation": tails(val.id, y_val, p_val, threshold),
                        "test": tails(test.id, y_test, p_test, threshold)},
              "label_issues": {"pneumonia_contradicted": val.id[issues & (y_val == 1)].tolist(),
                               "healthy_contradicted": val.id[issues & (y_val == 0)].tolist(),
                               "umbrella_without_them": _at(y_test, p_test, cleaned)},
              "site_thresholds": site_thresholds(y_test, p_test, patients, floor, args.splits)}
    write_json(Path(args.json or ROOT / "runs" / "exp" / f"threshold_{folder.resolve().parent.name}.json"), result)

    print(table(["rule (chosen on validation)", "threshold", "validation recall", "test acc / recall / spec"],
                [[name, f"{r['threshold']:.3f}", f"{r['val_recall']:.3f}",
                  f"{r['accuracy']:.3f} / {r['recall']:.3f} / {r['specificity']:.3f}"]
                 for name, r in result["rules"].items()]))
    print(table(["films", "split", "n", "share", "called pneumonia", "p10 / p50 / p90"],
                [[kind, split, g["n"], f"{g['share_of_class']:.2f}", f"{g['called_pneumonia']:.3f}",
                  f"{g['p10']:.3f} / {g['p50']:.3f} / {g['p90']:.3f}"]
                 for kind in sorted(result["tails"]["validation"]) for split in ("validation", "test")
                 if kind in result["tails"][split] for g in [result["tails"][split][kind]]]))
    li, cl = result["label_issues"], result["label_issues"]["umbrella_without_them"]
    print(f"label issues on validation: {len(li['pneumonia_contradicted'])} pneumonia and "
          f"{len(li['healthy_contradicted'])} healthy films contradicted; umbrella without them: threshold "
          f"{cl['threshold']:.3f}, test {cl['accuracy']:.3f} / {cl['recall']:.3f} / {cl['specificity']:.3f}")
    st = result["site_thresholds"]
    print(f"a site's own threshold ({st['patients_per_half']} test patients, {st['splits']} halvings): accuracy "
          f"{st['accuracy']['mean']:.3f} ({st['accuracy']['p5']:.3f}-{st['accuracy']['p95']:.3f}), recall "
          f"{st['recall']['mean']:.3f}, specificity {st['specificity']['mean']:.3f}; recall under the floor in "
          f"{st['recall_below_floor']:.0%} of halvings")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
