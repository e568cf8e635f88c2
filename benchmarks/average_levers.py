"""Averages of single networks from `shift_levers.py`: does averaging two views beat two of one view?

A design-choice measurement (issue "models that hold up on new patients"), not part of the product.
`shift_levers.py` keeps every network's validation and test probabilities in its JSON. This reads one
or more of those files (say one run on films cropped to their lungs and one on whole films) and
scores every average of up to ``--max-members`` of the networks in them as an exported ensemble is
scored: the `umbrella` threshold chosen on the averaged validation probabilities, the test split
judging it once. It also gives how alike each pair ranks the healthy test films (Spearman), the
diversity an average could use. The validation and test images must be the same ones in the same
order in every network (they are, for one data source: the split and the listing do not depend on
framing or input size).

    python benchmarks/shift_levers.py --data ../shared/data/chest_xray --framing lungs --variants ema \
        --seeds 0 1 --json runs/exp/views_lungs.json
    python benchmarks/shift_levers.py --data ../shared/data/chest_xray --variants reframe+ema \
        --seeds 0 1 --json runs/exp/views_full.json
    python benchmarks/average_levers.py runs/exp/views_lungs.json runs/exp/views_full.json
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the project root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import DEFAULT_OUT, machine, table, write_json  # noqa: E402
from benchmarks.ensemble_selection import score_rule  # noqa: E402


def networks(paths: list[str]) -> tuple[list[dict], list[int], list[int]]:
    """Every network in the JSON files, named ``framing:variant:seed``, with the labels they share;
    ValueError when the files disagree on the validation or test labels."""
    found, y_val, y_test = [], None, None
    for path in paths:
        for run in json.loads(Path(path).read_text()).get("runs", []):
            name = f"{run.get('framing', 'full')}:{run['variant']}:s{run['seed']}"
            if (y_val, y_test) != (None, None) and (run["y_val"], run["y_test"]) != (y_val, y_test):
                raise ValueError(f"{name} in {path} was scored on other validation or test images")
            y_val, y_test = run["y_val"], run["y_test"]
            found.append({"number": name, "p_val": run["p_val"], "p_test": run["p_test"]})
    if not found:
        raise ValueError("no networks in " + ", ".join(paths))
    return found, y_val, y_test


def healthy_agreement(nets: list[dict], y_test) -> dict[str, float]:
    """Spearman correlation of each pair's probabilities on the healthy test films."""
    import numpy as np
    from scipy.stats import spearmanr

    healthy = np.asarray(y_test) == 0
    return {f"{a['number']} ~ {b['number']}":
            float(spearmanr(np.asarray(a["p_test"])[healthy], np.asarray(b["p_test"])[healthy])[0])
            for a, b in itertools.combinations(nets, 2)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", help="JSON files written by shift_levers.py (--json)")
    ap.add_argument("--max-members", type=int, default=2, help="score every average of up to this many networks "
                                                               "(and the average of all of them)")
    ap.add_argument("--min-recall", type=float, default=0.95)
    ap.add_argument("--json", default=str(DEFAULT_OUT / "average_levers.json"))
    args = ap.parse_args(argv)

    import numpy as np

    try:
        nets, y_val, y_test = networks(args.files)
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sizes = sorted({*range(1, min(args.max_members, len(nets)) + 1), len(nets)})
    results = [score_rule(nets, list(picks), np.asarray(y_val), np.asarray(y_test), args.min_recall)
               for k in sizes for picks in itertools.combinations(range(len(nets)), k)]
    agreement = healthy_agreement(nets, y_test)
    write_json(args.json, {"machine": machine(), "command": " ".join(sys.argv), "files": args.files,
                           "averages": results, "healthy_test_spearman": agreement})
    print(table(["networks averaged", "val AUC", "thr", "test acc / recall / spec", "test AUC", "test best acc@floor"],
                [[" + ".join(r["trials"]), f"{r['val_auc']:.4f}", f"{r['threshold']:.3f}",
                  f"{r['test_accuracy']:.3f} / {r['test_recall']:.3f} / {r['test_specificity']:.3f}",
                  f"{r['test_auc']:.4f}", f"{r['test_best_at_floor']:.4f}"] for r in results]))
    print(table(["pair", "Spearman, healthy test films"], [[k, f"{v:.3f}"] for k, v in agreement.items()]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
