"""A user's path on generated data: run, resume/top up, export, load two ways, predict."""
from __future__ import annotations

import json

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from helpers import TINY, run_cli


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("e2e")
    out = base / "runs" / "smoke"
    proc = run_cli("run", "--trials", "3", "--max-epochs", "2", "--data", "synthetic", "--study", "smoke",
                   "--out", str(out), "--no-progress", "--no-report", *TINY, cache_dir=base / "cache", check=True)
    return base, out, proc


def _finished(out):
    study = optuna.load_study(study_name="smoke", storage=f"sqlite:///{out / 'study.db'}")
    return study, [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


def test_run_reaches_the_target_and_records_trial_attributes(study_dir):
    _, out, proc = study_dir
    assert "synthetic" in proc.stdout.lower()  # the data summary says what the data is
    # ... and the layout check with it (the generated images' classes differ in layout: it warns, on stdout)
    check = [line for line in proc.stdout.splitlines() if line.startswith("layout check:")]
    assert len(check) == 1 and "separates the classes on validation with AUC" in check[0]
    assert "warning: the films' coarse layout alone predicts the class" in proc.stdout
    assert "layout" not in proc.stderr
    study, finished = _finished(out)
    assert len(finished) == 3
    complete = [t for t in finished if t.state == TrialState.COMPLETE]
    assert complete
    for t in complete:
        assert 0.0 <= t.value <= 1.0
        for key in ("rc_accuracy", "auc", "recall", "precision", "specificity", "threshold", "epochs",
                    "seconds", "n_params"):
            assert key in t.user_attrs, key
        assert t.user_attrs["recall"] >= 0.95
        assert t.intermediate_values  # reported every epoch for pruning
    assert study.user_attrs["min_recall"] == 0.95
    assert study.user_attrs["data"]["kind"] == "synthetic"


def test_rerun_tops_up_exactly(study_dir):
    base, out, _ = study_dir
    _, before = _finished(out)
    values_before = {t.number: (t.state, t.value) for t in before}
    run_cli("run", "--trials", "5", "--max-epochs", "2", "--data", "synthetic", "--study", "smoke",
            "--out", str(out), "--no-progress", "--no-report", "--no-export", *TINY,
            cache_dir=base / "cache", check=True)
    _, after = _finished(out)
    assert len(after) == 5
    assert {t.number: (t.state, t.value) for t in after if t.number in values_before} == values_before
    # asking again for the same number runs nothing
    proc = run_cli("run", "--trials", "5", "--max-epochs", "2", "--data", "synthetic", "--study", "smoke",
                   "--out", str(out), "--no-progress", "--no-report", "--no-export", *TINY,
                   cache_dir=base / "cache", check=True)
    assert "0 new" in proc.stdout
    assert len(_finished(out)[1]) == 5


def test_export_loads_two_ways_with_identical_predictions(study_dir):
    import keras

    from pneumo_models import load_model
    from pneumo_models.data import load_dataset

    base, out, _ = study_dir
    folder = out / "best_model"
    card = json.loads((folder / "model_card.json").read_text())
    for key in ("threshold", "min_recall", "input_size", "class_names", "metrics", "best_trial", "data",
                "versions", "created_at"):
        assert key in card, key
    val = card["metrics"]["validation"]
    for name in ("accuracy", "recall", "auc"):
        lo, hi = val[name]["ci95"]
        assert lo <= val[name]["value"] <= hi
    assert val["recall"]["value"] >= 0.95  # threshold chosen to keep the floor on validation
    m = load_model(folder)
    plain = keras.saving.load_model(folder / "model.keras", safe_mode=True)
    ds = load_dataset("synthetic", card["input_size"], progress=False, cache_dir=base / "cache")
    x = np.asarray(ds.x_val[:32])
    ours = m.predict_proba(x)
    theirs = plain.predict(x[..., None].astype("float32"), verbose=0).reshape(-1)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    # predictions saved at export equal a fresh prediction after loading
    rows = (folder / "validation_predictions.csv").read_text().splitlines()[1:33]
    saved = np.array([float(r.split(",")[2]) for r in rows])
    np.testing.assert_allclose(ours, saved, atol=1e-5)
    # any size and channel count goes through the same preprocessing
    big = np.repeat(np.kron(x[:2], np.ones((3, 3), dtype=np.uint8))[..., None], 3, axis=-1)
    assert m.predict_proba(big).shape == (2,)


def test_predict_command_table_and_json(study_dir, tmp_path):
    from PIL import Image

    from pneumo_models.data import load_dataset

    base, out, _ = study_dir
    ds = load_dataset("synthetic", 64, progress=False, cache_dir=base / "cache")
    files = []
    for i in range(3):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(np.asarray(ds.x_val[i])).resize((200, 150)).convert("RGB").save(path)
        files.append(str(path))
    proc = run_cli("predict", str(out / "best_model"), *files, "--json", check=True)
    data = json.loads(proc.stdout)
    assert len(data["predictions"]) == 3
    for p in data["predictions"]:
        assert 0.0 <= p["probability"] <= 1.0
        assert p["label"] == ("PNEUMONIA" if p["probability"] >= data["threshold"] else "NORMAL")
    table = run_cli("predict", str(out / "best_model"), *files, check=True).stdout
    assert "probability" in table and "img0.png" in table

    # read and predicted a chunk at a time (a hospital's folder), each file in its place, a bar over them
    from pneumo_models import load_model

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    files.insert(1, str(broken))
    model = load_model(out / "best_model")
    whole, chunked = model.predict_files(files), model.predict_files(files, chunk=2)
    assert [r.path for r in chunked] == files and chunked[1].error and chunked[1].probability is None
    np.testing.assert_allclose([r.probability for r in chunked if r.error is None],
                               [r.probability for r in whole if r.error is None], atol=1e-6)
    assert [r.label for r in chunked] == [r.label for r in whole]
    proc = run_cli("predict", str(out / "best_model"), *files, "--csv")
    assert proc.returncode == 1  # a file could not be read: said in its row, and in the exit status
    assert "predict: 100%" in proc.stderr and "4/4" in proc.stderr and "broken.png" in proc.stdout


def test_export_subcommand_rebuilds_the_model(study_dir):
    base, out, _ = study_dir
    card_before = json.loads((out / "best_model" / "model_card.json").read_text())
    run_cli("export", "--study", "smoke", "--out", str(out), "--no-progress", cache_dir=base / "cache", check=True)
    card = json.loads((out / "best_model" / "model_card.json").read_text())
    assert card["best_trial"]["number"] >= 0
    assert card["data"]["fingerprint"] == card_before["data"]["fingerprint"]


def test_the_export_takes_the_networks_its_trials_kept_and_retrains_one_that_is_gone(study_dir):
    from pneumo_models.metrics import recall_constrained_accuracy

    base, out, _ = study_dir
    _, finished = _finished(out)
    complete = [t for t in finished if t.state == TrialState.COMPLETE]
    kept = {t.number: out / "trials" / str(t.number) / "network.keras" for t in finished}
    assert complete and all(t.user_attrs["network_kept"] and kept[t.number].is_file() for t in complete)
    assert not any(kept[t.number].exists() for t in finished if t.state == TrialState.PRUNED)
    best = min(complete, key=lambda t: (-t.value, t.number))

    def export():
        run_cli("export", "--study", "smoke", "--out", str(out), "--ensemble", "1", "--output-layer", "trained",
                "--no-progress", cache_dir=base / "cache", check=True)
        card = json.loads((out / "best_model" / "model_card.json").read_text())
        rows = [r.split(",") for r in (out / "best_model" / "validation_predictions.csv").read_text().splitlines()[1:]]
        y, p = np.array([int(r[1]) for r in rows]), np.array([float(r[2]) for r in rows])
        (member,) = card["training"]["ensemble"]["members"]
        return member, recall_constrained_accuracy(y, p, 0.95).accuracy

    member, accuracy = export()
    assert member["number"] == best.number and member["network"] == "kept from its trial"
    assert accuracy == best.value  # the very network the trial scored, not another training of its recipe
    kept[best.number].write_bytes(b"not a Keras file")  # damaged (or gone): trained again, not a failed export
    member, _ = export()
    assert member["network"] == "retrained" and member["epochs_trained"] >= 1


def test_cost_guard_refuses_costly_configurations_before_training(tmp_path):
    out = tmp_path / "guard"
    run_cli("run", "--trials", "2", "--max-epochs", "1", "--data", "synthetic", "--study", "guard", "--out",
            str(out), "--no-progress", "--no-report", "--no-export", "--max-mmacs", "0.001", *TINY,
            cache_dir=tmp_path / "cache", check=True)
    study = optuna.load_study(study_name="guard", storage=f"sqlite:///{out / 'study.db'}")
    assert [t.state for t in study.trials] == [TrialState.PRUNED, TrialState.PRUNED]
    for t in study.trials:
        assert "refused before training" in t.user_attrs["pruned_reason"]
        assert t.user_attrs["mmacs"] > 0.001
        assert not t.intermediate_values  # no epoch was trained


def test_fresh_study_tries_known_good_recipes_first_and_timeout_ends_cleanly(tmp_path):
    from spaces import get_space

    out = tmp_path / "starts"
    proc = run_cli("run", "--trials", "50", "--timeout", "1", "--max-epochs", "1", "--data", "synthetic",
                   "--study", "starts", "--out", str(out), "--no-progress", "--no-report", "--no-export", *TINY,
                   cache_dir=tmp_path / "cache", check=True)
    assert "--timeout 1 s came before --trials 50" in proc.stdout
    study = optuna.load_study(study_name="starts", storage=f"sqlite:///{out / 'study.db'}")
    first = study.trials[0]
    assert first.user_attrs.get("start_point") is True and first.state == TrialState.COMPLETE
    expected = get_space("default").restrict_input_size(64).with_overrides(
        conv_blocks=2, base_filters=8, dense_units=32, batch_size=64, filter_growth=1.0).start_points()[0]
    assert {k: first.params[k] for k in expected} == expected
    # --no-starts: the sampler proposes the first trial itself
    run_cli("run", "--trials", "1", "--max-epochs", "1", "--data", "synthetic", "--study", "plain", "--out",
            str(tmp_path / "plain"), "--no-progress", "--no-report", "--no-export", "--no-starts", *TINY,
            cache_dir=tmp_path / "cache", check=True)
    plain = optuna.load_study(study_name="plain", storage=f"sqlite:///{tmp_path / 'plain' / 'study.db'}")
    assert "start_point" not in plain.trials[0].user_attrs


def test_a_start_point_runs_whole_where_the_pruner_would_stop_it(tmp_path):
    """A known-good recipe is not pruned (a second start point trailing the first by one film was);
    the pruner is still asked, so Hyperband's rungs hold its values for the trials after it."""
    from search.data_access import StudyData
    from search.objective import Objective
    from spaces import get_space

    data = StudyData("synthetic", val_fraction=0.2, seed=0, cache_dir=tmp_path / "cache", progress=False)
    space = get_space("default").restrict_input_size(64).with_overrides(
        conv_blocks=2, base_filters=8, dense_units=32, batch_size=64, filter_growth=1.0)
    objective = Objective(space, data, max_epochs=2, min_recall=0.95, patience=2, seed=0)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    # a real pruner that says "prune" at every epoch: accuracy never reaches 2
    always = optuna.create_study(study_name="always", storage=storage, direction="maximize",
                                 pruner=optuna.pruners.ThresholdPruner(lower=2.0))
    always.enqueue_trial(space.start_points()[0], user_attrs={"start_point": True})
    always.optimize(objective, n_trials=2)
    start, sampled = always.trials
    assert start.state == TrialState.COMPLETE and sorted(start.intermediate_values) == [1, 2]
    assert start.user_attrs["pruner_would_stop_at"] == 1
    assert sampled.state == TrialState.PRUNED and sorted(sampled.intermediate_values) == [1]
    assert "pruner_would_stop_at" not in sampled.user_attrs
    # the default pruner records the start point's value at its first rung
    hyper = optuna.create_study(study_name="hyper", storage=storage, direction="maximize",
                                pruner=optuna.pruners.HyperbandPruner(min_resource=1, max_resource=2, reduction_factor=3))
    hyper.enqueue_trial(space.start_points()[0], user_attrs={"start_point": True})
    hyper.optimize(objective, n_trials=1)
    rungs = {k: v for k, v in hyper.trials[0].system_attrs.items() if k.startswith("completed_rung_")}
    assert rungs and set(rungs.values()) <= set(hyper.trials[0].intermediate_values.values())


def test_a_start_point_cut_off_by_an_interruption_runs_again_on_resume(tmp_path):
    """Resuming re-queues a start point that Ctrl-C/SIGTERM failed (the sampler would never propose it
    again); one that failed for a reason of its own (diverged) is not tried again."""
    from optuna.trial import create_trial

    out, cache = tmp_path / "resume", tmp_path / "cache"
    args = ("run", "--max-epochs", "1", "--data", "synthetic", "--study", "resume", "--out", str(out),
            "--no-progress", "--no-report", "--no-export", *TINY)
    run_cli(*args, "--trials", "1", cache_dir=cache, check=True)
    study = optuna.load_study(study_name="resume", storage=f"sqlite:///{out / 'study.db'}")
    (first,) = study.trials
    assert first.user_attrs.get("start_point") is True and first.state == TrialState.COMPLETE
    lr = first.distributions["learning_rate"]
    points = {kind: {**first.params, "learning_rate": lr.low * factor} for kind, factor in
              (("interrupted", 1.5), ("diverged", 2.5))}
    for kind, point in points.items():  # as the objective records them
        study.add_trial(create_trial(state=TrialState.FAIL, params=point, distributions=first.distributions,
                                     user_attrs={"start_point": True, "fail_kind": kind},
                                     system_attrs={"fixed_params": point}))
    proc = run_cli(*args, "--trials", "2", cache_dir=cache, check=True)
    assert "resuming: 1 start point cut off by an interruption queued again" in proc.stdout
    study = optuna.load_study(study_name="resume", storage=f"sqlite:///{out / 'study.db'}")
    again = study.trials[-1]
    assert len(study.trials) == 4 and again.state == TrialState.COMPLETE and again.user_attrs.get("start_point") is True
    assert again.params["learning_rate"] == pytest.approx(points["interrupted"]["learning_rate"])
    # finished now: a further resume queues nothing
    proc = run_cli(*args, "--trials", "2", cache_dir=cache, check=True)
    assert "resuming:" not in proc.stdout and len(optuna.load_study(
        study_name="resume", storage=f"sqlite:///{out / 'study.db'}").trials) == 4
