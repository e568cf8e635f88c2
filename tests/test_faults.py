"""Crashes, signals and bad trials: nothing finished is lost, the study always completes or says why.

Heartbeats are set to 1 s (PNEUMO_SEARCH_HEARTBEAT) so that a killed worker's trial is found
stale after 3 s instead of a minute.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from helpers import ROOT, TINY, run_cli

FAST_HEARTBEAT = {"PNEUMO_SEARCH_HEARTBEAT": "1"}
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def _study(out: Path, name: str) -> optuna.Study:
    from search.storage import make_storage

    return optuna.load_study(study_name=name, storage=make_storage(f"sqlite:///{out / 'study.db'}", heartbeat=False))


def _snapshot(out: Path, name: str) -> dict:
    return {t.number: (t.state.name, t.value, json.dumps(t.params, sort_keys=True))
            for t in _study(out, name).get_trials(deepcopy=False, states=FINISHED)}


def _start(args: list[str], cache: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1", "PNEUMO_SEARCH_CACHE": str(cache),
           **FAST_HEARTBEAT}
    fh = open(log, "w")
    return subprocess.Popen([sys.executable, "-m", "search", *args], cwd=ROOT, env=env, stdout=fh,
                            stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for(predicate, proc: subprocess.Popen, log: Path, timeout: float = 240):
    """Poll until ``predicate()`` returns something truthy (the command must still be running)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = predicate()
        except (KeyError, optuna.exceptions.StorageInternalError):  # study not created yet
            found = None
        if found:
            return found
        if proc.poll() is not None:
            raise AssertionError(f"command ended ({proc.returncode}) before the awaited state:\n{log.read_text()[-3000:]}")
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting; log:\n{log.read_text()[-3000:]}")


def _mid_trial(out: Path, name: str, min_finished: int = 1):
    """A RUNNING trial that has finished at least one epoch, once ``min_finished`` trials are done."""
    study = _study(out, name)
    trials = study.get_trials(deepcopy=False)
    if sum(t.state in FINISHED for t in trials) < min_finished:
        return None
    for t in trials:
        log = out / "trials" / str(t.number) / "epochs.jsonl"
        if t.state == TrialState.RUNNING and "worker" in t.user_attrs and log.exists() and log.read_text().strip():
            return t
    return None


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _run_args(name: str, out: Path, trials: int, *extra: str) -> list[str]:
    return ["run", "--trials", str(trials), "--max-epochs", "3", "--patience", "3", "--pruner", "none",
            "--data", "synthetic", "--study", name, "--out", str(out), "--no-progress", "--no-report",
            "--no-export", *TINY, *extra]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and POSIX signals")
def test_killed_workers_lose_nothing_and_rerun_completes(tmp_path):
    name, out, cache = "kill", tmp_path / "kill", tmp_path / "cache"
    args = _run_args(name, out, 5, "--workers", "2")
    proc = _start(args, cache, tmp_path / "first.log")
    try:
        # 1. one worker dies mid-trial (SIGKILL: no chance to clean up)
        victim = _wait_for(lambda: _mid_trial(out, name), proc, tmp_path / "first.log")
        victim_pid = int(victim.user_attrs["worker"].split()[0].split("/")[1])
        os.kill(victim_pid, signal.SIGKILL)
        # the other worker finds its trial stale by heartbeat, fails it and re-queues its parameters
        _wait_for(lambda: _study(out, name).trials[victim.number].state == TrialState.FAIL, proc,
                  tmp_path / "first.log")
        # 2. then the power goes: the command and its remaining worker stop dead mid-trial
        _wait_for(lambda: _mid_trial(out, name, min_finished=2), proc, tmp_path / "first.log")
        everyone = [proc.pid, *_children(proc.pid)]
        for pid in everyone:
            os.kill(pid, signal.SIGSTOP)  # frozen first, so none can react to the others' deaths
        for pid in reversed(everyone):
            os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    before = _snapshot(out, name)
    assert 2 <= len(before) < 5
    cut_off = [t.number for t in _study(out, name).trials if t.state == TrialState.RUNNING]
    assert cut_off  # a trial was running when the power went

    # 3. re-running the same command completes the study to N; earlier results are untouched
    again = run_cli(*args, cache_dir=cache, env=FAST_HEARTBEAT, check=True)
    assert f"study '{name}': 5 finished trials" in again.stdout
    study = _study(out, name)
    after = {t.number: (t.state.name, t.value, json.dumps(t.params, sort_keys=True))
             for t in study.get_trials(deepcopy=False, states=FINISHED)}
    assert len(after) == 5
    assert {n: after[n] for n in before} == before
    trials = study.get_trials(deepcopy=False)
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]
    for number in (victim.number, *cut_off):
        assert trials[number].state == TrialState.FAIL
    # the SIGKILLed trial was retried with the same parameters
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    assert retries and retries[0].params == victim.params


