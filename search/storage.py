"""Where a study lives: an Optuna RDB storage with heartbeats, on SQLite or a database server.

Why these choices (measured with ``benchmarks/storage_contention.py``; numbers in README,
"Parallel and distributed runs"):

- One storage format for one worker and for many: ``sqlite:///<out>/study.db``. A study
  started with one worker can be resumed with ``--workers 8`` and the other way round.
- New SQLite files are switched to WAL mode (readers never block the writer): with 4 and 8
  local writer processes it ran about twice the trials per second of SQLite's default rollback
  journal, with no lock errors, no lost trial and no duplicated trial number (busy timeout 60 s).
- Optuna's journal file storage was faster still in that stand-in (about 2x WAL), but
  ``JournalStorage`` has no heartbeat in Optuna 5.0: a worker killed mid-trial would leave its
  trial RUNNING forever, never failed nor retried. Storage speed is not what limits a search
  here (even SQLite's slowest rate is a hundred times the rate real trials finish), recovery is;
  so SQLite (WAL) it is. WAL needs all writers on one machine (no network file system).
- Several machines: ``--storage postgresql://user:pass@host/db`` (any SQLAlchemy URL works).
  Trial numbers stay unique because Optuna locks the study's row while numbering a trial.

Heartbeats: every running trial writes one every ``PNEUMO_SEARCH_HEARTBEAT`` seconds (default
20); a trial silent for 3 intervals is failed by the next worker that looks, and re-queued
once or twice with the same parameters (``RetryHeartbeatStaleTrialCallback``). A trial whose
worker died after creating it but before its first heartbeat has no heartbeat at all, which
Optuna never calls stale; ``HeartbeatStorage`` fails it too once a process has seen it silent for
the same 3 intervals (timed on that process's own clock: no clocks compared across machines).
"""
from __future__ import annotations

import os
import re
import sqlite3
import time
from pathlib import Path

import optuna
from optuna.storages import RDBStorage

from .errors import UserError
from .layout import STUDY_DB

HEARTBEAT_ENV = "PNEUMO_SEARCH_HEARTBEAT"
DEFAULT_HEARTBEAT_SECONDS = 20
GRACE_INTERVALS = 3
MAX_RETRY = 2
SQLITE_BUSY_TIMEOUT_S = 60
CONNECT_TIMEOUT_S = 10


def heartbeat_seconds() -> int:
    """The heartbeat interval: ``$PNEUMO_SEARCH_HEARTBEAT`` (whole seconds >= 1) or 20."""
    raw = os.environ.get(HEARTBEAT_ENV, "").strip()
    if not raw:
        return DEFAULT_HEARTBEAT_SECONDS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise UserError(f"{HEARTBEAT_ENV} must be a whole number of seconds >= 1, got {raw!r}")
    return value


def default_url(out: str | os.PathLike) -> str:
    """The study's storage when none is given: a SQLite file in the output folder."""
    return f"sqlite:///{Path(out) / STUDY_DB}"


def sqlite_path(url: str) -> Path | None:
    """The file behind a ``sqlite:///`` URL (None for other URLs and in-memory databases)."""
    if not url.startswith("sqlite:"):
        return None
    path = url.split(":///", 1)[1] if ":///" in url else ""
    path = path.split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path)


def is_shared(url: str) -> bool:
    """Whether other machines may be writing to this storage (anything but a local SQLite file)."""
    return not url.startswith("sqlite:")


def redact(url: str) -> str:
    """The storage URL without its password (for messages, reports and cards)."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def _driver_url(url: str) -> str:
    """``postgresql://`` with a driver that is installed (SQLAlchemy 2.1 assumes psycopg 3)."""
    m = re.match(r"^(postgres|postgresql)://", url)
    if not m:
        return url
    import importlib.util

    for module, dialect in (("psycopg", "postgresql+psycopg"), ("psycopg2", "postgresql+psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return dialect + "://" + url[m.end():]
    raise UserError("cannot open a PostgreSQL storage: no driver installed (pip install psycopg2-binary)")


def _prepare_sqlite(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the study folder {path.parent} ({exc.strerror or exc})") from None
    if path.exists() and path.stat().st_size > 0:
        return  # never change a live database's journal mode under other processes
    try:
        with sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_S) as con:
            con.execute("PRAGMA journal_mode=WAL")
        con.close()
    except sqlite3.Error as exc:
        raise UserError(f"cannot create the study database {path} ({exc})") from None


def make_storage(url: str, *, heartbeat: bool = True) -> optuna.storages.BaseStorage:
    """An RDB storage (with heartbeats unless ``heartbeat=False``); one-line UserError if unusable."""
    kwargs: dict = {}
    path = sqlite_path(url)
    if path is not None:
        _prepare_sqlite(path)
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    elif re.match(r"^(postgres|postgresql)(\+\w+)?://", url):
        kwargs["engine_kwargs"] = {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S},
                                   "pool_pre_ping": True}
    if heartbeat:
        interval = heartbeat_seconds()
        kwargs.update(heartbeat_interval=interval, grace_period=GRACE_INTERVALS * interval,
                      heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                          max_retry=MAX_RETRY))
    for attempt in range(SCHEMA_RACE_RETRIES + 1):
        try:
            storage = (HeartbeatStorage if heartbeat else RDBStorage)(_driver_url(url), **kwargs)
            if path is not None:
                _serialise_sqlite_transactions(storage.engine)
            return storage
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - sorted out below
            if attempt < SCHEMA_RACE_RETRIES and _lost_schema_race(exc):
                time.sleep(0.2 * (attempt + 1))  # another process is creating the tables: use them
                continue
            raise_storage_error(url, exc)


