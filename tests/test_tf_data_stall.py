"""TensorFlow backend: the datasets Keras builds for ``fit`` and ``predict`` run without tf.data's
autotuning (pneumo_models.backend_fixes), whose thread made every iterator's deletion wait up to 60 s,
and they give the same batches, in the same order, as Keras' own."""
from __future__ import annotations

import keras
import numpy as np
import pytest

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="a TensorFlow-backend fix")


def _batches(dataset) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(np.asarray(x), np.asarray(y)) for x, y in dataset]


def test_keras_array_datasets_have_no_autotuning_and_the_same_batches():
    import pneumo_models.model  # noqa: F401 - installs the fix, as every training and loading path does
    from keras.src.trainers.data_adapters.array_data_adapter import ArrayDataAdapter

    x = np.arange(40 * 3 * 3, dtype="uint8").reshape(40, 3, 3, 1)
    y = (np.arange(40) % 2).astype("float32")
    fixed, original = ArrayDataAdapter.get_tf_dataset, ArrayDataAdapter.get_tf_dataset.__wrapped__
    runs = {}
    for name, get in (("fixed", fixed), ("keras", original)):
        keras.utils.set_random_seed(3)
        dataset = get(ArrayDataAdapter(x, y, batch_size=8, shuffle=True))
        runs[name] = (dataset.options().autotune.enabled, _batches(dataset))
    assert runs["fixed"][0] is False and runs["keras"][0] is not False  # unset: on
    fixed_batches, keras_batches = runs["fixed"][1], runs["keras"][1]
    assert len(fixed_batches) == len(keras_batches) == 5
    for (xf, yf), (xk, yk) in zip(fixed_batches, keras_batches):
        np.testing.assert_array_equal(xf, xk)
        np.testing.assert_array_equal(yf, yk)
    assert sorted(np.concatenate([b[0][:, 0, 0, 0] for b in fixed_batches]).tolist()) == sorted(x[:, 0, 0, 0].tolist())


def test_training_and_prediction_go_through_the_fixed_adapters():
    """A real fit and predict on tiny data: the datasets Keras made for them had no autotuning."""
    from keras.src.trainers.data_adapters import array_data_adapter

    from pneumo_models.training import predict_proba

    seen = []
    fixed = array_data_adapter.ArrayDataAdapter.get_tf_dataset

    def spy(self):
        dataset = fixed(self)
        seen.append(dataset.options().autotune.enabled)
        return dataset

    array_data_adapter.ArrayDataAdapter.get_tf_dataset = spy
    try:
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
        model.compile(optimizer="adam", loss="binary_crossentropy")
        x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
        y = (x[:, 0] > 0).astype("float32")
        history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
        p = predict_proba(model, x, batch_size=8)
    finally:
        array_data_adapter.ArrayDataAdapter.get_tf_dataset = fixed
    assert len(history.history["loss"]) == 2 and p.shape == (32,) and np.all((p >= 0) & (p <= 1))
    assert seen and seen == [False] * len(seen)  # fit's and predict's datasets, each without autotuning


def test_every_listed_adapter_is_fixed_and_a_py_dataset_runs_without_autotuning():
    import pneumo_models.model  # noqa: F401
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    from pneumo_models.backend_fixes import TF_DATA_ADAPTERS, tf_data_adapter_classes

    classes = tf_data_adapter_classes()
    assert [c.__name__ for c in classes] == [name for _, name in TF_DATA_ADAPTERS]
    assert all(hasattr(c.get_tf_dataset, "__wrapped__") for c in classes)

    class Films(keras.utils.PyDataset):
        def __len__(self):
            return 3

        def __getitem__(self, index):
            return np.full((2, 4, 4, 1), index, "float32"), np.full((2,), index % 2, "float32")

    dataset = PyDatasetAdapter(Films(), shuffle=False).get_tf_dataset()
    assert dataset.options().autotune.enabled is False
    assert [int(x[0, 0, 0, 0]) for x, _ in dataset] == [0, 1, 2]
