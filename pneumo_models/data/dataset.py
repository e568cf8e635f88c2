"""load_dataset / probe_source: source -> decoded (cached) arrays + patient-grouped split."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .cache import load_or_build, resolve_cache_dir
from .constants import CLASS_NAMES, DECODE_VERSION
from .decode import _check_size
from .errors import DataError
from .framing import FRAMING_DEFAULT, check_framing, framing_version
from .sources import Source, SourceInfo, open_source
from .split import grouped_split, n_splits_for
from .summary import DataSummary

__all__ = ["Dataset", "LabelledImages", "load_dataset", "load_split", "probe_source"]


@dataclass
class Dataset:
    x_train: np.ndarray = field(repr=False)  # (N, S, S) uint8, possibly a read-only memmap
    y_train: np.ndarray = field(repr=False)  # (N,) uint8, 1 = PNEUMONIA
    x_val: np.ndarray = field(repr=False)
    y_val: np.ndarray = field(repr=False)
    ids_train: list[str] = field(repr=False)  # folder: path relative to root; npz: "train/17"
    ids_val: list[str] = field(repr=False)
    patients_train: list[str] = field(repr=False)
    patients_val: list[str] = field(repr=False)
    input_size: int
    class_names: tuple[str, str]
    info: SourceInfo
    summary: DataSummary = field(repr=False)
    root: str | None  # folder root (None for npz / synthetic)
    framing: str = FRAMING_DEFAULT  # "full" or "lungs" (framing.py): how every image was cropped before the resize

    def image_path(self, id: str) -> str | None:
        """The file behind an id (folder sources only; None otherwise)."""
        if self.root is None:
            return None
        return str(Path(self.root) / id)


def probe_source(source: str | os.PathLike | None, *, cache_dir=None, download: bool = True) -> SourceInfo:
    """Kind, location, resolution and fingerprint of a source, without decoding pixels."""
    return open_source(source, cache_dir=resolve_cache_dir(cache_dir), download=download).info()


def _take(images: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """images[idx]; a plain slice (keeps the memmap) when idx is a contiguous run."""
    if len(idx) and idx[-1] - idx[0] + 1 == len(idx) and np.all(np.diff(idx) == 1):
        return images[int(idx[0]) : int(idx[-1]) + 1]
    return np.asarray(images[idx]) if len(idx) else np.empty((0,) + images.shape[1:], np.uint8)


def mixed_patients(src: Source) -> list[str]:
    """Patients of a folder with images in both classes (any split), sorted; [] for other sources."""
    if src.kind != "folder":
        return []
    labels: dict[str, set[int]] = {}
    for e in src.entries:
        labels.setdefault(e.patient, set()).add(e.label)
    return sorted(p for p, seen in labels.items() if len(seen) > 1)


def _class_counts(labels: np.ndarray) -> dict[str, int]:
    return {name: int(np.sum(labels == i)) for i, name in enumerate(CLASS_NAMES)}


def _build(src: Source, info: SourceInfo, size: int, progress: bool, splits: tuple[str, ...] = ("train", "val"),
           framing: str = FRAMING_DEFAULT):
    def build():
        # An audit event per decoded split: a test (or an auditor) can see when the test split is first read.
        sys.audit("pneumo_search.decode", info.location, splits, size)
        dec = src.decode(size, progress, splits, framing)
        if not dec.entries:
            first = dec.skipped[0]["reason"] if dec.skipped else "no image files"
            raise DataError(f"no readable images in {info.location} ({len(dec.skipped)} files skipped: {first})")
        index = {
            "ids": [e.id for e in dec.entries],
            "labels": [e.label for e in dec.entries],
            "patients": [e.patient for e in dec.entries],
            "splits": [e.split for e in dec.entries],
            "skipped": dec.skipped,
        }
        return dec.images, index

    return build


def _cache_entry(info: SourceInfo, size: int, framing: str, split: str | None = None) -> tuple[str, dict]:
    """The cache entry's key and the index items it must match: one entry per source, size, framing
    and the framing's version where it has one (and split, for a single split). Full films keep the keys they had
    before framing existed."""
    key = f"{info.kind}-{info.fingerprint[:32]}-{size}px-v{DECODE_VERSION}"
    expect = {"fingerprint": info.fingerprint, "input_size": size, "decode_version": DECODE_VERSION, "kind": info.kind}
    if framing != FRAMING_DEFAULT:
        version = framing_version(framing)
        key = f"{key}-{framing}{version or ''}"
        expect = {**expect, "framing": framing, "framing_version": version}
    if split is not None:
        key, expect = f"{key}-{split}", {**expect, "split": split}
    return key, expect


def load_dataset(
    source: str | os.PathLike | None,
    input_size: int,
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    cache_dir=None,
    min_val_images: int = 100,
    progress: bool = True,
    download: bool = True,
    framing: str = FRAMING_DEFAULT,
) -> Dataset:
    """Decode (once, cached) and split a data source; see the package docstring. ``framing``:
    ``"full"`` films, or each cropped to its lung fields (``"lungs"``, framing.py) before the resize."""
    size = _check_size(input_size)
    framing = check_framing(framing)
    n_splits = n_splits_for(val_fraction)
    cache_root = resolve_cache_dir(cache_dir)
    src = open_source(source, cache_dir=cache_root, download=download, progress=progress)
    info = src.info()
    if size > info.resolution:
        raise DataError(
            f"input size {size} px is larger than the source images ({info.resolution} px) in {info.location}; "
            f"choose a size <= {info.resolution}"
        )
    key, expect = _cache_entry(info, size, framing)
    images, index, _ = load_or_build(cache_root, key, expect, _build(src, info, size, progress, framing=framing))

    ids: list[str] = index["ids"]
    labels = np.asarray(index["labels"], dtype=np.uint8)
    patients: list[str] = index["patients"]
    splits = np.asarray(index["splits"])
    skipped = [{"path": src.skipped_path(s["path"]), "reason": s["reason"]} for s in index["skipped"]]

    def first_skip() -> str:
        return f"{len(skipped)} files skipped" + (f": {skipped[0]['reason']}" if skipped else "")

    for i, name in enumerate(CLASS_NAMES):
        if not np.any(labels == i):
            raise DataError(f"no readable {name} images in {info.location} ({first_skip()})")

    train_pos = np.flatnonzero(splits == "train")
    val_pos = np.flatnonzero(splits == "val")
    n_val_source = sum(1 for e in src.entries if e.split == "val")
    if len(val_pos) >= min_val_images and len(np.unique(labels[val_pos])) == len(CLASS_NAMES):
        tr, va = train_pos, val_pos
        strategy = f"source val split ({len(val_pos)} images)"
        shared = set(patients[i] for i in tr) & set(patients[i] for i in va)
        if shared:
            strategy += f"; {len(shared)} patient(s) also appear in train"
    else:
        pool = np.sort(np.concatenate([train_pos, val_pos]))
        tr_rel, va_rel = grouped_split(labels[pool], [patients[i] for i in pool], val_fraction, seed)
        tr, va = pool[tr_rel], pool[va_rel]
        if n_val_source == 0:
            why = "source has no val split"
        elif len(val_pos) < min_val_images:
            why = f"source val had {len(val_pos)} images, merged into the pool"
        else:
            why = f"source val had {len(val_pos)} images but only one class, merged into the pool"
        strategy = f"patient-grouped stratified {100 / n_splits:.0f}% of train ({why})"

    counts = {"train": _class_counts(labels[tr]), "val": _class_counts(labels[va])}
    n_patients = {"train": len({patients[i] for i in tr}), "val": len({patients[i] for i in va})}
    test = [e for e in src.entries if e.split == "test"]
    if test:
        counts["test"] = _class_counts(np.asarray([e.label for e in test]))
        n_patients["test"] = len({e.patient for e in test})
    summary = DataSummary(
        source=info.location,
        kind=info.kind,
        fingerprint=info.fingerprint,
        counts=counts,
        patients=n_patients,
        skipped=skipped,
        val_strategy=strategy,
        mixed_patients=mixed_patients(src),
    )
    return Dataset(
        x_train=_take(images, tr),
        y_train=labels[tr],
        x_val=_take(images, va),
        y_val=labels[va],
        ids_train=[ids[i] for i in tr],
        ids_val=[ids[i] for i in va],
        patients_train=[patients[i] for i in tr],
        patients_val=[patients[i] for i in va],
        input_size=size,
        class_names=CLASS_NAMES,
        info=info,
        summary=summary,
        root=src.root,
        framing=framing,
    )


@dataclass
class LabelledImages:
    """One labelled split decoded at one size (a test split, or a hospital's own folder)."""

    x: np.ndarray = field(repr=False)  # (N, S, S) uint8
    y: np.ndarray = field(repr=False)  # (N,) uint8, 1 = PNEUMONIA
    ids: list[str] = field(repr=False)
    patients: list[str] = field(repr=False)
    split: str                         # "test", "val", "train" or "all" (a plain <root>/<CLASS>/ folder)
    input_size: int
    class_names: tuple[str, str]
    info: SourceInfo
    skipped: list[dict] = field(repr=False, default_factory=list)
    root: str | None = None
    #: True when patients come from the data (file names); False when every image is its own patient
    patients_known: bool = False
    framing: str = FRAMING_DEFAULT

    def counts(self) -> dict[str, int]:
        return _class_counts(self.y)


def available_splits(source: str | os.PathLike | None, *, cache_dir=None, download: bool = True) -> list[str]:
    """The splits a source holds: ["all"] for a plain ``<root>/<CLASS>/`` folder."""
    src = open_source(source, cache_dir=resolve_cache_dir(cache_dir), download=download)
    if not src.has_split_layout:
        return ["all"]
    return [s for s in ("train", "val", "test") if any(e.split == s for e in src.entries)]


def listed_counts(source: str | os.PathLike | None, split: str, *, cache_dir=None,
                  download: bool = True) -> dict[str, int] | None:
    """Class counts of the files a split lists (file names only, nothing decoded); None when the
    source has no such split. A run checks its test split with this before any training."""
    src = open_source(source, cache_dir=resolve_cache_dir(cache_dir), download=download)
    if split not in src.splits:
        return None
    return _class_counts(np.asarray([e.label for e in src.of_splits((split,))], dtype=np.uint8))


def load_split(
    source: str | os.PathLike | None,
    input_size: int,
    split: str = "test",
    *,
    cache_dir=None,
    progress: bool = True,
    download: bool = True,
    framing: str = FRAMING_DEFAULT,
) -> LabelledImages:
    """Decode (once, cached) every image of one split: ``"test"``, ``"val"``, ``"train"``, or
    ``"all"`` for a plain ``<root>/<CLASS>/`` folder. Any size up to the source's works (a model is
    scored at its own input size). Unreadable files are skipped and listed; a split with no
    readable image or only one class is refused with one line."""
    size = _check_size(input_size)
    framing = check_framing(framing)
    cache_root = resolve_cache_dir(cache_dir)
    src = open_source(source, cache_dir=cache_root, download=download, progress=progress)
    info = src.info()
    if split == "all":
        if src.has_split_layout:
            raise DataError(f"{info.location} has split folders; name one (test, val or train)")
        wanted = ("train",)
    elif split in ("train", "val", "test"):
        if not src.has_split_layout:
            wanted = ()
        else:
            wanted = (split,)
    else:
        raise DataError(f"unknown split {split!r}; choose test, val, train or all")
    entries = src.of_splits(wanted)
    if not entries:
        where = ("it is a plain <CLASS>/ folder: use split 'all'" if not src.has_split_layout
                 else f"it holds {', '.join(sorted({e.split for e in src.entries}))}")
        raise DataError(f"no {split} images in {info.location} ({where})")
    key, expect = _cache_entry(info, size, framing, split)
    images, index, _ = load_or_build(cache_root, key, expect, _build(src, info, size, progress, wanted, framing))
    labels = np.asarray(index["labels"], dtype=np.uint8)
    skipped = [{"path": src.skipped_path(s["path"]), "reason": s["reason"]} for s in index["skipped"]]
    for i, name in enumerate(CLASS_NAMES):
        if not np.any(labels == i):
            extra = f"; {len(skipped)} unreadable file(s) skipped" if skipped else ""
            raise DataError(f"the {split} images of {info.location} hold no {name} image: both classes are needed "
                            f"to score a model ({len(labels)} images{extra})")
    ids, patients = list(index["ids"]), list(index["patients"])
    return LabelledImages(x=np.asarray(images), y=labels, ids=ids, patients=patients, split=split,
                          input_size=size, class_names=CLASS_NAMES, info=info, skipped=skipped, root=src.root,
                          patients_known=info.kind == "folder" and len(set(patients)) < len(patients),
                          framing=framing)
