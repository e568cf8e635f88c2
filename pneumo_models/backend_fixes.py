"""Work-arounds for backend-specific slowness in Keras that this project's models hit.

TensorFlow backend: Keras feeds NumPy arrays (and PyDatasets) to ``fit`` and ``predict`` through a
``tf.data`` pipeline, and makes a new iterator at each epoch and each ``predict``. With tf.data's
autotuning on (its default), deleting an iterator waits for the autotuning thread to end its current
sleep, and that sleep doubles from 10 ms up to 60 s over the iterator's life. On a CPU, a default
Lite0 trial's epochs took 93-95 s, or 139-145 s where the epoch's end stood still (3 of the 8 epochs
measured without other load), and ``fit`` returned 47-50 s after its last epoch, with no work done in
between (the process at 0% CPU, its main thread in the iterator's destructor, waiting for the autotuning
thread's sleep; README "Benchmarks", 5). ``install()`` turns
tf.data's autotuning off for the datasets Keras builds from arrays, generators and PyDatasets: the
pipelines only slice arrays already in memory (the parallel map then uses as many threads as there
are cores, the prefetch its own legacy tuning), and the batches, their order and their values are
those Keras made before. Datasets a caller builds itself are left as they are.

PyTorch backend: Keras' ``affine_transform`` (behind RandomRotation, RandomZoom,
RandomTranslation and RandomShear) resamples one image at a time in a Python loop of small
tensor operations. With the augmentation the default space samples, that made a PneumoniaMNIST
training step take about 0.35 s on an H100 and most of a step on CPU (measured: 1440 calls of
``map_coordinates`` for 8 steps of 64 images). ``install()`` replaces it, for the cases these
models use (bilinear or nearest interpolation, constant fill), by the same computation done for
the whole batch at once: the same coordinates, the same per-corner validity rule and fill value,
so results match Keras' own to float rounding (checked in tests/test_torch_backend.py). Other
fill modes and interpolations still go to Keras' implementation.

Nothing changes in the saved model: the layers stay Keras' own, so an exported model loads with
plain ``keras.saving.load_model(..., safe_mode=True)`` under any backend.
"""
from __future__ import annotations

_installed = False

# Keras' data adapters whose ``get_tf_dataset`` feeds ``fit`` and ``predict`` under TensorFlow:
# (module under keras.src.trainers.data_adapters, class)
TF_DATA_ADAPTERS = (("array_data_adapter", "ArrayDataAdapter"), ("generator_data_adapter", "GeneratorDataAdapter"),
                    ("py_dataset_adapter", "PyDatasetAdapter"))


def tf_data_adapter_classes() -> list | None:
    """The classes named in ``TF_DATA_ADAPTERS``; None for a Keras without them (or without TensorFlow)."""
    import importlib

    try:
        modules = [importlib.import_module(f"keras.src.trainers.data_adapters.{module}")
                   for module, _ in TF_DATA_ADAPTERS]
    except ImportError:
        return None
    classes = [getattr(module, name, None) for module, (_, name) in zip(modules, TF_DATA_ADAPTERS)]
    if any(c is None or not hasattr(c, "get_tf_dataset") for c in classes):
        return None
    return classes


def install() -> bool:
    """Patch the running backend when it needs it; True when a patch is (already) in place."""
    global _installed
    if _installed:
        return True
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        _installed = _tf_datasets_without_autotune()
        return _installed
    if backend != "torch":
        return False
    try:
        from keras.src.backend.torch import image as torch_image
    except ImportError:  # a Keras without this module layout: leave it as it is
        return False
    original = getattr(torch_image, "affine_transform", None)
    if original is None:
        return False
    torch_image.affine_transform = _batched_affine_transform(original)
    _installed = True
    return True


