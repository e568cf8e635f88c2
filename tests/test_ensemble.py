"""Ensembles: several networks as one .keras model, exported, loaded and cross-validated like one."""
from __future__ import annotations

import json

import keras
import numpy as np
import optuna
import pytest

from helpers import TINY, run_cli
from pneumo_models.crossval import cross_validate, pool
from pneumo_models.data import load_dataset
from pneumo_models.ensemble import build_ensemble, ensemble_members
from pneumo_models.model import build_model
from pneumo_models.training import predict_proba

SMALL = dict(conv_blocks=2, base_filters=4, dense_units=8, batch_size=64)


def test_ensemble_averages_members_across_input_sizes_and_round_trips(tmp_path):
    big = build_model({**SMALL, "input_size": 48}, seed=1)
    small = build_model({**SMALL, "input_size": 32, "block": "residual"}, seed=2)
    model = build_ensemble([big, small])
    assert model.inputs[0].shape[1:] == (48, 48, 1)
    x = np.random.default_rng(0).integers(0, 256, (6, 48, 48)).astype("uint8")
    resized = keras.ops.convert_to_numpy(keras.ops.image.resize(x[..., None].astype("float32"), (32, 32),
                                                                antialias=True))
    expected = (predict_proba(big, x) + predict_proba(small, resized[..., 0])) / 2
    np.testing.assert_allclose(predict_proba(model, x), expected, atol=1e-5)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True, compile=False)
    np.testing.assert_allclose(predict_proba(loaded, x), predict_proba(model, x), atol=1e-6)
    assert [m.name for m in ensemble_members(loaded)] == ["member_1", "member_2"]
    assert build_ensemble([big]) is big  # one member: the network itself


def test_cross_validate_an_ensemble_of_two_input_sizes(tmp_path):
    pools = {s: pool(load_dataset("synthetic", s, progress=False, cache_dir=tmp_path)) for s in (32, 48)}
    recipes = [{**SMALL, "input_size": 48}, {**SMALL, "input_size": 32}]
    result = cross_validate(recipes, pools, folds=2, max_epochs=1, seed=0)
    assert len(result.folds) == 2
    for fold in result.folds:
        assert len(fold["best_epoch"]) == 2 and 0.0 <= fold["auc"] <= 1.0
        assert 0.0 <= fold["threshold"] <= 1.0


def test_run_exports_an_ensemble_that_loads_and_predicts_like_one_model(tmp_path):
    from pneumo_models import load_model

    out = tmp_path / "study"
    run_cli("run", "--trials", "4", "--max-epochs", "1", "--data", "synthetic", "--study", "ens", "--out", str(out),
            "--no-progress", "--no-report", "--pruner", "none", "--ensemble", "3", "--ensemble-rule", "top", *TINY,
            cache_dir=tmp_path / "cache", check=True)
    card = json.loads((out / "best_model" / "model_card.json").read_text())
    members = card["training"]["ensemble"]["members"]
    assert card["training"]["ensemble"]["selection"] == []  # all three, as asked
    study = optuna.load_study(study_name="ens", storage=f"sqlite:///{out / 'study.db'}")
    best3 = sorted((t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE),
                   key=lambda t: (-t.value, t.number))[:3]
    assert [m["number"] for m in members] == [t.number for t in best3]
    assert card["best_trial"]["number"] == best3[0].number
    # `auto` (the default) refits the output layers of backbones only: these CNNs keep theirs
    assert card["training"]["output_layer"] == "auto" and all(m["output_layer"] == "as trained" for m in members)
    from reports.model_headline import _get_headline_info

    assert _get_headline_info(card, None, None).ensemble_trials == [t.number for t in best3]
    model = load_model(out / "best_model")
    assert len(ensemble_members(model.keras_model)) == 3
    ds = load_dataset("synthetic", card["input_size"], progress=False, cache_dir=tmp_path / "cache")
    saved = [float(r.split(",")[2]) for r in (out / "best_model" / "validation_predictions.csv")
             .read_text().splitlines()[1:17]]
    np.testing.assert_allclose(model.predict_proba(ds.x_val[:16]), saved, atol=1e-5)
    # the CLI cross-validates the same ensemble, and a what-if override of every member
    proc = run_cli("cv", "--study", "ens", "--out", str(out), "--folds", "2", "--ensemble", "2", "--set",
                   "class_weight=balanced", "--file", str(tmp_path / "cv.json"), "--no-progress",
                   cache_dir=tmp_path / "cache", check=True)
    assert "ensemble of trials" in proc.stdout and "class_weight=balanced" in proc.stdout
    # exported again with the default rule: the candidates differ in label smoothing, so `auto` keeps all three
    run_cli("export", "--study", "ens", "--out", str(out), "--no-progress", cache_dir=tmp_path / "cache", check=True)
    again = json.loads((out / "best_model" / "model_card.json").read_text())["training"]["ensemble"]
    assert (again["rule_asked"], again["rule_name"]) == ("auto", "top")
    assert [m["number"] for m in again["members"]] == [m["number"] for m in members]
    report = json.loads((tmp_path / "cv.json").read_text())
    assert report["trials"] == [t.number for t in best3[:2]] and len(report["folds"]) == 2
    assert all(m["class_weight"] == "balanced" for m in report["members"])