SCHEMA_RACE_RETRIES = 5


class HeartbeatStorage(RDBStorage):
    """Optuna's RDB storage, whose stale trials also include RUNNING trials that never sent a
    heartbeat and stayed so for the grace period while this process watched.

    Optuna creates a trial RUNNING, samples its parameters, then starts its heartbeat thread: a
    worker killed in between (out-of-memory killer, SIGKILL, power loss) leaves a trial with no
    heartbeat row, which ``fail_stale_trials`` skips, so it stayed RUNNING for ever and a study
    waiting for its last trials waited for ever. Such a trial is first noted here when seen, and
    failed (then re-queued by the stale-trial callback, as any stale trial) once still silent after
    the grace period. A live worker's first heartbeat comes within that window (it follows the
    parameter sampling at once), so only dead workers' trials are failed.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._silent_since: dict[int, float] = {}

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale = list(super()._get_stale_trial_ids(study_id))
        grace = self.grace_period if self.grace_period is not None else 2 * self.heartbeat_interval
        running = [t._trial_id for t in self.get_all_trials(study_id, deepcopy=False,
                                                             states=(optuna.trial.TrialState.RUNNING,))]
        beating = self._with_heartbeat(running)
        now = time.monotonic()
        for trial_id in list(self._silent_since):
            if trial_id not in running or trial_id in beating:
                del self._silent_since[trial_id]
        for trial_id in running:
            if trial_id in beating or trial_id in stale:
                continue
            first_seen = self._silent_since.setdefault(trial_id, now)
            if now - first_seen > grace:
                stale.append(trial_id)
        return stale

    def _with_heartbeat(self, trial_ids: list[int]) -> set[int]:
        """Which of ``trial_ids`` have a heartbeat row (Optuna's own table)."""
        if not trial_ids:
            return set()
        import sqlalchemy
        from optuna.storages._rdb import models

        table = models.TrialHeartbeatModel.__table__
        with self.engine.connect() as conn:
            rows = conn.execute(sqlalchemy.select(table.c.trial_id).where(table.c.trial_id.in_(trial_ids)))
            return {int(r[0]) for r in rows}


def _serialise_sqlite_transactions(engine) -> None:
    """Make every SQLite transaction take the database's write lock when it begins.

    Optuna claims a WAITING trial (an enqueued start point, a re-queued stale trial) with a
    SELECT ... FOR UPDATE and then an UPDATE. SQLite has no FOR UPDATE, and Python's sqlite3
    driver only opens a transaction at the UPDATE, so two workers could both read WAITING and both
    claim the same trial: both train it and the second dies with "Cannot tell a COMPLETE trial".
    SQLAlchemy's recipe for pysqlite transactions, with BEGIN IMMEDIATE: the check and the claim
    then happen under one lock. Storage calls are milliseconds next to trials of minutes.
    """
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _driver_opens_no_transactions(dbapi_connection, _record):
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_with_the_write_lock(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened before the listeners (table creation) are not reused


def _lost_schema_race(exc: BaseException) -> bool:
    """Two processes opened a fresh storage at once and both tried to create Optuna's tables."""
    text = str(exc).lower()
    return ("alembic_version" in text and ("unique" in text or "duplicate" in text)) or "already exists" in text


def raise_storage_error(url: str, exc: BaseException):
    """Bad URL, unreachable server, missing driver, not a database: one line, password hidden."""
    text = " ".join(str(exc).split())
    text = re.sub(r"\(Background on this error at: [^)]*\)", "", text).strip()
    text = re.sub(r"^\([\w.]+\)\s*", "", text)  # "(psycopg2.OperationalError) ..." -> "..."
    raise UserError(f"cannot open storage {redact(url)}: {text[:240] or type(exc).__name__}") from None
