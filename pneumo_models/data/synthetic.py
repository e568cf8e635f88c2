"""A small generated demo set (NOT real X-rays): ``--data synthetic``.

Chest-like 64 px images: a bright thorax with two dark lung fields, a spine and faint
ribs.  PNEUMONIA images add 1-3 bright cloudy blobs inside the lung fields, so a tiny
CNN separates the classes within a couple of epochs.  About 1 normal : 3 pneumonia,
fake patients ``synthetic-NNNN`` with 1-3 images each (all of one class), fully
deterministic for a seed.
"""
from __future__ import annotations

import hashlib
import json

import numpy as np

SYNTHETIC_PARAMS = {
    "generator": "pneumo-search synthetic chest v1",
    "n_images": 600,
    "size": 64,
    "pneumonia_fraction": 0.75,
    "images_per_patient": [1, 3],
}


def synthetic_fingerprint(seed: int) -> str:
    blob = json.dumps({**SYNTHETIC_PARAMS, "seed": int(seed)}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


def _image(rng: np.random.Generator, size: int, pneumonia: bool) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / (size - 1)
    cx = 0.5 + rng.normal(0, 0.015)
    img = np.full((size, size), 0.06)
    body = ((xx - cx) / 0.44) ** 2 + ((yy - 0.58) / 0.52) ** 2 < 1
    img[body] = 0.50 + rng.normal(0, 0.03)
    lungs = np.zeros((size, size), dtype=bool)
    centres = []
    for side in (-1.0, 1.0):
        lx = cx + side * (0.19 + rng.normal(0, 0.01))
        ly = 0.50 + rng.normal(0, 0.015)
        lung = ((xx - lx) / (0.13 + rng.normal(0, 0.008))) ** 2 + ((yy - ly) / 0.30) ** 2 < 1
        lungs |= lung
        centres.append((lx, ly))
    img[lungs] = 0.18 + rng.normal(0, 0.02)
    ribs = 0.05 * (np.sin((yy * 9 + 0.3 * np.abs(xx - cx)) * 2 * np.pi) > 0.6)
    img += ribs * lungs
    img[(np.abs(xx - cx) < 0.045) & body] = 0.72  # spine / mediastinum
    heart = ((xx - cx - 0.06) / 0.12) ** 2 + ((yy - 0.66) / 0.1) ** 2 < 1
    img[heart & body] = np.maximum(img[heart & body], 0.6)
    if pneumonia:
        cloud = np.zeros((size, size))
        for _ in range(int(rng.integers(1, 4))):
            lx, ly = centres[int(rng.integers(0, 2))]
            bx = lx + rng.uniform(-0.07, 0.07)
            by = ly + rng.uniform(-0.18, 0.18)
            sigma = rng.uniform(0.05, 0.09)
            cloud += rng.uniform(0.35, 0.6) * np.exp(-((xx - bx) ** 2 + (yy - by) ** 2) / (2 * sigma**2))
        mottling = 0.75 + 0.5 * rng.random((size // 8, size // 8)).repeat(8, 0).repeat(8, 1)[:size, :size]
        img += cloud * mottling * (lungs | (cloud > 0.2))
    img += rng.normal(0, 0.025, (size, size))
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


def synthetic_layout(seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Labels (600,) uint8 and patient ids, without drawing any image (cheap)."""
    p = SYNTHETIC_PARAMS
    rng = np.random.default_rng([int(seed), 20240611])
    n = int(p["n_images"])
    lo, hi = p["images_per_patient"]
    labels: list[int] = []
    patients: list[str] = []
    pid = 0
    while len(labels) < n:
        pid += 1
        label = int(rng.random() < p["pneumonia_fraction"])
        k = min(int(rng.integers(lo, hi + 1)), n - len(labels))
        labels += [label] * k
        patients += [f"synthetic-{pid:04d}"] * k
    return np.asarray(labels, dtype=np.uint8), patients


def synthetic_images(seed: int, labels: np.ndarray) -> np.ndarray:
    """(len(labels), 64, 64) uint8; image i depends only on (seed, i, label)."""
    size = int(SYNTHETIC_PARAMS["size"])
    out = np.empty((len(labels), size, size), dtype=np.uint8)
    for i, label in enumerate(labels):
        out[i] = _image(np.random.default_rng([int(seed), i, 7]), size, bool(label))
    return out


def generate_synthetic(seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """-> images (600, 64, 64) uint8, labels (600,) uint8, patient ids."""
    labels, patients = synthetic_layout(seed)
    return synthetic_images(seed, labels), labels, patients