def test_greedy_choice_drops_a_confidently_wrong_candidate_and_keeps_a_complement():
    from pneumo_models.ensemble import choose_members
    from sklearn.metrics import log_loss, roc_auc_score

    y = np.array([0, 0, 1, 1, 0, 1])
    first_half = np.array([0.05, 0.1, 0.9, 0.95, 0.55, 0.45])   # best alone; unsure of the last two
    second_half = np.array([0.4, 0.45, 0.6, 0.6, 0.05, 0.95])   # the complement
    wrong = np.array([0.9, 0.9, 0.1, 0.1, 0.9, 0.1])            # confident and wrong
    choice = choose_members([first_half, wrong, second_half], y)
    assert choice.members == [0, 2]
    assert [members for members, _ in choice.steps] == [[0], [0, 2]]
    losses = [loss for _, loss in choice.steps]
    assert losses[0] == pytest.approx(log_loss(y, first_half)) and losses[1] < losses[0]
    assert losses[1] == pytest.approx(log_loss(y, (first_half + second_half) / 2))
    assert choose_members([wrong], y).members == [0]  # one candidate: kept, whatever it scores
    # with replacement a candidate may come back (weighting it), never past max_members, never for nothing
    weighted = choose_members([first_half, wrong, second_half], y, replace=True, max_members=6)
    assert set(weighted.members) <= {0, 2} and len(weighted.members) <= 6
    losses = [loss for _, loss in weighted.steps]
    assert all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] <= choice.steps[-1][1]
    assert losses[-1] == pytest.approx(log_loss(y, np.mean([[first_half, wrong, second_half][i]
                                                             for i in weighted.members], axis=0)))
    by_auc = choose_members([first_half, wrong, second_half], y, loss=lambda t, q: -roc_auc_score(t, q))
    assert by_auc.members == [2]  # another score, another choice: the complement ranks all six right on its own
    with pytest.raises(ValueError, match="replace=True"):
        choose_members([first_half, second_half], y, max_members=3)


def test_the_export_averages_the_candidates_that_lower_validation_log_loss(tmp_path):
    from sklearn.metrics import log_loss

    out = tmp_path / "study"
    # no --ensemble-rule: `auto` takes greedy, since every candidate trains on one loss here
    run_cli("run", "--trials", "4", "--max-epochs", "2", "--data", "synthetic", "--study", "greedy", "--out",
            str(out), "--no-progress", "--no-report", "--pruner", "none", "--set", "label_smoothing=0",
            "--set", "class_weight=none", "--output-layer", "refit", *TINY, cache_dir=tmp_path / "cache",
            check=True)  # of the default --ensemble 3
    card = json.loads((out / "best_model" / "model_card.json").read_text())
    ens = card["training"]["ensemble"]
    assert (ens["rule_asked"], ens["rule_name"]) == ("auto", "greedy")
    study = optuna.load_study(study_name="greedy", storage=f"sqlite:///{out / 'study.db'}")
    best3 = sorted((t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE),
                   key=lambda t: (-t.value, t.number))[:3]
    assert ens["candidates"] == [t.number for t in best3]
    chosen = [m["number"] for m in ens["members"]]
    assert chosen and set(chosen) <= set(ens["candidates"]) and ens["size"] == len(chosen)
    assert chosen == [n for n in ens["candidates"] if n in chosen]  # best trial first, as before
    assert card["best_trial"]["number"] == chosen[0]
    from reports.model_headline import _get_headline_info

    left_out = [n for n in ens["candidates"] if n not in chosen]
    assert _get_headline_info(card, None, None).ensemble_left_out == left_out
    steps = ens["selection"]
    assert sorted(steps[-1]["trials"]) == sorted(chosen)
    assert all(b["val_log_loss"] < a["val_log_loss"] for a, b in zip(steps, steps[1:]))  # each step lowered it
    rows = [r.split(",") for r in (out / "best_model" / "validation_predictions.csv").read_text().splitlines()[1:]]
    y, p = np.array([int(r[1]) for r in rows]), np.clip(np.array([float(r[2]) for r in rows]), 1e-7, 1 - 1e-7)
    assert log_loss(y, p) == pytest.approx(steps[-1]["val_log_loss"], abs=1e-4)  # the exported average's
    # each candidate's output layer was refitted (as asked: `auto` refits backbones only) before the choice, where
    # that lowered its log-loss
    for m in ens["members"]:
        layer = m["output_layer"]
        assert layer["c"] > 0 and (layer["val_log_loss_refit"] < layer["val_log_loss_trained"]) == layer["kept"]
    assert card["training"]["output_layer"] == "refit"
    assert "refitted" in card["training"]["how"] or not any(m["output_layer"]["kept"] for m in ens["members"])
    proc = run_cli("export", "--study", "greedy", "--out", str(out), "--ensemble-rule", "best", "--no-progress")
    assert proc.returncode == 2 and "--ensemble-rule" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("export", "--study", "greedy", "--out", str(out), "--output-layer", "fitted", "--no-progress")
    assert proc.returncode == 2 and "--output-layer" in proc.stderr and "Traceback" not in proc.stderr


