"""Measure Optuna storages under several local writer processes (the choice behind search/storage.py).

    python benchmarks/storage_contention.py --procs 4 8 --trials-per-proc 25
    python benchmarks/storage_contention.py --postgres postgresql://pneumo:pneumo@127.0.0.1:54329/pneumo

Every process runs `study.optimize` with the search's sampler (multivariate TPE with constant
liar) on a stand-in objective that makes the same storage calls a real trial makes per epoch
(report, should_prune, user attributes) without training, so the storage is the bottleneck.
For each storage it prints wall time, trials per second, errors raised in workers, and whether
the study holds exactly procs x trials trials with unique numbers.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import shutil
import tempfile
import time
import traceback
from pathlib import Path

EPOCHS = 5
USER_ATTRS = 10


def _storage(kind: str, where: str, heartbeat: bool):
    import optuna

    if kind == "journal":
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(where))
    kwargs = {}
    if where.startswith("postgresql://"):  # SQLAlchemy 2.1 defaults to psycopg 3; the project ships psycopg2
        where = "postgresql+psycopg2://" + where[len("postgresql://"):]
    if where.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    if heartbeat:
        kwargs.update(heartbeat_interval=1, grace_period=30)
    return optuna.storages.RDBStorage(where, **kwargs)


def _worker(kind: str, where: str, name: str, index: int, n_trials: int, heartbeat: bool, errors) -> None:
    import warnings

    import optuna

    warnings.filterwarnings("ignore")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        storage = _storage(kind, where, heartbeat)
        sampler = optuna.samplers.TPESampler(seed=index, multivariate=True, constant_liar=True,
                                             n_startup_trials=5)
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)

        def objective(trial):
            x = sum(trial.suggest_float(f"f{i}", 0.0, 1.0) for i in range(8))
            x += sum(trial.suggest_categorical(f"c{i}", [0, 1, 2]) for i in range(6))
            for step in range(1, EPOCHS + 1):
                trial.report(x / step, step)
                trial.should_prune()
            for i in range(USER_ATTRS):
                trial.set_user_attr(f"a{i}", i * x)
            return x

        study.optimize(objective, n_trials=n_trials)
    except Exception:  # noqa: BLE001 - counted and shown
        errors.append(f"worker {index}: {traceback.format_exc().strip().splitlines()[-1]}")


def measure(kind: str, where: str, procs: int, per_proc: int, heartbeat: bool) -> dict:
    import optuna

    name = f"contention-{kind}-{procs}-{time.time_ns()}"
    optuna.create_study(study_name=name, storage=_storage(kind, where, False), direction="maximize")
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        errors = manager.list()
        workers = [ctx.Process(target=_worker, args=(kind, where, name, i, per_proc, heartbeat, errors))
                   for i in range(procs)]
        start = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        wall = time.perf_counter() - start
        errors = list(errors)
    trials = optuna.load_study(study_name=name, storage=_storage(kind, where, False)).trials
    numbers = [t.number for t in trials]
    done = sum(t.state.is_finished() for t in trials)
    return {"storage": kind, "procs": procs, "wall_s": round(wall, 1), "trials": len(trials),
            "finished": done, "trials_per_s": round(done / wall, 1),
            "unique_numbers": len(set(numbers)) == len(numbers), "errors": errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--procs", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--trials-per-proc", type=int, default=25)
    parser.add_argument("--postgres", help="also measure this PostgreSQL URL")
    parser.add_argument("--no-heartbeat", action="store_true", help="RDB storages without heartbeats")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="storage-contention-"))
    try:
        for procs in args.procs:
            cases = [("sqlite", f"sqlite:///{tmp / f'rollback-{procs}.db'}"),
                     ("sqlite-wal", f"sqlite:///{tmp / f'wal-{procs}.db'}"),
                     ("journal", str(tmp / f"study-{procs}.journal"))]
            if args.postgres:
                cases.append(("postgresql", args.postgres))
            for kind, where in cases:
                if kind == "sqlite-wal":
                    import sqlite3

                    with sqlite3.connect(where[len("sqlite:///"):]) as con:
                        con.execute("PRAGMA journal_mode=WAL")
                r = measure(kind if kind != "sqlite-wal" else "sqlite", where, procs, args.trials_per_proc,
                            heartbeat=not args.no_heartbeat and kind != "journal")
                r["storage"] = kind
                print(r, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
