"""Benchmark 1: the data pipeline against the usual notebook loaders, and training against its ceiling.

    python benchmarks/bench_data_pipeline.py                       # ../shared/data/chest_xray at 128 px
    python benchmarks/bench_data_pipeline.py --size 64 --no-train

Loaders, each over one epoch of the training images at --size px, grayscale:
  notebook tf.data      keras.utils.image_dataset_from_directory (JPEG decode + resize every epoch,
                        parallel map, as most Kermany notebooks); second epoch timed (first traces)
  notebook PIL loop     a per-epoch generator: PIL open -> grayscale -> resize per image per batch
  ours, cold cache      pneumo_models.data.load_dataset with an empty cache: decode once, write
                        the cache, then batches are slices of the cached uint8 array
  ours, warm cache      the same with the cache built (what every later trial and epoch sees)
Reported: images per second over an epoch, time to the first batch.
Training: one fixed CNN trained by our `fit` (arrays from the warm cache) against the ceiling,
the same model fed by `model.fit` from float32 arrays already in memory (and, for reference,
fed by the notebook tf.data loader); the last of --train-epochs epochs is timed, training
steps only (our per-epoch validation pass is excluded: the ceiling has none).
Targets: ours (warm) >= 20x the notebook loader, training >= 0.9 of the ceiling.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402

FIXED_CNN = {"conv_blocks": 3, "base_filters": 16, "filter_growth": 2.0, "kernel_size": 3, "block": "plain",
             "batch_norm": False, "dense_units": 64, "dropout": 0.2, "head": "gap", "optimizer": "adam",
             "learning_rate": 1e-3, "class_weight": "none"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=common.SHARED / "chest_xray",
                   help="a <root>/train/<CLASS>/*.jpeg folder (default: ../shared/data/chest_xray)")
    p.add_argument("--size", type=int, default=128, help="image side in px (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=32, help="(default: %(default)s)")
    p.add_argument("--train-epochs", type=int, default=2, help="epochs per training arm; the last is timed "
                                                                "(default: %(default)s)")
    p.add_argument("--no-train", action="store_true", help="loaders only")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="change the fixed CNN")
    p.add_argument("--out", type=Path, default=common.DEFAULT_OUT / "data_pipeline",
                   help="folder for the cold cache and the JSON (default: %(default)s)")
    p.add_argument("--json", type=Path, help="raw numbers (default: <out>/data_pipeline.json)")
    return p.parse_args(argv)


# ------------------------------------------------------------------ loaders
def _epoch_order(n: int, batch: int, seed: int):
    import numpy as np

    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(order[i:i + batch]) for i in range(0, n, batch)]


def ours(root: Path, size: int, batch: int, cache_dir: Path) -> dict:
    """load_dataset, then one epoch of shuffled batches as float32 (N, S, S, 1), as training sees them."""
    import numpy as np

    from pneumo_models.data import load_dataset

    t0 = time.perf_counter()
    ds = load_dataset(str(root), size, cache_dir=cache_dir, progress=False)
    batches = _epoch_order(len(ds.y_train), batch, 0)
    first = np.asarray(ds.x_train[batches[0]], dtype=np.float32)[..., None]
    t_first = time.perf_counter() - t0
    t1 = time.perf_counter()
    n = 0
    for idx in batches:
        xb = np.asarray(ds.x_train[idx], dtype=np.float32)[..., None]
        yb = ds.y_train[idx]
        n += len(yb)
    t_epoch = time.perf_counter() - t1
    assert xb.shape[1:] == (size, size, 1) and first.shape[0] == len(batches[0])
    return {"images": n, "time_to_first_batch_s": t_first, "epoch_s": t_epoch,
            "images_per_s": n / t_epoch, "first_epoch_images_per_s": n / (t_first + t_epoch)}


def notebook_tfdata(root: Path, size: int, batch: int, epochs: int = 2) -> dict:
    """keras.utils.image_dataset_from_directory: every epoch decodes and resizes every JPEG."""
    import keras

    t0 = time.perf_counter()
    ds = keras.utils.image_dataset_from_directory(
        str(root / "train"), labels="inferred", label_mode="binary", color_mode="grayscale",
        image_size=(size, size), batch_size=batch, shuffle=True, seed=0, verbose=False)
    times, n, t_first = [], 0, None
    for epoch in range(epochs):
        t1 = time.perf_counter()
        n = 0
        for xb, yb in ds:
            if t_first is None:
                t_first = time.perf_counter() - t0
            n += int(xb.shape[0])
        times.append(time.perf_counter() - t1)
    return {"images": n, "time_to_first_batch_s": t_first, "epoch_s": times[-1], "epoch_s_all": times,
            "images_per_s": n / times[-1]}


def _files(root: Path) -> tuple[list[Path], list[int]]:
    files, labels = [], []
    for label, cls in enumerate(("NORMAL", "PNEUMONIA")):
        for f in sorted((root / "train" / cls).iterdir()):
            if f.suffix.lower() in (".jpeg", ".jpg", ".png"):
                files.append(f)
                labels.append(label)
    return files, labels


def notebook_pil(root: Path, size: int, batch: int) -> dict:
    """The hand-written generator of many notebooks: open, grayscale, resize every image, every epoch."""
    import numpy as np
    from PIL import Image

    t0 = time.perf_counter()
    files, labels = _files(root)
    batches = _epoch_order(len(files), batch, 0)
    t_first, n = None, 0
    t1 = time.perf_counter()
    for idx in batches:
        xb = np.stack([np.asarray(Image.open(files[i]).convert("L").resize((size, size), Image.Resampling.BILINEAR),
                                  dtype=np.float32) for i in idx])[..., None]
        yb = np.asarray([labels[i] for i in idx], dtype=np.float32)
        if t_first is None:
            t_first = time.perf_counter() - t0
        n += len(yb)
    t_epoch = time.perf_counter() - t1
    return {"images": n, "time_to_first_batch_s": t_first, "epoch_s": t_epoch, "images_per_s": n / t_epoch}


# ------------------------------------------------------------------ training
def _timer():
    import keras

    class EpochTimer(keras.callbacks.Callback):
        """Seconds from an epoch's start to its last training step (not the validation that follows)."""

        def __init__(self):
            super().__init__()
            self.seconds: list[float] = []
            self._begin = self._end = None

        def on_epoch_begin(self, epoch, logs=None):
            self._begin = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self._end = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(self._end - self._begin)

    return EpochTimer()


