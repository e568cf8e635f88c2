"""The Python API: ``run_search(RunSettings(...))`` in-process, as a notebook calls it.

Tiny budgets on generated data: what is checked is the outcome's contract (study, model,
report, counts, why it stopped) and resuming, not the search quality.
"""
from __future__ import annotations

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from helpers import TINY_PARAMS

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def _settings(base, **kw):
    from search import RunSettings

    defaults = dict(data="synthetic", max_epochs=2, study="nb", out=base / "nb", cache_dir=str(base / "cache"),
                    progress=False, ensemble=1, overrides=dict(TINY_PARAMS))
    return RunSettings(**{**defaults, **kw})


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    from search import run_search

    base = tmp_path_factory.mktemp("api")
    settings = _settings(base, trials=2)
    return base, settings, run_search(settings)


def test_run_search_returns_study_model_report_and_counts(first_run, capsys):
    from pneumo_models.loading import ExportedModel
    from search import RunOutcome

    base, settings, outcome = first_run
    assert isinstance(outcome, RunOutcome)
    assert isinstance(outcome.study, optuna.Study) and outcome.study.study_name == "nb"
    assert outcome.stopped_by == "trials" and outcome.failures == [] and outcome.problems == []
    assert (outcome.finished_before, outcome.finished, outcome.new) == (0, 2, 2)
    assert len(outcome.study.get_trials(states=FINISHED)) == 2
    assert outcome.model_dir == settings.model_dir
    model = outcome.model
    assert isinstance(model, ExportedModel) and model.folder == settings.model_dir
    assert model.card["best_trial"]["number"] == outcome.study.best_trial.number
    p = model.predict_proba(np.zeros((2, 40, 40), dtype=np.uint8))
    assert p.shape == (2,) and np.all((0 <= p) & (p <= 1))
    assert outcome.report_path == settings.report_path and outcome.report_path.stat().st_size > 10_000
    # the layout check (what the films' coarse layout alone says about the class) is kept for the card and report
    check = outcome.study.user_attrs["data"]["layout_check"]
    assert check["blocks"] == 4 and 0.0 <= check["val_auc"] <= 1.0
    assert model.card["data"]["layout_check"] == check
    assert "Layout check:" in outcome.report_path.read_text()


def test_run_search_resumes_and_tops_up_exactly(first_run, capsys):
    from search import run_search

    base, _, first = first_run
    before = {t.number: (t.state, t.value) for t in first.study.get_trials(states=FINISHED)}
    capsys.readouterr()
    outcome = run_search(_settings(base, trials=3, export=False, report=False))
    assert (outcome.finished_before, outcome.finished, outcome.new) == (2, 3, 1)
    assert outcome.stopped_by == "trials"
    assert outcome.model is None and outcome.model_dir is None and outcome.report_path is None
    after = {t.number: (t.state, t.value) for t in outcome.study.get_trials(states=FINISHED)}
    assert len(after) == 3 and {n: after[n] for n in before} == before
    assert "study 'nb': 3 finished trials (1 new)" in capsys.readouterr().out  # what the command prints
    again = run_search(_settings(base, trials=3, export=False, report=False))  # nothing left to do
    assert (again.new, again.finished, again.stopped_by) == (0, 3, "trials")


def test_run_search_with_a_kerastuner_engine(tmp_path):
    from search import run_search

    settings = _settings(tmp_path, engine="kerastuner-bayes", study="ktnb", out=tmp_path / "ktnb", trials=2,
                         max_epochs=1, export=False, report=False)
    outcome = run_search(settings)
    assert outcome.stopped_by == "trials" and (outcome.finished_before, outcome.finished) == (0, 2)
    assert outcome.study.user_attrs["engine"] == "kerastuner-bayes"
    trials = outcome.study.get_trials(deepcopy=False)
    assert len(trials) == 2 and all(t.user_attrs["run_id"] == settings.run_id for t in trials)


def test_an_interrupted_run_search_says_so_and_keeps_the_study(tmp_path, monkeypatch):
    import search.objective as objective_module
    from search import run_search

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(objective_module, "fit", interrupted)
    outcome = run_search(_settings(tmp_path, trials=2))
    assert outcome.stopped_by == "interrupted"
    assert outcome.finished == 0 and outcome.model is None and outcome.report_path is None
    [trial] = outcome.study.get_trials(deepcopy=False, states=(TrialState.FAIL,))  # the one in flight
    assert trial.user_attrs["fail_kind"] == "interrupted"
    assert not outcome.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    assert not (tmp_path / "nb" / "best_model").exists()


def test_bad_settings_and_data_raise_one_line_user_errors(tmp_path):
    from search import RunSettings, UserError, run_search

    with pytest.raises(UserError, match="--trials must be a positive number"):
        RunSettings(trials=0)
    with pytest.raises(UserError):
        run_search(RunSettings(data=str(tmp_path / "nowhere"), trials=1, out=tmp_path / "x", progress=False))
