"""Benchmark 2: search efficiency at an equal wall-clock budget, same space and data.

    python benchmarks/bench_search_efficiency.py --budget 300 --seeds 0 1 2
    python benchmarks/bench_search_efficiency.py --data ../shared/data/chest_xray --input-sizes 64

Methods (each a `python -m search run` with one engine, one seed, the same space and data):
  optuna-tpe-hyperband   --engine optuna (multivariate TPE) --pruner hyperband
  kerastuner-hyperband   --engine kerastuner-hyperband
  kerastuner-bayes       --engine kerastuner-bayes
  random                 --engine random (RandomSampler, no pruning)
Runs go ``--parallel`` at a time, each pinned to its own core(s), and each is stopped
``--budget`` seconds after its first trial began; only trials finished within the budget count.

Reported: the best validation recall-constrained accuracy against time (Plotly HTML, JS
embedded), and the time each method takes to reach random search's final best (the median
over seeds of random's best at the budget). Target: Optuna reaches it in <= 1/3 of random's time.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402

METHODS = {
    "optuna-tpe-hyperband": {"engine": "optuna", "pruner": "hyperband"},
    "kerastuner-hyperband": {"engine": "kerastuner-hyperband"},
    "kerastuner-bayes": {"engine": "kerastuner-bayes"},
    "random": {"engine": "random", "pruner": "none"},
}
COLORS = {"optuna-tpe-hyperband": "#1f77b4", "kerastuner-hyperband": "#ff7f0e",
          "kerastuner-bayes": "#2ca02c", "random": "#7f7f7f"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_run_args(p, name="search_efficiency")
    p.add_argument("--budget", type=float, default=300.0, help="wall-clock seconds per run (default: %(default)s)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--html", type=Path, help="figure (default: <out>/search_efficiency.html)")
    return p.parse_args(argv)


def summarise(results: dict, methods: list[str], budget: float) -> dict:
    random_finals = [r["final_best"] for r in results.get("random", []) if r["final_best"] is not None]
    target = statistics.median(random_finals) if random_finals else None
    summary = {"target": target, "target_rule": "median over seeds of random search's best at the budget",
               "methods": {}}
    for m in methods:
        runs = results.get(m, [])
        for r in runs:
            r["time_to_target_s"] = common.time_to_reach(r["curve"], target) if target is not None else None
        times = [r["time_to_target_s"] for r in runs]
        reached = [t for t in times if t is not None]
        # median over seeds, counting a seed that never reached the target as "more than the budget"
        ordered = sorted(t if t is not None else float("inf") for t in times)
        med = statistics.median(ordered) if ordered else None
        finals = [r["final_best"] for r in runs]
        mean, sd = common.mean_sd(finals)
        summary["methods"][m] = {
            "seeds": len(runs), "final_best_mean": mean, "final_best_sd": sd,
            "trials_mean": common.mean_sd([r["trials_finished"] for r in runs])[0],
            "epochs_mean": common.mean_sd([r["epochs"] for r in runs])[0],
            "reached": len(reached), "median_time_to_target_s": None if med in (None, float("inf")) else med,
        }
    rnd = summary["methods"].get("random", {}).get("median_time_to_target_s")
    for m, s in summary["methods"].items():
        t = s["median_time_to_target_s"]
        s["time_vs_random"] = (t / rnd) if (t is not None and rnd) else None
    opt = summary["methods"].get("optuna-tpe-hyperband", {}).get("time_vs_random")
    summary["target_met"] = bool(opt is not None and opt <= 1 / 3)
    summary["budget_s"] = budget
    return summary


def figure(results: dict, summary: dict, path: Path, title: str) -> Path:
    import plotly.graph_objects as go

    fig = go.Figure()
    budget = summary["budget_s"]
    for m, runs in results.items():
        for i, r in enumerate(runs):
            xs = [p[0] for p in r["curve"]] + ([budget] if r["curve"] else [])
            ys = [p[1] for p in r["curve"]] + ([r["curve"][-1][1]] if r["curve"] else [])
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", line={"shape": "hv", "color": COLORS.get(m)},
                                     name=m, legendgroup=m, showlegend=i == 0, opacity=0.8,
                                     hovertemplate=f"{m} seed {r['seed']}<br>%{{x:.0f}} s: %{{y:.4f}}<extra></extra>"))
    if summary["target"] is not None:
        fig.add_hline(y=summary["target"], line_dash="dot", line_color="black",
                      annotation_text="random search's final best (median over seeds)")
    fig.update_layout(title=title, xaxis_title="wall-clock seconds since the run's first trial",
                      yaxis_title="best validation recall-constrained accuracy", template="plotly_white")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(str(path), include_plotlyjs=True, full_html=True)  # JS embedded: works offline
    return path


def main(argv=None) -> dict:
    args = parse_args(argv)
    out, json_path, machine = common.begin(
        args, name="search_efficiency",
        headline=f"search efficiency: {len(args.methods)} methods x {len(args.seeds)} seeds, {args.budget:.0f} s each")
    html_path = args.html or out / "search_efficiency.html"
    runs = []
    for seed in args.seeds:
        for m in args.methods:
            folder = out / f"{m}-seed{seed}"
            shutil.rmtree(folder, ignore_errors=True)
            study = f"eff-{m}-{seed}"
            cli = common.search_args(engine=METHODS[m]["engine"], pruner=METHODS[m].get("pruner"), seed=seed,
                                     study=study, out=folder, data=args.data, max_epochs=args.max_epochs,
                                     trials=100000, sets=args.set, input_sizes=args.input_sizes)
            runs.append(common.Run(method=m, seed=seed, out=folder, study=study, cli_args=cli, budget_s=args.budget))
    common.run_all(runs, parallel=args.parallel, cache_dir=args.cache_dir)
    results: dict = {m: [] for m in args.methods}
    for run in runs:
        trials = common.study_trials(run)
        curve = common.best_curve(trials, args.budget)
        within = [t for t in trials if t["end_s"] is not None and t["end_s"] <= args.budget]
        results[run.method].append({
            "seed": run.seed, "exit_code": run.returncode, "curve": curve,
            "final_best": curve[-1][1] if curve else None,
            "trials_finished": sum(t["state"] in ("COMPLETE", "PRUNED") for t in within),
            "trials_pruned": sum(t["state"] == "PRUNED" for t in within),
            "trials_failed": sum(t["state"] == "FAIL" for t in within),
            "epochs": sum(t["epochs"] or 0 for t in within), "trials": trials})
    summary = summarise(results, args.methods, args.budget)
    payload = {"benchmark": "search_efficiency", "machine": machine,
               "command": "python benchmarks/bench_search_efficiency.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "settings": {"data": args.data, "budget_s": args.budget, "seeds": args.seeds, "max_epochs": args.max_epochs,
                            "parallel": args.parallel, "input_sizes": args.input_sizes, "set": args.set,
                            "methods": {m: METHODS[m] for m in args.methods}},
               "summary": summary, "runs": results}
    common.write_json(json_path, payload)
    figure(results, summary, html_path, f"Best validation recall-constrained accuracy vs time "
                                        f"({Path(args.data).name}, {args.budget:.0f} s per run, seeds {args.seeds})")
    rows = []
    for m in args.methods:
        s = summary["methods"][m]
        rows.append([m, s["seeds"], common.fmt(s["trials_mean"], 1), common.fmt(s["epochs_mean"], 1),
                     f"{common.fmt(s['final_best_mean'])} ± {common.fmt(s['final_best_sd'])}",
                     f"{s['reached']}/{s['seeds']}", common.fmt(s["median_time_to_target_s"], 0),
                     common.fmt(s["time_vs_random"], 2)])
    print(f"\nraw numbers: {json_path}\nfigure: {html_path}")
    print(f"target = random search's final best, median over seeds: {common.fmt(summary['target'])}; "
          f"Optuna within 1/3 of random's time: {'yes' if summary['target_met'] else 'no'}")
    print(common.table(["method", "seeds", "trials", "epochs", "best at budget (mean ± sd)", "reached target",
                        "median s to target", "time / random"], rows))
    return payload


if __name__ == "__main__":
    main()
