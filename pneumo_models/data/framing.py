"""Framing: which part of a film the network sees, ``full`` (the film as it is), ``lungs``, or
``centre`` (MedMNIST's crop: the central square, of the shorter side).

``centre`` is how MedMNIST made its images ("We center-crop the images and resize them"), so a model
trained on a MedMNIST ``.npz`` predicts on a hospital's originals cropped the way its training images
were, not squashed (on the square arrays of the ``.npz`` itself the crop changes nothing).

``lungs`` crops every film, before the resize, to a box around its lung fields, so that how
tightly a film was framed (shoulders, neck and abdomen in view, or the chest filling it) stops
being something a network can read. On Kermany that framing tells the classes apart in training
and does not carry over to new patients (README, "Holding up on new patients").

The box is found without masks or learned weights, on a 128 px copy of the film:
1. a three-class Otsu threshold of the smoothed film splits it into air, lung and body;
2. the darkest class where it touches the border is the air outside the body, and is dropped;
3. the large dark components left whose centre lies in the middle of the film are lung candidates;
   the largest one and the largest one across the spine (the brightest central column) are kept;
   with only one found, it is mirrored about the spine;
4. their bounding box, with a 6% margin, mapped back onto the film.
When no plausible box is found (too small, too narrow, nothing dark in the middle) the whole film
is kept, so framing never drops a film. Nothing here needs a download: numpy and scipy.ndimage
(which scikit-learn brings).
"""
from __future__ import annotations

import numpy as np

from .errors import DataError
from .resample import square_resize

FRAMINGS = ("full", "lungs", "centre")
FRAMING_DEFAULT = "full"
FRAMING_AUTO = "auto"
FRAMING_CHOICES = (FRAMING_AUTO, *FRAMINGS)   # what a run may ask for; auto is settled per data source
_WORK_SIDE = 128     # the box is found on a copy this size (what it was developed and measured at)
AUTO_LUNGS_FROM = _WORK_SIDE  # "auto" frames films of at least this side: smaller ones are too coarse for the box
_MARGIN = 0.06       # of the box's height and width, on each side
#: Bumped whenever the box or the crop changes: framed films are cached under it (dataset.py), so crops
#: made by another version of this file are never reused. 2: the first version keyed (earlier caches
#: held no version, and one machine's outlived the code that made them).
FRAMING_VERSION = 2
_BINS = 64


def framing_version(framing: str) -> int | None:
    """The version a framing's crops carry (cache keys, cards): the lung box's; the other framings are fixed."""
    return FRAMING_VERSION if framing == "lungs" else None


def check_framing(framing: object) -> str:
    if framing not in FRAMINGS:
        raise DataError(f"unknown framing {framing!r}; choose one of: {', '.join(FRAMINGS)}")
    return str(framing)


def resolve_framing(framing: str, resolution: int, kind: str | None = None) -> str:
    """A run's framing: ``auto`` is ``lungs`` for films of at least 128 px a side; below, where a crop
    would leave the network fewer pixels than its input and the box is too coarse to help
    (PneumoniaMNIST's 28 px films: worse on the test stand-in, benchmarks/README.md "Sixth round"), ``centre`` for a
    MedMNIST ``.npz`` (``kind == "npz"``: its images are central squares) and ``full`` otherwise."""
    if framing == FRAMING_AUTO:
        if int(resolution) >= AUTO_LUNGS_FROM:
            return "lungs"
        return "centre" if kind == "npz" else "full"
    return check_framing(framing)


def centre_square(gray: np.ndarray) -> np.ndarray:
    """The central square of an (H, W) film, of side min(H, W) (odd margins: the extra pixel after)."""
    h, w = gray.shape
    side = min(h, w)
    r0, c0 = (h - side) // 2, (w - side) // 2
    return gray if h == w else np.ascontiguousarray(gray[r0:r0 + side, c0:c0 + side])


