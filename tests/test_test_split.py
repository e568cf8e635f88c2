"""The test split is scored once, after the export is final, and shown beside validation (issue 10)."""
from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import ROOT, TINY, run_cli, write_xray_folder

from pneumo_models import evaluation, metrics

QUICK = ["--trials", "2", "--max-epochs", "2", "--ensemble", "1", "--no-progress", "--no-report", *TINY]

# Runs `search run` in a fresh interpreter that records the project's audit events in order: every
# decode of a split and the moment the export is final. Printed as JSON on the last line.
AUDITED_RUN = """
import json, sys
events = []
def hook(name, args):
    if name == "pneumo_search.decode":
        events.append(["decode", list(args[1])])
    elif name == "pneumo_search.export.final":
        events.append(["final", args[1]])
sys.addaudithook(hook)
from search.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "events": events}))
"""


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("testsplit")
    data = write_xray_folder(base / "xr", {"train": 160, "test": 48})
    out = base / "out"
    env = {"PNEUMO_SEARCH_CACHE": str(base / "cache"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", AUDITED_RUN, "run", "--data", str(data), "--study", "t",
                           "--out", str(out), *QUICK], cwd=ROOT, env={**__import__("os").environ, **env},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return base, data, out, result, proc


def _card(out: Path) -> dict:
    return json.loads((out / "best_model" / "model_card.json").read_text())


def _read_predictions(path: Path):
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    return ([r["id"] for r in rows], np.array([int(r["label"]) for r in rows]),
            np.array([float(r["probability"]) for r in rows]), [r.get("patient") for r in rows])


def test_test_split_is_decoded_only_after_the_export_is_final(folder_run):
    _, _, _, result, _ = folder_run
    events = result["events"]
    assert result["code"] == 0
    kinds = [e[0] if e[0] == "final" else ("test" if "test" in e[1] else "trainval") for e in events]
    assert kinds.count("final") == 1 and kinds.count("test") == 1
    assert kinds.index("test") > kinds.index("final")          # nothing read the test images before
    assert "trainval" in kinds[: kinds.index("final")]          # the search did decode its own images


def test_card_test_block_equals_a_hand_computation(folder_run):
    base, data, out, _, proc = folder_run
    card = _card(out)
    test = card["metrics"]["test"]
    ids, y, p, patients = _read_predictions(out / "best_model" / "test_predictions.csv")
    assert test["n"] == len(y) == 48 and test["counts"] == {"NORMAL": 12, "PNEUMONIA": 36}
    thr = card["threshold"]
    called = p >= thr
    tp, tn = int(np.sum(called & (y == 1))), int(np.sum(~called & (y == 0)))
    assert test["at_threshold"]["accuracy"]["value"] == pytest.approx((tp + tn) / len(y))
    assert test["at_threshold"]["recall"]["value"] == pytest.approx(tp / int(y.sum()))
    assert test["at_threshold"]["specificity"]["value"] == pytest.approx(tn / int((y == 0).sum()))
    lo, hi = test["at_threshold"]["accuracy"]["ci95"]
    assert lo <= test["at_threshold"]["accuracy"]["value"] <= hi
    assert test["best_at_floor"]["accuracy"] == pytest.approx(
        metrics.recall_constrained_accuracy(y, p, card["min_recall"]).accuracy)
    assert "patients" in test["interval"] and test["n_patients"] == len(set(patients)) < len(y)
    # the per-patient figures: a patient is positive if any image is, and scored by their highest probability
    pat = evaluation.per_patient(y, p, patients)
    assert test["per_patient"]["n"] == len(pat.y)
    assert test["per_patient"]["at_threshold"]["accuracy"]["value"] == pytest.approx(
        float(np.mean((pat.p >= thr) == (pat.y == 1))))
    assert "chose nothing" in card["metrics"]["note"] and "optimistic" in card["metrics"]["note"]
    assert "test split, scored once" in proc.stdout


def test_test_predictions_are_the_exported_model_on_the_test_images(folder_run):
    base, data, out, _, _ = folder_run
    from pneumo_models import load_model
    from pneumo_models.data import load_split

    model = load_model(out / "best_model")
    images = load_split(data, model.input_size, "test", cache_dir=base / "cache", progress=False)
    ids, y, p, _ = _read_predictions(out / "best_model" / "test_predictions.csv")
    assert ids == images.ids
    np.testing.assert_allclose(model.predict_proba(images.x), p, atol=1e-6)


def test_evaluate_round_trip_and_predict_csv(folder_run):
    base, data, out, _, _ = folder_run
    cache = base / "cache"
    proc = run_cli("evaluate", str(out / "best_model"), "--data", str(data), "--no-progress", cache_dir=cache)
    assert proc.returncode == 0, proc.stderr
    payload = json.loads((out / "best_model" / "evaluation-xr-test.json").read_text())
    card = _card(out)
    assert payload["evaluation"]["at_threshold"] == card["metrics"]["test"]["at_threshold"]
    assert payload["evaluation"]["per_patient"] == card["metrics"]["test"]["per_patient"]
    assert len(payload["predictions"]) == 48
    assert (out / "best_model" / "evaluation-xr-test.html").is_file()
    # a plain <CLASS>/ folder (a hospital's own images) is scored whole
    proc = run_cli("evaluate", str(out / "best_model"), "--data", str(data / "test"), "--name", "hospital",
                   "--no-progress", cache_dir=cache)
    assert proc.returncode == 0, proc.stderr
    again = json.loads((out / "best_model" / "evaluation-hospital.json").read_text())
    assert again["evaluation"]["split"] == "all" and again["evaluation"]["n"] == 48
    assert again["evaluation"]["at_threshold"]["accuracy"] == payload["evaluation"]["at_threshold"]["accuracy"]
    # predict a folder: CSV, one row per image and one per patient
    proc = run_cli("predict", str(out / "best_model"), str(data / "test"), "--csv", "--per-patient", cache_dir=cache)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    by_image = {Path(r["path"]).as_posix().split("/test/")[1]: float(r["probability"]) for r in rows if r["path"]}
    for item in payload["predictions"]:
        assert by_image[item["id"].split("test/")[1]] == pytest.approx(item["probability"], abs=1e-6)
    patients = [r for r in rows if not r["path"]]
    assert len(patients) == payload["evaluation"]["n_patients"]


def test_no_test_skips_it(folder_run, tmp_path):
    base, data, _, _, _ = folder_run
    out = tmp_path / "out"
    proc = run_cli("run", "--data", str(data), "--study", "n", "--out", str(out), "--no-test",
                   "--trials", "1", "--max-epochs", "1", *QUICK[4:], cache_dir=base / "cache")
    assert proc.returncode == 0, proc.stderr
    card = _card(out)
    assert card["metrics"]["test"] is None and "--no-test" in card["metrics"]["test_status"]
    assert not (out / "best_model" / "test_predictions.csv").exists()


def _npz_with_test(path: Path) -> Path:
    from pneumo_models.data.synthetic import synthetic_images

    arrays = {}
    for k, (split, n) in enumerate({"train": 160, "val": 0, "test": 40}.items()):
        labels = (np.arange(n) % 4 != 0).astype(np.uint8)
        imgs = np.asarray(synthetic_images(7 + k, labels)) if n else np.zeros((0, 64, 64), np.uint8)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = imgs[:, ::2, ::2], labels[:, None]
    del arrays["val_images"], arrays["val_labels"]
    np.savez(path, **arrays)
    return path


def test_npz_test_split_is_scored(tmp_path):
    data = _npz_with_test(tmp_path / "mnistlike.npz")
    out = tmp_path / "out"
    proc = run_cli("run", "--data", str(data), "--study", "z", "--out", str(out), *QUICK, cache_dir=tmp_path / "c")
    assert proc.returncode == 0, proc.stderr
    card = _card(out)
    test = card["metrics"]["test"]
    assert test["n"] == 40 and test["split"] == "test" and "per_patient" not in test
    assert "images" in test["interval"]
    # MedMNIST made its images as central squares: the model predicts on a hospital's wider film the same way
    assert card["preprocessing"]["framing"] == card["data"]["framing"] == "centre"
    assert "framing: centre" in proc.stdout
    from pneumo_models import load_model
    from pneumo_models.data import resize_array

    model = load_model(out / "best_model")
    rng = np.random.default_rng(0)
    square = np.load(data)["test_images"][:3]
    wide = np.concatenate([rng.integers(0, 256, (3, 32, 10), dtype=np.uint8), square,
                           np.full((3, 32, 10), 255, np.uint8)], axis=2)           # 32 x 52: bars either side
    np.testing.assert_allclose(model.predict_proba(wide), model.predict_proba(square), atol=1e-6)
    np.testing.assert_array_equal(model.preprocess(wide), model.preprocess(square))
    size = model.input_size
    assert not np.array_equal(resize_array(wide[0], size, "full"), resize_array(square[0], size, "full"))  # squashed
    from pneumo_models.serving import input_values

    assert "central square" in input_values(card, size) and "MedMNIST" in input_values(card, size)  # serving.json says so


@pytest.mark.parametrize("broken", ["one_class", "empty"])
def test_broken_test_split_is_refused_before_any_training(tmp_path, broken):
    data = write_xray_folder(tmp_path / "xr", {"train": 40, "test": 8})
    for f in (data / "test" / "NORMAL").iterdir():
        f.unlink()
    if broken == "empty":
        for f in (data / "test" / "PNEUMONIA").iterdir():
            f.unlink()
    out = tmp_path / "out"
    proc = run_cli("run", "--data", str(data), "--study", "b", "--out", str(out), *QUICK, cache_dir=tmp_path / "c")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--no-test" in lines[0]
    assert not (out / "study.db").exists()


def test_unreadable_test_files_are_skipped_and_listed(folder_run, tmp_path):
    base, data, out, _, _ = folder_run
    import shutil

    copy = shutil.copytree(data / "test", tmp_path / "hospital")
    (copy / "NORMAL" / "IM-9999-0001.png").write_bytes(b"not a png")
    (copy / "PNEUMONIA" / "person9999_bacteria_1.png").write_bytes(b"")
    proc = run_cli("evaluate", str(out / "best_model"), "--data", str(copy), "--no-progress", cache_dir=tmp_path / "c")
    assert proc.returncode == 0, proc.stderr
    block = json.loads((out / "best_model" / "evaluation-hospital.json").read_text())["evaluation"]
    assert block["n"] == 48 and len(block["skipped"]) == 2
    assert "skipped 2 unreadable" in proc.stdout


def test_evaluate_bad_input_one_line_each(folder_run, tmp_path):
    base, data, out, _, _ = folder_run
    model_dir = out / "best_model"
    other = tmp_path / "other"
    for cls in ("CATS", "DOGS"):
        (other / cls).mkdir(parents=True)
        (other / cls / "a.png").write_bytes((data / "test" / "NORMAL").glob("*.png").__next__().read_bytes())
    one_class = tmp_path / "oneclass"
    (one_class / "PNEUMONIA").mkdir(parents=True)
    for f in list((data / "test" / "PNEUMONIA").glob("*.png"))[:3]:
        (one_class / "PNEUMONIA" / f.name).write_bytes(f.read_bytes())
    old = tmp_path / "old_model"
    import shutil

    shutil.copytree(model_dir, old)
    from pneumo_models.card import seal

    card = json.loads((old / "model_card.json").read_text())
    card["format_version"] = 99
    (old / "model_card.json").write_text(json.dumps(seal(card)))
    cases = {"classes": ([str(model_dir), "--data", str(other)], "NORMAL, PNEUMONIA"),
             "one class": ([str(model_dir), "--data", str(one_class)], "no NORMAL"),
             "format": ([str(old), "--data", str(data)], "format version 99")}
    before = sorted(p.name for p in model_dir.iterdir())
    for what, (args, expect) in cases.items():
        proc = run_cli("evaluate", *args, "--no-progress", cache_dir=tmp_path / "c")
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2, (what, proc.stderr)
        assert len(lines) == 1 and expect in lines[0], (what, lines)
    assert sorted(p.name for p in model_dir.iterdir()) == before   # nothing written, not even half


def test_evaluation_score_by_hand():
    y = np.array([0, 0, 1, 1, 1, 0])
    p = np.array([0.1, 0.6, 0.7, 0.4, 0.9, 0.2])
    patients = ["a", "a", "b", "b", "c", "d"]
    block = evaluation.score(y, p, threshold=0.5, min_recall=0.6, patients=patients, resamples=50)
    # images at 0.5: called 0.6 (FP), 0.7 (TP), 0.9 (TP); missed 0.4 (FN)
    assert block["at_threshold"]["accuracy"]["value"] == pytest.approx(4 / 6)
    assert block["at_threshold"]["recall"]["value"] == pytest.approx(2 / 3)
    assert block["at_threshold"]["specificity"]["value"] == pytest.approx(2 / 3)
    # patients: a (0, max .6 -> FP), b (1, max .7 -> TP), c (1, TP), d (0, TN)
    assert block["per_patient"]["n"] == 4
    assert block["per_patient"]["at_threshold"]["accuracy"]["value"] == pytest.approx(3 / 4)
    warning = evaluation.shift_warning({"accuracy": {"value": 0.95, "ci95": [0.9, 0.99]}},
                                       block["at_threshold"])
    assert warning and warning.startswith("This model does worse on new patients") and "accuracy 0.667" in warning
    assert evaluation.shift_warning({"accuracy": {"value": 0.7, "ci95": [0.5, 0.8]}}, block["at_threshold"]) is None
