"""How long deleting one of Keras' tf.data iterators stands idle under TensorFlow, with Keras' own
datasets and with pneumo_models.backend_fixes (tf.data autotuning off).

Keras makes a tf.data iterator per epoch of ``fit`` and per ``predict``, and deletes the old one when
the epoch ends. With autotuning on, the deletion can wait for the autotuning thread to finish its
current sleep, which doubles from 10 ms to 60 s over the iterator's life. Here the dataset Keras
builds for a default trial's ``fit`` (260 batches of 16 films of 128 px, uint8, shuffled) is read
batch by batch at the pace of an epoch of ``--epoch-seconds`` (sleeping between batches: nearly no
CPU used), and the iterator is then deleted, as Keras does at an epoch's end; the seconds the
deletion takes are the idle wait. Each epoch length is measured ``--repeats`` times per setting.

    python benchmarks/iterator_stall.py                       # epochs of 45 s and 90 s, 3 times each
    python benchmarks/iterator_stall.py --epoch-seconds 2 --repeats 1 --json runs/exp/stall.json
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the project root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, table, write_json  # noqa: E402

STEPS, BATCH, SIDE = 260, 16, 128  # a default trial's epoch on Kermany (about 4,200 training films)


def deletion_seconds(epoch_seconds: float, *, fixed: bool) -> float:
    """One epoch's iterator over Keras' fit dataset, read at the epoch's pace, then deleted."""
    import numpy as np
    from keras.src.trainers.data_adapters.array_data_adapter import ArrayDataAdapter

    import pneumo_models.model  # noqa: F401 - installs the fix (every training and loading path does)

    get = ArrayDataAdapter.get_tf_dataset
    get = get if fixed else getattr(get, "__wrapped__", get)  # Keras' own method, for the comparison
    x = np.zeros((STEPS * BATCH, SIDE, SIDE, 1), dtype="uint8")
    dataset = get(ArrayDataAdapter(x, np.zeros(STEPS * BATCH, dtype="float32"), batch_size=BATCH, shuffle=True))
    iterator = iter(dataset)
    for _ in range(STEPS):
        next(iterator)
        time.sleep(epoch_seconds / STEPS)
    started = time.perf_counter()
    del iterator
    return round(time.perf_counter() - started, 2)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epoch-seconds", type=float, nargs="+", default=[45.0, 90.0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    rows, results = [], []
    for seconds in args.epoch_seconds:
        for fixed in (False, True):
            waits = [deletion_seconds(seconds, fixed=fixed) for _ in range(args.repeats)]
            label = "autotuning off (backend_fixes)" if fixed else "Keras' own datasets"
            results.append({"epoch_seconds": seconds, "datasets": label, "deletion_seconds": waits})
            rows.append([f"{seconds:g}", label, ", ".join(f"{w:.1f}" for w in waits), f"{max(waits):.1f}"])
            print(" | ".join(rows[-1]), flush=True)
    print(table(["epoch (s)", "datasets", "iterator deletion, each time (s)", "longest (s)"], rows))
    if args.json:
        write_json(args.json, {"machine": machine(), "steps": STEPS, "batch": BATCH, "side": SIDE,
                               "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
