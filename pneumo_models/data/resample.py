"""Square resampling of grayscale films: the one resize that decoding and framing share."""
from __future__ import annotations

import numpy as np
from PIL import Image


def square_resize(gray: np.ndarray, size: int) -> np.ndarray:
    """An (H, W) uint8 film resized bilinearly to (size, size) uint8."""
    out = Image.fromarray(np.ascontiguousarray(gray)).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(out, dtype=np.uint8)
