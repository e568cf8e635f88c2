"""The report's info functions on real inputs: studies built with ``create_trial``, small arrays
with hand-computed answers, and tiny Keras models whose Grad-CAM map is known exactly."""
from __future__ import annotations

import datetime
import json
from html import escape
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

import report_demo
from helpers import write_xray_folder
from reports import ImageData, gather_inputs, render_report, write_evaluation_page, write_report
from reports import (data_view, diagnostics, evaluation_page, gallery, model_curves, model_eval, model_headline,
                     saliency, scored_sets, summary)
from reports._blocks import HtmlBlock, NoticeBlock
from reports.html import _get_page_info
from reports.inputs import ModelFolder, load_test_images
from reports.shift import _get_shift_info

ROOT = Path(__file__).resolve().parents[1]
optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def study():
    return report_demo.make_study(None, name="unit", n_trials=14, running=1, seed=3)


def _tiny_study(states, name="tiny"):
    """Trials of a one-parameter study with the given states (pruned ones stop at epoch 2)."""
    s = optuna.create_study(direction="maximize", study_name=name)
    dist = {"learning_rate": FloatDistribution(1e-4, 1e-2, log=True), "dropout": FloatDistribution(0, 0.5)}
    for i, state in enumerate(states):
        curve = {1: 0.6, 2: 0.7, 3: 0.75 + 0.01 * i} if state != TrialState.PRUNED else {1: 0.5, 2: 0.55}
        s.add_trial(create_trial(state=state, value=max(curve.values()) if state == TrialState.COMPLETE else None,
                                 params={"learning_rate": 10 ** (-4 + 0.3 * i), "dropout": 0.05 * i},
                                 distributions=dist, intermediate_values=curve if state != TrialState.FAIL else None,
                                 user_attrs={"fail_reason": "diverged"} if state == TrialState.FAIL else {}))
    return s


# ----------------------------------------------------------------------------- summary
def test_study_summary_counts_states_and_wall_time(study):
    now = datetime.datetime.now()
    info = summary._get_study_summary_info(study, now=now)
    states = [t.state for t in study.trials]
    assert info.n_trials == len(states) == 15
    assert info.n_complete == states.count(TrialState.COMPLETE)
    assert info.n_pruned == states.count(TrialState.PRUNED) > 0
    assert info.n_failed == states.count(TrialState.FAIL) == 1
    assert info.n_running == 1 and info.still_running
    start = min(t.datetime_start for t in study.trials)
    assert info.wall_seconds == (now - start).total_seconds() < 24 * 3600
    assert (info.min_recall, info.max_epochs, info.sampler) == (0.95, 6, "TPESampler(seed=0)")


def test_best_trial_and_table(study):
    best = summary._get_best_trial_info(study)
    assert best.number == study.best_trial.number and best.value == study.best_value
    assert dict(best.params) == study.best_trial.params
    assert dict(best.metrics)["rc_accuracy"] == study.best_trial.user_attrs["rc_accuracy"]
    table = summary._get_trials_table_info(study)
    keys = [c.key for c in table.columns]
    assert keys[:3] == ["number", "state", "value"] and "fail_reason" in keys
    assert "params_learning_rate" in keys and len(table.rows) == len(study.trials)
    failed = [r for r in table.rows if r[1] == "failed"]
    assert failed and failed[0][keys.index("fail_reason")].startswith("TrainingDiverged")
    html = summary._draw_trials_table(table)
    assert html.count("<tr>") == len(study.trials) + 1 and 'class="grid sortable"' in html


