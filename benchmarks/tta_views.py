"""Does averaging an exported model over several views of each film (test-time augmentation) hold up better?

A design-choice measurement (issue "models that hold up on new patients"), not part of the product.
The exported model scores validation and the test split as they are, mirrored, centre-cropped
(zoomed in) and shrunk (zoomed out); for each set of views the probabilities are averaged, the
threshold is chosen on validation by the `umbrella` rule, and the test split is scored once. The
reason to try it: the networks' scores depend on how a film is framed, and an average over
framings depends on it less.

    python benchmarks/tta_views.py runs/kermany-default/best_model --data ../shared/data/chest_xray
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the project root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import SHARED, table  # noqa: E402

SETS = [["as-is"], ["mirror"], ["crop90"], ["crop80"], ["shrink90"], ["as-is", "mirror"], ["as-is", "crop90"],
        ["as-is", "mirror", "crop90"], ["as-is", "crop90", "crop80"], ["as-is", "crop90", "shrink90"]]


def _centre(side: int, keep: float) -> tuple[int, int]:
    """The side and offset of the centred square that keeps ``keep`` of a ``side`` x ``side`` film."""
    kept = int(round(side * keep))
    return kept, (side - kept) // 2


def _crop(x, keep: float):
    """The centre ``keep`` of each (N, S, S) uint8 film, enlarged back to S x S (zoomed in)."""
    import numpy as np

    from pneumo_models.data import resize_array

    n = x.shape[1]
    k, o = _centre(n, keep)
    return np.stack([resize_array(f[o:o + k, o:o + k], n) for f in x])


def _shrink(x, keep: float):
    """Each film shrunk to ``keep`` of its side inside the frame, the margin filled with its edge values."""
    import numpy as np

    from pneumo_models.data import resize_array

    n = x.shape[1]
    k, o = _centre(n, keep)
    return np.stack([np.pad(resize_array(f, k), ((o, n - k - o), (o, n - k - o)), mode="edge") for f in x])


VIEWS = {"as-is": lambda x: x, "mirror": lambda x: x[:, :, ::-1].copy(), "crop90": lambda x: _crop(x, 0.9),
         "crop80": lambda x: _crop(x, 0.8), "shrink90": lambda x: _shrink(x, 0.9)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="an exported model folder (<out>/best_model)")
    ap.add_argument("--data", default=str(SHARED / "chest_xray"), help="the data the model was searched on")
    ap.add_argument("--min-recall", type=float, default=0.95)
    args = ap.parse_args(argv)

    import numpy as np

    from pneumo_models import metrics
    from pneumo_models.data import load_dataset, load_split
    from pneumo_models.loading import load_model
    from pneumo_models.training import predict_proba

    model = load_model(args.model)
    card = model.card["data"]
    data = load_dataset(args.data, model.input_size, val_fraction=card.get("val_fraction", 0.2),
                        seed=card.get("split_seed", 0), progress=False, framing=model.framing)
    test = load_split(args.data, model.input_size, "test", progress=False, framing=model.framing)
    p = {name: (predict_proba(model.keras_model, view(data.x_val)), predict_proba(model.keras_model, view(test.x)))
         for name, view in VIEWS.items()}
    rows = []
    for views in SETS:
        p_val = np.mean([p[v][0] for v in views], axis=0)
        p_test = np.mean([p[v][1] for v in views], axis=0)
        thr = metrics.umbrella_threshold(data.y_val, p_val, args.min_recall)
        m = metrics.metrics_at(test.y, p_test, thr)
        best = metrics.recall_constrained_accuracy(test.y, p_test, args.min_recall)
        rows.append([" + ".join(views), f"{metrics.auc(data.y_val, p_val):.3f}", f"{metrics.auc(test.y, p_test):.3f}",
                     f"{thr:.3f}", f"{m.accuracy:.3f} / {m.recall:.3f} / {m.specificity:.3f}", f"{best.accuracy:.3f}"])
    print(table(["views averaged", "val AUC", "test AUC", "threshold (umbrella)", "test acc / recall / spec",
                 f"test: best acc at recall >= {args.min_recall}"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
