"""Every engine stores its trials in the study's Optuna storage the same way; KerasTuner studies export and report.

Tiny budgets on generated data: what is checked is the plumbing, not the search quality
(benchmarks/ measure that).
"""
from __future__ import annotations

import json

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from helpers import TINY, run_cli
from search.errors import UserError
from search.objective import TRIAL_ATTRS


def _load(out, name):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{out / 'study.db'}")


def _run_inprocess(*args: str) -> int:
    from search.cli import main

    return main(["run", *args])


def _assert_recorded_like_optuna(study, space_names):
    from spaces.optuna_adapter import distributions  # noqa: F401  (the distributions they must satisfy)

    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert complete
    for t in complete:
        for key in TRIAL_ATTRS:
            assert key in t.user_attrs, key
        assert t.value == pytest.approx(t.user_attrs["rc_accuracy"])
        assert t.user_attrs["recall"] >= 0.95
        assert t.intermediate_values and max(t.intermediate_values.values()) == pytest.approx(t.value)
        assert set(t.params) | set(t.user_attrs["fixed_params"]) >= set(space_names)
        assert t.user_attrs["engine_trial_id"]
        assert t.user_attrs["mmacs"] > 0 and t.user_attrs["worker"]
        assert t.datetime_complete > t.datetime_start  # real durations, for time plots
    ids = [t.user_attrs["engine_trial_id"] for t in study.trials]
    assert len(ids) == len(set(ids))


# ---------------------------------------------------------------- adapter (no training)
def test_adapter_declares_every_dimension_and_maps_values_back_validly():
    import keras_tuner

    from spaces import FixedDim, get_space
    from spaces.kerastuner_adapter import hyperparameters, values
    from spaces.optuna_adapter import distributions

    space = get_space("default")
    hp = hyperparameters(space)
    declared = {p.name: p for p in hp.space}
    assert set(declared) == set(space.names)
    assert isinstance(declared["learning_rate"], keras_tuner.engine.hyperparameters.Float)
    assert declared["learning_rate"].sampling == "log"
    assert isinstance(declared["conv_blocks"], keras_tuner.engine.hyperparameters.Int)
    assert isinstance(declared["optimizer"], keras_tuner.engine.hyperparameters.Choice)
    assert isinstance(declared["batch_norm"], keras_tuner.engine.hyperparameters.Boolean)
    assert all(isinstance(declared[d.name], keras_tuner.engine.hyperparameters.Fixed)
               for d in space.dimensions if isinstance(d, FixedDim))
    dists = distributions(space)
    seen = {d.name: set() for d in space.searched}
    for seed in range(40):
        raw = {p.name: p.random_sample(seed * 100 + i) for i, p in enumerate(hp.space)}
        params = values(space, raw)
        assert set(params) == set(dists)
        for name, value in params.items():
            assert space.dimension(name).contains(value), (name, value)
            seen[name].add(value)
        optuna.trial.create_trial(params=params, distributions=dists, value=0.5)  # Optuna accepts it
    assert seen["batch_norm"] == {False, True} and all(isinstance(v, bool) for v in seen["batch_norm"])
    assert len(seen["learning_rate"]) > 10


def test_adapter_handles_reference_spaces_and_mixed_choices():
    from spaces import CategoricalDim, FloatDim, Space, get_space
    from spaces.kerastuner_adapter import hyperparameters, values

    ref = get_space("ref-64px-32filters")  # list-valued fixed "filters": not a KerasTuner value
    hp = hyperparameters(ref)
    assert "filters" not in hp.values and hp.values["input_size"] == 64
    assert values(ref, hp.values) == {}
    mixed = Space("m", "", (CategoricalDim("c", (1, 2.5)), CategoricalDim("j", ("a", 3)),
                            FloatDim("f", 1e-4, 1e-2, log=True)))
    hp = hyperparameters(mixed)
    out = values(mixed, {"c": 2.5, "j": '"a"', "f": 1e-2 * (1 + 1e-12)})
    assert out == {"c": 2.5, "j": "a", "f": 1e-2}  # bounds clipped: Optuna refuses a hair outside
    assert values(mixed, {"c": 1.0, "j": "3", "f": 1e-3})["c"] == 1


# ---------------------------------------------------------------- settings
def test_unknown_engine_and_pruner_mismatch_are_one_line_user_errors():
    from search.settings import RunSettings

    with pytest.raises(UserError, match="unknown engine 'nope'; choose one of: optuna, random, "
                                        "kerastuner-hyperband, kerastuner-bayes"):
        RunSettings(engine="nope")
    with pytest.raises(UserError, match="does not apply"):
        RunSettings(engine="kerastuner-bayes", pruner="median")
    assert RunSettings().pruner == "hyperband"
    assert RunSettings(engine="random").pruner == "none"
    assert RunSettings(engine="kerastuner-hyperband").pruner == "none"


# ---------------------------------------------------------------- KerasTuner Hyperband, end to end
@pytest.fixture(scope="module")
def hyperband_study(tmp_path_factory):
    base = tmp_path_factory.mktemp("kt")
    out = base / "runs" / "kth"
    proc = run_cli("run", "--engine", "kerastuner-hyperband", "--trials", "5", "--max-epochs", "3", "--data",
                   "synthetic", "--study", "kth", "--out", str(out), "--no-report", "--no-export", *TINY,
                   cache_dir=base / "cache", check=True)
    return base, out, proc.stderr


