"""DICOM chest X-rays in: which files are DICOM, their patient and size, and their pixels as uint8.

Everything DICOM is pydicom's (reading, decompression through the installed decoder plugins, the
Modality LUT and the VOI LUT or window); this module only decides what a file is and maps the
displayed values to 0-255 for the one preprocessing path in ``decode.py``:

* a file is DICOM when its name ends ``.dcm`` or it carries the DICOM preamble (``DICM`` at byte
  128), whatever its name (PACS exports often have none); ``DICOMDIR`` index files are not images;
* pixels: ``apply_modality_lut`` (rescale slope/intercept or a Modality LUT), then
  ``apply_voi_lut`` (the first VOI LUT, else the first window centre/width; none: the whole
  range), then the output range of those steps (the one pydicom's windowing maps into: the stored
  bit range through the rescale, or the LUT's bit depth) is scaled linearly to 0-255 and rounded.
  An 8-bit image without window keeps its values; a 16-bit one is scaled by 255/65535 as a
  16-bit PNG is; MONOCHROME1 (white = low values) is inverted so lungs are dark as in the JPEGs;
* the patient is the ``PatientID`` tag when it holds one (file names are the fallback).

A file that cannot give one grey image (no pixel data, a structured report or other non-image
object, several frames, a transfer syntax no installed plugin decodes, a truncated file) raises
``UnreadableImage`` with the reason, so a folder scan skips and lists it.
"""
from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .errors import UnreadableImage

DICOM_EXTENSIONS: frozenset[str] = frozenset({".dcm"})
#: DICOM media index files: never images, never listed as skipped.
NOT_IMAGES: frozenset[str] = frozenset({"DICOMDIR"})
_MAGIC_AT, _MAGIC = 128, b"DICM"


def has_preamble(head: bytes) -> bool:
    """Whether ``head`` (a file's first 132 bytes or more) carries the DICOM preamble."""
    return len(head) >= _MAGIC_AT + 4 and bytes(head[_MAGIC_AT:_MAGIC_AT + 4]) == _MAGIC


def _head(path: str | os.PathLike) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(_MAGIC_AT + 4)
    except OSError:
        return b""


def is_dicom_file(path: str | os.PathLike, *, check_preamble: bool = True) -> bool:
    """A ``.dcm`` name, or (``check_preamble``) the DICOM preamble in the file's first bytes."""
    p = Path(path)
    if p.name.upper() in NOT_IMAGES:
        return False
    if p.suffix.lower() in DICOM_EXTENSIONS:
        return True
    return check_preamble and has_preamble(_head(p))


@dataclass(frozen=True)
class DicomHeader:
    patient: str | None     # PatientID, None when absent or empty
    rows: int | None
    columns: int | None
    frames: int


def _header_of(ds) -> DicomHeader:
    pid = str(ds.get("PatientID", "") or "").strip() or None
    rows, cols = ds.get("Rows"), ds.get("Columns")
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        frames = 1
    return DicomHeader(pid, int(rows) if rows else None, int(cols) if cols else None, frames)


def _read(src, *, force: bool, header_only: bool):
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns on every slightly non-conformant header
        return pydicom.dcmread(src, force=force, stop_before_pixels=header_only)


@lru_cache(maxsize=65536)
def _cached_header(path: str, size: int, mtime_ns: int) -> DicomHeader | None:
    try:
        return _header_of(_read(path, force=path.lower().endswith(".dcm"), header_only=True))
    except Exception:  # noqa: BLE001 - any failure: "no header"; decoding will say why, per file
        return None


def read_header(path: str | os.PathLike) -> DicomHeader | None:
    """The header facts of a DICOM file (cached per path, size and mtime), None when unreadable."""
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except OSError:
        return None
    return _cached_header(path, st.st_size, st.st_mtime_ns)


def header_from_bytes(data: bytes, *, force: bool = False) -> DicomHeader | None:
    try:
        return _header_of(_read(io.BytesIO(data), force=force, header_only=True))
    except Exception:  # noqa: BLE001 - a probe: failure means "unknown"
        return None


def dicom_patient(path: str | os.PathLike) -> str | None:
    """``PatientID`` of a DICOM file (None when the file is not DICOM or has none)."""
    if not is_dicom_file(path):
        return None
    header = read_header(path)
    return header.patient if header else None


# --------------------------------------------------------------------------- pixels
def _stored_range(ds) -> tuple[float, float]:
    bits = int(ds.BitsStored)
    if int(ds.get("PixelRepresentation", 0)) == 0:
        return 0.0, float(2**bits - 1)
    return float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)


def _output_range(ds, voi_lut_used: bool) -> tuple[float, float]:
    """The range the Modality LUT and VOI LUT/window map into (as pydicom's windowing defines it)."""
    if voi_lut_used:
        return 0.0, float(2 ** int(ds.VOILUTSequence[0].LUTDescriptor[2]) - 1)
    if ds.get("ModalityLUTSequence"):
        return 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    lo, hi = _stored_range(ds)
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        lo, hi = lo * float(slope) + float(intercept), hi * float(slope) + float(intercept)
    return min(lo, hi), max(lo, hi)


