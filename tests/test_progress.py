"""The study progress bar: what it counts, and the time left under --timeout instead of a trial-rate estimate."""
import io

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from search.progress import REDRAW_SECONDS, EpochBar, StudyProgress, progress_info, running_text


def _study() -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    dist = {"x": FloatDistribution(0, 1)}
    for state, value in [(TrialState.COMPLETE, 0.91), (TrialState.COMPLETE, 0.95), (TrialState.PRUNED, None),
                         (TrialState.FAIL, None)]:
        study.add_trial(create_trial(state=state, value=value, params={"x": 0.5}, distributions=dist))
    running = study.ask()  # a trial in flight that has reported two epochs, as the objective reports them
    running.report(0.8, 1)
    running.report(0.9, 2)
    return study


def test_progress_info_counts_what_trials_counts():
    study = _study()
    info = progress_info(study, target=10, deadline=None, now=0.0)
    assert (info.finished, info.pruned, info.failed, info.best, info.timeout_left) == (3, 1, 1, 0.95, None)
    assert info.running == ((4, 2),)  # trial 4 is at its second epoch
    # a trial the storage holds only once it ends (KerasTuner's) is named by its engine, after the storage's
    assert progress_info(study, target=10, deadline=None, now=0.0, here=(5, 1)).running == ((4, 2), (5, 1))
    assert progress_info(study, target=2, deadline=None, now=0.0).finished == 2  # never past the target
    assert progress_info(study, target=10, deadline=100.0, now=40.0).timeout_left == pytest.approx(60.0)
    assert progress_info(study, target=10, deadline=100.0, now=140.0).timeout_left == 0.0
    assert progress_info(optuna.create_study(), target=5, deadline=None, now=0.0).best is None


def _line(timeout) -> str:
    out = io.StringIO()
    bar = StudyProgress(_study(), 100, timeout=timeout, max_epochs=10, file=out)
    bar.close()
    return out.getvalue().strip().split("\r")[-1]


def test_a_timeout_replaces_the_trial_rate_estimate():
    # a default run (--trials 100, 2 h) stops on its timeout: an estimate for 100 trials would promise a day
    line = _line(7200)
    assert "3/100" in line and "best=0.9500" in line and "pruned=1" in line and "failed=1" in line
    assert "timeout_in=1:59:5" in line or "timeout_in=2:00:00" in line
    assert "<" not in line and "running=#4 epoch 2/10" in line
    line = _line(None)
    assert "3/100" in line and "<" in line and "timeout_in" not in line


def test_running_text_names_each_running_trial():
    assert running_text(((3, 4), (5, 0)), 10) == "#3 epoch 4/10, #5 epoch 0/10"
    assert running_text(((3, 4),), None) == "#3 epoch 4"
    assert running_text((), 10) == ""
    # how far this process's trial is into its next epoch, from 1%; other trials keep their epoch alone
    assert running_text(((3, 4), (5, 0)), 10, within=(3, 0.466)) == "#3 epoch 4/10 +46%, #5 epoch 0/10"
    assert running_text(((3, 4),), 10, within=(3, 0.004)) == "#3 epoch 4/10"
    many = tuple((n, 1) for n in range(6))
    assert running_text(many, 10) == "#0 epoch 1/10, #1 epoch 1/10, #2 epoch 1/10, #3 epoch 1/10 and 2 more"


def test_the_bar_moves_within_an_epoch_and_says_when_the_timeout_has_passed():
    import time

    out = io.StringIO()
    bar = StudyProgress(_study(), 100, timeout=0, max_epochs=10, file=out)  # trial 4 has reported 2 epochs
    time.sleep(REDRAW_SECONDS)
    bar.within_epoch(4, 120, 262)  # drawn: a second has passed since the last draw
    bar.within_epoch(4, 121, 262)  # not drawn: too soon
    bar.close()
    lines = out.getvalue().strip().split("\r")
    assert "running=#4 epoch 2/10 +45%" in lines[-1] and not any("+46%" in line for line in lines)
    assert "timeout_in=passed" in lines[-1]  # no trial starts any more; the one in flight finishes


def test_an_epoch_bar_moves_within_epochs_and_never_back():
    # the export's retraining and cross-validation: minutes an epoch on a CPU
    out = io.StringIO()
    bar = EpochBar(20, "retrain trial 3", file=out)
    bar.batch(1, 4)
    assert bar.bar.n == 0.25
    bar.batch(0, 4)  # the epoch's batches are over, validation runs: the bar stays
    bar.epoch()
    bar.batch(2, 4)
    assert (bar.done, bar.bar.n) == (1, 1.5)
    bar.say(acc="0.900")  # a cross-validation fold's figures, drawn with the next move
    bar.reach(10)  # early stopping ended the first network at epoch 2 of 10
    bar.batch(3, 4)
    assert bar.bar.n == 10.75
    bar.close()
    last = out.getvalue().split("\r")[-1]
    assert "10.8/20" in last and "acc=0.900" in last and "retrain trial 3" in out.getvalue()


