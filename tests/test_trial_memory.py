"""A searching process does not keep the traced graphs of the networks it trained (TensorFlow's
gradient registry pinned each train step for good: a search grew by 30-80 MB per trial)."""
import gc
import json

import keras
import numpy as np
import pytest

from pneumo_models.model import build_model
from search.runtime import clear_backend_session, forget_traced_gradients

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="the registry that kept traced graphs is TensorFlow's")

PARAMS = dict(input_size=24, conv_blocks=2, base_filters=4, batch_norm=True, dense_units=8, aug_flip=True, ema=0.9)


def _data(seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (32, 24, 24, 1)).astype("uint8"), rng.integers(0, 2, 32).astype("float32")


def _train_one(seed: int) -> float:
    x, y = _data(seed)
    model = build_model(PARAMS, seed=seed)
    history = model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    return float(history.history["loss"][-1])


def _traced_graphs() -> int:
    from tensorflow.python.framework.func_graph import FuncGraph

    gc.collect()
    return sum(isinstance(o, FuncGraph) for o in gc.get_objects())


def test_trials_in_one_process_leave_no_traced_graphs_behind():
    counts = []
    for seed in range(4):
        assert np.isfinite(_train_one(seed))
        clear_backend_session()
        counts.append(_traced_graphs())
    # each trained network traced its own train step; none of them is kept once its trial is over
    assert counts[-1] <= counts[0], counts
    assert forget_traced_gradients() == 0  # clear_backend_session already dropped them


def test_a_network_traced_before_the_registry_was_emptied_goes_on_training():
    x, y = _data(1)
    model = build_model(PARAMS, seed=1)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert forget_traced_gradients() >= 1  # its train step registered at least one
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_export_and_cross_validation_leave_no_traced_graphs_behind(tmp_path):
    """Both train several networks in one process (an ensemble's members, a CV's folds)."""
    import optuna

    from helpers import TINY, run_cli
    from search.final_model import export_best
    from search.study_cv import crossvalidate_study

    out = tmp_path / "study"
    run_cli("run", "--trials", "2", "--max-epochs", "1", "--data", "synthetic", "--study", "mem", "--out", str(out),
            "--no-progress", "--no-report", "--no-export", "--pruner", "none", *TINY,
            cache_dir=tmp_path / "cache", check=True)
    study = optuna.load_study(study_name="mem", storage=f"sqlite:///{out / 'study.db'}")
    forget_traced_gradients()
    # exported elsewhere, away from the networks the trials kept: both members are trained again
    folder = export_best(study, tmp_path / "elsewhere", cache_dir=tmp_path / "cache", progress=False, ensemble=2,
                         ensemble_rule="top")
    members = json.loads((folder / "model_card.json").read_text())["training"]["ensemble"]["members"]
    assert [m["network"] for m in members] == ["retrained", "retrained"]
    assert forget_traced_gradients() == 0  # each member's were dropped once it was trained
    report = crossvalidate_study(study, out, folds=2, cache_dir=tmp_path / "cache", progress=False)
    assert len(report["folds"]) == 2 and 0 <= report["summary"]["auc"]["mean"] <= 1
    assert forget_traced_gradients() == 0  # each fold's were dropped once it was scored
