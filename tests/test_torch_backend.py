"""The same study under KERAS_BACKEND=torch (GPU machines often have PyTorch but no TensorFlow).

A small study runs and exports under the torch backend; the exported model loads back with
``pneumo_models.load_model`` and with plain ``keras.saving.load_model(..., safe_mode=True)``
under torch and under the default backend, and reproduces the validation probabilities saved
at export. CI installs torch==2.13.0 (CPU); without torch these tests skip.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState

from helpers import ROOT, TINY, run_cli

pytest.importorskip("torch", reason="PyTorch is not installed (CI installs torch==2.13.0 for these tests)")

TORCH = {"KERAS_BACKEND": "torch"}


@pytest.fixture(scope="module")
def torch_study(tmp_path_factory):
    base = tmp_path_factory.mktemp("torch")
    out = base / "runs" / "torchy"
    proc = run_cli("run", "--trials", "2", "--max-epochs", "1", "--data", "synthetic", "--study", "torchy",
                   "--out", str(out), "--no-progress", "--no-report", *TINY, cache_dir=base / "cache", env=TORCH,
                   check=True)
    return base, out, proc


def test_study_runs_and_exports_under_torch(torch_study):
    _, out, proc = torch_study
    assert "study 'torchy': 2 finished trials (2 new)" in proc.stdout
    assert "exported the best model to" in proc.stdout
    study = optuna.load_study(study_name="torchy", storage=f"sqlite:///{out / 'study.db'}")
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 2
    assert any(t.state == TrialState.COMPLETE and 0.0 <= t.value <= 1.0 for t in finished)
    card = json.loads((out / "best_model" / "model_card.json").read_text())
    assert card["versions"]["backend"] == "torch"


@pytest.mark.parametrize("backend", ["torch", "default"])
def test_exported_model_round_trips(torch_study, backend):
    base, out, _ = torch_study
    env = {**os.environ, "PNEUMO_SEARCH_CACHE": str(base / "cache"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("KERAS_BACKEND", None)
    if backend == "torch":
        env.update(TORCH)
    proc = subprocess.run([sys.executable, "benchmarks/roundtrip_check.py", str(out / "best_model")], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["backend"] == ("torch" if backend == "torch" else "tensorflow")
    assert result["n"] > 0 and result["max_abs_diff"] < 1e-4


def test_predict_command_under_torch(torch_study, tmp_path):
    import numpy as np
    from PIL import Image

    _, out, _ = torch_study
    image = tmp_path / "x.png"
    Image.fromarray(np.full((80, 60), 128, dtype=np.uint8)).save(image)
    proc = run_cli("predict", str(out / "best_model"), str(image), "--json", env=TORCH, check=True)
    prediction = json.loads(proc.stdout)["predictions"][0]
    assert 0.0 <= prediction["probability"] <= 1.0


def test_batched_affine_transform_matches_keras():
    """pneumo_models.backend_fixes resamples the batch at once; the pixels are Keras' own."""
    code = """
import numpy as np, torch
from keras.src.backend.torch import image as ti
original = ti.affine_transform
from pneumo_models import backend_fixes
assert backend_fixes.install() and ti.affine_transform is not original
rng = np.random.default_rng(0)
images = torch.tensor(rng.uniform(0, 255, (8, 24, 20, 1)).astype("float32"))
worst = 0.0
for _ in range(4):
    angle, zoom = rng.uniform(-0.5, 0.5, 8), rng.uniform(0.8, 1.2, 8)
    tx, ty, shear = rng.uniform(-4, 4, 8), rng.uniform(-4, 4, 8), rng.uniform(-0.2, 0.2, 8)
    c, s = np.cos(angle) * zoom, np.sin(angle) * zoom
    t = np.stack([c, -s + shear, tx, s, c, ty, np.zeros(8), np.zeros(8)], 1).astype("float32")
    for interpolation in ("bilinear", "nearest"):
        a = original(images, torch.tensor(t), interpolation=interpolation, fill_mode="constant", fill_value=0)
        b = ti.affine_transform(images, torch.tensor(t), interpolation=interpolation, fill_mode="constant",
                                fill_value=0)
        worst = max(worst, float((a - b).abs().max()))
print(worst)
"""
    env = {**os.environ, **TORCH, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert float(proc.stdout.strip().splitlines()[-1]) < 1e-3


_EXPORT_UNDER_TORCH = """
import json, sys
from pathlib import Path
import numpy as np
from pneumo_models.ensemble import build_ensemble
from pneumo_models.export import export_model
from pneumo_models.model import build_model
from pneumo_models.training import predict_proba

base = Path(sys.argv[1])
tiny = dict(input_size=16, conv_blocks=2, base_filters=4, dense_units=8, batch_size=8, optimizer="adam")
rng = np.random.default_rng(0)
x = rng.integers(0, 256, (8, 16, 16)).astype("uint8")
y = np.array([0, 1] * 4)
np.save(base / "x.npy", x)
nets = [build_model(tiny, seed=s) for s in (1, 2)]
for net in nets:  # one optimizer step: the members carry compile config and optimizer state, as after a search
    net.fit(x[..., None].astype("float32"), y, epochs=1, batch_size=8, verbose=0)
for name, model in (("ensemble", build_ensemble(nets)), ("single", nets[0])):
    p = predict_proba(model, x)
    export_model(base / name, model, y_val=y, p_val=p, ids_val=[f"img{i}" for i in range(len(y))], threshold=0.5,
                 min_recall=0.9, input_size=16, class_names=["NORMAL", "PNEUMONIA"], best_trial={"number": 0},
                 study={"name": "tiny"}, data={"source": "generated"}, training={"epochs": 1},
                 bootstrap_resamples=20)
"""

_LOAD_WITHOUT_TORCH = """
import csv, json, sys
from pathlib import Path
import numpy as np
try:
    import torch  # noqa: F401
    sys.exit("torch is importable: the check would prove nothing")
except ImportError:
    pass
import keras
from pneumo_models import load_model

base = Path(sys.argv[1])
x = np.load(base / "x.npy")
result = {"backend": keras.backend.backend()}
for name in ("ensemble", "single"):
    folder = base / name
    saved = np.array([float(r["probability"]) for r in csv.DictReader(open(folder / "validation_predictions.csv"))])
    ours = load_model(folder).predict_proba(x)
    plain = keras.saving.load_model(folder / "model.keras", safe_mode=True)  # compile=True: nothing to compile
    theirs = np.asarray(plain.predict(x[..., None].astype("float32"), verbose=0)).reshape(-1)
    result[name] = {"n": len(saved), "members": len([l for l in plain.layers if isinstance(l, keras.Model)]),
                    "compiled": bool(plain.compiled),
                    "max_abs_diff": float(max(np.abs(ours - saved).max(), np.abs(theirs - saved).max()))}
print(json.dumps(result))
"""


def _compile_configs(node) -> list:
    """Every non-empty ``compile_config`` in a saved model's config.json, at any depth."""
    if isinstance(node, dict):
        found = [v for k, v in node.items() if k == "compile_config" and v]
        return found + [c for v in node.values() for c in _compile_configs(v)]
    if isinstance(node, list):
        return [c for v in node for c in _compile_configs(v)]
    return []


def test_torch_exports_load_under_tensorflow_without_torch(tmp_path):
    """Issue 13: a model exported under torch loads under TensorFlow where torch is not installed.

    The members of an ensemble used to keep their compile config (a torch ``Adam`` whose module
    is ``keras.src.backend.torch.optimizers...``) inside the saved config, so loading failed with
    "Could not deserialize class 'Adam'". Both an ensemble and a single network are exported
    through ``export_model`` and must carry no compile state, load without torch, and give the
    exported probabilities.
    """
    import importlib.util
    import zipfile

    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("TensorFlow is not installed: nothing to load the torch export with")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **TORCH}
    proc = subprocess.run([sys.executable, "-c", _EXPORT_UNDER_TORCH, str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("ensemble", "single"):
        with zipfile.ZipFile(tmp_path / name / "model.keras") as z:
            assert _compile_configs(json.loads(z.read("config.json"))) == [], f"{name} was saved with compile state"

    blocker = tmp_path / "no_torch" / "torch"  # `import torch` fails as on a machine without it
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'torch'\", name='torch')\n")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow",
           "PYTHONPATH": os.pathsep.join([str(blocker.parent), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", _LOAD_WITHOUT_TORCH, str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["backend"] == "tensorflow"
    assert result["ensemble"]["members"] == 2 and result["single"]["members"] == 0
    for name in ("ensemble", "single"):
        assert result[name]["n"] == 8 and not result[name]["compiled"]
        assert result[name]["max_abs_diff"] < 1e-5, result
