"""The GPU training levers (pneumo_models.training.TrainOptions; --precision, --batch-scale,
--jit-compile, --max-trial-seconds), checked where CI can: on CPU, in seconds.

- float32 (the default) trains exactly as before: uint8 pixels fed to the model give the same
  weights and validation predictions as the float32 copy the old path made on the host;
- mixed_bfloat16 trains on CPU under TensorFlow and predicts close to float32, and the model
  ``fit`` returns computes in float32;
- --batch-scale records the searched and the effective batch size and learning rate;
- the time guard prunes a trial after its first epoch with a recorded reason;
- bad values are one line and exit 2.
"""
from __future__ import annotations

import json
from types import SimpleNamespace

import keras
import numpy as np
import pytest

from helpers import TINY, run_cli
from pneumo_models.model import build_model
from pneumo_models.training import TooSlow, TrainOptions, class_weights, fit, predict_proba

PARAMS = dict(input_size=24, conv_blocks=2, base_filters=4, block="residual", batch_norm=True, dense_units=8,
              aug_rotation=0.05, aug_zoom=0.1, aug_contrast=0.1, aug_flip=True, batch_size=16,
              class_weight="balanced", dropout=0.2)


def _data(n_train=48, n_val=24, side=24, seed=0):
    rng = np.random.default_rng(seed)
    return SimpleNamespace(x_train=rng.integers(0, 256, (n_train, side, side), dtype=np.uint8),
                           y_train=(np.arange(n_train) % 3 != 0).astype(np.uint8),
                           x_val=rng.integers(0, 256, (n_val, side, side), dtype=np.uint8),
                           y_val=(np.arange(n_val) % 2).astype(np.uint8))


def _old_path(params, data, seed):
    """What fit did before the levers: a float32 copy of the images on the host, one epoch."""
    keras.utils.set_random_seed(seed)
    model = build_model(params, seed=seed)
    x = np.asarray(data.x_train)[..., None].astype("float32")
    model.fit(x, np.asarray(data.y_train).astype("float32"), batch_size=params["batch_size"], epochs=1,
              shuffle=True, class_weight=class_weights(data.y_train, params["class_weight"]), verbose=0)
    p_val = model.predict(np.asarray(data.x_val)[..., None].astype("float32"), batch_size=256, verbose=0).reshape(-1)
    return model, p_val