def test_kerastuner_hyperband_trials_land_in_the_study(hyperband_study):
    from spaces import get_space

    _, out, stderr = hyperband_study
    # its trials reach the storage only as they end: the bar names the one in flight itself, as it starts
    # and after each epoch (Optuna's are named from the storage)
    assert "running=#0 epoch 0/3" in stderr and "running=#0 epoch 1/3" in stderr
    study = _load(out, "kth")
    assert study.user_attrs["engine"] == "kerastuner-hyperband"
    assert "HyperbandOracle" in study.user_attrs["sampler"]
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 5
    _assert_recorded_like_optuna(study, get_space("default").names)
    kt = [t.user_attrs["kerastuner"] for t in study.trials]
    assert {k["epochs"] for k in kt} >= {1, 3}  # successive halving: short and full-length trials
    promoted = [t for t in study.trials if t.user_attrs["kerastuner"]["continues"]]
    assert promoted, "Hyperband promoted no trial"
    for t in promoted:
        assert t.user_attrs["kerastuner"]["weights_loaded"]
        assert min(t.intermediate_values) == t.user_attrs["kerastuner"]["initial_epoch"] + 1
    assert (out / "kerastuner" / study.user_attrs["kerastuner_project"] / "oracle.json").exists()


def test_kerastuner_study_tops_up_and_refuses_another_engine(hyperband_study, capsys):
    base, out, _ = hyperband_study
    common = ["--max-epochs", "3", "--data", "synthetic", "--study", "kth", "--out", str(out), "--no-progress",
              "--no-report", "--no-export", "--cache-dir", str(base / "cache"), *TINY]
    assert _run_inprocess("--engine", "kerastuner-hyperband", "--trials", "6", *common) == 0
    study = _load(out, "kth")
    assert len([t for t in study.trials if t.state == TrialState.COMPLETE]) == 6
    assert "1 new" in capsys.readouterr().out
    assert _run_inprocess("--engine", "optuna", "--trials", "7", *common) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "searched with --engine kerastuner-hyperband" in err
    assert len(_load(out, "kth").trials) == 6


def test_export_and_predict_from_a_kerastuner_study(hyperband_study, tmp_path):
    from PIL import Image

    from pneumo_models.data import load_dataset

    base, out, _ = hyperband_study
    # one member: the KerasTuner path is what is tested here (tests/test_ensemble.py covers ensembles)
    run_cli("export", "--study", "kth", "--out", str(out), "--no-progress", "--ensemble", "1",
            cache_dir=base / "cache", check=True)
    card = json.loads((out / "best_model" / "model_card.json").read_text())
    study = _load(out, "kth")
    best = max((t for t in study.trials if t.state == TrialState.COMPLETE), key=lambda t: (t.value, -t.number))
    assert card["best_trial"]["number"] == best.number
    assert card["study"]["engine"] == "kerastuner-hyperband"
    assert card["training"].get("ensemble") is None or card["training"]["ensemble"]["size"] == 1
    ds = load_dataset("synthetic", card["input_size"], progress=False, cache_dir=base / "cache")
    path = tmp_path / "x.png"
    Image.fromarray(np.asarray(ds.x_val[0])).save(path)
    pred = json.loads(run_cli("predict", str(out / "best_model"), str(path), "--json", check=True).stdout)
    assert 0.0 <= pred["predictions"][0]["probability"] <= 1.0
    from search.cli import main

    assert main(["report", "--study", "kth", "--out", str(out), "--no-progress"]) == 0
    assert (out / "report.html").stat().st_size > 10_000


# ---------------------------------------------------------------- KerasTuner Bayesian and random search
def test_kerastuner_bayes_and_random_record_full_trials(tmp_path):
    from spaces import get_space

    common = ["--trials", "2", "--max-epochs", "2", "--data", "synthetic", "--no-progress", "--no-report",
              "--no-export", "--cache-dir", str(tmp_path / "cache"), *TINY]
    for engine, sampler in (("kerastuner-bayes", "BayesianOptimizationOracle"), ("random", "RandomSampler")):
        out = tmp_path / engine
        assert _run_inprocess("--engine", engine, "--study", engine, "--out", str(out), *common) == 0
        study = _load(out, engine)
        assert study.user_attrs["engine"] == engine and sampler in study.user_attrs["sampler"]
        assert len(study.trials) == 2
        assert all(t.state == TrialState.COMPLETE for t in study.trials)  # no pruning in either
        if engine == "random":
            assert study.user_attrs["pruner"] == "NopPruner"
            for t in study.trials:
                for key in TRIAL_ATTRS:
                    assert key in t.user_attrs, key
        else:
            _assert_recorded_like_optuna(study, get_space("default").names)


def test_kerastuner_refuses_costly_configurations_like_optuna(tmp_path):
    out = tmp_path / "costly"
    assert _run_inprocess("--engine", "kerastuner-bayes", "--study", "costly", "--out", str(out), "--trials", "2",
                          "--max-epochs", "2", "--data", "synthetic", "--max-mmacs", "0.5", "--no-progress",
                          "--no-report", "--no-export", "--cache-dir", str(tmp_path / "cache"), *TINY) == 0
    study = _load(out, "costly")
    assert [t.state for t in study.trials] == [TrialState.PRUNED] * 2  # counted as finished, never trained
    for t in study.trials:
        assert t.user_attrs["pruned_reason"].startswith("refused before training")
