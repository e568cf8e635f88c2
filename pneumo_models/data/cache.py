"""On-disk cache of decoded images: one entry per (source fingerprint, input size).

An entry is a folder holding ``images.npy`` (uint8 (N, S, S), read back with
``np.load(mmap_mode="r")``) and ``index.json`` (file order, labels, patients,
splits, skipped files).  Both are written to a temp file then ``os.replace``d;
``index.json`` goes last and marks the entry complete.  An ``fcntl.flock`` on the
entry's lock file makes a second process building the same entry wait and then
reuse the first one's result.  No pickle anywhere.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from .errors import DataError

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows: no cross-process lock, writes stay atomic
    fcntl = None  # type: ignore[assignment]

CACHE_FORMAT = 1
CACHE_ENV = "PNEUMO_SEARCH_CACHE"


def default_cache_dir() -> Path:
    """``$PNEUMO_SEARCH_CACHE`` or ``~/.cache/pneumo-search``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "pneumo-search"


def resolve_cache_dir(cache_dir: str | os.PathLike | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


def ensure_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(
            f"cannot create cache folder {path} ({e.strerror or e}); set {CACHE_ENV} to a writable folder"
        ) from e
    return path


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock on ``path`` (created if needed), held for the ``with`` body."""
    ensure_dir(path.parent)
    try:
        fh = open(path, "a+b")
    except OSError as e:
        raise DataError(f"cannot create lock file {path} ({e.strerror or e}); set {CACHE_ENV} to a writable folder") from e
    with fh:
        if fcntl is not None:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def atomic_path(dest: Path) -> Iterator[Path]:
    """Yield a temp path beside ``dest``; on success it replaces ``dest`` atomically."""
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def save_npy_atomic(dest: Path, array: np.ndarray) -> None:
    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(array), allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())


def save_npz_atomic(dest: Path, arrays: dict[str, np.ndarray]) -> None:
    ensure_dir(dest.parent)
    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())


def write_json_atomic(dest: Path, obj: Any) -> None:
    with atomic_path(dest) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, separators=(",", ":"))
            f.flush()
            os.fsync(f.fileno())


def _read_entry(entry: Path, expect: dict[str, Any]) -> tuple[np.ndarray, dict] | None:
    """The entry's (images memmap, index) when complete and matching ``expect``, else None."""
    index_path = entry / "index.json"
    if not index_path.is_file():
        return None
    try:
        with open(index_path, encoding="utf-8") as f:
            index = json.load(f)
        if index.get("format") != CACHE_FORMAT or any(index.get(k) != v for k, v in expect.items()):
            return None
        images = np.load(entry / "images.npy", mmap_mode="r", allow_pickle=False)
        s = int(index["input_size"])
        if images.dtype != np.uint8 or images.shape != (int(index["n"]), s, s):
            return None
        if len(index["ids"]) != images.shape[0]:
            return None
        return images, index
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load_or_build(
    cache_dir: Path,
    key: str,
    expect: dict[str, Any],
    build: Callable[[], tuple[np.ndarray, dict]],
) -> tuple[np.ndarray, dict, bool]:
    """Return (images memmap, index, built_now) for cache entry ``key``, building it once.

    ``build()`` returns the uint8 (N, S, S) array and the index dict (``ids`` etc.);
    ``expect`` items are stored in the index and must match for a hit.
    """
    entry = ensure_dir(cache_dir / "decoded" / key)
    hit = _read_entry(entry, expect)
    if hit is not None:
        return (*hit, False)
    with file_lock(entry / ".lock"):
        hit = _read_entry(entry, expect)  # another process may have built it meanwhile
        if hit is not None:
            return (*hit, False)
        images, index = build()
        index = {**index, **expect, "format": CACHE_FORMAT, "n": int(images.shape[0])}
        try:
            save_npy_atomic(entry / "images.npy", images)
            write_json_atomic(entry / "index.json", index)
        except OSError as e:
            raise DataError(f"cannot write the image cache in {entry} ({e.strerror or e})") from e
        hit = _read_entry(entry, expect)
        if hit is None:  # pragma: no cover - only on a broken filesystem
            raise DataError(f"image cache in {entry} could not be read back after writing it")
        return (*hit, True)
