"""A run's results as Optuna artifacts of its study, so optuna-dashboard shows them beside the trials.

    optuna-dashboard sqlite:///runs/demo/study.db --artifact-dir runs/demo/artifacts

The report, the model card and the serving files (``serving.json``, ``model.onnx``, the
``saved_model/`` folder as one zip) are uploaded with ``optuna.artifacts.upload_artifact`` into a
``FileSystemArtifactStore`` at ``<out>/artifacts``, at the end of a run's finish step and of
``export-serving``. A file whose same content is already attached under the same name is not
uploaded twice; a changed file (a new report, a re-export) is attached as a new version.
"""
from __future__ import annotations

import mimetypes
import tempfile
from pathlib import Path

from pneumo_models.card import file_sha256

ARTIFACTS_DIR = "artifacts"  # <out>/artifacts: the study's artifact store
MIMETYPES = {".html": "text/html", ".json": "application/json", ".onnx": "application/octet-stream",
             ".zip": "application/zip", ".keras": "application/zip", ".csv": "text/csv"}


def artifact_dir(out: str | Path) -> Path:
    return Path(out) / ARTIFACTS_DIR


def _zip_folder(folder: Path, into: Path) -> Path:
    """``folder`` as ``<into>/<folder name>.zip`` with fixed timestamps (same content, same bytes)."""
    import zipfile

    target = into / f"{folder.name}.zip"
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(p for p in folder.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(f"{folder.name}/{f.relative_to(folder).as_posix()}", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, f.read_bytes())
    return target


def attach(study, out: str | Path, files) -> list[dict]:
    """Upload ``files`` (folders as zips) to ``study``'s artifacts in ``<out>/artifacts``.

    Returns one ``{"file", "artifact_id", "new"}`` per file; files that do not exist are left out.
    """
    from optuna.artifacts import FileSystemArtifactStore, get_all_artifact_meta, upload_artifact

    store_dir = artifact_dir(out)
    store_dir.mkdir(parents=True, exist_ok=True)
    store = FileSystemArtifactStore(str(store_dir))
    try:
        existing = get_all_artifact_meta(study)
    except Exception:  # noqa: BLE001 - an entry another tool blanked out: treat as none attached
        existing = []
    done = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in (Path(f) for f in files):
            if not path.exists():
                continue
            upload = _zip_folder(path, Path(tmp)) if path.is_dir() else path
            digest = file_sha256(upload)
            same = next((m for m in existing if m.filename == upload.name
                         and (store_dir / m.artifact_id).is_file() and file_sha256(store_dir / m.artifact_id) == digest),
                        None)
            if same is not None:
                done.append({"file": str(path), "artifact_id": same.artifact_id, "new": False})
                continue
            mimetype = MIMETYPES.get(upload.suffix.lower()) or mimetypes.guess_type(upload.name)[0] \
                or "application/octet-stream"
            artifact_id = _upload(upload_artifact, store, upload, study, mimetype)
            done.append({"file": str(path), "artifact_id": artifact_id, "new": True})
    return done


def _upload(upload_artifact, store, path: Path, study, mimetype: str) -> str:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "experimental" notices of Optuna's artifact API
        return upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=study, mimetype=mimetype)


def run_files(model_dir: Path | None, report: Path | None) -> list[Path]:
    """What a run attaches: the report, the model card and the serving files that exist."""
    from pneumo_models.card import CARD_FILE
    from pneumo_models.serving import serving_files

    files: list[Path] = []
    if report is not None:
        files.append(Path(report))
    if model_dir is not None and Path(model_dir).is_dir():
        files.append(Path(model_dir) / CARD_FILE)
        files += serving_files(model_dir)
    return [f for f in files if f.exists()]


def dashboard_command(storage_url: str, out: str | Path) -> str:
    """The command that shows the study and its artifacts (password hidden)."""
    from .storage import redact

    return f"optuna-dashboard {redact(storage_url)} --artifact-dir {artifact_dir(out)}"


def attach_run(study, out: str | Path, *, model_dir: Path | None, report: Path | None, storage_url: str) -> list[dict]:
    """The finish step's last act: attach what the run wrote, and say how to see it."""
    attached = attach(study, out, run_files(model_dir, report))
    if attached:
        new = sum(a["new"] for a in attached)
        print(f"attached {len(attached)} file(s) to the study as Optuna artifacts ({new} new): "
              f"{dashboard_command(storage_url, out)}")
    return attached