def frame(gray: np.ndarray, framing: str) -> np.ndarray:
    """An (H, W) uint8 film cropped as ``framing`` says (``full``: unchanged)."""
    framing = check_framing(framing)
    if framing == "full":
        return gray
    if framing == "centre":
        return centre_square(gray)
    box = lung_box(gray)
    if box is None:
        return gray
    r0, r1, c0, c1 = box
    return np.ascontiguousarray(gray[r0:r1, c0:c1])


def lung_box(gray: np.ndarray) -> tuple[int, int, int, int] | None:
    """(row0, row1, col0, col1) of the lung fields with a margin, in ``gray``'s own pixels; None
    when no plausible box is found."""
    h, w = gray.shape
    box = _box_on_square(square_resize(gray, _WORK_SIDE))
    if box is None:
        return None
    r0, r1, c0, c1 = box
    s = _WORK_SIDE
    return (int(np.floor(r0 * h / s)), int(np.ceil(r1 * h / s)), int(np.floor(c0 * w / s)), int(np.ceil(c1 * w / s)))


def _otsu3(values: np.ndarray) -> tuple[float, float]:
    """The two thresholds of a three-class Otsu split of 0-255 values (on 64 bins)."""
    hist, _ = np.histogram(values, bins=_BINS, range=(0, 256))
    p = hist / max(hist.sum(), 1)
    w, mu = np.cumsum(p), np.cumsum(p * np.arange(_BINS))
    a, b = np.triu_indices(_BINS, k=1)          # class 0: bins < a, class 1: a <= bins < b, class 2: bins >= b
    keep = a >= 1
    a, b = a[keep], b[keep]
    w0, w1, w2 = w[a - 1], w[b - 1] - w[a - 1], 1.0 - w[b - 1]
    m0, m1, m2 = mu[a - 1], mu[b - 1] - mu[a - 1], mu[-1] - mu[b - 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = m0 ** 2 / w0 + m1 ** 2 / w1 + m2 ** 2 / w2
    between[(w0 <= 0) | (w1 <= 0) | (w2 <= 1e-12)] = -1.0
    i = int(np.argmax(between))
    scale = 256 / _BINS
    return float(a[i] * scale), float(b[i] * scale)


def _box_on_square(img: np.ndarray) -> tuple[int, int, int, int] | None:
    from scipy import ndimage as ndi

    s = img.shape[0]
    f = ndi.uniform_filter(img.astype(np.float32), 3)
    t_air, t_body = _otsu3(f)
    air, _ = ndi.label(f < t_air)
    border = np.unique(np.concatenate([air[0], air[-1], air[:, 0], air[:, -1]]))
    outside = np.isin(air, border[border > 0])
    lungs = ndi.binary_opening((f < t_body) & ~ndi.binary_dilation(outside, iterations=1), iterations=2)
    labels, n = ndi.label(lungs)
    if n == 0:
        return None
    idx = np.arange(1, n + 1)
    areas = ndi.sum(lungs, labels, idx)
    centres = ndi.center_of_mass(lungs, labels, idx)
    candidates = sorted(((a, i, cx) for a, i, (cy, cx) in zip(areas, idx, centres)
                         if a >= 0.015 * s * s and 0.15 * s < cx < 0.85 * s and 0.15 * s < cy < 0.8 * s), reverse=True)
    if not candidates:
        return None
    q = s // 8
    spine = s // 3 + int(np.argmax(f[q:-q, s // 3: 2 * s // 3].mean(0)))
    area0, first, cx0 = candidates[0]
    across = [c for c in candidates[1:] if (c[2] - spine) * (cx0 - spine) < 0 and c[0] >= 0.2 * area0]
    mask = np.isin(labels, [first] + ([across[0][1]] if across else []))
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    if not across:  # one lung found: the other is its mirror image about the spine
        c0, c1 = max(0, min(c0, 2 * spine - c1)), min(s, max(c1, 2 * spine - c0))
    h, w = r1 - r0, c1 - c0
    if h * w < 0.15 * s * s or h < 0.35 * s or w < 0.35 * s:
        return None
    mr, mc = int(round(_MARGIN * h)), int(round(_MARGIN * w))
    return max(0, r0 - mr), min(s, r1 + mr), max(0, c0 - mc), min(s, c1 + mc)