def test_float32_path_is_bit_identical_to_the_host_float32_copy():
    data = _data()
    old, p_old = _old_path(PARAMS, data, seed=3)
    new, result = fit(PARAMS, data, max_epochs=1, patience=0, seed=3, restore_best=False,
                      options=TrainOptions(precision="float32", batch_scale=1, jit_compile="auto"))
    assert result.epochs == 1
    for a, b in zip(old.get_weights(), new.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(predict_proba(new, data.x_val), p_old)          # uint8 in, on the device
    np.testing.assert_array_equal(predict_proba(new, data.x_val.astype("float32")), p_old)


def test_mixed_bfloat16_trains_on_cpu_close_to_float32():
    if keras.backend.backend() != "tensorflow":
        pytest.skip(f"bfloat16 on CPU is checked under TensorFlow (backend here: {keras.backend.backend()})")
    data = _data()
    ref, _ = fit(PARAMS, data, max_epochs=1, patience=0, seed=5, restore_best=False)
    try:
        model, result = fit(PARAMS, data, max_epochs=1, patience=0, seed=5, restore_best=False,
                            options=TrainOptions(precision="mixed_bfloat16"))
    except Exception as exc:  # noqa: BLE001 - a CPU build without bfloat16 kernels
        pytest.skip(f"this TensorFlow refuses mixed_bfloat16 on CPU: {type(exc).__name__}: {str(exc)[:200]}")
    assert result.best is not None and np.isfinite(result.best.loss)
    assert model.dtype_policy.name == "float32"  # what fit returns (export, scoring) computes in float32
    assert all(layer.dtype_policy.name == "float32" for layer in model.layers)
    p, p_ref = predict_proba(model, data.x_val), predict_proba(ref, data.x_val)
    assert p.dtype == np.float32 and np.all(np.isfinite(p))
    np.testing.assert_allclose(p, p_ref, atol=0.05)  # one epoch from the same start, 8-bit mantissas
    assert not np.array_equal(p, p_ref)  # it did train in bfloat16
    assert keras.config.dtype_policy().name == "float32"  # the process's policy is put back


def test_mixed_float16_wraps_the_optimizer_in_loss_scaling():
    from pneumo_models.training import dtype_policy

    with dtype_policy("mixed_float16"):
        model = build_model(PARAMS, seed=0)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert model.layers[-1].dtype_policy.name == "float32"  # the sigmoid output
    assert keras.config.dtype_policy().name == "float32"


def test_batch_scale_multiplies_batch_and_learning_rate():
    opts = TrainOptions(batch_scale=4)
    eff = opts.effective({**PARAMS, "learning_rate": 1e-3})
    assert eff["batch_size"] == 64 and eff["learning_rate"] == pytest.approx(4e-3)
    attrs = opts.trial_attrs({**PARAMS, "learning_rate": 1e-3})
    assert attrs["batch_size_searched"] == 16 and attrs["batch_size_effective"] == 64
    assert attrs["learning_rate_searched"] == pytest.approx(1e-3) and attrs["learning_rate_effective"] == pytest.approx(4e-3)
    assert attrs["dtype_policy"] == "float32" and "precision" not in attrs  # a trial's precision is a metric
    assert TrainOptions().trial_attrs(PARAMS) == {}  # the defaults add nothing to a trial's record
    with pytest.raises(ValueError):
        TrainOptions(precision="float8")


def test_time_guard_stops_after_the_first_epoch():
    data = _data()
    seen = []
    with pytest.raises(TooSlow) as caught:
        fit(PARAMS, data, max_epochs=50, patience=0, seed=0, on_epoch=seen.append, max_seconds=1e-3)
    assert [r.epoch for r in seen] == [1]  # the first epoch is reported before the guard stops
    assert "--max-trial-seconds 0.001" in caught.value.reason and "x 50 epochs" in caught.value.reason


def test_time_guard_prunes_a_trial_with_its_reason(tmp_path):
    out = tmp_path / "run"
    run_cli("run", "--trials", "2", "--max-epochs", "4", "--data", "synthetic", "--study", "tg", "--out", str(out),
            "--no-progress", "--no-export", "--no-report", "--no-starts", "--max-trial-seconds", "0.01",
            "--set", "input_size=32", *TINY, cache_dir=tmp_path / "cache", check=True)
    import optuna

    study = optuna.load_study(study_name="tg", storage=f"sqlite:///{out / 'study.db'}")
    assert study.user_attrs["max_trial_seconds"] == 0.01 and study.user_attrs["precision"] == "float32"
    trials = study.get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["PRUNED", "PRUNED"]
    for t in trials:
        assert t.user_attrs["pruned_reason"].startswith("stopped after its first epoch: ")
        assert "--max-trial-seconds 0.01" in t.user_attrs["pruned_reason"]
        assert t.user_attrs["epochs"] == 1 and list(t.intermediate_values) == [1]
        saved = json.loads((out / "trials" / str(t.number) / "trial.json").read_text())
        assert saved["state"] == "PRUNED" and saved["pruned_reason"] == t.user_attrs["pruned_reason"]
    # resuming with another precision or batch scale is refused: a trial's score depends on them
    again = run_cli("run", "--trials", "3", "--max-epochs", "4", "--data", "synthetic", "--study", "tg",
                    "--out", str(out), "--no-progress", "--no-export", "--no-report", "--batch-scale", "2",
                    "--set", "input_size=32", *TINY, cache_dir=tmp_path / "cache")
    assert again.returncode == 2 and "batch_scale 1 (now 2)" in again.stderr


@pytest.mark.parametrize("args, says", [
    (["--precision", "float8"], "--precision must be one of float32, mixed_bfloat16, mixed_float16"),
    (["--batch-scale", "0"], "--batch-scale must be a whole number from 1 to 256"),
    (["--jit-compile", "maybe"], "--jit-compile must be one of auto, on, off"),
    (["--max-trial-seconds", "-5"], "--max-trial-seconds must be positive seconds"),
])
def test_bad_values_are_one_line_and_exit_2(tmp_path, capsys, args, says):
    from search.cli import main

    assert main(["run", "--trials", "1", "--data", "synthetic", "--out", str(tmp_path / "x"), *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: " + says), lines
    assert not (tmp_path / "x").exists()  # refused before any study starts
