"""Trials per hour of one small study under several worker layouts (the README's parallel table).

    python benchmarks/trials_per_hour.py --data PATH.npz --out DIR \\
        --layout "gpu x1=--gpus 0:12" --layout "gpu x2=--gpus 0 --workers-per-gpu 2:16"

Each ``--layout "NAME=RUN ARGS:TRIALS"`` runs ``python -m search run`` on a fresh study with the
same fixed-cost configuration (an architecture fixed by --set, no pruning, no early stop: every
trial trains --max-epochs epochs) and those extra arguments, then reads the study back:
``steady`` is finished trials per hour between the first trial's start and the last trial's end;
``wall`` counts the whole command (process and library start-up included). Writes
``<out>/trials_per_hour.jsonl`` and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

FIXED = ["--set", "conv_blocks=3", "--set", "base_filters=32", "--set", "filter_growth=2.0",
         "--set", "block=plain", "--set", "batch_size=64", "--set", "dense_units=128"]


def measure(name: str, extra: list[str], trials: int, args) -> dict:
    import optuna
    from optuna.trial import TrialState

    study = f"tph-{name.replace(' ', '-')}-{int(time.time())}"
    out = Path(args.out) / study
    cmd = [sys.executable, "-m", "search", "run", "--data", args.data, "--study", study, "--out", str(out),
           "--trials", str(trials), "--max-epochs", str(args.epochs), "--patience", str(args.epochs),
           "--pruner", "none", "--space", "default", "--no-report", "--no-progress", "--no-starts", "--timeout", "0", *FIXED, *extra]
    if not args.export or name != args.export:
        cmd.append("--no-export")
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    (Path(args.out) / f"{study}.log").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    row = {"layout": name, "args": " ".join(extra), "trials": trials, "exit": proc.returncode,
           "wall_s": round(wall, 1)}
    if proc.returncode != 0:
        row["error"] = (proc.stderr.strip().splitlines() or ["?"])[-1][:300]
        print(proc.stdout[-2000:], proc.stderr[-3000:], sep="\n", file=sys.stderr)
        return row
    s = optuna.load_study(study_name=study, storage=f"sqlite:///{out / 'study.db'}")
    done = [t for t in s.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    first = min(t.datetime_start for t in done)
    last = max(t.datetime_complete for t in done)
    span = (last - first).total_seconds()
    per_trial = sorted((t.datetime_complete - t.datetime_start).total_seconds() for t in done)
    row.update(out=str(out), finished=len(done), span_s=round(span, 1),
               steady_per_hour=round(len(done) / span * 3600), wall_per_hour=round(len(done) / wall * 3600),
               median_trial_s=round(per_trial[len(per_trial) // 2], 2),
               workers=len({t.user_attrs.get("worker") for t in done}),
               best=round(max((t.value for t in done if t.value is not None), default=float("nan")), 4))
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--layout", action="append", required=True, metavar="NAME=ARGS:TRIALS")
    p.add_argument("--export", metavar="NAME", help="export the best model after this layout's run")
    args = p.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    rows = []
    for spec in args.layout:
        name, _, rest = spec.partition("=")
        extra, _, trials = rest.rpartition(":")
        row = measure(name, shlex.split(extra), int(trials), args)
        rows.append(row)
        print(json.dumps(row), flush=True)
        with open(Path(args.out) / "trials_per_hour.jsonl", "a") as fh:
            fh.write(json.dumps(row) + "\n")
    print(f"\nbackend {os.environ.get('KERAS_BACKEND', 'tensorflow')}, {args.epochs} epochs per trial\n")
    print("| layout | worker args | trials | median trial s | trials/hour (steady) | trials/hour (wall) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        if r["exit"] != 0:
            print(f"| {r['layout']} | `{r['args']}` | failed: {r.get('error')} | | | |")
            continue
        print(f"| {r['layout']} | `{r['args']}` | {r['finished']} | {r['median_trial_s']} | "
              f"{r['steady_per_hour']} | {r['wall_per_hour']} |")


if __name__ == "__main__":
    main()
