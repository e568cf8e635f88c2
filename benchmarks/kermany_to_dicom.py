"""Convert a Kermany-style image folder to DICOM, to check that hospital files train like the JPEGs.

    python -m benchmarks.kermany_to_dicom ../shared/data/chest_xray /tmp/chest_xray_dicom
    python -m benchmarks.kermany_to_dicom ../shared/data/chest_xray /tmp/chest_xray_dicom --check 64

The copy has the same tree (``<root>/<split>/<CLASS>/``) with one ``.dcm`` per image. Each image
is decoded to grey at its own resolution by the project's own decoder
(``pneumo_models.data.decode.read_gray``) and stored as an 8-bit MONOCHROME2 digital X-ray (no
window, so its values are kept), with the patient from the file name
(``pneumo_models.data.patient_id``: ``personNNNN``, ``IM-NNNN``) in ``PatientID``. The file name
itself becomes an opaque ``img-<n>.dcm`` with ``--opaque-names``, so that only the header can say
who the patient is, as with files from a PACS. ``--syntax rle`` compresses losslessly (RLE).

``--check SIZE`` loads both folders with ``load_dataset`` at SIZE px (separate caches) and prints
one JSON line: whether the splits (same images, same patients on the same side) and the decoded
pixels are the same. Exit status 0 when they are.

``write_dicom`` / ``dicom_dataset`` make single DICOM files from arrays (the tests use them for
8, 12 and 16 bit, MONOCHROME1/2, windows and compressed transfer syntaxes).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
SYNTAXES = ("explicit", "rle", "jpeg-lossless")


def dicom_dataset(pixels: np.ndarray, *, patient: str | None, bits_stored: int | None = None,
                  photometric: str = "MONOCHROME2", window: tuple[float, float] | None = None,
                  rescale: tuple[float, float] | None = None, sop_class: str = DX_FOR_PRESENTATION):
    """A DICOM dataset holding one grey image (uint8 or uint16 ``pixels``), uncompressed."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    pixels = np.asarray(pixels)
    if pixels.ndim != 2 or pixels.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"expected a (H, W) uint8 or uint16 image, got {pixels.shape} {pixels.dtype}")
    allocated = 8 if pixels.dtype == np.uint8 else 16
    bits = bits_stored or allocated
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "DX"
    if patient is not None:
        ds.PatientID = patient
        ds.PatientName = patient
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = allocated, bits, bits - 1
    ds.PixelRepresentation = 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    return ds


def write_dicom(path: str | Path, pixels: np.ndarray, *, patient: str | None, syntax: str = "explicit",
                **options) -> Path:
    """Write one image as a DICOM file: ``explicit`` (Explicit VR Little Endian), ``rle`` (RLE
    Lossless, pydicom's encoder) or ``jpeg-lossless`` (JPEG Lossless SV1, GDCM's encoder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = dicom_dataset(pixels, patient=patient, **options)
    if syntax == "rle":
        from pydicom.uid import RLELossless

        ds.compress(RLELossless)
    elif syntax not in SYNTAXES:
        raise ValueError(f"unknown syntax {syntax!r}; choose one of {SYNTAXES}")
    ds.save_as(path, enforce_file_format=True)
    if syntax == "jpeg-lossless":
        _gdcm_transcode(path, "JPEGLosslessProcess14_1")
    return path


def _gdcm_transcode(path: Path, syntax: str) -> None:
    import gdcm

    reader = gdcm.ImageReader()
    reader.SetFileName(str(path))
    if not reader.Read():
        raise RuntimeError(f"GDCM cannot read {path}")
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(getattr(gdcm.TransferSyntax, syntax)))
    change.SetInput(reader.GetImage())
    if not change.Change():
        raise RuntimeError(f"GDCM cannot compress {path} to {syntax}")
    writer = gdcm.ImageWriter()
    writer.SetFileName(str(path))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    if not writer.Write():
        raise RuntimeError(f"GDCM cannot write {path}")


def convert(src: str | Path, dst: str | Path, *, syntax: str = "explicit", opaque_names: bool = False,
            progress: bool = True) -> dict:
    """Write a DICOM copy of every image under ``src`` into ``dst`` (same folders); returns counts."""
    from tqdm import tqdm

    from pneumo_models.data import patient_id
    from pneumo_models.data.decode import read_gray
    from pneumo_models.data.sources import image_files

    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise SystemExit(f"error: not a folder: {src}")
    files = image_files(src)
    written = 0
    for i, f in enumerate(tqdm(files, desc="to DICOM", unit="img", disable=not progress)):
        rel = f.relative_to(src)
        name = f"img-{i:06d}.dcm" if opaque_names else rel.with_suffix(".dcm").name
        write_dicom(dst / rel.parent / name, read_gray(f), patient=patient_id(f.name), syntax=syntax)
        written += 1
    return {"source": str(src), "copy": str(dst), "images": written, "syntax": syntax}


def check(src: str | Path, dst: str | Path, size: int, cache_dir: str | Path | None = None,
          opaque_names: bool = False) -> dict:
    """Load both folders at ``size`` px: same split (patients, sides, order) and same decoded pixels?"""
    from pneumo_models.data import load_dataset

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(cache_dir or tmp)
        a = load_dataset(src, size, cache_dir=base / "original", progress=False)
        b = load_dataset(dst, size, cache_dir=base / "dicom", progress=False)
    stem = lambda ids: [str(Path(i).with_suffix("")) for i in ids]  # noqa: E731
    same_split = (a.patients_train == b.patients_train and a.patients_val == b.patients_val
                  and list(a.y_train) == list(b.y_train) and list(a.y_val) == list(b.y_val)
                  and (opaque_names or (stem(a.ids_train) == stem(b.ids_train) and stem(a.ids_val) == stem(b.ids_val))))
    same_pixels = same_split and np.array_equal(a.x_train, b.x_train) and np.array_equal(a.x_val, b.x_val)
    return {"size": size, "train": len(a.y_train), "val": len(a.y_val),
            "patients": {"original": a.summary.patients, "dicom": b.summary.patients},
            "skipped": {"original": len(a.summary.skipped), "dicom": len(b.summary.skipped)},
            "same_split": bool(same_split), "same_pixels": bool(same_pixels)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src", type=Path, help="a <root>/<split>/<CLASS>/ image folder (e.g. ../shared/data/chest_xray)")
    p.add_argument("dst", type=Path, help="where to write the DICOM copy")
    p.add_argument("--syntax", choices=SYNTAXES, default="explicit", help="transfer syntax (default: %(default)s)")
    p.add_argument("--opaque-names", action="store_true", help="name files img-<n>.dcm: the patient is in the header only")
    p.add_argument("--check", type=int, metavar="SIZE", help="after converting, compare both folders at SIZE px")
    p.add_argument("--no-convert", action="store_true", help="only --check an existing copy")
    p.add_argument("--cache-dir", type=Path, help="image caches for --check (default: a temporary folder)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if not args.no_convert:
        print(json.dumps(convert(args.src, args.dst, syntax=args.syntax, opaque_names=args.opaque_names,
                                 progress=not args.no_progress)), flush=True)
    if args.check:
        result = check(args.src, args.dst, args.check, args.cache_dir, opaque_names=args.opaque_names)
        print(json.dumps(result), flush=True)
        return 0 if result["same_split"] and result["same_pixels"] else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
