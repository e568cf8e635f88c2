"""The one and only image preprocessing path: any image -> (size, size) uint8 grayscale.

``decode_image`` (files) and ``resize_array`` (arrays) both end in ``_to_uint8``
-> ``_to_gray`` -> ``square_resize`` (resample.py), so a model trained on cached images sees exactly
the same pixels at prediction time.  Rules:

* 8-bit data is used as is; 16-bit data (uint16 arrays, ``I;16`` PNGs) is scaled
  by 255/65535 with rounding (65535 -> 255, 32768 -> 128), never clipped;
  float arrays are taken as [0, 1] when their maximum is <= 1, else as [0, 255].
* colour is reduced to luma with PIL's ITU-R 601-2 ``RGB -> L`` conversion;
  an alpha channel is dropped (not composited); palettes are expanded first.
* with ``framing="lungs"`` the grayscale image is first cropped to its lung fields
  (``framing.py``); the default ``"full"`` keeps the whole film.
* the grayscale image is squashed (no padding) to size x size with PIL's BILINEAR filter.

Truncated or corrupt files raise ``UnreadableImage``: ``ImageFile.LOAD_TRUNCATED_IMAGES``
is left off and ``img.load()`` is always called so truncation is detected.

DICOM files (``.dcm``, or the DICOM preamble in any file) are read by pydicom in ``dicom.py``
(Modality LUT, VOI LUT or window, MONOCHROME1 inverted, scaled to uint8) and then take the same
``resize_array`` path as every other image.
"""
from __future__ import annotations

import io
import os
import threading
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from .dicom import DICOM_EXTENSIONS, dicom_array, has_preamble, header_from_bytes, is_dicom_file
from .errors import DataError, UnreadableImage
from .framing import FRAMING_DEFAULT, frame
from .resample import square_resize

__all__ = ["decode_image", "read_gray", "resize_array", "decode_count", "UnreadableImage"]

_count_lock = threading.Lock()
_decode_count = 0


def decode_count() -> int:
    """Number of images ``decode_image`` has tried to decode in this process."""
    return _decode_count


def _bump() -> None:
    global _decode_count
    with _count_lock:
        _decode_count += 1


def _check_size(size: object) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or int(size) < 1:
        raise DataError(f"image size must be a positive integer, got {size!r}")
    return int(size)


