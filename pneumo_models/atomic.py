"""Atomic writes: a reader sees the old file/folder or the new one, never half of either."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator


@contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w", *, permissions: int | None = None) -> Iterator[IO]:
    """An open file (``"w"`` text or ``"wb"`` binary) beside ``path`` that replaces ``path``, flushed
    and fsynced, when the block ends without an exception (and is removed when it does not).
    ``permissions`` (e.g. ``0o644``) are set before the replace; by default the file keeps
    ``tempfile.mkstemp``'s owner-only ``0o600``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        if permissions is not None:
            os.chmod(tmp, permissions)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str, *, permissions: int | None = None) -> Path:
    with atomic_file(path, permissions=permissions) as fh:
        fh.write(text)
    return Path(path)


def write_json(path: str | os.PathLike, data) -> Path:
    return write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def staging_dir(final: str | os.PathLike) -> Path:
    """A fresh folder beside ``final`` to fill before ``publish_dir``."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{final.name}.staging-", dir=final.parent))


def publish_dir(staged: Path, final: str | os.PathLike) -> Path:
    """Swap a fully written staging folder into place; the previous one is removed after."""
    final = Path(final)
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.replace(staged, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


@contextmanager
def staged_folder(final: str | os.PathLike) -> Iterator[Path]:
    """Fill the yielded staging folder; on success it replaces ``final`` at once, on any failure
    it is removed: a reader never finds half a folder, and nothing half-written is left behind."""
    staged = staging_dir(final)
    try:
        yield staged
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    publish_dir(staged, final)
