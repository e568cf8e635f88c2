"""Patient-grouped k-fold cross-validation: folds partition the patients; the CLI writes its JSON."""
import json

import numpy as np

from helpers import TINY, run_cli
from pneumo_models.crossval import cross_validate, pool
from pneumo_models.data import load_dataset
from pneumo_models.data.split import grouped_folds


def test_folds_partition_patients_and_keep_class_ratio(tmp_path):
    ds = load_dataset("synthetic", 64, progress=False, cache_dir=tmp_path)
    data = pool(ds)
    groups = np.asarray(data.groups)
    folds = grouped_folds(data.y, groups, 4, seed=0)
    held_out = np.concatenate([test for _, test in folds])
    assert sorted(held_out) == list(range(len(data.y)))           # every image held out exactly once
    for train, test in folds:
        assert not set(groups[train]) & set(groups[test])          # no patient on both sides
        assert abs(data.y[test].mean() - data.y.mean()) < 0.08


def test_cross_validate_scores_every_fold(tmp_path):
    ds = load_dataset("synthetic", 64, progress=False, cache_dir=tmp_path)
    params = dict(input_size=64, conv_blocks=2, base_filters=8, dense_units=16, batch_size=64)
    result = cross_validate(params, pool(ds), folds=3, max_epochs=1, seed=0)
    assert [f["fold"] for f in result.folds] == [1, 2, 3]
    assert all(f["output_layers"] == ["as trained"] for f in result.folds)
    assert sum(f["n_test_patients"] for f in result.folds) == len(set(pool(ds).groups))
    for fold in result.folds:  # the probabilities are kept: any threshold rule can be re-scored
        assert len(fold["held_out"]["p"]) == len(fold["held_out"]["y"]) == fold["n_test"]
        from pneumo_models import metrics

        again = metrics.metrics_at(np.array(fold["held_out"]["y"]), np.array(fold["held_out"]["p"]), fold["threshold"])
        assert abs(again.accuracy - fold["accuracy"]) < 1e-3
        assert fold["balanced_accuracy"] == (fold["recall"] + fold["specificity"]) / 2
    summary = result.summary()
    for name in ("accuracy", "recall", "auc"):
        assert summary[name]["min"] <= summary[name]["mean"] <= summary[name]["max"]


def test_cv_command_writes_crossval_json(tmp_path):
    out = tmp_path / "study"
    run_cli("run", "--trials", "1", "--max-epochs", "1", "--data", "synthetic", "--study", "cvs", "--out",
            str(out), "--no-progress", "--no-report", "--no-export", "--pruner", "none", *TINY,
            cache_dir=tmp_path / "cache", check=True)
    proc = run_cli("cv", "--study", "cvs", "--out", str(out), "--folds", "2", "--no-progress", "--output-layer",
                   "refit", cache_dir=tmp_path / "cache", check=True)
    assert "2-fold patient-grouped CV" in proc.stdout
    report = json.loads((out / "crossval.json").read_text())
    assert len(report["folds"]) == 2 and report["trial"] == 0
    assert 0.0 <= report["summary"]["accuracy"]["mean"] <= 1.0
    # as an export with --output-layer refit ships it: each fold's network refitted where that lowers log-loss
    assert report["output_layer"] == "refit"
    for fold in report["folds"]:
        (layer,) = fold["output_layers"]
        assert (layer["val_log_loss_refit"] < layer["val_log_loss_trained"]) == layer["kept"]
