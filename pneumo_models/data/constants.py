"""Names shared by the data-layer modules."""
from __future__ import annotations

#: Class names; index 0 is label 0 (NORMAL), index 1 is label 1 (PNEUMONIA, the positive class).
CLASS_NAMES: tuple[str, str] = ("NORMAL", "PNEUMONIA")

#: File extensions treated as images (compared case-insensitively). Any other file is ignored unless
#: it carries the DICOM preamble (PACS exports often have no extension; see ``dicom.py``).
IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpeg", ".jpg", ".png", ".dcm"})

#: What a folder of images may hold, for messages.
IMAGE_KINDS = ".jpeg, .jpg, .png or DICOM"

#: Folder names (lower case) accepted for each split of a ``<root>/<split>/<CLASS>/`` layout.
SPLIT_ALIASES: dict[str, tuple[str, ...]] = {
    "train": ("train", "training"),
    "val": ("val", "valid", "validation"),
    "test": ("test", "testing"),
}

#: Bumped whenever decoding/resizing changes, so stale caches are never reused.
DECODE_VERSION = 1
