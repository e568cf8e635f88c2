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
