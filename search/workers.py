"""Parallel trials: worker processes on one study, each with its own GPU and a share of the CPUs.

``python -m search run --workers N`` (or ``--gpus 0,1 --workers-per-gpu K``) starts the workers
as separate processes (``python -m search _worker``), because what a worker may use must be set
before its deep-learning backend starts:

- ``CUDA_VISIBLE_DEVICES``: a ``--gpus`` worker sees only its own GPU (as device 0). GPU memory
  is allocated as needed, not all at once (``TF_FORCE_GPU_ALLOW_GROWTH``,
  ``XLA_PYTHON_CLIENT_PREALLOCATE=false``; PyTorch does so already), so K workers share a GPU.
- threads: the machine's CPUs (those this process may run on) are split evenly between workers,
  at least one each, through ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``,
  ``TF_NUM_INTRAOP_THREADS`` / ``TF_NUM_INTEROP_THREADS`` and, once Keras is up,
  ``torch.set_num_threads`` or TensorFlow's threading config: N workers never oversubscribe.
- a distinct sampler seed per worker (``RunSettings.sampler_seed``): TPE's random start-up
  trials would otherwise be the same in every worker.

Workers run their engine's loop (``Engine.run``) as a lone process does, on the same storage; they
get the command's settings in the environment (``PNEUMO_SEARCH_WORKER``, JSON; not on the
command line, where a storage password would show in ``ps``). Each writes its output to
``<out>/workers/<host>-worker<i>.log``. A worker ends with its command: the command forwards
Ctrl-C/SIGTERM to it, and a worker whose command was killed outright gets SIGTERM from the
kernel (``PR_SET_PDEATHSIG``), stops cleanly and leaves the study resumable.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from .errors import UserError
from .layout import WORKERS_DIR
from .outcome import RunOutcome

WORKER_COMMAND = "_worker"
WORKER_ENV = "PNEUMO_SEARCH_WORKER"
THREADS_ENV = "PNEUMO_SEARCH_THREADS"
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS")

# Worker exit statuses (beside 0 = the study holds its trials or the timeout came).
EXIT_USER_ERROR = 2
EXIT_FAILURES = 3
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class WorkerSpec:
    index: int
    gpu: str | None
    threads: int

    def describe(self) -> str:
        where = f"GPU {self.gpu}" if self.gpu is not None else "CPU"
        return f"worker {self.index} ({where}, {self.threads} thread{'s' if self.threads != 1 else ''})"


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def detect_gpus() -> tuple[str, ...]:
    """The GPUs this machine shows (``CUDA_VISIBLE_DEVICES`` if set, else ``nvidia-smi -L``)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return tuple(g.strip() for g in visible.split(",") if g.strip() and g.strip() != "-1")
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(str(i) for i, line in enumerate(l for l in out.splitlines() if l.startswith("GPU ")))


def parse_gpus(text: str | None) -> tuple[str, ...] | None:
    """``--gpus``: ``0,1,3``, GPU UUIDs, or ``all``."""
    if text is None:
        return None
    if text.strip().lower() == "all":
        found = detect_gpus()
        if not found:
            raise UserError("--gpus all: no GPU found (nvidia-smi lists none, or CUDA_VISIBLE_DEVICES is empty)")
        return found
    return tuple(g.strip() for g in text.split(","))