def test_trials_table_says_which_trials_were_start_points_and_ran_whole():
    s = optuna.create_study(direction="maximize", study_name="starts")
    dist = {"dropout": FloatDistribution(0, 0.5)}
    for attrs in ({"start_point": True}, {"start_point": True, "pruner_would_stop_at": 3}, {}):
        s.add_trial(create_trial(state=TrialState.COMPLETE, value=0.9, params={"dropout": 0.1}, distributions=dist,
                                 intermediate_values={1: 0.9}, user_attrs=attrs))
    table = summary._get_trials_table_info(s)
    notes = [row[[c.key for c in table.columns].index("start_point")] for row in table.rows]
    assert notes == ["yes", "yes (run whole; the pruner would have stopped it at epoch 3)", None]
    assert "start_point" not in [c.key for c in summary._get_trials_table_info(_tiny_study([TrialState.COMPLETE])).columns]


def test_data_summary_info(study):
    info = summary._get_data_summary_info(study)
    assert info.available and info.splits == ["train", "val"] and info.class_names == ["NORMAL", "PNEUMONIA"]
    assert info.counts["train"]["PNEUMONIA"] == 3875 and info.n_skipped == 1
    empty = summary._get_data_summary_info(optuna.create_study())
    assert not empty.available


# ----------------------------------------------------------------------------- diagnostics
def test_diagnostics_full_study(study):
    info = diagnostics._get_diagnostics_info(study)
    keys = {p.key: p for p in info.plots}
    assert all(p.available for p in info.plots), [p.reason for p in info.plots if not p.available]
    assert list(info.importances)[:2] == keys["contour"].params
    assert sum(1 for k in keys if k.startswith("slice-")) == -(-len(info.params) // diagnostics.SLICE_PARAMS_PER_FIGURE)
    section = diagnostics.build_section(gather_inputs(study, load_data=False))
    assert [b.key for b in section.figures][:3] == ["history", "importances", "parallel"]
    assert {"contour", "intermediate", "timeline"} <= {b.key for b in section.figures}


def test_learning_curves_mark_pruned_trials():
    s = _tiny_study([TrialState.COMPLETE, TrialState.PRUNED, TrialState.COMPLETE, TrialState.FAIL])
    info = diagnostics._get_diagnostics_info(s)
    spec = next(p for p in info.plots if p.key == "intermediate")
    fig = diagnostics.plot_diagnostic(s, spec, info)
    by_group = {tr.legendgroup: tr for tr in fig.data}
    pruned = by_group["PRUNED"]
    assert pruned.line.dash == "dot" and list(pruned.x) == [1, 2] and pruned.marker.symbol[-1] == "x"
    assert by_group["COMPLETE"].line.dash == "solid"


@pytest.mark.parametrize("states, unavailable", [
    ([], {"history", "importances", "parallel", "slice-1", "contour", "intermediate", "timeline"}),
    ([TrialState.COMPLETE, TrialState.PRUNED], {"importances", "parallel", "contour"}),
    ([TrialState.FAIL], {"history", "importances", "parallel", "slice-1", "contour", "intermediate"}),
])
def test_diagnostics_guard_small_studies(states, unavailable):
    s = _tiny_study(states)
    info = diagnostics._get_diagnostics_info(s)
    assert {p.key for p in info.plots if not p.available} == unavailable
    assert all(p.reason for p in info.plots if not p.available)
    section = diagnostics.build_section(gather_inputs(s, load_data=False))   # never raises
    assert {b.key for b in section.blocks if isinstance(b, NoticeBlock)} == unavailable


# ----------------------------------------------------------------------------- model evaluation
Y = np.array([0, 0, 0, 1, 1, 1, 1, 1])
P = np.array([0.10, 0.55, 0.30, 0.40, 0.80, 0.90, 0.35, 0.70])


def test_confusion_roc_pr_at_threshold():
    c = model_curves._get_confusion_info(Y, P, 0.40, ["NORMAL", "PNEUMONIA"])
    assert (c.tn, c.fp, c.fn, c.tp) == (2, 1, 1, 4)
    roc = model_curves._get_roc_info(Y, P, 0.40, 0.9, (0.8, 1.0))
    assert roc.operating_point == pytest.approx((1 / 3, 4 / 5)) and roc.auc == 0.9
    pr = model_curves._get_pr_info(Y, P, 0.40)
    assert pr.operating_point == pytest.approx((4 / 5, 4 / 5)) and pr.prevalence == 5 / 8


def test_threshold_curve_and_exact_rule():
    info = model_curves._get_threshold_info(Y, P, 0.40, 0.8)
    i = int(np.flatnonzero(info.thresholds == 0.40)[0])
    assert (info.recall[i], info.specificity[i], info.accuracy[i]) == pytest.approx((4 / 5, 2 / 3, 6 / 8))
    assert info.recall[0] == 1.0 and info.specificity[-1] == 1.0
    # the CSV keeps 8 decimals: a probability rounded just below the threshold still counts
    assert scored_sets.called_positive(np.array([0.40, 0.40 - 1e-12, 0.41]), 0.40).tolist() == [True, False, True]


def test_calibration_bins():
    info = model_curves._get_calibration_info(Y, P, n_bins=5)
    assert info.counts.sum() == len(Y) and len(info.counts) == len(info.predicted) == len(info.observed)
    assert info.brier == pytest.approx(np.mean((P - Y) ** 2))


def test_headline_is_the_card_and_flags_disagreement():
    card = {"threshold": 0.40, "min_recall": 0.8, "input_size": 32,
            "metrics": {"validation": {"accuracy": {"value": 0.75, "ci95": [0.5, 1.0]},
                                       "recall": {"value": 0.9, "ci95": [0.6, 1.0]}}, "n": 8}}
    info = model_headline._get_headline_info(card, Y, P)
    assert [(r.name, r.value, r.ci95) for r in info.rows] == [("accuracy", 0.75, (0.5, 1.0)),
                                                             ("recall", 0.9, (0.6, 1.0))]
    assert len(info.disagreements) == 1 and "Sensitivity" in info.disagreements[0]   # 0.8 recomputed
    assert info.recomputed["recall"] == pytest.approx(0.8)


# ----------------------------------------------------------------------------- gallery
def test_gallery_orders_and_caps_errors():
    df = pd.DataFrame({"id": [f"val/{i}" for i in range(8)], "label": Y, "probability": P})
    info = gallery._get_gallery_info(df, 0.40, ids_val=[f"val/{i}" for i in range(7)], max_per_kind=1)
    assert [it.id for it in info.false_negatives] == ["val/6"] and info.n_false_negatives == 1
    assert [it.id for it in info.false_positives] == ["val/1"] and info.n_false_positives == 1
    info = gallery._get_gallery_info(df, 0.20, ids_val=["val/2"])
    assert [it.id for it in info.false_positives] == ["val/1", "val/2"]      # most confident first
    assert [it.row for it in info.false_positives] == [None, 0] and info.n_unmatched == 1


# ----------------------------------------------------------------------------- saliency
def _brightness_model(size):
    """sigmoid(mean(relu(x/255)) - 0.1): its Grad-CAM map is the image itself, exactly."""
    import keras

    inp = keras.Input((size, size, 1))
    x = keras.layers.Rescaling(1 / 255)(inp)
    x = keras.layers.Conv2D(1, 1, activation="relu", name="feature", kernel_initializer="ones",
                            bias_initializer="zeros")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(1, activation="sigmoid", kernel_initializer="ones",
                             bias_initializer=keras.initializers.Constant(-0.1))(x)
    return keras.Model(inp, out)


def _square_image(size=16):
    img = np.zeros((1, size, size), np.uint8)
    img[0, 4:8, 9:13] = 200
    return img


def test_gradcam_is_exact_on_a_known_model():
    model = _brightness_model(16)
    img = _square_image()
    info = saliency._get_saliency_info(model, img)
    assert info.method == saliency.GRADCAM and info.layer == "feature" and info.maps.shape == (1, 16, 16)
    np.testing.assert_allclose(info.maps[0], img[0] / 200.0, atol=1e-5)


def test_gradcam_of_an_ensemble_is_the_mean_of_its_members_maps():
    from pneumo_models.ensemble import build_ensemble

    img = _square_image()
    info = saliency._get_saliency_info(build_ensemble([_brightness_model(16), _brightness_model(16)]), img)
    assert info.method == saliency.GRADCAM and info.layer == "mean of member_1/feature, member_2/feature"
    np.testing.assert_allclose(info.maps[0], img[0] / 200.0, atol=1e-5)
    # a member at half the size sees the image resized, and its map is brought back to full size
    mixed = saliency._get_saliency_info(build_ensemble([_brightness_model(16), _brightness_model(8)]), img)
    assert mixed.method == saliency.GRADCAM and mixed.maps.shape == (1, 16, 16)
    hot = np.unravel_index(np.argmax(mixed.maps[0]), (16, 16))
    assert 3 <= hot[0] <= 8 and 8 <= hot[1] <= 13


def test_feature_layer_and_chain_check():
    import keras

    inp = keras.Input((16, 16, 1))
    a = keras.layers.Conv2D(2, 3, padding="same", name="c")(inp)
    b = keras.layers.Conv2D(2, 3, padding="same")(a)
    c = keras.layers.Add(name="add")([a, b])
    x = keras.layers.MaxPooling2D(2)(c)
    model = keras.Model(inp, keras.layers.Dense(1)(keras.layers.Flatten()(x)))
    assert saliency.find_feature_layer(model).name == "add"              # not the pooling after it
    assert saliency._is_chain(model, model.get_layer("add"))             # JAX head can be replayed
    assert not saliency._is_chain(model, model.get_layer("c"))           # a branch follows


def test_occlusion_fallback_finds_the_evidence():
    model = _brightness_model(16)
    info = saliency._get_saliency_info(model, _square_image(), method="occlusion")
    assert info.method == saliency.OCCLUSION and 0.0 <= info.maps.min() and info.maps.max() == pytest.approx(1.0)
    hot = np.unravel_index(np.argmax(info.maps[0]), (16, 16))
    assert 2 <= hot[0] <= 9 and 7 <= hot[1] <= 14


def test_gradcam_on_the_torch_backend():
    pytest.importorskip("torch")
    code = textwrap.dedent(f"""
        import numpy as np, sys
        sys.path.insert(0, {str(ROOT)!r}); sys.path.insert(0, {str(Path(__file__).parent)!r})
        import keras; assert keras.backend.backend() == "torch"
        from test_report_info import _brightness_model, _square_image
        from reports import saliency
        info = saliency._get_saliency_info(_brightness_model(16), _square_image(), method="gradcam")
        np.testing.assert_allclose(info.maps[0], _square_image()[0] / 200.0, atol=1e-5)
        print("OK", info.method)
    """)
    env = {**os.environ, "KERAS_BACKEND": "torch", "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "OK Grad-CAM" in proc.stdout, proc.stderr[-2000:]


# ----------------------------------------------------------------------------- data view
def test_class_images_mean_std_and_difference():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (10, 8, 8)).astype(np.uint8)
    y = np.array([0, 1] * 5)
    images = ImageData(x, y, x[:2], y[:2], ["a", "b"], ["NORMAL", "PNEUMONIA"])
    info = data_view._get_class_images_info(images)
    np.testing.assert_allclose(info.means[0], x[y == 0].mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(info.stds[1], x[y == 1].std(axis=0), rtol=1e-4)
    np.testing.assert_allclose(info.mean_difference, info.means[1] - info.means[0])
    assert info.n_images == [5, 5]
    bal = data_view._get_class_balance_info(None, images)
    assert bal.counts == {"train": {"NORMAL": 5, "PNEUMONIA": 5}, "val": {"NORMAL": 1, "PNEUMONIA": 1}}


# ----------------------------------------------------------------------------- page
def test_partial_study_page_lists_what_is_missing(tmp_path):
    s = _tiny_study([TrialState.COMPLETE, TrialState.PRUNED], name="partial")
    inputs = gather_inputs(s, None, load_data=False)
    info = _get_page_info(inputs)
    assert [x.id for x in info.sections] == ["summary", "diagnostics", "model", "errors", "data"]
    missing = {key for _, key, _ in info.missing}
    assert {"model", "gallery", "class-images"} <= missing
    path = render_report(inputs, tmp_path / "r.html")
    text = path.read_text()
    assert "This report is incomplete" in text and "Model evaluation is missing" in text
    assert list(tmp_path.iterdir()) == [path]                         # temp file replaced, none left


def test_page_is_self_contained(tmp_path, study):
    from plotly.offline import get_plotlyjs

    path = write_report(study, tmp_path, progress=False)            # a folder: writes report.html
    assert path == tmp_path / "report.html"
    text = path.read_text()
    assert text.count(get_plotlyjs()[:2000]) == 1                  # Plotly's JS embedded exactly once
    assert "<script src" not in text.replace(" ", "") and 'src="http' not in text
    assert text.count('class="plotly-graph-div"') == len([b for s in _get_page_info(
        gather_inputs(study, load_data=False)).sections for b in s.figures])


def test_model_folder_found_beside_the_report(tmp_path, study):
    folder = tmp_path / "best_model"
    folder.mkdir()
    (folder / "model_card.json").write_text(json.dumps({"study": {"name": "another"}}))
    from reports import find_model_dir

    assert find_model_dir(study, tmp_path / "report.html") is None      # another study's model
    (folder / "model_card.json").write_text(json.dumps({"study": {"name": study.study_name}}))
    assert find_model_dir(study, tmp_path / "report.html") == folder


# ----------------------------------------------------------------------------- test split and evaluations
@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    """One study and two exported models, each scored once on a test split after its export: one
    drawn like the validation X-rays, one washed out (a shift: the model calls every X-ray pneumonia)."""
    out = tmp_path_factory.mktemp("held")
    images = report_demo.make_images()
    study = report_demo.make_study(None, name="held", n_trials=6, images=images)
    folders = {}
    for name, shift in (("same", 0.0), ("shifted", 0.3)):
        test = report_demo.make_test_images(shift=shift)
        folders[name] = (report_demo.export_demo_model(out / name / "best_model", study, images, test_images=test), test)
    return study, images, folders


def _held_inputs(held_out, name="shifted", **kwargs):
    study, images, folders = held_out
    folder, test = folders[name]
    return gather_inputs(study, folder, images=images, test_images=kwargs.pop("test_images", test), **kwargs)


def _without_test(inputs):
    """The same inputs as a model folder exported with --no-test would give (metrics.test None)."""
    card = {**inputs.model.card, "metrics": {**inputs.model.card["metrics"], "test": None}}
    return inputs._replace(model=inputs.model._replace(card=card, test_predictions=None), test_images=None)


def test_test_column_is_the_cards_test_block(held_out):
    model = _held_inputs(held_out).model
    card, block = model.card, model.card["metrics"]["test"]
    validation, test = scored_sets.model_sets(model)
    patients = scored_sets.patient_set(test)
    info = model_headline._get_headline_info(card, validation.y, validation.p, others=[test, patients])
    assert {r.name: (r.value, list(r.ci95)) for r in info.rows} == {
        k: (v["value"], v["ci95"]) for k, v in card["metrics"]["validation"].items()}
    image_col, patient_col = info.columns
    assert (image_col.key, patient_col.key) == ("test", "test-patients")
    for col, figures in ((image_col, block["at_threshold"]), (patient_col, block["per_patient"]["at_threshold"])):
        assert {r.name: (r.value, list(r.ci95)) for r in col.rows} == {
            k: (v["value"], v["ci95"]) for k, v in figures.items()}
        assert col.disagreements == []              # test_predictions.csv reproduces the card's test figures
    assert image_col.best_at_floor == block["best_at_floor"]
    assert patient_col.best_at_floor == block["per_patient"]["best_at_floor"]
    assert (image_col.n, image_col.n_positive, image_col.n_patients) == (48, block["n_positive"], 24)
    assert patient_col.per_patient and patient_col.n == block["per_patient"]["n"] == 24
    assert info.selection_note == card["metrics"]["note"] and "chose nothing" in info.selection_note
    html = model_headline._draw_headline(info)
    assert "Validation figures were used for selection; test figures were not." in html


def test_test_confusion_matrix_is_a_hand_count_of_test_predictions(held_out):
    import csv

    model = _held_inputs(held_out).model
    threshold = model.card["threshold"]
    with open(model.folder / "test_predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    tally = {"tn": 0, "fp": 0, "fn": 0, "tp": 0}
    for r in rows:
        called = float(r["probability"]) >= threshold
        truth = r["label"] == "1"
        tally[("t" if called == truth else "f") + ("p" if called else "n")] += 1
    test = scored_sets.test_set(model)
    info = model_curves._get_confusion_info(test.y, test.p, threshold, ["NORMAL", "PNEUMONIA"], test.label, test.style)
    assert (info.tn, info.fp, info.fn, info.tp) == (tally["tn"], tally["fp"], tally["fn"], tally["tp"])
    assert info.tp / (info.tp + info.fn) == model.card["metrics"]["test"]["at_threshold"]["recall"]["value"]
    assert info.label == "Test" and sum(tally.values()) == len(rows) == 48


def test_shift_warning_only_below_the_validation_interval():
    card = {"metrics": {"validation": {"accuracy": {"value": 0.8, "ci95": [0.7, 0.9]},
                                       "auc": {"value": 0.85, "ci95": [0.8, 0.9]}}}}

    def block(accuracy, auc=0.85):
        return {"at_threshold": {"accuracy": {"value": accuracy, "ci95": [0.0, 1.0]},
                                 "auc": {"value": auc, "ci95": [0.0, 1.0]}}}

    worse = _get_shift_info(card, block(0.6), "new patients")
    assert worse.warning.startswith("This model does worse on new patients than validation suggests: accuracy 0.600")
    assert [(f.metric, f.worse) for f in worse.findings] == [("accuracy", True)]
    assert _get_shift_info(card, block(0.75), "new patients").warning is None          # inside the interval
    better = _get_shift_info(card, block(0.95, auc=0.95), "new patients")
    assert better.warning is None and {f.metric for f in better.findings} == {"accuracy", "auc"}
    assert _get_shift_info(card, None, "new patients").warning is None                # no test split


def test_summary_warns_when_the_test_split_does_worse(held_out):
    shifted, same = _held_inputs(held_out, "shifted"), _held_inputs(held_out, "same")
    expected = _get_shift_info(shifted.model.card, shifted.model.card["metrics"]["test"], "new patients").warning
    assert expected and "accuracy" in expected
    first = summary.build_section(shifted).blocks[0]
    assert isinstance(first, HtmlBlock) and first.key == "shift-warning"
    assert escape(expected) in first.html
    assert _get_shift_info(same.model.card, same.model.card["metrics"]["test"], "new patients").warning is None
    assert "shift-warning" not in [b.key for b in summary.build_section(same).blocks]
    assert "shift-warning" not in [b.key for b in summary.build_section(_without_test(shifted)).blocks]


def test_model_section_draws_test_beside_validation_only_when_there_is_one(held_out):
    inputs = _held_inputs(held_out)
    section = model_eval.build_section(inputs)
    assert [b.key for b in section.figures] == ["roc", "pr", "confusion", "confusion-test", "threshold", "scores",
                                                "calibration"]
    assert section.missing == []
    plain = model_eval.build_section(_without_test(inputs))
    assert [b.key for b in plain.figures] == ["roc", "pr", "confusion", "threshold", "calibration"]
    headline = next(b for b in plain.blocks if b.key == "headline-metrics").html
    assert "data-set=" not in headline and "Test" not in headline
    # the probability distributions: every X-ray of each class counted once, per set
    for s in scored_sets.model_sets(inputs.model):
        dist = model_curves._get_score_distribution_info(s.y, s.p, inputs.model.card["threshold"],
                                                       ["NORMAL", "PNEUMONIA"], label=s.label)
        assert [int(c.sum()) for c in dist.counts] == dist.n == [int(np.sum(s.y == 0)), int(np.sum(s.y == 1))]
    # a card with test figures but no test_predictions.csv: the table stays, the test curves say why not
    no_csv = inputs._replace(model=inputs.model._replace(test_predictions=None))
    section = model_eval.build_section(no_csv)
    assert "confusion-test" not in [b.key for b in section.figures]
    assert [b.key for b in section.missing] == ["model-curves-test"]


def test_gallery_shows_test_errors_when_there_is_a_test_split(held_out):
    inputs = _held_inputs(held_out)
    source = gallery._get_gallery_source(inputs)
    assert source.split == "test" and source.ids == inputs.test_images.ids
    info = gallery._get_gallery_info(source.predictions, inputs.model.card["threshold"], source.ids)
    shown = info.false_negatives + info.false_positives
    assert shown and all(it.id.startswith("test/") and it.row is not None for it in shown)
    df, threshold = source.predictions, inputs.model.card["threshold"]
    assert info.n_false_positives == int(np.sum((df["label"] == 0) & (df["probability"] >= threshold)))
    assert gallery.build_section(inputs).intro.startswith("Test X-rays")
    plain = _without_test(inputs)
    assert gallery._get_gallery_source(plain).split == "validation"
    assert gallery.build_section(plain).intro.startswith("Validation X-rays")
    unloaded = _held_inputs(held_out, test_images=None, load_data=False)
    assert [b.key for b in gallery.build_section(unloaded).missing] == ["gallery-images"]


def test_test_images_load_from_a_folders_test_split(tmp_path, monkeypatch):
    monkeypatch.setenv("PNEUMO_SEARCH_CACHE", str(tmp_path / "cache"))
    root = write_xray_folder(tmp_path / "xr", {"train": 8, "test": 12})
    study = optuna.create_study(study_name="folder")
    study.set_user_attr("data_source", str(root))
    model = ModelFolder(tmp_path, {"input_size": 32, "metrics": {}}, None, None, [])
    images, why = load_test_images(study, model)
    assert why is None and images.x.shape == (12, 32, 32) and len(images.ids) == 12
    assert all(i.startswith("test/") for i in images.ids) and 6 <= len(set(images.patients)) < 12   # from file names
    study.set_user_attr("data_source", str(tmp_path / "moved"))
    images, why = load_test_images(study, model)
    assert images is None and why.startswith("The test images at")


def _evaluate_payload(folder, split, **block_extra):
    """What `python -m search evaluate` writes to evaluation-<name>.json, for a model folder."""
    from pneumo_models import load_model

    model = load_model(folder)
    block, _ = report_demo.score_split(model.keras_model, split, threshold=model.threshold,
                                 min_recall=float(model.card["min_recall"]), source="/data/hospital_xrays")
    block.update(block_extra)
    p = model.predict_proba(split.x)
    return {"model": {"folder": str(folder), "card_sha256": model.card["card_sha256"], "threshold": model.threshold,
                      "input_size": model.input_size, "created_at": model.card["created_at"]},
            "evaluation": block,
            "predictions": [{"id": i, "label": int(y), "probability": float(q), "patient": pat}
                            for i, y, q, pat in zip(split.ids, split.y, p, split.patients)]}


def test_evaluation_page(held_out, tmp_path):
    _, _, folders = held_out
    folder, test = folders["shifted"]
    skipped = [{"path": "/data/hospital_xrays/test/NORMAL/broken.png", "reason": "not a readable image"}]
    payload = _evaluate_payload(folder, test, skipped=skipped)
    block = payload["evaluation"]
    info = evaluation_page._get_evaluation_page_info(payload, folder)
    assert [s.id for s in info.sections] == ["summary", "figures", "patients"] and info.missing == []
    top = info.sections[0].blocks
    assert top[0].key == "shift-warning" and "worse on new images" in top[0].html
    summary_html = next(b.html for b in top if b.key == "evaluation-summary")
    assert "broken.png" in summary_html and "not a readable image" in summary_html
    figures = info.sections[1]
    assert [b.key for b in figures.figures] == ["roc", "pr", "confusion", "confusion-evaluation", "threshold",
                                                "scores", "calibration"]
    assert [b.key for b in info.sections[2].figures] == ["patients-roc", "patients-pr", "patients-confusion",
                                                         "patients-threshold", "patients-calibration"]
    model = _held_inputs(held_out).model
    validation = scored_sets.validation_set(model)
    evaluated = scored_sets.evaluation_set(payload)
    headline = model_headline._get_headline_info(model.card, validation.y, validation.p,
                                             others=[evaluated, scored_sets.patient_set(evaluated)])
    assert evaluated.label == "hospital_xrays (test)"
    assert {r.name: r.value for r in headline.columns[0].rows} == {
        k: v["value"] for k, v in block["at_threshold"].items()}
    assert {r.name: r.value for r in headline.columns[1].rows} == {
        k: v["value"] for k, v in block["per_patient"]["at_threshold"].items()}
    assert all(c.disagreements == [] for c in headline.columns)
    # another model's card in the folder: said, and the page still drawn
    other = evaluation_page._get_evaluation_page_info({**payload, "model": {**payload["model"], "card_sha256": "0"}},
                                                      folder)
    assert any("is not the one evaluated" in b.message for b in other.sections[0].blocks if isinstance(b, NoticeBlock))
    # no model folder at all: the evaluation's own figures, validation said to be missing
    alone = evaluation_page._get_evaluation_page_info(payload, tmp_path / "gone")
    assert [k for _, k, _ in alone.missing] == ["model-problem-0"]
    assert "confusion-evaluation" not in [b.key for b in alone.sections[1].figures]
    assert [b.key for b in alone.sections[1].figures][:3] == ["roc", "pr", "confusion"]
    path = write_evaluation_page(tmp_path / "page" / "evaluation-x.html", payload, model_dir=folder)
    text = path.read_text()
    assert list(path.parent.iterdir()) == [path]                      # written atomically, no temp file left
    assert text.count('class="plotly-graph-div"') == 12 and "<script src" not in text.replace(" ", "")


def test_layout_check_info_reads_the_study_record_and_warns_from_its_threshold():
    from reports.data_view import _describe_layout_check, _get_layout_check_info

    assert _get_layout_check_info(None) is None and _get_layout_check_info({"counts": {}}) is None
    record = {"layout_check": {"blocks": 4, "val_auc": 0.94, "healthy_median": 0.4, "pneumonia_median": 0.9}}
    info = _get_layout_check_info(record)
    assert info.warns and info.val_auc == 0.94
    assert "AUC 0.940" in _describe_layout_check(info) and "framing instead of lungs" in _describe_layout_check(info)
    calm = _get_layout_check_info({"layout_check": {**record["layout_check"], "val_auc": 0.6}})
    assert not calm.warns and "framing instead of lungs" not in _describe_layout_check(calm)
    lungs = _get_layout_check_info({"layout_check": {**record["layout_check"], "framing": "lungs"}})
    assert info.framing == "full" and lungs.framing == "lungs" and not lungs.warns   # full: recorded before framing
    assert "cropped to their lungs" in _describe_layout_check(lungs)
