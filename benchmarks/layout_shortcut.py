"""How much does a film's coarse layout alone say about its class, on validation and on new patients?

A design-choice measurement (issue "models that hold up on new patients"), not part of the product.
A logistic regression on k x k block means of each image (16 or 64 numbers: where the bright body
and the dark air are, how tight the film is framed; no lung detail) is trained on the training
split and scored on validation and on the test split. If it separates the classes on validation
and its healthy test children score far higher than its healthy validation children, the data
carries a layout shortcut that a network can learn and that does not transfer.

    python benchmarks/layout_shortcut.py --data ../shared/data/chest_xray
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the project root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import SHARED, table  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(SHARED / "chest_xray"))
    ap.add_argument("--test-data", help="where the test split is (default: --data)")
    ap.add_argument("--input-size", type=int, default=64)
    ap.add_argument("--blocks", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--framing", default="full", choices=("full", "lungs"),
                    help="crop every film to its lung fields before the resize (pneumo_models/data/framing.py)")
    args = ap.parse_args(argv)

    import numpy as np

    from pneumo_models import metrics
    from pneumo_models.data import load_dataset, load_split
    from pneumo_models.layout import layout_model

    data = load_dataset(args.data, args.input_size, progress=False, framing=args.framing)
    test = load_split(args.test_data or args.data, args.input_size, "test", progress=False, framing=args.framing)
    rows = []
    for k in args.blocks:
        predict = layout_model(data.x_train, data.y_train, blocks=k)
        p_val, p_test = predict(data.x_val), predict(test.x)
        rows.append([f"{k} x {k} block means", f"{metrics.auc(data.y_val, p_val):.3f}", f"{metrics.auc(test.y, p_test):.3f}",
                     f"{np.median(p_val[data.y_val == 0]):.2f}", f"{np.median(p_test[test.y == 0]):.2f}"])
    print(table(["layout-only model", "validation AUC", "test AUC", "healthy median p (validation)",
                 "healthy median p (test)"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
