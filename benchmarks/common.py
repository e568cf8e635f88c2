"""Shared by the benchmarks: machine facts, search runs on pinned cores, study read-back, tables, JSON."""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
SHARED = (ROOT / ".." / "shared" / "data").resolve()
DEFAULT_OUT = ROOT / "runs" / "benchmarks"


def machine() -> dict:
    """What the numbers were measured on (goes into every JSON and README table)."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        mem_gib = None
    gpu = None
    if os.environ.get("KERAS_BACKEND", "tensorflow") == "torch":
        try:
            import torch

            gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        except ImportError:
            pass
    versions = {}
    for mod in ("keras", "optuna", "keras_tuner", "numpy"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return {"date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "cpu": cpu, "cores": os.cpu_count(), "memory_gib": mem_gib, "gpu": gpu,
            "keras_backend": os.environ.get("KERAS_BACKEND", "tensorflow"),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(), "versions": versions}


def write_json(path: str | Path, payload: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=float))
    return path


def table(headers: list[str], rows: list[list]) -> str:
    """A plain-text table (also valid Markdown)."""
    cells = [[str(h) for h in headers]] + [["-" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(cells[0]), "| " + " | ".join("-" * w for w in widths) + " |", *map(line, cells[1:])])


def mean_sd(values: list[float]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    m = sum(vals) / len(vals)
    sd = (sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5 if len(vals) > 1 else 0.0
    return m, sd


def fmt(value, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


# ------------------------------------------------------------------ search runs
@dataclass
class Run:
    """One `python -m search run` of a benchmark, identified by its method and seed."""

    method: str
    seed: int
    out: Path
    study: str
    cli_args: list[str]
    budget_s: float | None = None          # kill the process this long after its first trial began
    returncode: int | None = None
    core: int | None = None
    log: Path | None = None
    extra: dict = field(default_factory=dict)


def _first_trial_start(db: Path) -> datetime | None:
    if not db.exists():
        return None
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            row = con.execute("SELECT min(datetime_start) FROM trials").fetchone()
    except sqlite3.Error:
        return None
    if not row or row[0] is None:
        return None
    return datetime.fromisoformat(row[0])


def run_all(runs: list[Run], *, parallel: int, cache_dir: str | None = None, threads: int | None = None,
            quiet: bool = False) -> None:
    """Run the searches ``parallel`` at a time, each pinned to its own core when there are enough.

    A run with ``budget_s`` gets ``--timeout budget_s`` and is stopped (SIGTERM, then SIGKILL)
    ``budget_s`` seconds after its first trial started, so no run uses a core past its budget.
    """
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    pin = len(cores) >= parallel > 0
    per_run = threads or (max(1, len(cores) // parallel) if cores else 1)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1",
           "TF_NUM_INTRAOP_THREADS": str(per_run), "TF_NUM_INTEROP_THREADS": "1",
           "OMP_NUM_THREADS": str(per_run), "MKL_NUM_THREADS": str(per_run)}
    if cache_dir:
        env["PNEUMO_SEARCH_CACHE"] = str(cache_dir)
    queue = list(runs)
    active: list[tuple[Run, subprocess.Popen, float, int]] = []
    free = list(range(parallel))
    while queue or active:
        while queue and free:
            run = queue.pop(0)
            slot = free.pop(0)
            run.out.mkdir(parents=True, exist_ok=True)
            run.log = run.out / "run.log"
            run.core = cores[slot * per_run] if pin else None
            my_cores = set(cores[slot * per_run:(slot + 1) * per_run]) if pin else None
            args = [sys.executable, "-m", "search", "run", *run.cli_args]
            if "--space" not in run.cli_args:  # what these benchmarks measured: the CNN space, never auto's choice
                args += ["--space", "default"]
            if run.budget_s:
                args += ["--timeout", str(run.budget_s)]
            fh = open(run.log, "w")
            proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                    preexec_fn=(lambda c=my_cores: os.sched_setaffinity(0, c)) if pin else None)
            proc._log = fh  # type: ignore[attr-defined]
            active.append((run, proc, time.time(), slot))
            if not quiet:
                print(f"  started {run.method} seed {run.seed}" + (f" on core {run.core}" if pin else ""), flush=True)
        time.sleep(1.0)
        for item in list(active):
            run, proc, started, slot = item
            if proc.poll() is None and run.budget_s:
                t0 = _first_trial_start(run.out / "study.db")
                if t0 is not None and (datetime.now() - t0).total_seconds() > run.budget_s + 2:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        proc.kill()
            if proc.poll() is not None:
                proc._log.close()  # type: ignore[attr-defined]
                run.returncode = proc.returncode
                active.remove(item)
                free.append(slot)
                free.sort()
                if not quiet:
                    print(f"  finished {run.method} seed {run.seed} (exit {proc.returncode}, "
                          f"{time.time() - started:.0f} s)", flush=True)


def prewarm(data: str, sets: list[str], input_sizes: str | None, cache_dir: str | None) -> None:
    """Decode the data once at every searched size, framed as the runs frame it, before any timed run,
    so no run pays for it."""
    from search.cli import parse_overrides, parse_sizes
    from search.data_access import StudyData
    from search.settings import RunSettings

    settings = RunSettings(data=data, space="default", overrides=parse_overrides(sets),
                           input_sizes=parse_sizes(input_sizes))
    study_data = StudyData(data, val_fraction=settings.val_fraction, seed=0, cache_dir=cache_dir,
                           progress=False, framing=settings.framing)
    for size in settings.build_space(study_data.info.resolution, study_data.framing).input_sizes():
        study_data.at(size)


def add_run_args(p, *, name: str, max_epochs: int = 10) -> None:
    """The options every search benchmark takes (data, seeds, epochs, cores, space limits, output)."""
    p.add_argument("--data", default=str(SHARED / "pneumoniamnist.npz"),
                   help="data source (default: ../shared/data/pneumoniamnist.npz)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default: 0 1 2)")
    p.add_argument("--max-epochs", type=int, default=max_epochs, help="epochs per trial at most (default: %(default)s)")
    p.add_argument("--parallel", type=int, default=2, help="runs at a time, one core each (default: %(default)s)")
    p.add_argument("--input-sizes", help="restrict the space's input sizes (e.g. 64 for Kermany at 64 px)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="passed to every run")
    p.add_argument("--cache-dir", help="decoded-image cache (default: $PNEUMO_SEARCH_CACHE or ~/.cache/pneumo-search)")
    p.add_argument("--out", default=DEFAULT_OUT / name, help="folder for the runs' studies (default: %(default)s)")
    p.add_argument("--json", help=f"raw numbers (default: <out>/{name}.json)")


def begin(args, *, name: str, headline: str) -> tuple[Path, Path, dict]:
    """Say what runs, note the machine and fill the image cache: (out folder, JSON path, machine)."""
    out = Path(args.out)
    print(f"{headline}, {args.parallel} at a time, data {args.data}", flush=True)
    facts = machine()
    prewarm(args.data, args.set, args.input_sizes, args.cache_dir)
    return out, Path(args.json) if args.json else out / f"{name}.json", facts


def search_args(*, engine: str, seed: int, study: str, out: Path, data: str, max_epochs: int,
                trials: int, pruner: str | None = None, sets: list[str] = (), input_sizes: str | None = None) -> list[str]:
    args = ["--engine", engine, "--seed", str(seed), "--study", study, "--out", str(out), "--data", data,
            "--max-epochs", str(max_epochs), "--trials", str(trials), "--no-export", "--no-report", "--no-progress",
            # a fair comparison of engines: no known-good first trials, no default time limit
            "--no-starts", "--timeout", "0"]
    if pruner:
        args += ["--pruner", pruner]
    if input_sizes:
        args += ["--input-sizes", input_sizes]
    for s in sets:
        args += ["--set", s]
    return args


def study_trials(run: Run) -> list[dict]:
    """The run's trials as plain dicts, times in seconds from the first trial's start."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{run.out / 'study.db'}"
    try:
        study = optuna.load_study(study_name=run.study, storage=storage)
    except Exception:  # the run died before creating its study
        return []
    trials = study.get_trials(deepcopy=False)
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    if not starts:
        return []
    t0 = min(starts)
    out = []
    for t in trials:
        if t.datetime_start is None:
            continue
        end = t.datetime_complete
        out.append({"number": t.number, "state": t.state.name, "value": t.value,
                    "start_s": (t.datetime_start - t0).total_seconds(),
                    "end_s": (end - t0).total_seconds() if end else None,
                    "epochs": t.user_attrs.get("epochs", len(t.intermediate_values))})
    return sorted(out, key=lambda d: (d["end_s"] is None, d["end_s"] or 0.0))