def _tf_datasets_without_autotune() -> bool:
    """Keras' array, generator and PyDataset adapters hand ``fit``/``predict`` datasets whose
    tf.data autotuning is off (the iterator's deletion then returns at once)."""
    try:
        import tensorflow as tf
    except ImportError:
        return False
    adapters = tf_data_adapter_classes()
    if adapters is None:  # a Keras without this module layout: leave it as it is
        return False
    options = tf.data.Options()
    options.autotune.enabled = False

    def without_autotune(original):
        def get_tf_dataset(self):
            return original(self).with_options(options)

        get_tf_dataset.__doc__, get_tf_dataset.__wrapped__ = original.__doc__, original
        return get_tf_dataset

    for adapter in adapters:
        adapter.get_tf_dataset = without_autotune(adapter.get_tf_dataset)
    return True


def _batched_affine_transform(original):
    import torch
    from keras.src import backend as keras_backend
    from keras.src.backend.torch.core import convert_to_tensor

    def affine_transform(images, transform, interpolation="bilinear", fill_mode="constant", fill_value=0,
                         data_format=None):
        if fill_mode != "constant" or interpolation not in ("bilinear", "nearest"):
            return original(images, transform, interpolation=interpolation, fill_mode=fill_mode,
                            fill_value=fill_value, data_format=data_format)
        images = convert_to_tensor(images)
        transform = convert_to_tensor(transform)
        if images.ndim not in (3, 4) or transform.ndim not in (1, 2):
            return original(images, transform, interpolation=interpolation, fill_mode=fill_mode,
                            fill_value=fill_value, data_format=data_format)  # Keras raises its own error
        data_format = keras_backend.standardize_data_format(data_format)
        squeeze = images.ndim == 3
        if squeeze:
            images = images.unsqueeze(0)
        if transform.ndim == 1:
            transform = transform.unsqueeze(0)
        if data_format == "channels_first":
            images = images.permute(0, 2, 3, 1)
        batch, height, width, channels = images.shape
        dtype = transform.dtype if torch.is_floating_point(transform) else torch.float32
        t = transform.to(dtype)
        if t.shape[0] != batch:
            t = t.expand(batch, -1)

        def coef(i):
            return t[:, i].reshape(batch, 1, 1)

        rows = torch.arange(height, dtype=dtype, device=t.device).reshape(1, height, 1)
        cols = torch.arange(width, dtype=dtype, device=t.device).reshape(1, 1, width)
        # output pixel (row, col) samples the input at (row', col'), as Keras' own implementation
        # computes it: col' = a0 col + a1 row + a2, row' = b0 col + b1 row + b2
        src_row = coef(3) * cols + coef(4) * rows + coef(5)
        src_col = coef(0) * cols + coef(1) * rows + coef(2)

        def nodes(coordinate):
            if interpolation == "nearest":
                return [(torch.round(coordinate).to(torch.int64), None)]
            lower = torch.floor(coordinate)
            upper_weight = coordinate - lower
            index = lower.to(torch.int64)
            return [(index, 1 - upper_weight), (index + 1, upper_weight)]

        flat = images.reshape(batch, height * width, channels)
        result = None
        for r, wr in nodes(src_row):
            for c, wc in nodes(src_col):
                valid = (r >= 0) & (r < height) & (c >= 0) & (c < width)
                index = (r.clamp(0, height - 1) * width + c.clamp(0, width - 1)).reshape(batch, height * width, 1)
                values = torch.gather(flat, 1, index.expand(batch, height * width, channels))
                values = values.reshape(batch, height, width, channels)
                fill = torch.as_tensor(fill_value, dtype=values.dtype, device=values.device)
                contribution = torch.where(valid.unsqueeze(-1), values, fill)
                if wr is not None:
                    contribution = (wr * wc).unsqueeze(-1) * contribution
                result = contribution if result is None else result + contribution
        if not torch.is_floating_point(images):
            result = torch.round(result)
        result = result.to(images.dtype)
        if data_format == "channels_first":
            result = result.permute(0, 3, 1, 2)
        if squeeze:
            result = result.squeeze(0)
        return result

    affine_transform.__doc__ = original.__doc__
    affine_transform.__wrapped__ = original
    return affine_transform