_DIE_BEFORE_FIRST_HEARTBEAT = """
import os, signal, sys
import optuna
from search.storage import make_storage
study = optuna.create_study(study_name=sys.argv[2], storage=make_storage(sys.argv[1]), direction="maximize",
                            load_if_exists=True)
trial = study.ask()   # the trial is RUNNING now; Optuna starts its heartbeat only after this returns
print(trial.number, flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # the worker dies here: its trial never sent a heartbeat
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses POSIX signals")
def test_a_worker_killed_before_its_first_heartbeat_does_not_block_the_study(tmp_path):
    name, out = "orphan", tmp_path / "orphan"
    out.mkdir()
    url = f"sqlite:///{out / 'study.db'}"
    env = {**os.environ, **FAST_HEARTBEAT}
    killed = subprocess.run([sys.executable, "-c", _DIE_BEFORE_FIRST_HEARTBEAT, url, name], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    orphan = int(killed.stdout.split()[0])
    assert _study(out, name).trials[orphan].state == TrialState.RUNNING
    # the next run sees a RUNNING trial with no heartbeat at all: it fails it (and re-queues it)
    # instead of waiting for it for ever, and completes the study
    proc = run_cli("run", "--trials", "1", "--max-epochs", "1", "--data", "synthetic", "--study", name,
                   "--out", str(out), "--no-progress", "--no-report", "--no-export", "--no-starts", *TINY,
                   cache_dir=tmp_path / "cache", env=FAST_HEARTBEAT, timeout=300, check=True)
    assert f"study '{name}': 1 finished trials" in proc.stdout
    trials = _study(out, name).get_trials(deepcopy=False)
    assert trials[orphan].state == TrialState.FAIL
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]
    assert [t.number for t in trials if t.system_attrs.get("failed_trial") == orphan]  # re-queued


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and POSIX signals")
def test_sigterm_stops_workers_cleanly_and_the_study_stays_resumable(tmp_path):
    name, out, cache = "term", tmp_path / "term", tmp_path / "cache"
    proc = _start(_run_args(name, out, 6, "--workers", "2"), cache, tmp_path / "term.log")
    try:
        _wait_for(lambda: _mid_trial(out, name, min_finished=0), proc, tmp_path / "term.log")
        workers = _children(proc.pid)
        assert len(workers) == 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 130
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = (tmp_path / "term.log").read_text()
    assert "interrupted:" in text and "re-run the same command to resume" in text
    assert "Traceback" not in text
    for pid in workers:  # no worker left behind
        deadline = time.monotonic() + 30
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(pid)
    trials = _study(out, name).get_trials(deepcopy=False)
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]  # nothing left for a heartbeat
    stopped = [t for t in trials if t.state == TrialState.FAIL]
    assert stopped and all(t.user_attrs.get("fail_kind") == "interrupted" for t in stopped)


def test_diverging_trials_fail_alone_and_the_study_completes(tmp_path):
    from search.storage import make_storage

    name, out = "nan", tmp_path / "nan"
    # The space is forced to diverge (learning rate 1e3). Adam on residual blocks without batch
    # normalisation overflows to NaN in the first epoch; RMSprop on plain blocks with batch
    # normalisation saturates but stays finite. Queue one of each first so that both outcomes
    # happen whatever the sampler would have drawn.
    diverges = {"optimizer": "adam", "block": "residual", "batch_norm": False, "kernel_size": 5}
    survives = {"optimizer": "rmsprop", "block": "plain", "batch_norm": True, "kernel_size": 3}
    study = optuna.create_study(study_name=name, direction="maximize",
                                storage=make_storage(f"sqlite:///{out / 'study.db'}", heartbeat=False))
    for params in (diverges, survives, survives):
        study.enqueue_trial(params)
    proc = run_cli("run", "--trials", "2", "--max-epochs", "1", "--data", "synthetic", "--study", name,
                   "--out", str(out), "--no-progress", "--no-report", "--no-export", *TINY,
                   "--set", "learning_rate=1000", cache_dir=tmp_path / "cache", check=True)
    assert "Traceback" not in proc.stderr
    study = _study(out, name)
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert failed and {k: failed[0].params[k] for k in diverges} == diverges
    for t in failed:
        assert t.user_attrs["fail_kind"] == "diverged"
        assert "training loss became nan" in t.user_attrs["fail_reason"] or "inf" in t.user_attrs["fail_reason"]
        assert json.loads((out / "trials" / str(t.number) / "trial.json").read_text())["state"] == "FAIL"
    assert len([t for t in study.trials if t.state in FINISHED]) == 2
    summary = [line for line in proc.stdout.splitlines() if line.startswith(f"study '{name}'")]
    assert summary and f"{len(failed)} failed and not counted: {len(failed)} diverged" in summary[0]


def test_a_study_where_every_trial_diverges_stops_with_one_line(tmp_path):
    proc = run_cli("run", "--trials", "2", "--max-epochs", "1", "--data", "synthetic", "--study", "allnan",
                   "--out", str(tmp_path / "allnan"), "--no-progress", "--no-report", *TINY,
                   "--set", "learning_rate=1000", "--set", "optimizer=adam", "--set", "block=residual",
                   "--set", "batch_norm=false", "--set", "kernel_size=5", "--max-failures", "2",
                   cache_dir=tmp_path / "cache")
    assert proc.returncode == 3
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert lines[0].startswith("error: stopped after 2 failed trials (--max-failures 2) with 0 of 2 finished")
    assert "training loss became" in lines[0]
    study = _study(tmp_path / "allnan", "allnan")
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL]
    assert not (tmp_path / "allnan" / "best_model").exists()


def test_out_of_memory_fails_the_trial_alone(tmp_path, monkeypatch):
    import search.objective as objective_module
    from search.data_access import StudyData
    from spaces import get_space

    calls = []

    def fake_fit(params, dataset, **kwargs):  # the first trial runs out of GPU memory, the next trains
        calls.append(params)
        if len(calls) == 1:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.10 GiB total)")
        from pneumo_models.training import fit
        return fit(params, dataset, **kwargs)

    monkeypatch.setattr(objective_module, "fit", fake_fit)
    data = StudyData("synthetic", val_fraction=0.2, seed=0, cache_dir=tmp_path / "cache", progress=False)
    space = get_space("default").restrict_input_size(64).with_overrides(
        conv_blocks=2, base_filters=8, dense_units=32, batch_size=64, filter_growth=1.0)
    objective = objective_module.Objective(space, data, max_epochs=1, min_recall=0.95, patience=1, seed=0,
                                           target=1, trials_dir=tmp_path / "trials")
    study = optuna.create_study(direction="maximize")
    study.optimize(objective, n_trials=2, catch=(objective_module.TrialFailed,))
    first, second = study.trials
    assert first.state == TrialState.FAIL and first.user_attrs["fail_kind"] == "out_of_memory"
    assert first.user_attrs["fail_reason"].startswith("out of memory: CUDA out of memory")
    assert second.state == TrialState.COMPLETE
    assert json.loads((tmp_path / "trials" / "0" / "trial.json").read_text())["fail_kind"] == "out_of_memory"


# Every trial of this space diverges in its first epoch (see the test above).
ALL_DIVERGE = ["--set", "learning_rate=1000", "--set", "optimizer=adam", "--set", "block=residual",
               "--set", "batch_norm=false", "--set", "kernel_size=5"]


@pytest.mark.parametrize("engine", ["optuna", "random", "kerastuner-hyperband", "kerastuner-bayes"])
def test_max_failures_stops_every_engine(engine, tmp_path, capsys):
    from search.cli import main

    out = tmp_path / engine
    # --timeout only guards the test: an engine that ignored --max-failures would end there (exit 0)
    code = main(["run", "--engine", engine, "--trials", "3", "--max-epochs", "2", "--data", "synthetic",
                 "--study", engine, "--out", str(out), "--no-progress", "--no-report", "--timeout", "300",
                 "--max-failures", "2", "--cache-dir", str(tmp_path / "cache"), *TINY, *ALL_DIVERGE])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 3, err
    assert len(err) == 1 and err[0].startswith("error: stopped after 2 failed trials (--max-failures 2) with "
                                               "0 of 3 finished; last reason: training loss became")
    study = _study(out, engine)
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(failed) == 2 and all(t.user_attrs["fail_kind"] == "diverged" for t in failed)
    assert len({t.user_attrs["run_id"] for t in failed}) == 1  # this run's, as --max-failures counts them
    assert not [t for t in study.trials if t.state in FINISHED]
    assert not (out / "best_model").exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX signals")
def test_a_sigterm_lost_in_a_destructor_still_stops_the_search():
    # Python drops an exception raised while a __del__ runs (TensorFlow frees functions that way):
    # the search loops ask again before each trial.
    from search.runtime import raise_if_terminated, sigterm_as_interrupt

    class FreedByTheBackend:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)  # the handler runs here, inside __del__

    with pytest.raises(KeyboardInterrupt):
        with sigterm_as_interrupt():
            FreedByTheBackend()  # made and freed at once; its KeyboardInterrupt is lost
            raise_if_terminated()
    raise_if_terminated()  # outside the block: nothing pending


def test_resume_queues_each_interrupted_start_point_once_and_only_those_no_trial_holds():
    """The re-queue on resume, on a real (in-memory) Optuna study: a start point an interruption cut off
    twice is queued once; one another trial finished, or one that failed for another reason, is not."""
    from search.failures import INTERRUPTED
    from search.requeue import requeue_interrupted_starts

    study = optuna.create_study(direction="maximize")
    points = [{"lr": 0.001, "optimizer": "adam"}, {"lr": 0.01, "optimizer": "adam"}, {"lr": 0.1, "optimizer": "sgd"}]

    def start(point, state, fail_kind=None):
        study.enqueue_trial(point, user_attrs={"start_point": True})
        trial = study.ask()
        for name in point:  # the objective suggests; the queue fixed the values
            trial.suggest_categorical(name, sorted({p[name] for p in points}))
        if fail_kind:
            trial.set_user_attr("fail_kind", fail_kind)
        study.tell(trial, 0.9 if state == TrialState.COMPLETE else None, state=state)

    start(points[0], TrialState.FAIL, INTERRUPTED)
    start(points[0], TrialState.FAIL, INTERRUPTED)  # cut off twice: queued once
    start(points[1], TrialState.FAIL, INTERRUPTED)
    start(points[1], TrialState.COMPLETE)  # ran whole since: not queued again
    start(points[2], TrialState.FAIL, "diverged")  # would fail again: not queued

    assert requeue_interrupted_starts(study) == [points[0]]
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    assert [t.system_attrs["fixed_params"] for t in waiting] == [points[0]]
    assert requeue_interrupted_starts(study) == []  # the waiting trial holds it now


def test_two_machines_resuming_at_once_run_each_interrupted_start_point_once(tmp_path):
    """Two handles on one real storage both read the study before either queues (machines resuming one
    study at the same moment), so both queue the interrupted start points; a copy a worker takes while
    the earlier one holds the point steps back; one whose earlier copy was cut off too runs."""
    from search.failures import INTERRUPTED
    from search.requeue import REQUEUE_OF, interrupted_starts, requeue_interrupted_starts, requeued_earlier

    url = f"sqlite:///{tmp_path / 'study.db'}"
    first = optuna.create_study(study_name="s", storage=url, direction="maximize")
    points = [{"lr": 0.001, "optimizer": "adam"}, {"lr": 0.01, "optimizer": "sgd"}]

    def take(study, expected):
        trial = study.ask()  # Optuna hands waiting trials out in their order
        assert trial.number == expected
        for name in points[0]:  # the objective suggests; the queue fixed the values
            trial.suggest_categorical(name, sorted({p[name] for p in points}))
        return trial

    def interrupt(study, trial):
        trial.set_user_attr("fail_kind", INTERRUPTED)
        study.tell(trial, state=TrialState.FAIL)

    for number, point in enumerate(points):
        first.enqueue_trial(point, user_attrs={"start_point": True})
        interrupt(first, take(first, number))

    second = optuna.load_study(study_name="s", storage=url)
    read = [interrupted_starts(s.get_trials(deepcopy=False)) for s in (first, second)]
    assert read[0] == read[1] == [(0, points[0]), (1, points[1])]
    for study, again in zip((first, second), read):  # both queue what they read: trials 2, 3 and 4, 5
        for number, point in again:
            study.enqueue_trial(point, user_attrs={"start_point": True, REQUEUE_OF: number})

    a, b, a_copy = take(first, 2), take(second, 3), take(first, 4)
    assert requeued_earlier(a) is None and requeued_earlier(b) is None
    assert requeued_earlier(a_copy) == 2  # trial 2 runs point 0: the copy steps back
    first.tell(a, 0.9)
    assert requeued_earlier(a_copy) == 2  # finished, trial 2 still holds it
    first.tell(a_copy, state=TrialState.FAIL)
    interrupt(second, b)  # point 1's first copy cut off as well
    b_copy = take(second, 5)
    assert requeued_earlier(b_copy) is None  # nothing else holds point 1: this one runs it
    assert requeue_interrupted_starts(first) == []  # trial 2 holds point 0, trial 5 point 1


def test_a_run_steps_back_from_a_start_point_queued_twice(tmp_path):
    """The race's outcome, run for real: a study resumed with an interrupted start point queued twice (as
    two machines resuming at once leave it) runs it once; the copy fails at once, said so, and the
    search still ends with its N finished trials."""
    from search.failures import REQUEUED_TWICE, counted_failures
    from search.requeue import REQUEUE_OF

    out = tmp_path / "twice"
    run_cli(*_run_args("twice", out, 1), cache_dir=tmp_path / "cache", check=True)
    study = _study(out, "twice")
    point = study.trials[0].params
    for _ in range(2):  # trial 0 stands in for the start point an interruption cut off
        study.enqueue_trial(point, user_attrs={"start_point": True, REQUEUE_OF: 0})
    run_cli(*_run_args("twice", out, 3), cache_dir=tmp_path / "cache", check=True)

    trials = {t.number: t for t in _study(out, "twice").trials}
    assert trials[1].state in FINISHED and trials[1].user_attrs[REQUEUE_OF] == 0
    assert trials[2].state == TrialState.FAIL and trials[2].user_attrs["fail_kind"] == REQUEUED_TWICE
    assert "trial 1 runs this start point again" in trials[2].user_attrs["fail_reason"]
    assert not (out / "trials" / "2").exists()  # nothing trained
    assert sorted(n for n, t in trials.items() if t.state in FINISHED) == [0, 1, 3]
    assert counted_failures(_study(out, "twice")) == []  # not a failure --max-failures counts
