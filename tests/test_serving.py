"""Serving formats and the dashboard: ONNX and SavedModel give the .keras model's probabilities, run
without this project or Keras, and a finished run's files are listed by optuna-dashboard.

Tiny networks (16 px, 4 filters) keep the exports to seconds.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import ROOT, TINY, run_cli
from pneumo_models.card import read_card
from pneumo_models.ensemble import build_ensemble
from pneumo_models.export import export_model
from pneumo_models.model import build_model
from pneumo_models.serving import export_serving
from pneumo_models.training import predict_proba

TINY_NET = dict(conv_blocks=2, base_filters=4, dense_units=8, batch_size=8, aug_flip=True, aug_rotation=0.05,
                aug_blur=1.0, aug_contrast=0.2, dropout=0.3)


def _images(n: int = 12, size: int = 16) -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, (n, size, size)).astype("uint8")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """{"single": folder, "ensemble": folder}: exported as a run would, then as ONNX and SavedModel."""
    base = tmp_path_factory.mktemp("serving")
    x, y = _images(16), np.array([0, 1] * 8)
    big = build_model({**TINY_NET, "input_size": 16, "batch_norm": True}, seed=1)
    small = build_model({**TINY_NET, "input_size": 12, "block": "residual", "batch_norm": True}, seed=2)
    for net, side in ((big, 16), (small, 12)):  # batch-norm statistics that are not the initial ones
        xs = np.stack([np.asarray(Image.fromarray(i).resize((side, side))) for i in x])
        net.fit(xs[..., None].astype("float32"), y, epochs=2, batch_size=8, verbose=0)
    folders = {}
    for name, model in (("single", big), ("ensemble", build_ensemble([big, small]))):
        p = predict_proba(model, x)
        folders[name] = export_model(base / name, model, y_val=y, p_val=p, ids_val=[f"i{k}" for k in range(16)],
                                     threshold=0.42, min_recall=0.9, input_size=16,
                                     class_names=["NORMAL", "PNEUMONIA"], best_trial={"number": 0},
                                     study={"name": "tiny"}, data={"source": "generated"}, training={"epochs": 2},
                                     bootstrap_resamples=20)
        card_before = (folders[name] / "model_card.json").read_bytes()
        steps = []
        record = export_serving(folders[name], ["onnx", "tf_saved_model"], on_step=steps.append)
        assert steps == ["load the model, predict the check images", "onnx: convert, check against the Keras model",
                         "tf_saved_model: convert, check against the Keras model"]  # the command's bar names them
        assert (folders[name] / "model_card.json").read_bytes() == card_before  # sealed card untouched
        assert set(record["formats"]) == {"onnx", "tf_saved_model"}
    return folders


@pytest.mark.parametrize("kind", ["single", "ensemble"])
def test_onnx_and_saved_model_give_the_keras_probabilities(exported, kind):
    import onnxruntime as ort
    import tensorflow as tf

    from pneumo_models import load_model

    folder = exported[kind]
    model = load_model(folder)
    x = _images()
    expected = model.predict_proba(x)
    serving = json.loads((folder / "serving.json").read_text())
    card = read_card(folder)
    assert serving["threshold"] == card["threshold"] == 0.42 and serving["input_size"] == 16
    assert serving["model_sha256"] == card["model_sha256"]
    assert serving["input"]["shape"] == [None, 16, 16, 1] and serving["input"]["dtype"] == "float32"

    onnx = serving["formats"]["onnx"]
    session = ort.InferenceSession(str(folder / onnx["path"]), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].name == onnx["input_name"] == "xray"
    assert session.get_outputs()[0].name == onnx["output_name"]
    p_onnx = session.run([onnx["output_name"]], {onnx["input_name"]: x[..., None].astype("float32")})[0]
    np.testing.assert_allclose(p_onnx.reshape(-1), expected, atol=1e-5, rtol=0)

    sm = serving["formats"]["tf_saved_model"]
    signature = tf.saved_model.load(str(folder / sm["path"])).signatures[sm["signature"]]
    p_tf = signature(**{sm["input_name"]: tf.constant(x[..., None].astype("float32"))})[sm["output_name"]].numpy()
    np.testing.assert_allclose(p_tf.reshape(-1), expected, atol=1e-5, rtol=0)
    assert onnx["max_abs_diff_vs_keras"] < 1e-5 and sm["max_abs_diff_vs_keras"] < 1e-5


_WITHOUT_PROJECT_OR_KERAS = r"""
import json, sys
BLOCKED = ("keras", "tf_keras", "pneumo_models", "search", "spaces", "reports", "benchmarks")
for name in BLOCKED:
    sys.modules[name] = None  # Python's own "not importable": import raises ImportError, find_spec gives None
    try:
        __import__(name)
    except ImportError:
        pass
    else:
        sys.exit(f"{name} is importable: the check would prove nothing")

