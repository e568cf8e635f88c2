"""Data sources: enumerate images and labels, probe them cheaply, decode them once.

* ``FolderSource``: ``<root>/<split>/<CLASS>/*`` (splits train/val/test, class folders
  matched case-insensitively) or ``<root>/<CLASS>/*`` (train only);
* ``NpzSource``: a MedMNIST-style ``.npz``;
* ``SyntheticSource``: the generated demo set (``"synthetic"`` or ``"synthetic:SEED"``).

``open_source`` picks one; ``None`` means the PneumoniaMNIST download.
"""
from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .constants import CLASS_NAMES, IMAGE_EXTENSIONS, IMAGE_KINDS, SPLIT_ALIASES
from .decode import UnreadableImage, decode_image, read_image_size, resize_array
from .download import ensure_pneumoniamnist
from .errors import DataError
from .dicom import NOT_IMAGES, is_dicom_file, read_header
from .patients import patient_id
from .synthetic import SYNTHETIC_PARAMS, synthetic_fingerprint, synthetic_images, synthetic_layout

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SourceInfo:
    """Cheap facts about a source (no pixel decoding)."""

    kind: str  # "folder" | "npz" | "synthetic"
    location: str  # resolved path, or "synthetic"
    resolution: int  # side of the source images (folder: median min(w, h) from headers)
    fingerprint: str  # hex sha256 of the content


@dataclass(frozen=True)
class Entry:
    """One image of a source: id (folder: path relative to the root), label, patient, split."""

    id: str
    label: int
    patient: str
    split: str


@dataclass
class Decoded:
    """Result of decoding a source's train+val images at one size."""

    images: np.ndarray  # (n_ok, S, S) uint8
    entries: list[Entry]  # the n_ok decoded entries, same order
    skipped: list[dict]  # [{"path": id, "reason": ...}]


class Source:
    kind: str
    location: str
    root: str | None = None
    #: the split folders (or npz keys) the source has; empty for a plain ``<root>/<CLASS>/`` folder
    #: or the synthetic set, whose images are all listed as "train"
    splits: list[str] = []
    entries: list[Entry]

    @property
    def trainval(self) -> list[Entry]:
        return [e for e in self.entries if e.split in ("train", "val")]

    def of_splits(self, splits: tuple[str, ...]) -> list[Entry]:
        return [e for e in self.entries if e.split in splits]

    @property
    def has_split_layout(self) -> bool:
        """False for a plain ``<root>/<CLASS>/`` folder (every image is then listed as "train")."""
        return bool(self.splits)

    def info(self) -> SourceInfo:  # pragma: no cover - abstract
        raise NotImplementedError

    def decode(self, size: int, progress: bool, splits: tuple[str, ...] = ("train", "val"),
               framing: str = "full") -> Decoded:
        """Decode the images of ``splits`` (train and val by default; the test split only when asked),
        framed as ``framing`` says (``decode.resize_array``)."""
        raise NotImplementedError  # pragma: no cover - abstract

    def skipped_path(self, entry_id: str) -> str:
        """A user-facing path for a skipped entry."""
        return str(Path(self.root) / entry_id) if self.root else entry_id


def _bar(total: int, size: int, progress: bool, what: str) -> tqdm:
    return tqdm(total=total, desc=f"decoding {what} to {size}px", unit="img", disable=not progress)


