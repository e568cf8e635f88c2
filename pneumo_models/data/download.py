"""PneumoniaMNIST download (the default data source), MD5-checked and written atomically."""
from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from .cache import atomic_path, ensure_dir, file_lock
from .errors import DataError, one_line

#: Official MedMNIST v2/v3 file (28 px) and its MD5 from ``medmnist.INFO["pneumoniamnist"]["MD5"]``.
PNEUMONIAMNIST_URL = "https://zenodo.org/records/10519652/files/pneumoniamnist.npz?download=1"
PNEUMONIAMNIST_MD5 = "28209eda62fecd6e6a2d98b1501bb15f"

_HINT = "pass --data PATH to a local folder or .npz (or --data synthetic for a demo)"


def default_npz_path(cache_dir: Path) -> Path:
    return cache_dir / "downloads" / "pneumoniamnist.npz"


def _reason(e: BaseException) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):
        return one_line(e.reason)
    return one_line(e) or type(e).__name__


def fetch(url: str, dest: Path, *, md5: str | None = None, sha256: str | None = None, what: str = "PneumoniaMNIST",
          hint: str = _HINT, progress: bool | None = None, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` (temp file + MD5 or SHA-256 check + os.replace). DataError on any
    failure, one line: "cannot download <what> (<reason>); <hint>"."""
    if (md5 is None) == (sha256 is None):
        raise ValueError("fetch needs exactly one of md5= and sha256=")
    expected, algorithm = (md5, "MD5") if md5 is not None else (sha256, "SHA-256")
    ensure_dir(dest.parent)
    try:
        with atomic_path(dest) as tmp:
            digest = hashlib.md5() if md5 is not None else hashlib.sha256()
            with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as out:
                total = int(resp.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {dest.name}",
                          disable=None if progress is None else not progress) as bar:
                    while chunk := resp.read(1 << 16):
                        out.write(chunk)
                        digest.update(chunk)
                        bar.update(len(chunk))
                out.flush()
                os.fsync(out.fileno())
            if digest.hexdigest() != expected:
                raise DataError(
                    f"cannot download {what} ({algorithm} mismatch for {url}: got {digest.hexdigest()}, "
                    f"expected {expected}); {hint}"
                )
    except DataError:
        raise
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        raise DataError(f"cannot download {what} ({_reason(e)}); {hint}") from e
    return dest


def ensure_pneumoniamnist(cache_dir: Path, *, download: bool = True, progress: bool | None = None) -> Path:
    """Path of ``<cache_dir>/downloads/pneumoniamnist.npz``, downloading it when absent."""
    dest = default_npz_path(cache_dir)
    if dest.is_file():
        return dest
    if not download:
        raise DataError(
            f"cannot download PneumoniaMNIST (downloading is off and {dest} is absent); {_HINT}"
        )
    with file_lock(dest.with_name(dest.name + ".lock")):
        if not dest.is_file():  # another process may have fetched it while we waited
            fetch(PNEUMONIAMNIST_URL, dest, md5=PNEUMONIAMNIST_MD5, progress=progress)
    return dest