def training(root: Path, size: int, batch: int, epochs: int, params: dict, cache_dir: Path) -> dict:
    import keras
    import numpy as np

    from pneumo_models.data import load_dataset
    from pneumo_models.model import build_model
    from pneumo_models.training import fit

    full = {**params, "input_size": size, "batch_size": batch}
    ds = load_dataset(str(root), size, cache_dir=cache_dir, progress=False)
    n = len(ds.y_train)
    out = {"params": full, "epochs": epochs, "train_images": n}

    timer = _timer()
    fit(full, ds, max_epochs=epochs, patience=0, seed=0, callbacks=[timer], restore_best=False)
    out["ours"] = {"epoch_s": timer.seconds, "images_per_s": n / timer.seconds[-1]}

    x = np.asarray(ds.x_train, dtype=np.float32)[..., None]  # already in memory before timing
    y = np.asarray(ds.y_train, dtype=np.float32)
    keras.utils.set_random_seed(0)
    model = build_model(full, seed=0)
    timer = _timer()
    model.fit(x, y, batch_size=batch, epochs=epochs, shuffle=True, callbacks=[timer], verbose=0)
    out["ceiling"] = {"epoch_s": timer.seconds, "images_per_s": n / timer.seconds[-1]}
    del x

    try:
        import tensorflow as tf  # noqa: F401  (the notebook loader is tf.data)

        files = keras.utils.image_dataset_from_directory(
            str(root / "train"), labels="inferred", label_mode="binary", color_mode="grayscale",
            image_size=(size, size), batch_size=batch, shuffle=True, seed=0, verbose=False)
        n_files = len(files.file_paths)
        keras.utils.set_random_seed(0)
        model = build_model(full, seed=0)
        timer = _timer()
        model.fit(files, epochs=epochs, shuffle=False, callbacks=[timer], verbose=0)  # reshuffles itself
        out["notebook_tfdata"] = {"epoch_s": timer.seconds, "images_per_s": n_files / timer.seconds[-1],
                                  "train_images": n_files}
    except ImportError:
        out["notebook_tfdata"] = None
    out["ours_vs_ceiling"] = out["ours"]["images_per_s"] / out["ceiling"]["images_per_s"]
    return out


