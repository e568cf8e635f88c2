"""Levers for models that hold up on new patients: per-image histogram equalisation, a moving average
of the weights (EMA) and decoupled weight decay, each as a model parameter any space or --set uses."""
from types import SimpleNamespace

import keras
import numpy as np
import pytest

from pneumo_models import metrics
from pneumo_models.layers import PerImageEqualization
from pneumo_models.model import build_model
from pneumo_models.training import fit, predict_proba


def _films(n=4, side=32, seed=0):
    """Smooth synthetic films in [0, 1] with a dark border, like a radiograph's collimation."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side] / side
    base = np.stack([0.5 + 0.3 * np.sin(6 * xx + k) * np.cos(4 * yy - k) for k in range(n)])
    x = np.clip(base + 0.05 * rng.standard_normal(base.shape), 0, 1)
    x[:, :3] = 0.0
    return x[..., None].astype("float32")


def _exact_cdf(image):
    flat = image.ravel()
    return (np.searchsorted(np.sort(flat), flat, side="right") / flat.size).reshape(image.shape)


def test_equalization_is_each_images_own_intensity_cdf():
    x = _films()
    out = keras.ops.convert_to_numpy(PerImageEqualization()(x))
    for image, eq in zip(x, out):
        np.testing.assert_allclose(eq, _exact_cdf(image), atol=0.035)
    assert out.min() >= 0.0 and out.max() <= 1.0
    # each image on its own: the same image alone or beside others comes out the same
    alone = keras.ops.convert_to_numpy(PerImageEqualization()(x[:1]))
    np.testing.assert_allclose(alone, out[:1], atol=1e-6)


def test_equalization_takes_out_exposure_contrast_and_tone_curve():
    x = _films()
    eq = PerImageEqualization()
    reference = keras.ops.convert_to_numpy(eq(x))
    for changed in (x ** 0.5, 0.2 + 0.6 * x, x ** 2.2):  # brighter, flatter, darker: the order of pixels is kept
        got = keras.ops.convert_to_numpy(eq(changed.astype("float32")))
        assert np.abs(got - reference).mean() < 0.01
    # without it the network sees a very different film
    assert np.abs(x ** 0.5 - x).mean() > 0.1


def test_equalized_model_trains_and_round_trips_in_safe_mode(tmp_path):
    params = dict(input_size=32, conv_blocks=2, base_filters=8, intensity="equalize", dense_units=16)
    model = build_model(params, seed=0)
    assert any(isinstance(layer, PerImageEqualization) for layer in model.layers)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (16, 32, 32, 1)).astype("float32")
    y = rng.integers(0, 2, 16).astype("float32")
    assert np.isfinite(model.fit(x, y, epochs=1, batch_size=8, verbose=0).history["loss"]).all()
    first = model.predict(x, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), first, atol=1e-6)
    # applied at inference as in training: a brighter copy of the films scores (nearly) the same
    brighter = np.clip(255 * (x / 255) ** 0.7, 0, 255)
    assert np.abs(loaded.predict(brighter, verbose=0) - first).max() < 0.05


def _separable(n, side=24, seed=0):
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 3 != 0).astype(np.uint8)
    x = rng.integers(0, 120, (n, side, side)).astype(np.uint8)
    x[y == 1, side // 4: 3 * side // 4, side // 4: 3 * side // 4] += 100  # an opacity in the middle
    return x, y


def _data():
    x_train, y_train = _separable(96, seed=0)
    x_val, y_val = _separable(48, seed=1)
    return SimpleNamespace(x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val)


PARAMS = dict(input_size=24, conv_blocks=2, base_filters=8, dense_units=16, batch_size=16, learning_rate=3e-3)


def test_ema_weights_are_the_ones_validated_and_kept():
    data = _data()
    model, result = fit({**PARAMS, "ema": 0.9}, data, max_epochs=4, patience=0, seed=0)
    assert model.optimizer.use_ema
    p = predict_proba(model, data.x_val)
    # the restored model is exactly the one the best epoch's validation figures came from
    assert metrics.auc(data.y_val, p) == pytest.approx(result.best.auc, abs=1e-6)
    assert metrics.recall_constrained_accuracy(data.y_val, p).accuracy == pytest.approx(result.best.rc.accuracy)
    assert result.best.auc > 0.9  # and it learned the opacity
    plain, _ = fit(PARAMS, data, max_epochs=4, patience=0, seed=0)
    assert not np.allclose(predict_proba(plain, data.x_val), p)  # averaged weights are other weights


def test_weight_decay_shrinks_the_weights():
    data = _data()
    norms = {}
    for wd in (0.0, 0.5):
        model, result = fit({**PARAMS, "weight_decay": wd}, data, max_epochs=3, patience=0, seed=0,
                            restore_best=False)
        assert model.optimizer.weight_decay == (wd or None)
        norms[wd] = sum(float(np.sum(w ** 2)) for w in model.trainable_weights)
    assert norms[0.5] < norms[0.0]


def test_cosine_schedule_warms_up_then_decays_to_zero_over_the_training_steps():
    from pneumo_models.model import learning_rate

    assert learning_rate({"learning_rate": 3e-4}) == 3e-4  # constant: the number itself
    schedule = learning_rate({"learning_rate": 3e-4, "lr_schedule": "cosine"}, total_steps=100)
    at = lambda step: float(keras.ops.convert_to_numpy(schedule(step)))  # noqa: E731
    assert at(0) == pytest.approx(3e-4 / 25)     # warm-up from a 25th (OneCycleLR's start) ...
    assert at(10) == pytest.approx(3e-4)         # ... to the peak at a tenth of the steps ...
    assert at(55) == pytest.approx(1.5e-4, rel=1e-3)  # ... half-way down the cosine ...
    assert at(100) == pytest.approx(0.0, abs=1e-12)   # ... zero at the last step
    with pytest.raises(ValueError, match="number of training steps"):
        learning_rate({"learning_rate": 3e-4, "lr_schedule": "cosine"})


def test_cosine_schedule_spans_the_whole_training_and_ends_at_zero():
    data = _data()
    model, result = fit({**PARAMS, "lr_schedule": "cosine", "learning_rate": 3e-3}, data, max_epochs=3, patience=0,
                        seed=0, restore_best=False)
    steps = 3 * int(np.ceil(len(data.x_train) / PARAMS["batch_size"]))
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == steps
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(0.0, abs=1e-9)
    assert result.best.auc > 0.9  # it learned the opacity on the way


def test_probe_head_is_the_logistic_regression_on_the_starting_features():
    from sklearn.metrics import log_loss

    from pneumo_models.probe import PROBE_CS, features, start_from_probe
    from pneumo_models.training import class_weights, model_input

    data = _data()
    params = {**PARAMS, "dense_units": 0, "dropout": 0.2}
    model = build_model(params, seed=0)
    before = log_loss(data.y_val, predict_proba(model, data.x_val), labels=[0, 1])
    weights = class_weights(data.y_train, "balanced")
    probe = start_from_probe(model, model_input(data.x_train), data.y_train, model_input(data.x_val), data.y_val,
                             class_weight=weights)
    # the network now predicts what the kept regression predicts: its validation log-loss, to float32 precision
    p = predict_proba(model, data.x_val)
    assert log_loss(data.y_val, p, labels=[0, 1]) == pytest.approx(probe.val_log_loss, abs=1e-4)
    assert probe.val_log_loss == min(probe.val_log_losses) and probe.c in PROBE_CS
    assert len(probe.val_log_losses) == len(PROBE_CS)
    assert probe.val_log_loss < before  # far better than the random head it replaced ...
    assert metrics.auc(data.y_val, p) == pytest.approx(probe.val_auc, abs=1e-4)  # ... ranking as the regression does
    (f_val,) = features(model, model_input(data.x_val), batch_size=64)
    assert f_val.shape == (len(data.x_val), model.get_layer("pneumonia").input.shape[-1])


def test_refit_output_layer_keeps_the_regression_only_where_it_lowers_validation_log_loss():
    from sklearn.metrics import log_loss

    from pneumo_models.probe import PROBE_CS, refit_output_layer
    from pneumo_models.training import model_input

    data = _data()
    x_train, x_val = model_input(data.x_train), model_input(data.x_val)
    model = build_model({**PARAMS, "dense_units": 0, "batch_norm": True}, seed=0)  # its output layer is random
    loss = lambda: log_loss(data.y_val, np.clip(predict_proba(model, data.x_val), 1e-7, 1 - 1e-7), labels=[0, 1])
    before = loss()
    bn = [w.copy() for w in model.get_layer("b1_bn").get_weights()]
    refit = refit_output_layer(model, x_train, data.y_train, x_val, data.y_val)
    assert refit.val_log_loss_trained == pytest.approx(before, abs=1e-4)  # the layer training left, scored first
    assert refit.kept and refit.c in PROBE_CS and refit.val_log_loss_refit < refit.val_log_loss_trained
    assert loss() == pytest.approx(refit.val_log_loss_refit, abs=1e-4)  # the network predicts as the regression
    for a, b in zip(bn, model.get_layer("b1_bn").get_weights()):  # nothing but the output layer moved
        np.testing.assert_array_equal(a, b)
    # a regression fitted to shuffled labels cannot beat that layer: the layer stays, to the bit
    kernel = [w.copy() for w in model.get_layer("pneumonia").get_weights()]
    shuffled = np.random.default_rng(0).permutation(np.asarray(data.y_train))
    again = refit_output_layer(model, x_train, shuffled, x_val, data.y_val)
    assert not again.kept and again.val_log_loss_refit > again.val_log_loss_trained
    for a, b in zip(kernel, model.get_layer("pneumonia").get_weights()):
        np.testing.assert_array_equal(a, b)
    assert set(again.as_dict()) == {"kept", "c", "val_log_loss_trained", "val_log_loss_refit", "seconds"}


def test_batch_norm_adapts_to_the_films_batch_statistics_before_the_probe():
    from pneumo_models.probe import adapt_batch_norm

    inputs = keras.Input((3,))
    inner = keras.Model(inputs, keras.layers.BatchNormalization(name="bn")(inputs))  # nested, as a backbone is
    outer_in = keras.Input((3,))
    model = keras.Model(outer_in, inner(outer_in))
    x = np.random.default_rng(0).normal([5.0, -2.0, 0.0], [3.0, 0.5, 1.0], size=(120, 3)).astype("float32")
    assert adapt_batch_norm(model, x, batch_size=40) == 1
    bn = inner.get_layer("bn")
    batches = x.reshape(3, 40, 3)
    # the mean of the three batches' own statistics (what training normalises with), not a 0.99-momentum blend
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn.moving_mean), batches.mean(axis=1).mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn.moving_variance), batches.var(axis=1).mean(axis=0),
                               rtol=1e-4)
    assert bn.momentum == 0.99  # left as it was for training
    plain = keras.Model(outer_in, keras.layers.Dense(1)(outer_in))
    assert adapt_batch_norm(plain, x, batch_size=40) == 0


def test_probe_start_trains_on_and_is_reported():
    data = _data()
    params = {**PARAMS, "dense_units": 0, "head_init": "probe", "ema": 0.9}
    model, result = fit(params, data, max_epochs=3, patience=0, seed=0)
    assert result.probe is not None and 0 < result.probe.val_log_loss < 0.69  # a head that already separates
    assert result.best.auc > 0.9 and len(result.history) == 3
    plain, plain_result = fit({**params, "head_init": "random"}, data, max_epochs=3, patience=0, seed=0)
    assert plain_result.probe is None
    assert not np.allclose(predict_proba(plain, data.x_val), predict_proba(model, data.x_val))
    with pytest.raises(ValueError, match="unknown head_init"):
        fit({**params, "head_init": "zeros"}, data, max_epochs=1)


@pytest.mark.parametrize("name, value", [("ema", 1.0), ("ema", -0.1), ("weight_decay", -1e-4),
                                         ("intensity", "clahe"), ("lr_schedule", "step"),
                                         ("head_init", "zeros")])
def test_new_parameters_refuse_values_outside_their_domain(name, value):
    from pneumo_models.params import value_problem

    assert value_problem(name, value) is not None
    assert value_problem("intensity", "equalize") is None and value_problem("ema", 0.99) is None


def test_mixup_batches_blend_images_and_labels_alike():
    from pneumo_models.batches import TrainingBatches

    x = np.stack([np.full((4, 4), v, np.uint8) for v in (0, 100, 200, 250)])
    y = np.array([0, 1, 1, 0], np.uint8)
    batches = TrainingBatches(x, y, batch_size=4, mixup=0.4, sample_weight=np.where(y == 0, 2.0, 1.0), seed=0)
    assert len(batches) == 1
    xb, yb, wb = batches[0]
    assert xb.dtype == np.float32 and xb.shape == (4, 4, 4)
    for image, label, weight in zip(xb, yb, wb):
        value = float(image[0, 0])
        assert np.allclose(image, value)                      # one blend per image
        # the label and the weight are the same blend of the same two images as the pixels
        pairs = [(a, b) for a in range(4) for b in range(4)
                 if np.isclose(value, x[a, 0, 0] * (lam := _lam(value, x[a, 0, 0], x[b, 0, 0])) + x[b, 0, 0] * (1 - lam))
                 and 0.5 <= lam <= 1 and np.isclose(label, lam * y[a] + (1 - lam) * y[b])
                 and np.isclose(weight, lam * (2.0 if y[a] == 0 else 1.0) + (1 - lam) * (2.0 if y[b] == 0 else 1.0))]
        assert pairs
    assert not np.allclose(xb, xb[0])


def _lam(value, a, b):
    a, b = float(a), float(b)
    return 1.0 if a == b else (value - b) / (a - b)


def test_mixup_training_learns_and_is_seeded():
    data = _data()
    model, result = fit({**PARAMS, "mixup": 0.4}, data, max_epochs=4, patience=0, seed=0)
    assert result.best.auc > 0.9
    again, _ = fit({**PARAMS, "mixup": 0.4}, data, max_epochs=4, patience=0, seed=0)
    np.testing.assert_allclose(predict_proba(again, data.x_val), predict_proba(model, data.x_val), atol=1e-5)


def test_reframing_crops_healthy_films_tight_and_leaves_pneumonia_whole():
    from pneumo_models.batches import TrainingBatches

    n = 200
    y = np.array([0, 1] * (n // 2), np.uint8)
    x = _framed(n, np.zeros(n, bool), 0)  # every film framed wide: a bright chest inside dark margins of 9 px
    batches = TrainingBatches(x, y, batch_size=n, reframe=0.4, seed=0)
    xb, yb = batches[0]
    assert xb.dtype == np.uint8 and xb.shape == x.shape
    order = np.sort(batches.order)  # one batch: every image, in index order
    np.testing.assert_array_equal(yb, y[order])
    chest = (xb > 100).mean(axis=(1, 2))  # share of the frame the bright chest fills
    wide = (x[0] > 100).mean()
    assert np.allclose(chest[yb == 1], wide, atol=0.02)        # pneumonia films keep their frame
    softened = np.abs(xb[yb == 1].astype(int) - x[order][yb == 1]).max(axis=(1, 2)) > 0
    assert 0.3 < softened.mean() < 0.7                         # about half of them resampled
    healthy = chest[yb == 0]
    assert np.all(healthy >= wide - 1e-9)                      # healthy ones never framed wider
    assert 0.3 < np.mean(healthy > wide + 0.02) < 0.7          # about half of them framed tighter
    assert healthy.max() > wide + 0.2
    again = TrainingBatches(x, y, batch_size=n, reframe=0.4, seed=0)[0][0]
    np.testing.assert_array_equal(again, xb)                   # seeded
    from pneumo_models.reframe import reframe_healthy

    every = reframe_healthy(x, y, max_crop=0.4, rng=np.random.default_rng(1), share=1.0)
    assert np.all((every != x).any(axis=(1, 2)))                # share=1: every film re-framed or resampled
    assert np.all((every[y == 0] > 100).mean(axis=(1, 2)) >= wide - 1e-9)


def test_reframing_with_mixup_and_class_weights_trains():
    data = _data()
    params = {**PARAMS, "reframe": 0.3}
    model, result = fit(params, data, max_epochs=4, patience=0, seed=0)
    assert result.best.auc > 0.9
    model, result = fit({**params, "mixup": 0.4, "class_weight": "balanced"}, data, max_epochs=3, patience=0, seed=0)
    assert result.best.auc > 0.9


def _framed(n, tight, seed):
    """Films framed tight (the chest fills the frame) or wide (dark margins around a smaller chest)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 40, (n, 32, 32)).astype(np.uint8)
    for i in range(n):
        m = 2 if tight[i] else 9
        x[i, m:32 - m, m:32 - m] += 150
    return x