def test_auto_refits_the_output_layers_of_networks_fine_tuned_from_a_backbone_only():
    from pneumo_models.ensemble import OUTPUT_LAYER_CHOICES, refits_output_layer

    lite0, cnn = {"backbone": "efficientnet-lite0", "input_size": 128}, {"conv_blocks": 3, "input_size": 28}
    assert [refits_output_layer(c, lite0) for c in OUTPUT_LAYER_CHOICES] == [True, True, False]
    assert [refits_output_layer(c, cnn) for c in OUTPUT_LAYER_CHOICES] == [False, True, False]
    with pytest.raises(ValueError, match="output layer"):
        refits_output_layer("fitted", cnn)
    from search.settings import OUTPUT_LAYER_DEFAULT, OUTPUT_LAYERS  # the command line's copy, checked before Keras

    assert OUTPUT_LAYERS == OUTPUT_LAYER_CHOICES and OUTPUT_LAYER_DEFAULT == "auto"


def test_ensemble_must_be_positive(tmp_path):
    proc = run_cli("run", "--trials", "1", "--data", "synthetic", "--ensemble", "0", "--out", str(tmp_path / "x"))
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: --ensemble")
    assert "Traceback" not in proc.stderr


def test_the_seeds_rule_averages_the_best_configuration_trained_from_three_seeds(tmp_path):
    from pneumo_models import load_model
    from pneumo_models.kept import load_network
    from reports.model_headline import _draw_headline, _get_headline_info

    out = tmp_path / "study"
    run_cli("run", "--trials", "3", "--max-epochs", "1", "--data", "synthetic", "--study", "seeds", "--out", str(out),
            "--no-progress", "--no-report", "--pruner", "none", "--ensemble-rule", "seeds", "--output-layer", "trained",
            *TINY,
            cache_dir=tmp_path / "cache", check=True)  # of the default --ensemble 3
    card = json.loads((out / "best_model" / "model_card.json").read_text())
    ens = card["training"]["ensemble"]
    study = optuna.load_study(study_name="seeds", storage=f"sqlite:///{out / 'study.db'}")
    best = study.best_trial
    members = ens["members"]
    assert [m["number"] for m in members] == [best.number] * 3 and ens["candidates"] == [best.number]
    assert len({m["seed"] for m in members}) == 3 and members[0]["seed"] == card["data"]["split_seed"] + best.number
    assert [m["network"] for m in members] == ["kept from its trial"] + ["trained at export from another seed"] * 2
    # --output-layer trained: every member's output layer as training left it (nets[0] is the kept network, below)
    assert all(m["output_layer"] == "as trained" for m in members) and card["training"]["output_layer"] == "trained"
    assert "refitted" not in card["training"]["how"]
    assert all(m["params"] == members[0]["params"] for m in members)
    model = load_model(out / "best_model")
    nets = ensemble_members(model.keras_model)
    assert len(nets) == 3
    ds = load_dataset("synthetic", card["input_size"], progress=False, cache_dir=tmp_path / "cache")
    kept = load_network(out / "trials" / str(best.number) / "network.keras")
    np.testing.assert_allclose(predict_proba(nets[0], ds.x_val), predict_proba(kept, ds.x_val), atol=1e-5)
    p = [predict_proba(n, ds.x_val) for n in nets]
    assert not np.allclose(p[1], p[2]) and not np.allclose(p[0], p[1])  # three seeds, three networks
    np.testing.assert_allclose(model.predict_proba(ds.x_val), np.mean(p, axis=0), atol=1e-5)
    info = _get_headline_info(card, None, None)
    assert info.ensemble_trials == [best.number] * 3 and info.ensemble_left_out == []
    assert "trained from 3 seeds" in _draw_headline(info)
    assert "different seeds" in card["training"]["how"]


def test_auto_rule_judges_by_log_loss_only_candidates_trained_on_one_loss():
    from search.final_model import resolve_ensemble_rule

    same = [{"label_smoothing": 0.0, "class_weight": "none", "learning_rate": lr} for lr in (1e-4, 3e-4, 2e-4)]
    assert resolve_ensemble_rule("auto", same) == "greedy"
    smoothed = [*same[:2], {**same[2], "label_smoothing": 0.05}]
    weighted = [*same[:2], {**same[2], "class_weight": "balanced"}]
    mixed = [*same[:2], {**same[2], "mixup": 0.2}]
    assert [resolve_ensemble_rule("auto", r) for r in (smoothed, weighted, mixed)] == ["top"] * 3
    assert resolve_ensemble_rule("auto", same[:1]) == "greedy"  # one candidate: kept, whatever the rule
    assert [resolve_ensemble_rule(r, smoothed) for r in ("top", "greedy", "seeds")] == ["top", "greedy", "seeds"]
