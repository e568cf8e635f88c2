"""Bad input gets one line on stderr and a non-zero exit, no traceback, and never costs a study anything.

Every case runs the real CLI in a subprocess against the output folder of an existing study, then
checks that study's trials are exactly what they were.
"""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import optuna
import pytest
from PIL import Image

from helpers import TINY, run_cli


def _jpeg(path: Path, seed: int, bright: bool = False) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 120, (32, 32), dtype=np.uint8) + (100 if bright else 0)
    buf = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buf, format="JPEG", quality=90)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


def _folder(root: Path, n: int = 12) -> Path:
    for i in range(n):
        _jpeg(root / "train" / "NORMAL" / f"IM-{i:04d}-0001.jpeg", i)
        for k in range(2):
            _jpeg(root / "train" / "PNEUMONIA" / f"person{i}_bacteria_{k}.jpeg", 100 + 2 * i + k, bright=True)
    return root


@pytest.fixture(scope="module")
def existing(tmp_path_factory):
    """A study made by a real run on a folder with one truncated JPEG among good ones."""
    base = tmp_path_factory.mktemp("bad-input")
    data = _folder(base / "xray")
    good = (data / "train" / "NORMAL" / "IM-0000-0001.jpeg").read_bytes()
    (data / "train" / "NORMAL" / "IM-0099-0001.jpeg").write_bytes(good[: len(good) // 2])  # truncated
    out = base / "runs" / "kept"
    proc = run_cli("run", "--trials", "1", "--max-epochs", "1", "--data", str(data), "--study", "kept",
                   "--out", str(out), "--no-progress", "--no-report", "--no-export", *TINY,
                   cache_dir=base / "cache", check=True)
    return {"base": base, "data": data, "out": out, "proc": proc, "trials": _trials(out)}


def _trials(out: Path) -> list:
    study = optuna.load_study(study_name="kept", storage=f"sqlite:///{out / 'study.db'}")
    return [(t.number, t.state.name, t.value, t.params, t.user_attrs) for t in study.trials]


def test_a_truncated_jpeg_is_skipped_and_counted(existing):
    summary = existing["proc"].stdout
    assert "skipped 1 unreadable file(s), e.g." in summary and "IM-0099-0001.jpeg" in summary
    assert "truncated" in summary
    assert [t[1] for t in existing["trials"]] == ["COMPLETE"]


def _one_error_line(proc) -> str:
    assert proc.returncode not in (0, None), proc.stdout[-2000:]
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def _bad_run(existing, *args: str):
    proc = run_cli("run", "--study", "kept", "--out", str(existing["out"]), "--trials", "2", "--max-epochs", "1",
                   "--no-progress", "--no-report", "--no-export", *TINY, *args, cache_dir=existing["base"] / "cache")
    line = _one_error_line(proc)
    assert proc.returncode == 2
    assert _trials(existing["out"]) == existing["trials"]  # the existing study lost nothing
    return line


def _make_empty_class(base: Path) -> Path:
    root = _folder(base / "empty-class")
    for f in (root / "train" / "NORMAL").iterdir():
        f.unlink()
    return root


def _make_unreadable(base: Path) -> Path:
    root = _folder(base / "unreadable", n=3)
    for f in root.rglob("*.jpeg"):
        f.write_bytes(b"this is not an image")
    return root


def _make_npz(base: Path, **arrays) -> Path:
    path = base / f"bad-{'-'.join(arrays)}.npz"
    np.savez(path, **arrays)
    return path


DATA_CASES = {
    "missing path": (lambda b: b / "no" / "such" / "folder", "data path does not exist"),
    "empty class folder": (_make_empty_class, "has no images"),
    "all images unreadable": (_make_unreadable, "no readable images in"),
    "npz with wrong keys": (lambda b: _make_npz(b, x=np.zeros((4, 28, 28), np.uint8), y=np.zeros(4, np.uint8)),
                            "missing key 'train_images'"),
    "npz with wrong image shape": (lambda b: _make_npz(b, train_images=np.zeros((4, 28), np.uint8),
                                                       train_labels=np.zeros(4, np.uint8)),
                                   "has shape (4, 28)"),
    "npz with labels not matching images": (lambda b: _make_npz(b, train_images=np.zeros((4, 28, 28), np.uint8),
                                                                train_labels=np.zeros(3, np.uint8)),
                                            "train_labels' has shape (3,)"),
}


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_bad_data(existing, case, tmp_path):
    make, expected = DATA_CASES[case]
    line = _bad_run(existing, "--data", str(make(tmp_path)))
    assert expected in line


OPTION_CASES = {
    "zero trials": (["--trials", "0"], "--trials must be a positive number"),
    "negative trials": (["--trials", "-3"], "--trials must be a positive number"),
    "min-recall zero": (["--min-recall", "0"], "--min-recall must be in (0, 1]"),
    "min-recall above one": (["--min-recall", "1.5"], "--min-recall must be in (0, 1]"),
    "unknown space": (["--space", "nosuch"], "unknown space 'nosuch'"),
    "unknown pruner": (["--pruner", "nosuch"], "unknown pruner 'nosuch'"),
    "unknown engine": (["--engine", "nosuch"], "unknown engine 'nosuch'"),
    "unknown parameter": (["--set", "nosuch=1"], "--set nosuch: unknown parameter"),
    "parameter not a number": (["--set", "learning_rate=abc"],
                               "--set learning_rate=abc: learning_rate takes a number > 0; got 'abc'"),
    "parameter choice not in the list": (["--set", "optimizer=sgd"],
                                         "optimizer takes one of rmsprop, adam, amsgrad; got 'sgd'"),
    "parameter out of range": (["--set", "dropout=1.5"], "dropout takes a number in [0, 1); got 1.5"),
    "parameter not a whole number": (["--set", "conv_blocks=2.5"], "conv_blocks takes a whole number in [1, 12]"),
    "zero workers": (["--workers", "0"], "--workers must be a positive number"),
    "workers and gpus": (["--workers", "2", "--gpus", "0"], "not both"),
    "workers per gpu without gpus": (["--workers-per-gpu", "2"], "--workers-per-gpu needs --gpus"),
    "zero max failures": (["--max-failures", "0"], "--max-failures must be at least 1"),
}


@pytest.mark.parametrize("case", list(OPTION_CASES))
def test_bad_options(existing, case):
    args, expected = OPTION_CASES[case]
    line = _bad_run(existing, "--data", str(existing["data"]), *args)
    assert expected in line


def test_unreachable_storage(existing):
    line = _bad_run(existing, "--data", str(existing["data"]),
                    "--storage", "postgresql://alice:s3cret@127.0.0.1:1/nowhere")
    assert line.startswith("error: cannot open storage postgresql://alice:***@127.0.0.1:1/nowhere:")
    assert "s3cret" not in line


def test_storage_that_is_not_a_database(existing, tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"definitely not sqlite" * 100)
    line = _bad_run(existing, "--data", str(existing["data"]), "--storage", f"sqlite:///{junk}")
    assert "cannot open storage" in line


# ------------------------------------------------------------------------------------ model folders
def _sealed_folder(folder: Path, model_bytes: bytes) -> Path:
    from pneumo_models.card import CARD_FILE, MODEL_FILE, REQUIRED, file_sha256, seal

    folder.mkdir(parents=True, exist_ok=True)
    (folder / MODEL_FILE).write_bytes(model_bytes)
    card = {key: {} for key in REQUIRED if key != "card_sha256"}
    card.update(format_version=1, model_file=MODEL_FILE, model_sha256=file_sha256(folder / MODEL_FILE),
                threshold=0.5, min_recall=0.95, input_size=32, class_names=["NORMAL", "PNEUMONIA"],
                created_at="2026-01-01T00:00:00+00:00")
    (folder / CARD_FILE).write_text(json.dumps(seal(card)))
    return folder


def _lambda_model_bytes(tmp_path: Path) -> bytes:
    import keras

    inputs = keras.Input((32, 32, 1))
    x = keras.layers.Lambda(lambda t: t * 2.0)(inputs)  # arbitrary code: refused in safe mode
    outputs = keras.layers.Dense(1, activation="sigmoid")(keras.layers.Flatten()(x))
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, outputs).save(path)
    return path.read_bytes()


def _zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("config.json", "{\"class_name\": \"Nothing\"}")
    return buf.getvalue()


def _tampered(tmp_path: Path) -> Path:
    folder = _sealed_folder(tmp_path / "tampered", b"x")
    card = json.loads((folder / "model_card.json").read_text())
    card["threshold"] = 0.01  # someone lowers the threshold by hand
    (folder / "model_card.json").write_text(json.dumps(card))
    return folder


MODEL_CASES = {
    "no model card": (lambda t: (t / "nocard").mkdir() or (t / "nocard"), "has no model_card.json"),
    "tampered card": (_tampered, "was modified after export (checksum mismatch)"),
    "keras file that is not a model": (lambda t: _sealed_folder(t / "junk", b"not a keras file"),
                                       "is not a loadable Keras model"),
    "keras archive without a model": (lambda t: _sealed_folder(t / "zip", _zip_bytes()),
                                      "is not a loadable Keras model"),
    "model with a Lambda layer": (lambda t: _sealed_folder(t / "lambda", _lambda_model_bytes(t)),
                                  "is not a loadable Keras model"),
}


@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_bad_model_folder(existing, case, tmp_path):
    make, expected = MODEL_CASES[case]
    folder = make(tmp_path)
    image = tmp_path / "x.jpeg"
    _jpeg(image, 1)
    proc = run_cli("predict", str(folder), str(image))
    line = _one_error_line(proc)
    assert proc.returncode == 2
    assert expected in line
    assert _trials(existing["out"]) == existing["trials"]