def test_layout_weights_count_films_framed_like_the_other_class_more():
    from pneumo_models.layout import layout_weights

    y = np.array([0] * 60 + [1] * 60)
    tight = np.array([False] * 50 + [True] * 10 + [True] * 50 + [False] * 10)  # framing mostly follows the class
    w = layout_weights(_framed(120, tight, 0), y)
    for c in (0, 1):
        assert w[y == c].mean() == pytest.approx(1.0, abs=1e-5)
    atypical = (y == 0) & tight | (y == 1) & ~tight
    assert w[atypical].min() > w[~atypical].max()  # every atypically framed film counts more than every typical one


def test_debiased_training_runs_with_class_weights_and_mixup():
    from pneumo_models.training import training_weights

    data = _data()
    w = training_weights(data.x_train, data.y_train, {0: 2.0, 1: 1.0}, "layout")
    assert w.shape == (96,) and np.isfinite(w).all() and (w > 0).all()
    assert training_weights(data.x_train, data.y_train, None, "none") is None
    for extra in ({}, {"mixup": 0.4, "class_weight": "balanced"}):
        model, result = fit({**PARAMS, "debias": "layout", **extra}, data, max_epochs=3, patience=0, seed=0)
        assert result.best.auc > 0.9


def test_framing_crop_zooms_in_during_training_only():
    from pneumo_models.model import build_network

    net = build_network(dict(input_size=32, conv_blocks=1, base_filters=4, aug_crop=0.4), seed=0)
    zoom = [layer for layer in net.layers if isinstance(layer, keras.layers.RandomZoom)]
    assert len(zoom) == 1
    x = np.zeros((8, 32, 32, 1), "float32")
    x[:, :, 15:17] = 1.0  # a vertical bar two pixels wide
    widths = [int((o[16, :, 0] > 0.5).sum()) for o in keras.ops.convert_to_numpy(zoom[0](x, training=True))]
    assert min(widths) >= 2 and max(widths) > 2  # magnified, never shrunk
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(zoom[0](x, training=False)), x)