def best_curve(trials: list[dict], budget_s: float | None = None) -> list[list[float]]:
    """[[seconds, best COMPLETE value so far], ...] at each improvement, within the budget."""
    curve, best = [], None
    for t in trials:
        if t["state"] != "COMPLETE" or t["value"] is None or t["end_s"] is None:
            continue
        if budget_s is not None and t["end_s"] > budget_s:
            continue
        if best is None or t["value"] > best:
            best = t["value"]
            curve.append([round(t["end_s"], 2), best])
    return curve


def time_to_reach(curve: list[list[float]], target: float) -> float | None:
    for t, v in curve:
        if v >= target - 1e-12:
            return t
    return None


def import_benchmarks_path() -> None:
    """Let `python benchmarks/bench_x.py` import `benchmarks.common` like `python -m benchmarks.bench_x`."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


class SearchedRun(NamedTuple):
    """A finished study as the benchmarks that train its trials again need it."""
    study: object          # optuna.Study
    attrs: dict            # its search record (search.study.search_record)
    data: object           # the data it was searched on, with its split (search.study.StudyData)
    min_recall: float
    options: object        # the training levers it was searched with (pneumo_models.training.TrainOptions)


def parse_study_args(doc: str, argv, results: str) -> tuple[argparse.Namespace, Path, Path]:
    """The command line of a benchmark that reads a finished study: ``--study``, ``--out`` (its run folder),
    ``--test-data``, ``--json`` (default ``runs/exp/<results>_<study>.json``). Returns the arguments, the run
    folder and the JSON path."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--study", required=True)
    ap.add_argument("--out", help="the run folder (default runs/<study>)")
    ap.add_argument("--test-data", help="where the test split is (default: the study's data); PneumoniaMNIST has "
                                        "none here: ../shared/data/chest_xray at 28 px is the stand-in")
    ap.add_argument("--json", help=f"where the results go (default runs/exp/{results}_<study>.json)")
    args = ap.parse_args(argv)
    return (args, Path(args.out or ROOT / "runs" / args.study),
            Path(args.json or ROOT / "runs" / "exp" / f"{results}_{args.study}.json"))