# ============================================================================ folder
def _subdirs(d: Path) -> list[Path]:
    try:
        return sorted((p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)
    except OSError as e:
        raise DataError(f"cannot list folder {d} ({e.strerror or e})") from e


def _class_dirs(d: Path, required: bool) -> dict[int, Path]:
    found: dict[int, Path] = {}
    subdirs = _subdirs(d)
    for p in subdirs:
        upper = p.name.upper()
        if upper in CLASS_NAMES:
            label = CLASS_NAMES.index(upper)
            if label in found:
                raise DataError(f"two folders for class {upper} in {d}: {found[label].name} and {p.name}")
            found[label] = p
    if required and len(found) < len(CLASS_NAMES):
        missing = " and ".join(c for i, c in enumerate(CLASS_NAMES) if i not in found)
        names = ", ".join(p.name for p in subdirs) or "none"
        raise DataError(
            f"no {missing} class folder in {d} (found folders: {names}); "
            f"expected {d}/NORMAL and {d}/PNEUMONIA, or <root>/train/NORMAL and <root>/train/PNEUMONIA"
        )
    return found


def is_image_file(path: Path) -> bool:
    """An image extension (JPEG, PNG, ``.dcm``), or any other name carrying the DICOM preamble."""
    if path.name.startswith(".") or path.name.upper() in NOT_IMAGES:
        return False
    return path.suffix.lower() in IMAGE_EXTENSIONS or is_dicom_file(path)


def image_files(d: Path) -> list[Path]:
    """The image files under folder ``d`` (recursively, hidden ones left out), sorted by relative path."""
    out = []
    for dirpath, dirnames, filenames in os.walk(d):
        dirnames[:] = sorted(n for n in dirnames if not n.startswith("."))
        for name in filenames:
            if is_image_file(Path(dirpath) / name):
                out.append(Path(dirpath) / name)
    return sorted(out, key=lambda p: p.relative_to(d).as_posix())


def _entry_patient(path: Path) -> str:
    """A DICOM file's PatientID (header only), else the patient in the file name."""
    if path.suffix.lower() not in (".jpeg", ".jpg", ".png") and is_dicom_file(path):
        header = read_header(path)
        if header is not None and header.patient:
            return header.patient
    return patient_id(path.name)


class FolderSource(Source):
    kind = "folder"

    def __init__(self, root: Path):
        self.root = str(root)
        self.location = str(root)
        layout = self._layout(root)
        classes = layout if layout is not None else {"train": _class_dirs(root, required=True)}
        entries: list[Entry] = []
        for split in SPLITS:
            for label, folder in sorted(classes.get(split, {}).items()):
                files = image_files(folder)
                if not files and split == "train":
                    raise DataError(f"class folder {folder} has no images ({IMAGE_KINDS})")
                for f in files:
                    entries.append(Entry(f.relative_to(root).as_posix(), label, _entry_patient(f), split))
        self.entries = entries
        self.splits = [] if layout is None else list(layout)

    @staticmethod
    def _layout(root: Path) -> dict[str, dict[int, Path]] | None:
        """``{split: {label: class folder}}``; None for a plain ``<root>/<CLASS>/`` folder."""
        subdirs = _subdirs(root)
        splits: dict[str, Path] = {}
        for p in subdirs:
            for split, aliases in SPLIT_ALIASES.items():
                if p.name.lower() in aliases:
                    if split in splits:
                        raise DataError(f"two folders for split {split} in {root}: {splits[split].name} and {p.name}")
                    splits[split] = p
        if not splits:
            return None
        if "train" not in splits:
            names = ", ".join(p.name for p in subdirs)
            raise DataError(f"no train folder in {root} (found folders: {names}); expected {root}/train/NORMAL and {root}/train/PNEUMONIA")
        return {s: _class_dirs(p, required=(s == "train")) for s, p in splits.items()}

    @cached_property
    def _probe(self) -> SourceInfo:
        h = hashlib.sha256(b"pneumo-search folder v1\0")
        sides: list[int] = []
        first_reason = None
        n_bad = 0
        root = Path(self.root)
        for e in sorted(self.entries, key=lambda e: e.id):
            try:
                data = (root / e.id).read_bytes()
            except OSError as err:
                data = b""
                reason = f"cannot read: {err.strerror or err}"
            else:
                reason = "empty file (0 bytes)" if not data else "not a recognised image format"
            h.update(e.id.encode("utf-8") + b"\0" + len(data).to_bytes(8, "little"))
            h.update(data)
            if e.split in ("train", "val"):
                wh = read_image_size(data, e.id)
                if wh is None:
                    n_bad += 1
                    first_reason = first_reason or f"{e.id}: {reason}"
                else:
                    sides.append(min(wh))
        if not sides:
            raise DataError(f"no readable images in {self.root} ({n_bad} files skipped: {first_reason})")
        return SourceInfo("folder", self.location, int(np.median(sides)), h.hexdigest())

    def info(self) -> SourceInfo:
        return self._probe

    def decode(self, size: int, progress: bool, splits: tuple[str, ...] = ("train", "val"),
               framing: str = "full") -> Decoded:
        todo = self.of_splits(splits)
        images = np.empty((len(todo), size, size), dtype=np.uint8)
        kept: list[Entry] = []
        skipped: list[dict] = []
        root = Path(self.root)
        with _bar(len(todo), size, progress, f"{len(todo)} images") as bar:
            for e in todo:
                try:
                    images[len(kept)] = decode_image(root / e.id, size, framing)
                    kept.append(e)
                except UnreadableImage as err:
                    skipped.append({"path": e.id, "reason": err.reason})
                bar.update(1)
        return Decoded(images[: len(kept)], kept, skipped)


# ============================================================================ npz
def _npz_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """{key: (shape, dtype)} read from the .npy headers inside the zip (no array data)."""
    out = {}
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            if not name.endswith(".npy"):
                continue
            with zf.open(name) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                else:
                    raise ValueError(f"unsupported .npy format version {version} for key {name[:-4]!r}")
            out[name[:-4]] = (tuple(int(x) for x in shape), np.dtype(dtype))
    return out


class NpzSource(Source):
    kind = "npz"

    def __init__(self, path: Path):
        self.path = path
        self.location = str(path)
        try:
            headers = _npz_headers(path)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
            raise DataError(f"not a valid .npz file: {path} ({e})") from e
        found = ", ".join(sorted(headers)) or "none"
        for key in ("train_images", "train_labels"):
            if key not in headers:
                raise DataError(f"{path} is missing key '{key}' (found keys: {found}); a MedMNIST-style .npz needs train_images and train_labels")
        self.splits = [s for s in SPLITS if f"{s}_images" in headers or f"{s}_labels" in headers]
        self.shapes: dict[str, tuple[int, ...]] = {}
        labels: dict[str, np.ndarray] = {}
        for s in self.splits:
            ik, lk = f"{s}_images", f"{s}_labels"
            for key in (ik, lk):
                if key not in headers:
                    raise DataError(f"{path} is missing key '{key}' (found keys: {found}); {s}_images and {s}_labels go together")
            shape, dtype = headers[ik]
            if dtype.hasobject or not (np.issubdtype(dtype, np.number) or dtype == np.bool_):
                raise DataError(f"{path}: key '{ik}' has dtype {dtype}; expected numeric pixels (uint8, uint16 or float)")
            if len(shape) not in (3, 4) or (len(shape) == 4 and shape[3] not in (1, 3, 4)) or 0 in shape[1:3]:
                raise DataError(f"{path}: key '{ik}' has shape {shape}; expected (N, H, W) or (N, H, W, C) with C in 1, 3, 4")
            lshape, ldtype = headers[lk]
            n = shape[0]
            if lshape not in ((n,), (n, 1)):
                raise DataError(f"{path}: key '{lk}' has shape {lshape}; expected ({n},) or ({n}, 1) to match {ik} {shape}")
            if ldtype.hasobject:
                raise DataError(f"{path}: key '{lk}' has dtype {ldtype}; expected integer labels 0/1")
            if s == "train" and n == 0:
                raise DataError(f"{path}: key '{ik}' holds no images (shape {shape})")
            self.shapes[s] = shape
        try:
            with np.load(path, allow_pickle=False) as z:
                for s in self.splits:
                    labels[s] = np.asarray(z[f"{s}_labels"]).reshape(-1)
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            raise DataError(f"cannot read labels from {path} ({e})") from e
        for s, lab in labels.items():
            bad = np.setdiff1d(np.unique(lab), [0, 1])
            if bad.size:
                shown = ", ".join(str(v) for v in bad[:5].tolist())
                raise DataError(f"{path}: key '{s}_labels' has values outside {{0, 1}} (found {shown}); expected 0 = NORMAL, 1 = PNEUMONIA")
        self.entries = [
            Entry(f"{s}/{i}", int(lab[i]), f"{s}/{i}", s) for s in self.splits for lab in [labels[s]] for i in range(lab.shape[0])
        ]

    @cached_property
    def _probe(self) -> SourceInfo:
        h = hashlib.sha256()
        with open(self.path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        res = min(min(self.shapes[s][1:3]) for s in self.splits if s in ("train", "val") and self.shapes[s][0] > 0)
        return SourceInfo("npz", self.location, int(res), h.hexdigest())

    def info(self) -> SourceInfo:
        return self._probe

    def decode(self, size: int, progress: bool, splits: tuple[str, ...] = ("train", "val"),
               framing: str = "full") -> Decoded:
        todo = self.of_splits(splits)
        images = np.empty((len(todo), size, size), dtype=np.uint8)
        k = 0
        with np.load(self.path, allow_pickle=False) as z, _bar(len(todo), size, progress, f"{len(todo)} npz images") as bar:
            for s in SPLITS:
                if s not in splits or s not in self.splits:
                    continue
                arr = z[f"{s}_images"]
                for i in range(arr.shape[0]):
                    images[k] = resize_array(arr[i], size, framing)
                    k += 1
                bar.update(arr.shape[0])
        return Decoded(images, todo, [])


# ============================================================================ synthetic
class SyntheticSource(Source):
    kind = "synthetic"

    def __init__(self, seed: int = 0):
        self.seed = int(seed)
        self.location = "synthetic" if self.seed == 0 else f"synthetic:{self.seed}"
        labels, patients = synthetic_layout(self.seed)
        self.entries = [
            Entry(f"synthetic/{i:04d}", int(labels[i]), patients[i], "train") for i in range(len(patients))
        ]

    def info(self) -> SourceInfo:
        return SourceInfo("synthetic", self.location, int(SYNTHETIC_PARAMS["size"]), synthetic_fingerprint(self.seed))

    def decode(self, size: int, progress: bool, splits: tuple[str, ...] = ("train", "val"),
               framing: str = "full") -> Decoded:
        if "train" not in splits:
            return Decoded(np.empty((0, size, size), np.uint8), [], [])
        images = np.empty((len(self.entries), size, size), dtype=np.uint8)
        with _bar(len(self.entries), size, progress, "synthetic images") as bar:
            labels = np.asarray([e.label for e in self.entries], dtype=np.uint8)
            for i, img in enumerate(synthetic_images(self.seed, labels)):
                images[i] = resize_array(img, size, framing)
            bar.update(len(self.entries))
        return Decoded(images, list(self.entries), [])


# ============================================================================ dispatch
def _synthetic_seed(source: str) -> int | None:
    s = source.strip().lower()
    if s == "synthetic":
        return 0
    if s.startswith("synthetic:"):
        try:
            return int(s.split(":", 1)[1])
        except ValueError:
            raise DataError(f"bad synthetic source {source!r}; use 'synthetic' or 'synthetic:SEED' with an integer seed") from None
    return None


def open_source(
    source: str | os.PathLike | None, *, cache_dir: Path, download: bool = True, progress: bool | None = None
) -> Source:
    if source is None:
        return NpzSource(ensure_pneumoniamnist(cache_dir, download=download, progress=progress))
    if isinstance(source, str):
        seed = _synthetic_seed(source)
        if seed is not None:
            return SyntheticSource(seed)
    try:
        path = Path(os.fspath(source)).expanduser()
    except TypeError:
        raise DataError(f"data source must be a path, 'synthetic' or None; got {source!r}") from None
    if not path.exists():
        raise DataError(f"data path does not exist: {path}")
    path = path.resolve()
    if path.is_dir():
        return FolderSource(path)
    if path.is_file() and path.suffix.lower() == ".npz":
        return NpzSource(path)
    raise DataError(
        f"not a data folder or .npz file: {path} (expected <root>/<split>/<CLASS>/ images, a MedMNIST .npz, or 'synthetic')"
    )
