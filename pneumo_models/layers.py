"""Layers Keras lacks, in backend-agnostic ``keras.ops`` (registered, so saved models load anywhere)."""
from __future__ import annotations

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="pneumo_search")
class PerImageEqualization(keras.layers.Layer):
    """Histogram equalisation of each image on its own: every pixel becomes the share of the image's
    pixels darker than it (the image's own intensity CDF), so a film's exposure, contrast and tone
    curve, which differ between machines and years, are taken out; only the order of intensities is
    left. The CDF is read at ``knots`` evenly spaced quantiles and interpolated linearly between them.

    Applied in training and inference alike. (Keras' own ``keras.layers.Equalization`` equalises a
    whole batch with one histogram, so a prediction would depend on the other images in its batch,
    and it is skipped outside training.) Input: (batch, height, width, 1) in [0, 1]; output likewise.
    """

    def __init__(self, knots: int = 33, **kwargs):
        super().__init__(**kwargs)
        if int(knots) < 3:
            raise ValueError(f"knots must be at least 3, got {knots}")
        self.knots = int(knots)

    def call(self, inputs):
        shape = ops.shape(inputs)
        flat = ops.reshape(inputs, (shape[0], -1))
        n = math.prod(int(d) for d in inputs.shape[1:])
        positions = [round(k * (n - 1) / (self.knots - 1)) for k in range(self.knots)]
        quantiles = ops.take(ops.sort(flat, axis=-1), positions, axis=1)                # (batch, knots)
        inner = quantiles[:, 1:-1]
        segment = ops.sum(ops.cast(ops.expand_dims(flat, -1) >= ops.expand_dims(inner, 1), "int32"), axis=-1)
        low = ops.take_along_axis(quantiles, segment, axis=1)
        high = ops.take_along_axis(quantiles, segment + 1, axis=1)
        within = ops.clip((flat - low) / ops.maximum(high - low, 1e-6), 0.0, 1.0)
        out = (ops.cast(segment, flat.dtype) + within) / float(self.knots - 1)
        return ops.reshape(out, shape)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "knots": self.knots}