def searched_run(study_name: str, out: Path) -> SearchedRun | None:
    """The study in ``<out>/study.db`` with its data and training levers; None (and a line on stderr)
    when there is no such study."""
    from pneumo_models.training import TrainOptions
    from search.errors import UserError
    from search.study import load_study, recorded_training, search_record, searched_data

    try:
        study = load_study(study_name, f"sqlite:///{out / 'study.db'}")
        attrs = search_record(study)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    data = searched_data(study, progress=False, needed_by="this benchmark")
    return SearchedRun(study, attrs, data, float(attrs["min_recall"]), TrainOptions(**recorded_training(attrs)))


def scored_once(y_val, p_val, y_test, p_test, min_recall: float) -> dict:
    """Validation's own figures (AUC, recall-constrained accuracy), a threshold chosen on validation by
    the product's rule (``umbrella``), then the test split scored once at it; ``test_best_at_floor``:
    the test split's own best accuracy at recall >= the floor (any threshold: what a perfect threshold
    would have given, never one the product could choose)."""
    from pneumo_models import metrics

    thr = metrics.choose_threshold(y_val, p_val, min_recall, rule="umbrella")
    m = metrics.metrics_at(y_test, p_test, thr)
    return {"val_auc": metrics.auc(y_val, p_val),
            "val_rc": metrics.recall_constrained_accuracy(y_val, p_val, min_recall).accuracy,
            "test_auc": metrics.auc(y_test, p_test), "threshold": thr,
            "test_accuracy": m.accuracy, "test_recall": m.recall, "test_specificity": m.specificity,
            "test_best_at_floor": metrics.recall_constrained_accuracy(y_test, p_test, min_recall).accuracy}


def trial_splits(run: SearchedRun, trial, test_source: str | None = None) -> tuple[dict, object, object]:
    """A trial's whole configuration, the study's split at its input size, and the test split at that size
    and framing (from ``test_source``, default the study's data)."""
    from pneumo_models.data import load_split
    from search.final_model import full_params

    params = full_params(trial)
    size = int(params["input_size"])
    test = load_split(test_source or run.data.source, size, "test", progress=False, framing=run.data.framing)
    return params, run.data.at(size), test
