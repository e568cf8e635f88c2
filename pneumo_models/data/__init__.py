"""Data layer of pneumo-search: chest X-ray sources -> cached uint8 arrays + patient-grouped split.

Sources: a ``<root>/<split>/<CLASS>/`` image folder (Kermany layout), a MedMNIST
``.npz``, ``"synthetic"`` (generated demo set) or ``None`` (PneumoniaMNIST,
downloaded into ``<cache_dir>/downloads``).  Images are decoded and resized once
per (source fingerprint, input size) into ``<cache_dir>/decoded``; later loads
memory-map the cache.  ``decode_image`` / ``resize_array`` are THE preprocessing
used for training and must be used for prediction too, with the same ``framing``
(``"full"``, or ``"lungs"``: each film cropped to its lung fields first, framing.py).

No keras / tensorflow import here.
"""
from .cache import default_cache_dir
from .constants import CLASS_NAMES
from .dataset import Dataset, LabelledImages, available_splits, listed_counts, load_dataset, load_split, probe_source
from .decode import decode_count, decode_image, resize_array
from .errors import DataError, UnreadableImage
from .framing import FRAMING_DEFAULT, FRAMINGS, lung_box
from .patients import patient_id
from .sources import SourceInfo
from .summary import DataSummary

__all__ = [
    "CLASS_NAMES",
    "DataError",
    "FRAMINGS",
    "FRAMING_DEFAULT",
    "DataSummary",
    "Dataset",
    "LabelledImages",
    "available_splits",
    "listed_counts",
    "load_split",
    "SourceInfo",
    "UnreadableImage",
    "decode_count",
    "decode_image",
    "default_cache_dir",
    "load_dataset",
    "lung_box",
    "patient_id",
    "probe_source",
    "resize_array",
]