def test_training_tells_how_far_each_epoch_is_without_changing_what_it_trains():
    from types import SimpleNamespace

    import numpy as np

    from pneumo_models.training import fit

    rng = np.random.default_rng(0)
    data = SimpleNamespace(x_train=rng.integers(0, 256, (40, 16, 16), dtype=np.uint8),
                           y_train=(np.arange(40) % 3 != 0).astype(np.uint8),
                           x_val=rng.integers(0, 256, (16, 16, 16), dtype=np.uint8),
                           y_val=(np.arange(16) % 2).astype(np.uint8))
    params = dict(input_size=16, conv_blocks=1, base_filters=4, dense_units=8, batch_size=16)
    seen = []
    told, _ = fit(params, data, max_epochs=2, patience=0, seed=1, restore_best=False,
                  on_batch=lambda done, steps: seen.append((done, steps)))
    assert seen == [(1, 3), (2, 3), (3, 3), (0, 3)] * 2  # 40 films in batches of 16; 0 as validation starts
    untold, _ = fit(params, data, max_epochs=2, patience=0, seed=1, restore_best=False)
    for a, b in zip(told.get_weights(), untold.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_run_shows_each_epoch_of_the_trial_in_flight_each_export_step_and_evaluate_its_steps(tmp_path):
    # the bar moves between trials too: a Lite0 trial on a CPU takes minutes before its first is finished
    import re

    from helpers import TINY, run_cli, write_xray_folder

    data = write_xray_folder(tmp_path / "xray", {"train": 64, "test": 24})
    cache = tmp_path / "cache"
    proc = run_cli("run", "--data", str(data), "--study", "bar", "--out", str(tmp_path / "run"), "--trials", "1",
                   "--max-epochs", "2", "--no-report", "--set", "input_size=16", *TINY, cache_dir=cache, check=True)
    assert all(f"running=#0 epoch {e}/2" in proc.stderr for e in (0, 1, 2))  # named as it starts, then each epoch
    assert "1/1" in proc.stderr and "timeout_in=" in proc.stderr  # the default --timeout (2 h) counts down
    # the export after it (a minute of silence on a CPU before): its steps, named, to the last
    assert "the network the trials kept" in proc.stderr and "the network on validation" in proc.stderr
    assert re.search(r"export: 4/4 steps \[[0-9:]+, the test split, once\]", proc.stderr)
    assert (tmp_path / "run" / "best_model" / "test_predictions.csv").is_file()

    proc = run_cli("evaluate", str(tmp_path / "run" / "best_model"), "--data", str(data), cache_dir=cache, check=True)
    for step in ("load the model", "the test images", "predict 24 images", "figures with bootstrap intervals"):
        assert f", {step}]" in proc.stderr
    assert re.search(r"evaluate: 5/5 steps \[[0-9:]+, the evaluation's JSON and page\]", proc.stderr)
    assert "evaluated on 24 images" in proc.stdout


def test_a_step_bar_names_each_step_and_ends_full():
    from search.progress import StepBar

    out = io.StringIO()
    with StepBar(3, "export", file=out) as bar:
        bar.start("first")
        bar.start("second")
        bar.rename("second, more said")
    lines = [line.strip() for line in out.getvalue().split("\r") if line.strip()]
    assert "export: 0/3 steps [00:00, first]" in lines and "export: 1/3 steps [00:00, second, more said]" in lines
    assert lines[-1] == "export: 3/3 steps [00:00, second, more said]"  # the steps left are done at the end


def test_a_bar_that_cannot_refresh_never_fails_a_trial(tmp_path):
    from optuna.trial import TrialState as State

    from search.data_access import StudyData
    from search.objective import Objective
    from spaces import get_space

    calls = []

    def on_report():
        calls.append(1)
        raise OSError("the storage did not answer in time")

    data = StudyData("synthetic", val_fraction=0.2, seed=0, cache_dir=tmp_path / "cache", progress=False)
    space = get_space("default").restrict_input_size(64).with_overrides(
        conv_blocks=2, base_filters=8, dense_units=32, batch_size=64, filter_growth=1.0)
    objective = Objective(space, data, max_epochs=2, min_recall=0.95, patience=2, seed=0, on_report=on_report)
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    study.optimize(objective, n_trials=1)
    assert study.trials[0].state == State.COMPLETE and len(study.trials[0].intermediate_values) == 2
    assert len(calls) == 3  # as training started, and after each of the 2 epochs