def test_layout_check_shows_a_framing_shortcut_and_stays_quiet_without_one():
    from pneumo_models.layout import describe, layout_check, layout_warning

    y = np.array([0, 1] * 60)
    framed = layout_check(_framed(120, y == 1, 0), y, _framed(120, y == 1, 1), y)  # framing follows the class
    assert framed.val_auc > 0.95 and framed.healthy_median < 0.5 < framed.pneumonia_median
    assert "AUC" in layout_warning(framed) and "4 x 4 block means" in describe(framed)
    lungs = layout_check(_framed(120, y == 1, 0), y, _framed(120, y == 1, 1), y, framing="lungs")
    assert lungs.val_auc == framed.val_auc and lungs.to_dict()["framing"] == "lungs"
    assert layout_warning(lungs) is None and "cropped to their lungs" in describe(lungs)  # density, not framing
    rng = np.random.default_rng(0)
    tight = rng.random(120) < 0.5                                                   # framing says nothing
    quiet = layout_check(_framed(120, tight, 2), y, _framed(120, rng.random(120) < 0.5, 3), y)
    assert quiet.val_auc < 0.7 and layout_warning(quiet) is None
    assert layout_check(_framed(10, y[:10] == 1, 0), np.zeros(10), _framed(10, y[:10] == 1, 1), y[:10]) is None
