"""Does a searching process grow with every trial? Train one recipe N times in one process, as trials are.

Each round trains the recipe with ``pneumo_models.training.fit`` (validation each epoch, EMA as the
defaults), then cleans up as a search does between trials: ``--cleanup search`` is
``search.runtime.clear_backend_session`` (Keras' clear_session, then the traced gradients TensorFlow
keeps are dropped), ``--cleanup keras`` is Keras' ``clear_session`` alone (what the search did before).
The process's resident memory is read after each round.

    python benchmarks/trial_memory.py --data ../shared/data/pneumoniamnist.npz --trials 12 --cleanup keras
    python benchmarks/trial_memory.py --data ../shared/data/pneumoniamnist.npz --trials 12 --cleanup search
"""
from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the project root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import DEFAULT_OUT, SHARED, machine, write_json  # noqa: E402


def resident_mb() -> float:
    """This process's resident memory (Linux ``/proc``), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(SHARED / "pneumoniamnist.npz"), help="a data source, or 'synthetic'")
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--cleanup", choices=("search", "keras"), default="search")
    ap.add_argument("--json", default=str(DEFAULT_OUT / "trial_memory.json"))
    args = ap.parse_args(argv)

    from search.runtime import clear_backend_session, import_keras_quietly

    import_keras_quietly()
    import keras

    from pneumo_models.training import fit
    from search.data_access import StudyData
    from spaces.catalog import PNEUMONIAMNIST_28PX

    data = StudyData(args.data, val_fraction=0.2, seed=0, progress=False).at(28)
    params = {**PNEUMONIAMNIST_28PX, "input_size": 28, "ema": 0.99}
    start = resident_mb()
    rows = []
    for trial in range(args.trials):
        t0 = time.perf_counter()
        fit(params, data, max_epochs=args.epochs, seed=trial)
        if args.cleanup == "search":
            clear_backend_session()
        else:
            keras.backend.clear_session()
        gc.collect()
        rows.append({"trial": trial, "resident_mb": round(resident_mb(), 1), "seconds": round(time.perf_counter() - t0, 1)})
        print(f"trial {trial}: {rows[-1]['resident_mb']:.0f} MB resident ({rows[-1]['seconds']} s)", flush=True)
    # growth per trial after the first (the first also pays for one-time set-up)
    per_trial = (rows[-1]["resident_mb"] - rows[0]["resident_mb"]) / max(1, len(rows) - 1)
    print(f"cleanup {args.cleanup}: {start:.0f} MB before, {rows[0]['resident_mb']:.0f} MB after the first trial, "
          f"{rows[-1]['resident_mb']:.0f} MB after {len(rows)}: {per_trial:+.1f} MB per trial", flush=True)
    write_json(Path(args.json).with_name(f"{Path(args.json).stem}-{args.cleanup}.json"),
               {"machine": machine(), "command": " ".join(sys.argv), "cleanup": args.cleanup,
                "start_mb": round(start, 1), "mb_per_trial": round(per_trial, 2), "trials": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
