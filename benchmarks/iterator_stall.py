"""Where Keras' ``fit`` stands idle under TensorFlow: a default trial trained with Keras' own datasets
and with pneumo_models.backend_fixes (tf.data autotuning off), epoch by epoch.

Keras makes a tf.data iterator per epoch of ``fit`` and per ``predict``, and deletes the old one when
the epoch ends. With autotuning on, the deletion can wait, with nothing running, for the autotuning
thread to finish its current sleep, which doubles from 10 ms to 60 s over the iterator's life. Here
a start point of the default space (``pretrained``: Lite0 from ImageNet weights, 128 px, films cropped
to their lungs) is trained for ``--epochs`` epochs on the real data, first with Keras' own datasets,
then with the fix, from the same seed: each epoch's seconds (the project's own validation after each
epoch included) and how long ``fit`` takes to return after its last epoch. The product's search trains
its trials the same way (``pneumo_models.training.fit``).

    python benchmarks/iterator_stall.py --data ../shared/data/chest_xray            # 3 epochs each way
    python benchmarks/iterator_stall.py --data synthetic --space default --input-size 64 --epochs 1

``--runs`` reads finished search runs instead, training nothing: for each trial, its epochs' seconds (from
``trials/<n>/epochs.jsonl``), how many after the first (which builds the
training graph) took over 1.3 times the trial's median epoch, and the seconds its
record (``trial.json``) ends after its last epoch (saving the kept network included):

    python benchmarks/iterator_stall.py --runs runs/kermany-full-s2 runs/kermany-full-s2-fix
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the project root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import SHARED, machine, table, write_json  # noqa: E402

def _keras_own_datasets(own: bool) -> dict:
    """Put Keras' own ``get_tf_dataset`` back (``own``) or leave the fix; the methods in place before."""
    from pneumo_models.backend_fixes import tf_data_adapter_classes

    before = {}
    for adapter in tf_data_adapter_classes() or []:
        before[adapter] = adapter.get_tf_dataset
        if own:
            adapter.get_tf_dataset = getattr(adapter.get_tf_dataset, "__wrapped__", adapter.get_tf_dataset)
    return before


def train(params: dict, data, *, epochs: int, seed: int, own: bool) -> dict:
    from pneumo_models.training import fit

    marks: list[float] = []
    before = _keras_own_datasets(own)
    started = time.perf_counter()
    try:
        fit(params, data, max_epochs=epochs, seed=seed, patience=0, on_epoch=lambda _: marks.append(time.perf_counter()))
    finally:
        for adapter, method in before.items():
            adapter.get_tf_dataset = method
    ended = time.perf_counter()
    return {"epoch_seconds": [round(b - a, 1) for a, b in zip([started] + marks, marks)],
            "return_seconds": round(ended - marks[-1], 1), "total_seconds": round(ended - started, 1)}


SLOW_EPOCH = 1.3  # an epoch over this many times its trial's median is counted as slow


def run_epochs(out: Path) -> list[dict]:
    """Each trial of a finished run folder: its epochs' seconds, the slow ones, the seconds after its last."""
    import json
    import statistics

    from search.layout import TRIALS_DIR

    trials = []
    folders = [f for f in (Path(out) / TRIALS_DIR).glob("*") if f.name.isdigit()]
    for folder in sorted(folders, key=lambda f: int(f.name)):
        epochs_file, record_file = folder / "epochs.jsonl", folder / "trial.json"
        if not epochs_file.exists():
            continue
        ends = [json.loads(line)["seconds"] for line in epochs_file.read_text().splitlines() if line.strip()]
        if not ends:
            continue
        seconds = [round(b - a, 1) for a, b in zip([0.0] + ends, ends)]
        record = json.loads(record_file.read_text()) if record_file.exists() else {}
        median = statistics.median(seconds)
        trials.append({"trial": int(folder.name), "state": record.get("state", "unfinished"),
                       "epoch_seconds": seconds, "median_epoch": round(median, 1),
                       "slow_epochs": sum(x > SLOW_EPOCH * median for x in seconds[1:]),
                       "after_last_epoch": (round(record["seconds"] - ends[-1], 1) if "seconds" in record else None)})
    return trials


def read_runs(folders: list[str], json_path: str | None) -> int:
    rows, runs = [], {}
    for out in folders:
        from search.layout import TRIALS_DIR

        if not (Path(out) / TRIALS_DIR).is_dir():
            print(f"error: {out} has no trials/ folder (a search run's --out)", file=sys.stderr)
            return 2
        runs[out] = run_epochs(Path(out))
        for t in runs[out]:
            rows.append([out, t["trial"], t["state"], len(t["epoch_seconds"]), t["median_epoch"],
                         max(t["epoch_seconds"]), t["slow_epochs"], t["after_last_epoch"]])
    print(table(["run", "trial", "state", "epochs", "median epoch (s)", "longest (s)",
                 f"later epochs over {SLOW_EPOCH}x median", "record ends after last epoch (s)"], rows))
    if json_path:
        write_json(json_path, {"command": " ".join(sys.argv), "runs": runs})
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED / "chest_xray"), help="a data source, or 'synthetic'")
    parser.add_argument("--space", default="pretrained")
    parser.add_argument("--start-point", type=int, default=1, help="which of the space's start points (0 or 1)")
    parser.add_argument("--input-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--json", default=None)
    parser.add_argument("--runs", nargs="+", default=None, help="finished run folders to read (trains nothing)")
    args = parser.parse_args(argv)
    if args.runs:
        return read_runs(args.runs, args.json)

    from search.data_access import StudyData
    from search.runtime import import_keras_quietly
    from spaces import get_space

    import_keras_quietly()
    import pneumo_models.model  # noqa: F401 - installs the fix, as every training path does

    params = {**get_space(args.space).start_points()[args.start_point], "input_size": args.input_size}
    data = StudyData(args.data, val_fraction=0.2, seed=args.seed, progress=False, framing="auto").at(args.input_size)
    rows, results = [], []
    for own in (True, False):
        label = "Keras' own datasets" if own else "autotuning off (backend_fixes)"
        measured = {"datasets": label, **train(params, data, epochs=args.epochs, seed=args.seed, own=own)}
        results.append(measured)
        rows.append([label, ", ".join(map(str, measured["epoch_seconds"])), measured["return_seconds"],
                     measured["total_seconds"]])
        print(" | ".join(map(str, rows[-1])), flush=True)
    print(table(["datasets", "each epoch (s)", "fit returns after its last epoch (s)", "in all (s)"], rows))
    if args.json:
        write_json(args.json, {"machine": machine(), "command": " ".join(sys.argv), "space": args.space,
                               "params": params, "epochs": args.epochs, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