import numpy as np
from PIL import Image
folder, image = sys.argv[1], sys.argv[2]
serving = json.load(open(f"{folder}/serving.json"))
size = serving["input_size"]
x = np.asarray(Image.open(image).convert("L").resize((size, size), Image.BILINEAR), dtype="float32")[None, :, :, None]

import onnxruntime as ort
onnx = serving["formats"]["onnx"]
session = ort.InferenceSession(f"{folder}/{onnx['path']}", providers=["CPUExecutionProvider"])
p_onnx = float(session.run(None, {onnx["input_name"]: x})[0].reshape(-1)[0])

import tensorflow as tf
sm = serving["formats"]["tf_saved_model"]
signature = tf.saved_model.load(f"{folder}/{sm['path']}").signatures[sm["signature"]]
p_tf = float(signature(**{sm["input_name"]: tf.constant(x)})[sm["output_name"]].numpy().reshape(-1)[0])
loaded = sorted(m for m, mod in sys.modules.items() if m.split(".")[0] in BLOCKED and mod is not None)
print(json.dumps({"onnx": p_onnx, "tf": p_tf, "loaded": loaded}))
"""


def test_serving_files_run_without_this_project_or_keras(exported, tmp_path):
    from pneumo_models import load_model

    image = tmp_path / "xray.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (40, 30), dtype=np.uint8)).save(image)
    expected = load_model(exported["ensemble"]).predict_files([image])[0].probability
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KERAS_BACKEND")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    proc = subprocess.run([sys.executable, "-c", _WITHOUT_PROJECT_OR_KERAS, str(exported["ensemble"]), str(image)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["loaded"] == []
    assert abs(result["onnx"] - expected) < 1e-5 and abs(result["tf"] - expected) < 1e-5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read().decode())


def test_dashboard_lists_the_study_and_its_artifacts(tmp_path):
    out = tmp_path / "runs" / "dash"
    proc = run_cli("run", "--trials", "1", "--max-epochs", "1", "--data", "synthetic", "--study", "dash",
                   "--out", str(out), "--no-progress", "--ensemble", "1", "--no-starts", *TINY,
                   cache_dir=tmp_path / "cache", check=True)
    assert "as Optuna artifacts" in proc.stdout and "--artifact-dir" in proc.stdout
    proc = run_cli("export-serving", str(out / "best_model"), "--format", "onnx", check=True)
    assert "onnx: " in proc.stdout and "attached" in proc.stdout
    again = run_cli("export-serving", str(out / "best_model"), "--format", "onnx", "--no-artifacts", check=True)
    assert "attached" not in again.stdout

    exe = Path(sys.executable).with_name("optuna-dashboard")
    command = [str(exe)] if exe.exists() else [sys.executable, "-c", "from optuna_dashboard._cli import main; main()"]
    port = _free_port()
    server = subprocess.Popen([*command, f"sqlite:///{out / 'study.db'}", "--artifact-dir", str(out / "artifacts"),
                               "--host", "127.0.0.1", "--port", str(port), "--quiet"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                studies = _get(f"http://127.0.0.1:{port}/api/studies")["study_summaries"]
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"optuna-dashboard did not answer: {server.stdout.read()[-2000:]}")
                time.sleep(0.3)
        study = next(s for s in studies if s["study_name"] == "dash")
        detail = _get(f"http://127.0.0.1:{port}/api/studies/{study['study_id']}")
        assert len(detail["trials"]) == 1
        names = {a["filename"] for a in detail["artifacts"]}
        assert {"report.html", "model_card.json", "serving.json", "model.onnx"} <= names
        first = next(a for a in detail["artifacts"] if a["filename"] == "model_card.json")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/artifacts/{study['study_id']}/{first['artifact_id']}",
                                    timeout=5) as r:
            assert json.loads(r.read())["card_sha256"] == read_card(out / "best_model")["card_sha256"]
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()


def test_serving_input_text_reads_the_cards_framing():
    """What serving.json tells a client about the crop comes from the model card, so a card written by
    another version (a framing this one lacks) still says it, and no crop is named where none is made."""
    from pneumo_models.serving import input_values

    card = {"preprocessing": {"framing": "lungs-v9", "framing_means": "cropped to the box of lungs v9"}}
    assert "framing 'lungs-v9': cropped to the box of lungs v9" in input_values(card, 128)
    assert "no crop" in input_values({"preprocessing": {"framing": "full"}}, 64)
    assert "central square" in input_values({"preprocessing": {"framing": "centre"}}, 64)  # an older card