def plan(settings, cpus: int | None = None) -> list[WorkerSpec]:
    """One spec per worker: its index, its GPU (or None) and its thread budget."""
    n = settings.n_workers
    threads = max(1, (cpus or available_cpus()) // n)
    if settings.gpus:
        gpus = [g for g in settings.gpus for _ in range(settings.workers_per_gpu)]
        return [WorkerSpec(i, g, threads) for i, g in enumerate(gpus)]
    return [WorkerSpec(i, None, threads) for i in range(n)]


def worker_env(spec: WorkerSpec, settings, base: dict | None = None) -> dict:
    """The environment of one worker process: its devices, its threads, its settings."""
    env = dict(os.environ if base is None else base)
    t = str(spec.threads)
    for var in THREAD_VARS:
        env[var] = t
    env["TF_NUM_INTEROP_THREADS"] = str(min(2, spec.threads))
    env[THREADS_ENV] = t
    if spec.gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = spec.gpu
    env["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"
    env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    mine = replace(settings, worker_index=spec.index, export=False, report=False, progress=False)
    env[WORKER_ENV] = json.dumps({"settings": mine.to_dict(), "parent": os.getpid(), "gpu": spec.gpu})
    return env


# ---------------------------------------------------------------------------------------- worker side
def _die_with_parent(parent: int) -> None:
    """Ask the kernel for SIGTERM when the command that started us dies (Linux)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def apply_thread_limits() -> None:
    """Hold the running backend to ``$PNEUMO_SEARCH_THREADS`` threads (after Keras is imported)."""
    raw = os.environ.get(THREADS_ENV)
    if not raw:
        return
    threads = int(raw)
    import keras

    backend = keras.backend.backend()
    try:
        if backend == "torch":
            import torch

            torch.set_num_threads(threads)
            torch.set_num_interop_threads(min(2, threads))
        elif backend == "tensorflow":
            import tensorflow as tf

            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
    except RuntimeError:  # already initialised: the environment variables have done it
        pass


def worker_main() -> int:
    """Entry of ``python -m search _worker``: run trials on the command's study until it is done."""
    from .runtime import import_keras_quietly
    from .settings import RunSettings

    raw = os.environ.pop(WORKER_ENV, None)
    if not raw:
        raise UserError(f"{WORKER_COMMAND} is started by `python -m search run --workers N`, not by hand")
    payload = json.loads(raw)
    _die_with_parent(int(payload["parent"]))
    settings = RunSettings.from_dict(payload["settings"])
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    import_keras_quietly()
    apply_thread_limits()
    from .data_access import StudyData
    from .engines import get_engine
    from .storage import make_storage

    engine = get_engine(settings.engine)
    print(f"worker {settings.worker_index} on {socket.gethostname()} pid {os.getpid()}: study {settings.study!r}, "
          f"GPU {payload.get('gpu') or '-'}, threads {os.environ.get(THREADS_ENV, '-')}, "
          f"sampler seed {settings.sampler_seed}", flush=True)
    data = StudyData(settings.data, val_fraction=settings.val_fraction, seed=settings.seed,
                     cache_dir=settings.cache_dir, progress=False, framing=settings.framing)
    space = settings.build_space(data.info.resolution, data.framing)
    try:
        study = optuna.load_study(study_name=settings.study, storage=make_storage(settings.storage),
                                  sampler=engine.make_sampler(settings), pruner=engine.make_pruner(settings))
    except KeyError:
        raise UserError(f"study {settings.study!r} is not in its storage any more") from None
    outcome = engine.run(study, settings, data, space)
    if outcome.stopped_by == "interrupted":
        print(f"worker {settings.worker_index}: interrupted; its trial (if any) is marked failed", flush=True)
        return EXIT_INTERRUPTED
    print(f"worker {settings.worker_index}: done; the study holds {outcome.finished} finished trials", flush=True)
    return EXIT_FAILURES if outcome.stopped_by == "failures" else 0


# ---------------------------------------------------------------------------------------- command side
@dataclass
class _Worker:
    spec: WorkerSpec
    proc: subprocess.Popen
    log: Path

    def outcome(self) -> str | None:
        """A one-line account of a worker that did not end well (None when it did)."""
        rc = self.proc.returncode
        if rc in (0, EXIT_INTERRUPTED, EXIT_FAILURES):
            return None
        if rc is not None and rc < 0:
            try:
                name = signal.Signals(-rc).name
            except ValueError:
                name = f"signal {-rc}"
            return f"{self.spec.describe()} was killed by {name}; see {self.log}"
        return f"{self.spec.describe()} exited with status {rc}: {_last_line(self.log)} (see {self.log})"


def _last_line(path: Path) -> str:
    try:
        lines = [l.strip() for l in path.read_text(encoding="utf-8", errors="replace").splitlines() if l.strip()]
    except OSError:
        return "no log"
    return lines[-1][:300] if lines else "no output"


def run_workers(study, settings) -> RunOutcome:
    """Run ``settings.n_workers`` worker processes on ``study`` until they are all done.

    The outcome's ``problems`` has one line per worker that died or failed; ``stopped_by`` is
    ``"interrupted"`` after Ctrl-C/SIGTERM, ``"failures"`` when a worker stopped on
    ``--max-failures``, else ``"trials"`` or ``"workers"`` (they ended before the study held its
    trials: the timeout, or they died).
    """
    from .progress import StudyProgress, count

    specs = plan(settings)
    log_dir = Path(settings.out) / WORKERS_DIR
    log_dir.mkdir(parents=True, exist_ok=True)
    before = count(study)
    host = socket.gethostname()
    workers: list[_Worker] = []
    print(f"{len(specs)} workers on study {settings.study!r}: "
          + "; ".join(s.describe() for s in specs) + f"; logs in {log_dir}", flush=True)
    received: list[int] = []

    def on_signal(signum, frame):
        received.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    progress = StudyProgress(study, settings.trials, enabled=settings.progress, timeout=settings.timeout,
                             max_epochs=settings.max_epochs)
    try:
        for spec in specs:
            log = log_dir / f"{host}-worker{spec.index}.log"
            with open(log, "ab") as fh:
                fh.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} {spec.describe()} ---\n".encode())
                proc = subprocess.Popen([sys.executable, "-m", "search", WORKER_COMMAND], env=worker_env(spec, settings),
                                        stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                        start_new_session=True)  # our signals reach them through us, once
            workers.append(_Worker(spec, proc, log))
        forwarded = 0
        last_refresh = 0.0
        while any(w.proc.poll() is None for w in workers):
            if len(received) > forwarded:
                # first signal: pass it on (they stop cleanly); a second one: stop them now
                sig = received[forwarded] if forwarded == 0 else signal.SIGKILL
                forwarded = len(received)
                for w in workers:
                    if w.proc.poll() is None:
                        w.proc.send_signal(sig)
                if sig == signal.SIGKILL:
                    print("\nstopped the workers (SIGKILL); their trials are failed by heartbeat on resume",
                          file=sys.stderr, flush=True)
            if time.monotonic() - last_refresh > 2.0:
                progress(study, None)
                last_refresh = time.monotonic()
            time.sleep(0.2)
    finally:
        for w in workers:  # an exception here (not a signal) must not leave workers behind
            if w.proc.poll() is None:
                w.proc.send_signal(signal.SIGTERM)
        for w in workers:
            try:
                w.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()
        for s, handler in previous.items():
            signal.signal(s, handler)
        progress(study, None)
        progress.close()
    if received:
        stopped_by = "interrupted"
    elif any(w.proc.returncode == EXIT_FAILURES for w in workers):
        stopped_by = "failures"
    else:
        stopped_by = "trials" if count(study) >= settings.trials else "workers"
    return RunOutcome.after(study, settings.run_id, before, stopped_by,
                            problems=[p for p in (w.outcome() for w in workers) if p])
