"""Shared test helpers: run the CLI in a subprocess the way a user does."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = (ROOT / ".." / "shared" / "data").resolve()

# Small, fast models for tests: the search still samples everything else.
TINY = ["--set", "conv_blocks=2", "--set", "base_filters=8", "--set", "dense_units=32",
        "--set", "batch_size=64", "--set", "filter_growth=1.0"]


def run_cli(*args: str, cache_dir: Path | None = None, env: dict | None = None, timeout: int = 600,
            check: bool = False) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1", **(env or {})}
    if cache_dir is not None:
        full_env["PNEUMO_SEARCH_CACHE"] = str(cache_dir)
    proc = subprocess.run([sys.executable, "-m", "search", *args], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}")
    return proc
