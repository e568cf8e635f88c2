"""Small image helpers shared by the gallery, the saliency overlays and the data view.

Pure numpy + Pillow: grayscale arrays in, inline ``data:image/png;base64,...`` URIs out.
"""
from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

# A perceptually ordered "hot" colour map (dark red -> red -> orange -> yellow -> white-ish),
# readable over a grayscale X-ray; anchors are (position, R, G, B).
_HEAT_ANCHORS = np.array(
    [
        [0.00, 0, 0, 0],
        [0.25, 128, 0, 38],
        [0.50, 227, 26, 28],
        [0.75, 253, 141, 60],
        [1.00, 255, 255, 178],
    ],
    dtype=np.float64,
)


def to_gray_uint8(image: np.ndarray) -> np.ndarray:
    """(H,W), (H,W,1) or (H,W,C) in 0-255 -> (H,W) uint8."""
    a = np.asarray(image)
    if a.ndim == 3:
        a = a[..., 0] if a.shape[-1] == 1 else a[..., :3].mean(axis=-1)
    if a.dtype != np.uint8:
        a = np.clip(np.rint(a.astype(np.float64)), 0, 255).astype(np.uint8)
    return a


def heat_colors(heat: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to (…, 3) uint8 RGB with the hot colour map."""
    h = np.clip(np.nan_to_num(np.asarray(heat, dtype=np.float64)), 0.0, 1.0)
    out = np.empty(h.shape + (3,), dtype=np.float64)
    for c in range(3):
        out[..., c] = np.interp(h, _HEAT_ANCHORS[:, 0], _HEAT_ANCHORS[:, c + 1])
    return out.astype(np.uint8)


def resize_map(values: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a float 2-D map (e.g. a coarse Grad-CAM grid) to (height, width)."""
    img = Image.fromarray(np.ascontiguousarray(values, dtype=np.float32))
    return np.asarray(img.resize((width, height), Image.BILINEAR), dtype=np.float32)


def overlay(image: np.ndarray, heat: np.ndarray, *, max_alpha: float = 0.6) -> np.ndarray:
    """Blend a [0,1] heat map over a grayscale image -> (H,W,3) uint8.

    Opacity follows the heat value, so cold regions show the untouched X-ray.
    """
    gray = to_gray_uint8(image).astype(np.float64)
    if heat.shape != gray.shape:
        heat = resize_map(heat, *gray.shape)
    h = np.clip(np.nan_to_num(heat.astype(np.float64)), 0.0, 1.0)
    # weak evidence (below ~15% of the image's maximum) stays transparent
    alpha = (max_alpha * np.clip((h - 0.15) / 0.85, 0.0, 1.0))[..., None]
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    blended = (1.0 - alpha) * rgb + alpha * heat_colors(h).astype(np.float64)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def png_data_uri(array: np.ndarray, *, size: int | None = None) -> str:
    """Encode (H,W) gray or (H,W,3) RGB uint8 as an inline PNG data URI, optionally resized so
    its longer side is ``size`` pixels."""
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.dtype != np.uint8:
        a = np.clip(np.rint(a), 0, 255).astype(np.uint8)
    img = Image.fromarray(np.ascontiguousarray(a))  # uint8: (H,W) -> L, (H,W,3) -> RGB
    if size is not None and max(img.size) != size:
        w, h = img.size
        scale = size / max(w, h)
        img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
