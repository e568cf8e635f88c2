"""Several worker processes on one study: exactly N finished trials, no number twice, none lost.

The PostgreSQL test needs a server: `.ci/run` starts one on 127.0.0.1 (`.ci/postgres.sh`) and
exports PNEUMO_TEST_POSTGRES_URL; without it that test skips and says so.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import optuna
import pytest
from optuna.trial import TrialState

from helpers import ROOT, TINY, run_cli

POSTGRES_ENV = "PNEUMO_TEST_POSTGRES_URL"
N = 6


@pytest.fixture(scope="module")
def postgres_url() -> str:
    from search.errors import UserError
    from search.storage import make_storage, redact

    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(f"no PostgreSQL server for the multi-machine storage test: set {POSTGRES_ENV} "
                    "(.ci/run starts one with .ci/postgres.sh)")
    try:
        make_storage(url, heartbeat=False)
    except UserError as exc:
        pytest.skip(f"PostgreSQL at {redact(url)} is not reachable: {exc}")
    return url


def _run_workers(tmp_path, study: str, storage: str | None) -> tuple[subprocess.CompletedProcess, str]:
    out = tmp_path / study
    args = ["run", "--workers", "4", "--trials", str(N), "--max-epochs", "1", "--data", "synthetic",
            "--study", study, "--out", str(out), "--no-progress", "--no-report", "--no-export", *TINY]
    if storage:
        args += ["--storage", storage]
    proc = run_cli(*args, cache_dir=tmp_path / "cache", env={"PNEUMO_SEARCH_HEARTBEAT": "2"}, check=True)
    return proc, storage or f"sqlite:///{out / 'study.db'}"


def _check_exactly_n(study_name: str, url: str, out) -> None:
    from search.storage import make_storage

    study = optuna.load_study(study_name=study_name, storage=make_storage(url, heartbeat=False))
    trials = study.get_trials(deepcopy=False)
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(len(trials))), numbers  # none duplicated, none missing
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == N
    assert not [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    # the only failures allowed are workers that lost a race for the last slot (and said so)
    for t in trials:
        if t.state == TrialState.FAIL:
            assert t.user_attrs.get("fail_kind") == "surplus", t.user_attrs
    assert len({t.user_attrs["worker"] for t in finished}) >= 2  # trials really ran in several processes
    # distinct sampler seeds: no two workers proposed the same start-up configuration
    params = [json.dumps(t.params, sort_keys=True) for t in finished]
    assert len(set(params)) == len(params)
    # what each trial wrote is under <out>/trials/<number>/
    for t in finished:
        record = json.loads((out / "trials" / str(t.number) / "trial.json").read_text())
        assert record["number"] == t.number and record["state"] == t.state.name
        assert (out / "trials" / str(t.number) / "epochs.jsonl").read_text().strip()
    logs = sorted((out / "workers").glob("*-worker*.log"))
    assert len(logs) == 4


def test_four_workers_on_local_storage_reach_exactly_n(tmp_path):
    proc, url = _run_workers(tmp_path, "local4", None)
    assert f"study 'local4': {N} finished trials ({N} new)" in proc.stdout
    assert "4 workers" in proc.stdout
    _check_exactly_n("local4", url, tmp_path / "local4")
    with open(tmp_path / "local4" / "study.db", "rb") as fh:  # the multi-process-safe journal mode
        assert fh.read(20)[18:20] == b"\x02\x02"  # SQLite header: WAL read/write versions


def test_four_workers_on_postgresql_reach_exactly_n(tmp_path, postgres_url):
    from search.storage import make_storage

    name = f"pg4-{uuid.uuid4().hex[:8]}"
    try:
        proc, url = _run_workers(tmp_path, name, postgres_url)
        assert f"study '{name}': {N} finished trials ({N} new)" in proc.stdout
        _check_exactly_n(name, url, tmp_path / name)
    finally:
        try:
            optuna.delete_study(study_name=name, storage=make_storage(postgres_url, heartbeat=False))
        except KeyError:
            pass


def test_worker_plan_devices_threads_and_seeds(tmp_path):
    from search.settings import RunSettings
    from search.workers import THREADS_ENV, WORKER_ENV, plan, worker_env

    cpu = RunSettings(trials=4, data="synthetic", out=tmp_path, workers=4)
    specs = plan(cpu, cpus=8)
    assert [s.threads for s in specs] == [2, 2, 2, 2] and all(s.gpu is None for s in specs)
    assert [s.threads for s in plan(cpu, cpus=2)] == [1, 1, 1, 1]  # at least one each, never more than cores
    env = worker_env(specs[1], cpu, base={})
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", THREADS_ENV):
        assert env[var] == "2"
    assert "CUDA_VISIBLE_DEVICES" not in env
    sent = json.loads(env[WORKER_ENV])["settings"]
    assert sent["worker_index"] == 1 and not sent["export"] and not sent["report"]
    assert RunSettings.from_dict(sent).sampler_seed != cpu.sampler_seed
    assert cpu.sampler_seed == cpu.seed  # a lone local run keeps its reproducible seed

    gpu = RunSettings(trials=4, data="synthetic", out=tmp_path, gpus=("0", "1"), workers_per_gpu=2)
    specs = plan(gpu, cpus=16)
    assert [s.gpu for s in specs] == ["0", "0", "1", "1"] and [s.threads for s in specs] == [4] * 4
    env = worker_env(specs[2], gpu, base={"CUDA_VISIBLE_DEVICES": "0,1"})
    assert env["CUDA_VISIBLE_DEVICES"] == "1"  # each worker sees only its own GPU
    assert env["TF_FORCE_GPU_ALLOW_GROWTH"] == "true" and env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    seeds = {RunSettings.from_dict(json.loads(worker_env(s, gpu, base={})[WORKER_ENV])["settings"]).sampler_seed
             for s in specs}
    assert len(seeds) == 4


def test_worker_threads_are_limited_under_torch():
    pytest.importorskip("torch")
    code = ("import os; os.environ['PNEUMO_SEARCH_THREADS'] = '1'\n"
            "from search.workers import apply_thread_limits; apply_thread_limits()\n"
            "import torch; print(torch.get_num_threads())")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "KERAS_BACKEND": "torch", "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "1"


def _claim_enqueued(url: str) -> str:
    """One worker process: run trials of the study 'race' until 10 are done (see the test below)."""
    import time

    from search.storage import make_storage

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name="race", storage=make_storage(url, heartbeat=False))

    def objective(trial):
        x = trial.suggest_int("x", 0, 1000)
        time.sleep(0.05)
        return x

    try:
        study.optimize(objective, n_trials=10)
        return "ok"
    except Exception as exc:  # noqa: BLE001 - the test reports what went wrong
        return repr(exc)[:200]


def test_concurrent_workers_claim_each_enqueued_trial_once(tmp_path):
    """Start points and re-queued trials wait in the study; on SQLite two processes used to claim
    the same one (no SELECT ... FOR UPDATE there): both trained it, the second crashed on tell."""
    import multiprocessing

    from search.storage import make_storage

    url = f"sqlite:///{tmp_path / 'race.db'}"
    study = optuna.create_study(study_name="race", storage=make_storage(url, heartbeat=False))
    for x in range(40):
        study.enqueue_trial({"x": x})
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        outcomes = pool.map(_claim_enqueued, [url] * 4)
    assert outcomes == ["ok"] * 4
    claimed = sorted(t.params["x"] for t in study.trials if t.state == TrialState.COMPLETE)
    assert claimed == list(range(40))  # every enqueued trial ran exactly once
