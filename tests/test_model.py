"""The model builder: every block type trains, round-trips through safe-mode loading, and its
augmentation is inactive at inference."""
import keras
import numpy as np
import pytest

from pneumo_models.model import block_filters, build_model


@pytest.mark.parametrize("block", ["plain", "residual", "se"])
def test_block_trains_and_round_trips_in_safe_mode(block, tmp_path):
    params = dict(input_size=32, conv_blocks=2, base_filters=8, block=block, batch_norm=True,
                  aug_rotation=0.05, aug_zoom=0.1, aug_shift=0.1, aug_contrast=0.2, aug_brightness=0.1, aug_blur=1.0,
                  aug_flip=True, aug_erase=0.5, label_smoothing=0.05, dense_units=16)
    model = build_model(params, seed=0)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (16, 32, 32, 1)).astype("float32")
    y = rng.integers(0, 2, 16).astype("float32")
    history = model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    first = model.predict(x, verbose=0)
    assert first.shape == (16, 1) and ((first >= 0) & (first <= 1)).all()
    # augmentation layers are inactive at inference: predictions are deterministic
    np.testing.assert_array_equal(first, model.predict(x, verbose=0))
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), first, atol=1e-6)


def test_blur_augmentation_softens_training_images_only():
    import keras

    from pneumo_models.model import build_network

    net = build_network(dict(input_size=32, conv_blocks=1, base_filters=4, aug_blur=1.5), seed=0)
    blur = [layer for layer in net.layers if isinstance(layer, keras.layers.RandomGaussianBlur)]
    assert len(blur) == 1
    x = np.zeros((8, 32, 32, 1), "float32")
    x[:, 14:18, 14:18] = 1.0
    trained = [keras.ops.convert_to_numpy(blur[0](x, training=True)) for _ in range(4)]
    assert any(t[:, 16, 16, 0].min() < 0.99 for t in trained)                       # some images blurred
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(blur[0](x, training=False)), x)  # none at inference


def test_filters_grow_and_cap():
    assert block_filters({"conv_blocks": 4, "base_filters": 16, "filter_growth": 2.0, "max_filters": 64,
                          "filters": None}) == [16, 32, 64, 64]
    assert block_filters({"filters": [32, 64, 256]}) == [32, 64, 256]


def test_deep_network_on_tiny_input_stops_pooling():
    model = build_model(dict(input_size=28, conv_blocks=6, base_filters=8))
    assert model.output_shape == (None, 1)


def test_cost_estimate_counts_convolutions_and_dense_layers():
    from pneumo_models.model import estimate_mmacs

    # one 3x3 conv of 8 filters on 32x32 ("same"): 32*32*8*9 MACs; pool -> 16x16 ; GAP ; dense 8->16 ; 16->1
    params = dict(input_size=32, conv_blocks=1, base_filters=8, kernel_size=3, dense_units=16)
    assert estimate_mmacs(params) * 1e6 == pytest.approx(32 * 32 * 8 * 9 + 8 * 16 + 16)
    # doubling the input side quadruples the convolution cost
    big = estimate_mmacs({**params, "input_size": 64}) * 1e6 - (8 * 16 + 16)
    assert big == pytest.approx(4 * 32 * 32 * 8 * 9)