# --------------------------------------------------------------------------- core
def _to_uint8(a: np.ndarray) -> np.ndarray:
    """Scale any supported dtype to uint8, channel layout unchanged."""
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * np.uint8(255)
    if a.dtype == np.uint16 or a.dtype == np.dtype(">u2"):
        # exact integer rounding of v * 255 / 65535 (no value falls exactly on .5)
        return ((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if np.issubdtype(a.dtype, np.integer):
        lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
        if lo < 0 or hi > 255:
            raise DataError(
                f"integer image values must lie in 0..255 (use uint16 for 16-bit images), "
                f"got {a.dtype} values {lo}..{hi}"
            )
        return a.astype(np.uint8)
    if np.issubdtype(a.dtype, np.floating):
        f = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        scale = 255.0 if (f.size == 0 or float(f.max()) <= 1.0) else 1.0
        return np.clip(np.rint(f * scale), 0, 255).astype(np.uint8)
    raise DataError(f"unsupported image array dtype {a.dtype} (use uint8, uint16 or float)")


def _to_gray(u8: np.ndarray) -> np.ndarray:
    """(H,W) or (H,W,C) uint8 -> (H,W) uint8 luma (alpha dropped)."""
    if u8.ndim == 2:
        return u8
    c = u8.shape[2]
    if c in (1, 2):  # gray, gray+alpha
        return np.ascontiguousarray(u8[:, :, 0])
    rgb = Image.fromarray(np.ascontiguousarray(u8[:, :, :3]))
    return np.asarray(rgb.convert("L"))


def resize_array(image: np.ndarray, size: int, framing: str = FRAMING_DEFAULT) -> np.ndarray:
    """(H,W) or (H,W,C) (C in 1, 3, 4) uint8/uint16/float image -> (size, size) uint8 grayscale,
    framed as ``framing`` says (``"full"``: the whole film; ``"lungs"``: its lung fields)."""
    size = _check_size(size)
    return square_resize(frame(_to_gray(_to_uint8(_check_array(image))), framing), size)


def _check_array(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 2, 3, 4)):
        raise DataError(
            f"image array must have shape (H, W) or (H, W, C) with C in 1, 3, 4 (2 = gray+alpha); got {a.shape}"
        )
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise DataError(f"image array is empty: shape {a.shape}")
    return a


# --------------------------------------------------------------------------- files
def _pil_to_array(img: Image.Image) -> np.ndarray:
    """A loaded PIL image in any mode -> array in a layout ``resize_array`` accepts."""
    mode = img.mode
    if mode in ("L", "RGB", "RGBA"):
        return np.asarray(img)
    if mode == "LA":
        return np.asarray(img)[:, :, 0]
    if mode.startswith("I;16"):
        return np.asarray(img).astype(np.uint16)  # native byte order
    if mode == "I":  # 32-bit int: taken as a 16-bit range
        return np.clip(np.asarray(img), 0, 65535).astype(np.uint16)
    if mode == "F":
        return np.asarray(img, dtype=np.float32)
    if mode in ("1", "La"):
        return np.asarray(img.convert("L"))
    if mode == "PA" or (mode == "P" and "transparency" in img.info):
        return np.asarray(img.convert("RGBA"))
    try:  # P, RGBX, RGBa, CMYK, YCbCr, HSV, ...
        return np.asarray(img.convert("RGB"))
    except (ValueError, OSError):  # e.g. LAB has no RGB conversion
        return np.asarray(img.convert("L"))


def _classify(exc: BaseException, fmt: str | None) -> str:
    msg = str(exc) or type(exc).__name__
    kind = fmt or "image"
    if isinstance(exc, UnidentifiedImageError):
        return "not a recognised image format"
    if isinstance(exc, Image.DecompressionBombError):
        return f"too large to decode safely: {msg}"
    if "truncated" in msg.lower() or isinstance(exc, EOFError):
        return f"truncated {kind}: {msg}"
    return f"corrupt {kind}: {msg}"


def decode_image(path_or_fileobj: str | os.PathLike | BinaryIO | bytes, size: int,
                 framing: str = FRAMING_DEFAULT) -> np.ndarray:
    """Open any image PIL reads (any mode), convert to grayscale, frame and resize -> (size, size) uint8.

    Raises ``UnreadableImage`` (a ``DataError``) for missing, empty, truncated or corrupt files.
    """
    size = _check_size(size)
    _bump()
    return resize_array(_read_array(path_or_fileobj), size, framing)


def read_gray(path_or_fileobj: str | os.PathLike | BinaryIO | bytes) -> np.ndarray:
    """An image file at its own resolution as (H, W) uint8 grey: ``decode_image`` without the
    resize (``decode_image(f, s)`` equals ``resize_array(read_gray(f), s)``)."""
    return _to_gray(_to_uint8(_check_array(_read_array(path_or_fileobj))))


def _read_array(path_or_fileobj) -> np.ndarray:
    """The decoded pixels of one file, in a layout ``resize_array`` accepts; UnreadableImage otherwise."""
    if isinstance(path_or_fileobj, (bytes, bytearray, memoryview)):
        src: object = io.BytesIO(path_or_fileobj)
        name = "<bytes>"
    elif isinstance(path_or_fileobj, (str, os.PathLike)):
        src = os.fspath(path_or_fileobj)
        name = src
        try:
            if os.path.getsize(src) == 0:
                raise UnreadableImage(name, "empty file (0 bytes)")
        except OSError as e:
            raise UnreadableImage(name, f"cannot open: {e.strerror or e}") from e
    else:
        src = path_or_fileobj
        name = str(getattr(path_or_fileobj, "name", "<file object>"))
    dicom = _dicom_kind(src, name)
    if dicom is not None:
        return dicom_array(src, name, force=dicom == "extension")
    fmt = None
    try:
        with Image.open(src) as img:  # type: ignore[arg-type]
            fmt = img.format
            img.load()
            arr = _pil_to_array(img)
    except UnreadableImage:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, EOFError,
            SyntaxError, ValueError, IndexError, TypeError, KeyError, ZeroDivisionError) as e:
        if isinstance(e, FileNotFoundError | PermissionError | IsADirectoryError):
            raise UnreadableImage(name, f"cannot open: {e.strerror or e}") from e
        raise UnreadableImage(name, _classify(e, fmt)) from e
    return arr


def _dicom_kind(src: object, name: str) -> str | None:
    """"preamble" or "extension" when ``src`` is a DICOM file (see ``dicom.py``), else None."""
    if isinstance(src, str):
        if not is_dicom_file(src):
            return None
        return "extension" if os.path.splitext(src)[1].lower() in DICOM_EXTENSIONS else "preamble"
    if isinstance(src, io.BytesIO):
        return "preamble" if has_preamble(src.getbuffer()[:132]) else None
    try:  # a file object: peek at its first bytes
        pos = src.tell()  # type: ignore[attr-defined]
        head = src.read(132)  # type: ignore[attr-defined]
        src.seek(pos)  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return None
    if has_preamble(head):
        return "preamble"
    return "extension" if os.path.splitext(name)[1].lower() in DICOM_EXTENSIONS else None


def read_image_size(data: bytes, name: str | None = None) -> tuple[int, int] | None:
    """(width, height) from the header of an encoded image (JPEG, PNG, ..., DICOM), or None when
    unreadable. ``name`` (a file name) lets a ``.dcm`` file without preamble be read as DICOM."""
    if not data:
        return None
    dcm_name = name is not None and os.path.splitext(name)[1].lower() in DICOM_EXTENSIONS
    if has_preamble(data[:132]) or dcm_name:
        header = header_from_bytes(data, force=dcm_name)
        if header is None or not header.rows or not header.columns or header.frames > 1:
            return None
        return header.columns, header.rows
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except Exception:  # header-only probe: any failure just means "unknown"
        return None