def _widen_8bit_lut_index(item) -> None:
    """pydicom 3.0 indexes an 8-bit VOI LUT with uint8 values, so a LUT of more than 256 entries
    (8-bit output of a 12-bit image, which DICOM allows) wraps around. Declaring 16 bits per entry
    makes it index with uint16; the entries (<= 255) and the output range (taken before) are unchanged."""
    desc = [int(v) for v in item.LUTDescriptor]
    if desc[2] == 8 and (desc[0] or 65536) > 256:
        item.LUTDescriptor = [desc[0], desc[1], 16]


def _sop_name(ds) -> str:
    uid = ds.get("SOPClassUID") or getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", None)
    if not uid:
        return "no SOP class"
    name = getattr(uid, "name", str(uid))
    return str(name)


def _is_image_sop(ds) -> bool:
    return "Image" in _sop_name(ds) or bool(ds.get("Rows"))


def _check_syntax(ds, name: str) -> None:
    from pydicom.pixels import get_decoder

    uid = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if uid is None:
        return  # pydicom assumes implicit VR little endian
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        raise UnreadableImage(name, f"unsupported DICOM transfer syntax {getattr(uid, 'name', uid)} ({uid})") from None
    if not decoder.is_available:
        raise UnreadableImage(name, f"unsupported DICOM transfer syntax {uid.name} ({uid}): no installed decoder "
                                    "(pip install python-gdcm)")


def dicom_array(src: str | os.PathLike | BinaryIO | bytes, name: str, *, force: bool = False) -> np.ndarray:
    """One DICOM image -> (H, W) uint8 grey (lungs dark) or (H, W, 3) uint8 colour.

    Raises ``UnreadableImage`` with the reason for anything that is not one decodable image.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    if isinstance(src, (bytes, bytearray, memoryview)):
        src = io.BytesIO(bytes(src))
    try:
        ds = _read(src, force=force, header_only=False)
    except InvalidDicomError as exc:
        raise UnreadableImage(name, f"not a valid DICOM file: {exc}") from None
    except (EOFError, OSError, ValueError, KeyError, TypeError, IndexError, AttributeError,
            NotImplementedError, OverflowError) as exc:
        what = "truncated DICOM" if isinstance(exc, EOFError) or "end of file" in str(exc).lower() else "corrupt DICOM"
        raise UnreadableImage(name, f"{what}: {exc or type(exc).__name__}") from None
    if "PixelData" not in ds and not any(k in ds for k in ("SOPClassUID", "Rows", "Modality", "PatientID")) \
            and getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", None) is None:
        raise UnreadableImage(name, "not a valid DICOM file: no DICOM header found")
    if "PixelData" not in ds:
        other = [k for k in ("FloatPixelData", "DoubleFloatPixelData") if k in ds]
        if other:
            raise UnreadableImage(name, f"DICOM with {other[0]} (float pixels) is not supported")
        if _is_image_sop(ds):
            raise UnreadableImage(name, "DICOM without pixel data (a header only, or cut short)")
        raise UnreadableImage(name, f"DICOM without pixel data: not an image ({_sop_name(ds)})")
    frames = _header_of(ds).frames
    if frames > 1:
        raise UnreadableImage(name, f"multi-frame DICOM ({frames} frames): one image per file is expected")
    _check_syntax(ds, name)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = ds.pixel_array
            if photometric in ("MONOCHROME1", "MONOCHROME2"):
                voi_lut = bool(ds.get("VOILUTSequence"))
                lo, hi = _output_range(ds, voi_lut)
                if voi_lut:
                    _widen_8bit_lut_index(ds.VOILUTSequence[0])
                values = apply_voi_lut(apply_modality_lut(arr, ds), ds, index=0, prefer_lut=True)
    except UnreadableImage:
        raise
    except Exception as exc:  # noqa: BLE001 - pydicom and its plugins raise many kinds; all mean "this file"
        text = " ".join(str(exc).split()) or type(exc).__name__
        if "less than expected" in text or "end of file" in text.lower() or "truncat" in text.lower() \
                or "doesn't match the expected length" in text:
            raise UnreadableImage(name, f"truncated DICOM: {text[:200]}") from None
        raise UnreadableImage(name, f"undecodable DICOM pixel data: {text[:200]}") from None
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        if arr.ndim != 2:
            raise UnreadableImage(name, f"DICOM pixel array has shape {arr.shape}; one grey image expected")
        span = hi - lo if hi > lo else 1.0
        u8 = np.clip(np.rint((np.asarray(values, dtype=np.float64) - lo) * (255.0 / span)), 0, 255).astype(np.uint8)
        return 255 - u8 if photometric == "MONOCHROME1" else u8
    if photometric in ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT") and arr.ndim == 3 and arr.shape[2] == 3:
        if arr.dtype != np.uint8:  # colour at more than 8 bits: its full stored range
            lo, hi = _stored_range(ds)
            arr = np.clip(np.rint((arr.astype(np.float64) - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)
        return arr  # pydicom has already converted YBR to RGB
    raise UnreadableImage(name, f"unsupported DICOM photometric interpretation {photometric} "
                                "(MONOCHROME1, MONOCHROME2 or RGB expected)")
