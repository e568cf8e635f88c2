"""Benchmark 3: the same Optuna study with and without pruning, at an equal number of trials.

    python benchmarks/bench_pruning.py --trials 15 --seeds 0 1 2

Both arms are `python -m search run --engine optuna` (multivariate TPE, same seed, space and
data); one with ``--pruner hyperband``, one with ``--pruner none``. Early stopping (patience)
is on in both, as in every search. Reported per arm: epochs trained (all trials, pruned ones
included), wall time, best validation recall-constrained accuracy.
With ``--budget SEC`` each run is also stopped SEC seconds after its first trial began, and
both arms of a seed are compared on the trials both finished: the first N finished trials of
each, N = the smaller count (equal trials without letting one slow arm take the whole budget).
Target: >= 60% fewer epochs with pruning at an equal best score, "equal" meaning the
difference of the mean best scores is within the seeds' spread (the larger standard deviation
of the two arms).
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402

ARMS = {"pruned": "hyperband", "unpruned": "none"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_run_args(p, name="pruning")
    p.add_argument("--trials", type=int, default=15, help="finished trials per run (default: %(default)s)")
    p.add_argument("--budget", type=float, help="stop each run this many seconds after its first trial began and "
                                                "compare the arms on the trials both finished (default: no limit)")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    out, json_path, machine = common.begin(
        args, name="pruning",
        headline=f"pruning: {args.trials} trials x {len(args.seeds)} seeds, with and without Hyperband pruning")
    runs = []
    for arm in ("unpruned", "pruned"):  # longest first: better packing on the cores
        for seed in args.seeds:
            folder = out / f"{arm}-seed{seed}"
            shutil.rmtree(folder, ignore_errors=True)
            study = f"prune-{arm}-{seed}"
            cli = common.search_args(engine="optuna", pruner=ARMS[arm], seed=seed, study=study, out=folder,
                                     data=args.data, max_epochs=args.max_epochs, trials=args.trials,
                                     sets=args.set, input_sizes=args.input_sizes)
            runs.append(common.Run(method=arm, seed=seed, out=folder, study=study, cli_args=cli, budget_s=args.budget))
    common.run_all(runs, parallel=args.parallel, cache_dir=args.cache_dir)
    finished = {}
    for run in runs:
        trials = common.study_trials(run)
        finished[(run.method, run.seed)] = sorted(
            (t for t in trials if t["state"] in ("COMPLETE", "PRUNED") and t["end_s"] is not None),
            key=lambda t: t["number"])
    results: dict = {arm: [] for arm in ARMS}
    for run in runs:
        n = min(args.trials, *(len(finished[(arm, run.seed)]) for arm in ARMS))
        first = finished[(run.method, run.seed)][:n]  # equal trials: the first n finished of each arm
        complete = [t["value"] for t in first if t["state"] == "COMPLETE" and t["value"] is not None]
        results[run.method].append({
            "seed": run.seed, "exit_code": run.returncode, "compared_trials": n,
            "trials_finished": len(first), "trials_finished_in_run": len(finished[(run.method, run.seed)]),
            "trials_pruned": sum(t["state"] == "PRUNED" for t in first),
            "epochs": sum(t["epochs"] or 0 for t in first),
            "wall_s": max((t["end_s"] for t in first), default=None),
            "best": max(complete, default=None), "trials": common.study_trials(run)})
    arms = {}
    for arm, rs in results.items():
        e_m, e_sd = common.mean_sd([r["epochs"] for r in rs])
        w_m, w_sd = common.mean_sd([r["wall_s"] for r in rs])
        b_m, b_sd = common.mean_sd([r["best"] for r in rs])
        arms[arm] = {"epochs_mean": e_m, "epochs_sd": e_sd, "wall_s_mean": w_m, "wall_s_sd": w_sd,
                     "best_mean": b_m, "best_sd": b_sd,
                     "trials_mean": common.mean_sd([r["trials_finished"] for r in rs])[0],
                     "pruned_mean": common.mean_sd([r["trials_pruned"] for r in rs])[0]}
    p, u = arms["pruned"], arms["unpruned"]
    fewer = (1 - p["epochs_mean"] / u["epochs_mean"]) if p["epochs_mean"] is not None and u["epochs_mean"] else None
    faster = (1 - p["wall_s_mean"] / u["wall_s_mean"]) if p["wall_s_mean"] is not None and u["wall_s_mean"] else None
    diff = (p["best_mean"] - u["best_mean"]) if p["best_mean"] is not None and u["best_mean"] is not None else None
    spread = max(p["best_sd"] or 0.0, u["best_sd"] or 0.0)
    equal = diff is not None and (diff >= 0 or abs(diff) <= spread)
    summary = {"arms": arms, "epochs_fewer_fraction": fewer, "wall_time_fewer_fraction": faster,
               "best_difference": diff, "seed_spread": spread, "equal_best": equal,
               "target_met": bool(fewer is not None and fewer >= 0.6 and equal)}
    payload = {"benchmark": "pruning", "machine": machine,
               "command": "python benchmarks/bench_pruning.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "settings": {"data": args.data, "trials": args.trials, "seeds": args.seeds, "max_epochs": args.max_epochs,
                            "budget_s": args.budget, "parallel": args.parallel, "input_sizes": args.input_sizes, "set": args.set,
                            "sampler": "optuna TPESampler(multivariate=True, n_startup_trials=5)",
                            "pruners": {"pruned": "HyperbandPruner(min_resource=1, max_resource=max_epochs, "
                                                  "reduction_factor=3)", "unpruned": "NopPruner"}},
               "summary": summary, "runs": results}
    common.write_json(json_path, payload)
    rows = [[arm, len(results[arm]), common.fmt(a["trials_mean"], 1), common.fmt(a["pruned_mean"], 1),
             f"{common.fmt(a['epochs_mean'], 1)} ± {common.fmt(a['epochs_sd'], 1)}",
             f"{common.fmt(a['wall_s_mean'], 0)} ± {common.fmt(a['wall_s_sd'], 0)}",
             f"{common.fmt(a['best_mean'])} ± {common.fmt(a['best_sd'])}"] for arm, a in arms.items()]
    print(f"\nraw numbers: {json_path}")
    print(f"pruning trains {common.fmt(100 * fewer if fewer is not None else None, 0)}% fewer epochs and takes "
          f"{common.fmt(100 * faster if faster is not None else None, 0)}% less wall time; best score difference "
          f"{common.fmt(diff)} (seed spread {common.fmt(spread)}): target "
          f"{'met' if summary['target_met'] else 'not met'}")
    print(common.table(["arm", "seeds", "trials", "pruned", "epochs (mean ± sd)", "wall s (mean ± sd)",
                        "best (mean ± sd)"], rows))
    return payload


if __name__ == "__main__":
    main()
