"""Every space dimension is sampled by Optuna; restrictions and reference spaces behave."""
import optuna
import pytest

from spaces import CategoricalDim, FixedDim, get_space, list_spaces
from spaces.optuna_adapter import distributions, suggest


def test_every_dimension_of_the_default_space_is_sampled_within_range():
    space = get_space("default")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0), direction="maximize")
    seen: dict = {d.name: set() for d in space.searched}
    for _ in range(60):
        trial = study.ask()
        params = suggest(space, trial)
        assert set(params) == set(space.names)
        for dim in space.dimensions:
            assert dim.contains(params[dim.name]), (dim, params[dim.name])
            if not isinstance(dim, FixedDim):
                seen[dim.name].add(params[dim.name])
        study.tell(trial, 0.5)
    assert set(trial.params) == {d.name for d in space.searched}
    for dim in space.searched:
        if isinstance(dim, CategoricalDim):
            assert seen[dim.name] == set(dim.choices), dim.name
        else:
            assert len(seen[dim.name]) > 3, dim.name
    assert set(distributions(space)) == set(trial.params)


def test_the_issue_dimensions_are_all_in_the_default_space():
    names = set(get_space("default").names)
    assert {"conv_blocks", "base_filters", "filter_growth", "kernel_size", "batch_norm", "dense_units",
            "dropout", "optimizer", "learning_rate", "batch_size", "input_size", "aug_rotation", "aug_zoom",
            "aug_shift", "aug_contrast", "aug_flip", "class_weight"} <= names
    space = get_space("default")
    assert space.dimension("optimizer").choices == ("rmsprop", "adam", "amsgrad")
    assert space.dimension("conv_blocks").low == 2 and space.dimension("conv_blocks").high == 6
    assert space.dimension("learning_rate").log


def test_input_size_never_exceeds_the_source_resolution():
    space = get_space("default")
    assert space.restrict_input_size(128).input_sizes() == (64, 96, 128)
    assert space.restrict_input_size(64).input_sizes() == (64,)
    assert space.restrict_input_size(28).input_sizes() == (28,)
    assert space.restrict_input_size(1000).input_sizes() == (64, 96, 128)
    assert get_space("wide").restrict_input_size(1000).input_sizes() == (64, 96, 128, 160, 224)


def test_healthy_films_are_reframed_by_default_except_on_small_inputs():
    for name in ("default", "wide"):
        space = get_space(name)
        assert space.restrict_input_size(224).fixed_values()["reframe"] == 0.3
        assert space.restrict_input_size(64).fixed_values()["reframe"] == 0.3
        assert space.restrict_input_size(28).fixed_values()["reframe"] == 0.0  # PneumoniaMNIST
    # what the user fixes wins (RunSettings.build_space applies --set after the resolution)
    from pneumo_models.data.framing import resolve_framing
    from search.settings import RunSettings

    assert RunSettings(space="default", overrides={"reframe": 0.2}).build_space(28, "full").fixed_values()["reframe"] == 0.2
    assert RunSettings(space="default", input_sizes=(64,)).build_space(224, "full").fixed_values()["reframe"] == 0.3
    lungs = resolve_framing("auto", 224)  # auto: lungs at 224 px
    assert RunSettings(space="default", input_sizes=(64,)).build_space(224, lungs).fixed_values()["reframe"] == 0.0


def test_start_points_keep_only_values_the_space_allows():
    from spaces.optuna_adapter import suggest

    default = get_space("default")
    kermany, pmnist = default.restrict_input_size(224).start_points()
    assert kermany["input_size"] == 96 and kermany["block"] == "residual"
    # at 28 px input_size is fixed, so the start leaves it to the space; --set fixes are left out too
    small = default.restrict_input_size(28).with_overrides(conv_blocks=2)
    for point in small.start_points():
        assert "input_size" not in point and "conv_blocks" not in point
        assert all(small.dimension(k).contains(v) for k, v in point.items())
    # a start point is a complete, valid trial for Optuna
    import optuna

    study = optuna.create_study(direction="maximize")
    study.enqueue_trial(pmnist)
    trial = study.ask()
    params = suggest(default.restrict_input_size(224), trial)
    assert {k: params[k] for k in pmnist} == pmnist


def test_pretrained_starts_reach_a_study_whole():
    # a start value outside its dimension would be dropped silently and drawn by TPE instead
    space = get_space("pretrained").restrict_input_size(224)
    points = space.start_points()
    assert len(points) == 2 and all(set(p) == {d.name for d in space.searched} for p in points)
    # films not mirrored, batch 16, at two learning rates: the first recipe's and the one TPE went to
    assert [p["learning_rate"] for p in points] == [1e-4, 2.5e-4]
    assert all(p["aug_flip"] is False and p["batch_size"] == 16 for p in points)


def test_reference_spaces_are_fixed_and_build_their_published_architecture():
    from pneumo_models.model import build_network

    refs = [s for s in list_spaces() if s.name.startswith("ref-")]
    assert len(refs) >= 4
    counts = {}
    for space in refs:
        assert not space.searched, space.name
        counts[space.name] = build_network(space.fixed_values()).count_params()
    # published parameter counts (1-unit sigmoid head instead of a 2-unit softmax: one dense row fewer)
    assert counts["ref-150px-32-64-256"] == 85_103_233
    assert counts["ref-128px-16-64-128"] == 12_930_178 - 801


def test_unknown_space_message_lists_the_choices():
    from spaces import UnknownSpace

    with pytest.raises(UnknownSpace) as err:
        get_space("nope")
    assert "default" in str(err.value) and "nope" in str(err.value)