def main(argv=None) -> dict:
    args = parse_args(argv)
    root, size, batch = Path(args.data), args.size, args.batch_size
    if not (root / "train").is_dir():
        raise SystemExit(f"no {root}/train folder: pass --data <root with train/NORMAL and train/PNEUMONIA>")
    out = Path(args.out)
    json_path = args.json or out / "data_pipeline.json"
    cache_dir = out / "cold-cache"
    shutil.rmtree(cache_dir, ignore_errors=True)
    machine = common.machine()
    print(f"data pipeline: {root} at {size} px, batch {batch}", flush=True)

    loaders = {}
    print("  ours, cold cache ...", flush=True)
    loaders["ours_cold"] = ours(root, size, batch, cache_dir)
    print("  ours, warm cache ...", flush=True)
    loaders["ours_warm"] = ours(root, size, batch, cache_dir)
    print("  notebook tf.data ...", flush=True)
    loaders["notebook_tfdata"] = notebook_tfdata(root, size, batch)
    print("  notebook PIL loop ...", flush=True)
    loaders["notebook_pil"] = notebook_pil(root, size, batch)
    best_notebook = max(loaders["notebook_tfdata"]["images_per_s"], loaders["notebook_pil"]["images_per_s"])
    speedup = loaders["ours_warm"]["images_per_s"] / best_notebook
    summary = {"speedup_warm_vs_best_notebook": speedup, "loader_target_met": speedup >= 20}

    train = None
    if not args.no_train:
        params = dict(FIXED_CNN)
        for item in args.set:
            name, _, raw = item.partition("=")
            try:
                params[name] = json.loads(raw)
            except json.JSONDecodeError:
                params[name] = raw
        print("  training: ours, ceiling, notebook-fed ...", flush=True)
        train = training(root, size, batch, args.train_epochs, params, cache_dir)
        summary["training_ours_vs_ceiling"] = train["ours_vs_ceiling"]
        summary["training_target_met"] = train["ours_vs_ceiling"] >= 0.9
    payload = {"benchmark": "data_pipeline", "machine": machine,
               "command": "python benchmarks/bench_data_pipeline.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "settings": {"data": str(root), "size": size, "batch_size": batch, "train_epochs": args.train_epochs},
               "loaders": loaders, "training": train, "summary": summary}
    common.write_json(json_path, payload)

    names = {"notebook_tfdata": "notebook: image_dataset_from_directory", "notebook_pil": "notebook: PIL loop per epoch",
             "ours_cold": "ours: decode-once cache, cold", "ours_warm": "ours: decode-once cache, warm"}
    rows = [[names[k], v["images"], f"{v['images_per_s']:.0f}", f"{v['time_to_first_batch_s']:.3f}",
             f"{v['images_per_s'] / best_notebook:.1f}x"] for k, v in loaders.items()]
    print(f"\nraw numbers: {json_path}")
    print(common.table(["loader (one epoch)", "images", "images/s", "s to first batch", "vs best notebook"], rows))
    if train:
        n = train["train_images"]
        rows = [["ceiling: model.fit on in-memory float32 arrays", n, f"{train['ceiling']['images_per_s']:.0f}", "1.00"],
                ["ours: pneumo_models.training.fit from the cache", n, f"{train['ours']['images_per_s']:.0f}",
                 f"{train['ours_vs_ceiling']:.2f}"]]
        if train.get("notebook_tfdata"):
            nb = train["notebook_tfdata"]
            rows.append(["notebook: model.fit on image_dataset_from_directory", nb["train_images"],
                         f"{nb['images_per_s']:.0f}", f"{nb['images_per_s'] / train['ceiling']['images_per_s']:.2f}"])
        print(common.table([f"training ({train['epochs']} epochs, last timed)", "images", "images/s", "vs ceiling"], rows))
    print(f"loader speed-up (warm vs best notebook): {speedup:.1f}x (target 20x: {'met' if summary['loader_target_met'] else 'not met'})"
          + (f"; training at {train['ours_vs_ceiling']:.2f} of the ceiling (target 0.9: "
             f"{'met' if summary['training_target_met'] else 'not met'})" if train else ""))
    return payload


if __name__ == "__main__":
    main()
