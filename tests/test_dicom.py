"""DICOM in: pixels through pydicom's Modality LUT and VOI LUT/window, patients from PatientID,
bad files skipped with their reason, and a Kermany folder's DICOM copy equal to the original.

The DICOM files are made here from generated pixels with pydicom (``benchmarks/kermany_to_dicom``'s
``write_dicom``): 8, 12 and 16 bit, MONOCHROME1 and MONOCHROME2, with and without a window,
uncompressed, RLE Lossless and JPEG Lossless (GDCM).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import ROOT, write_xray_folder

sys.path.insert(0, str(ROOT))
from benchmarks.kermany_to_dicom import check, convert, dicom_dataset, write_dicom  # noqa: E402
from pneumo_models.data import decode_image, load_dataset, load_split, resize_array  # noqa: E402
from pneumo_models.data.decode import read_gray  # noqa: E402
from pneumo_models.data.errors import UnreadableImage  # noqa: E402
from pneumo_models.data.patients import file_patient  # noqa: E402

import pydicom  # noqa: E402


def _ramp(bits: int, shape=(40, 56), seed=0) -> np.ndarray:
    """Pixels covering the whole ``bits`` range (both ends included), in random order."""
    top = 2**bits - 1
    values = np.linspace(0, top, shape[0] * shape[1]).round().astype(np.int64)
    values = np.random.default_rng(seed).permutation(values)
    return values.reshape(shape).astype(np.uint8 if bits <= 8 else np.uint16)


def _windowed(v: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1 (LINEAR) onto 0-255, written out independently of pydicom."""
    x = ((v.astype(np.float64) - (center - 0.5)) / (width - 1) + 0.5) * 255.0
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("syntax", ["explicit", "rle", "jpeg-lossless"])
@pytest.mark.parametrize("bits", [8, 12, 16])
@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
@pytest.mark.parametrize("window", [None, "window"])
def test_pixels_follow_bits_window_and_photometric(tmp_path, syntax, bits, photometric, window):
    raw = _ramp(bits)
    top = 2**bits - 1
    win = (0.4 * top, 0.5 * top) if window else None
    path = write_dicom(tmp_path / "x.dcm", raw, patient="p", syntax=syntax, bits_stored=bits,
                       photometric=photometric, window=win)
    if syntax != "explicit":
        assert pydicom.dcmread(path).file_meta.TransferSyntaxUID.is_compressed
    if win:
        expected = _windowed(raw, *win)
    else:  # the whole stored range onto 0-255
        expected = np.rint(raw.astype(np.float64) * 255.0 / top).astype(np.uint8)
    if photometric == "MONOCHROME1":
        expected = 255 - expected
    np.testing.assert_array_equal(read_gray(path), expected)
    np.testing.assert_array_equal(decode_image(path, 24), resize_array(expected, 24))
    np.testing.assert_array_equal(decode_image(path.read_bytes(), 24), resize_array(expected, 24))


def test_dicom_copy_of_a_png_gives_the_same_pixels(tmp_path):
    rng = np.random.default_rng(3)
    eight = rng.integers(0, 256, (50, 70), dtype=np.uint8)
    sixteen = rng.integers(0, 65536, (50, 70), dtype=np.uint16)
    Image.fromarray(eight).save(tmp_path / "a.png")
    Image.fromarray(sixteen).save(tmp_path / "b.png")  # mode I;16
    write_dicom(tmp_path / "a.dcm", eight, patient="p")
    write_dicom(tmp_path / "b.dcm", sixteen, patient="p", syntax="rle")
    for stem in ("a", "b"):
        for size in (16, 50):
            np.testing.assert_array_equal(decode_image(tmp_path / f"{stem}.dcm", size),
                                          decode_image(tmp_path / f"{stem}.png", size))


def test_modality_rescale_and_voi_lut_sequence(tmp_path):
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    raw = _ramp(12)
    # rescale only: the stored range goes through it, so the image is unchanged on 0-255
    write_dicom(tmp_path / "r.dcm", raw, patient="p", bits_stored=12, rescale=(2.0, -100.0))
    np.testing.assert_array_equal(read_gray(tmp_path / "r.dcm"), np.rint(raw * 255.0 / 4095).astype(np.uint8))
    # a VOI LUT (prefered to a window when both are present): output on the LUT's 8-bit range
    lut = (np.arange(4096) // 16).astype(np.uint16)[::-1]  # inverting LUT, 0..255
    ds = dicom_dataset(raw, patient="p", bits_stored=12, window=(100, 10))
    item = Dataset()
    item.add_new(0x00283002, "US", [4096, 0, 8])  # LUTDescriptor: entries, first value, bits
    item.add_new(0x00283006, "US", lut.tolist())  # LUTData
    ds.VOILUTSequence = Sequence([item])
    ds.save_as(tmp_path / "lut.dcm", enforce_file_format=True)
    np.testing.assert_array_equal(read_gray(tmp_path / "lut.dcm"), lut[raw].astype(np.uint8))


def _two_class_dicom_folder(root: Path, n_patients: int = 12, per_patient: int = 3) -> dict[str, str]:
    """Opaque file names; the patient is only in the header. Returns {relative path: PatientID}."""
    truth = {}
    rng = np.random.default_rng(0)
    k = 0
    for p in range(n_patients):
        cls = "PNEUMONIA" if p % 3 else "NORMAL"
        for _ in range(per_patient):
            rel = f"train/{cls}/{k:05d}.dcm" if k % 2 else f"train/{cls}/{k:05d}"  # no extension: preamble
            write_dicom(root / rel, rng.integers(0, 4096, (32, 32), dtype=np.uint16), patient=f"PAT{p:03d}",
                        bits_stored=12)
            truth[rel] = f"PAT{p:03d}"
            k += 1
    return truth


def test_patient_id_drives_the_split(tmp_path):
    truth = _two_class_dicom_folder(tmp_path / "d")
    ds = load_dataset(tmp_path / "d", 16, cache_dir=tmp_path / "cache", progress=False, val_fraction=0.25)
    assert len(ds.ids_train) + len(ds.ids_val) == len(truth)
    for ids, patients in ((ds.ids_train, ds.patients_train), (ds.ids_val, ds.patients_val)):
        assert [truth[i] for i in ids] == patients
    assert not set(ds.patients_train) & set(ds.patients_val)
    assert ds.summary.patients["train"] + ds.summary.patients["val"] == 12
    assert ds.summary.mixed_patients == [] and ds.summary.skipped == []
    assert file_patient(tmp_path / "d" / "train/NORMAL/00000") == "PAT000"


def test_mixed_dicom_and_jpeg_folder_and_a_patient_in_both_classes(tmp_path):
    root = write_xray_folder(tmp_path / "mix", {"train": 24})
    rng = np.random.default_rng(1)
    for i in range(6):
        write_dicom(root / "train" / "NORMAL" / f"h{i}.dcm", rng.integers(0, 256, (48, 48), dtype=np.uint8),
                    patient=f"H{i // 2}")
    write_dicom(root / "train" / "PNEUMONIA" / "h9.dcm", rng.integers(0, 256, (48, 48), dtype=np.uint8),
                patient="H0")  # H0 also has NORMAL images
    ds = load_dataset(root, 16, cache_dir=tmp_path / "cache", progress=False)
    ids = ds.ids_train + ds.ids_val
    assert len(ids) == 31 and sum(i.endswith(".dcm") for i in ids) == 7
    patients = dict(zip(ids, ds.patients_train + ds.patients_val))
    assert patients["train/NORMAL/h2.dcm"] == "H1" and patients["train/PNEUMONIA/person1_bacteria_2.png"] == "person1"
    assert ds.summary.mixed_patients == ["H0"]
    assert "1 patient(s) have images in both NORMAL and PNEUMONIA folders (H0)" in ds.summary.format()


def _bad_files(folder: Path) -> dict[str, str]:
    """One file per kind of bad DICOM; {name: expected start of the reason}."""
    from pydicom.uid import UID

    folder.mkdir(parents=True, exist_ok=True)
    img = np.arange(32 * 32, dtype=np.uint16).reshape(32, 32)
    ds = dicom_dataset(img, patient="BAD")
    del ds.PixelData
    ds.save_as(folder / "nopixels.dcm", enforce_file_format=True)
    sr = dicom_dataset(img, patient="BAD", sop_class="1.2.840.10008.5.1.4.1.1.88.11")  # Basic Text SR
    for key in ("PixelData", "Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation", "BitsAllocated",
                "BitsStored", "HighBit", "PixelRepresentation"):
        del sr[key]
    sr.Modality = "SR"
    sr.save_as(folder / "report", enforce_file_format=True)  # found by its preamble
    frames = dicom_dataset(np.zeros((32, 32), np.uint16), patient="BAD")
    frames.NumberOfFrames = 3
    frames.PixelData = np.zeros((3, 32, 32), np.uint16).tobytes()
    frames.save_as(folder / "frames.dcm", enforce_file_format=True)
    mpeg = dicom_dataset(img, patient="BAD")
    from pydicom.uid import RLELossless

    mpeg.compress(RLELossless)
    mpeg.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.100")  # MPEG2: video, no decoder
    mpeg.save_as(folder / "mpeg.dcm")
    data = write_dicom(folder / "whole.dcm", img, patient="BAD").read_bytes()
    (folder / "whole.dcm").unlink()
    (folder / "truncated.dcm").write_bytes(data[: len(data) - 700])
    (folder / "notdicom.dcm").write_bytes(b"this is a text file, not an image\n" * 8)
    return {"nopixels.dcm": "DICOM without pixel data",
            "report": "DICOM without pixel data: not an image (Basic Text SR Storage)",
            "frames.dcm": "multi-frame DICOM (3 frames)",
            "mpeg.dcm": "unsupported DICOM transfer syntax MPEG2",
            "truncated.dcm": "truncated DICOM",
            "notdicom.dcm": "not a valid DICOM file"}


def test_each_bad_dicom_is_skipped_counted_and_listed(tmp_path):
    root = write_xray_folder(tmp_path / "data", {"train": 24})
    expected = _bad_files(root / "train" / "PNEUMONIA")
    for name in expected:
        with pytest.raises(UnreadableImage) as info:
            decode_image(root / "train" / "PNEUMONIA" / name, 16)
        assert info.value.reason.startswith(expected[name]), (name, info.value.reason)
    ds = load_dataset(root, 16, cache_dir=tmp_path / "cache", progress=False)
    assert len(ds.ids_train) + len(ds.ids_val) == 24
    reasons = {Path(s["path"]).name: s["reason"] for s in ds.summary.skipped}
    assert set(reasons) == set(expected)
    for name, start in expected.items():
        assert reasons[name].startswith(start), (name, reasons[name])
    text = ds.summary.format()
    assert f"skipped {len(expected)} unreadable file(s)" in text
    for name in expected:
        assert f"{name}: " in text
    assert "1 multi-frame DICOM" in text and "1 truncated DICOM" in text


def test_predict_and_evaluate_read_dicom(tmp_path):
    from search.cli import _expand_files

    root = tmp_path / "h"
    write_dicom(root / "NORMAL" / "a.dcm", _ramp(8, (32, 32)), patient="A")
    write_dicom(root / "PNEUMONIA" / "b", _ramp(8, (32, 32), seed=1), patient="B")  # preamble only
    (root / "PNEUMONIA" / "notes.txt").write_text("not an image")
    found = _expand_files([root])
    assert [Path(f).name for f in found] == ["a.dcm", "b"]
    split = load_split(root, 16, "all", cache_dir=tmp_path / "cache", progress=False)
    assert split.patients == ["A", "B"] and list(split.y) == [0, 1]


def test_kermany_folder_and_its_dicom_copy_give_the_same_split_and_pixels(tmp_path):
    src = write_xray_folder(tmp_path / "kermany", {"train": 40, "val": 8, "test": 8}, size=40)
    rgb = src / "train" / "NORMAL" / "IM-0000-0001.png"  # some Kermany JPEGs are RGB
    Image.open(rgb).convert("RGB").save(rgb)
    result = convert(src, tmp_path / "dicom", progress=False)
    assert result["images"] == 56
    assert sorted(p.relative_to(tmp_path / "dicom").with_suffix("").as_posix()
                  for p in (tmp_path / "dicom").rglob("*.dcm")) == \
        sorted(p.relative_to(src).with_suffix("").as_posix() for p in src.rglob("*.png"))
    assert file_patient(tmp_path / "dicom" / "train" / "PNEUMONIA" / "person1_bacteria_2.dcm") == "person1"
    outcome = check(src, tmp_path / "dicom", 24, tmp_path / "cache")
    assert outcome["same_split"] and outcome["same_pixels"], json.dumps(outcome)
    # opaque names: the header alone carries the patient, and the split is still the same
    convert(src, tmp_path / "opaque", progress=False, opaque_names=True, syntax="rle")
    outcome = check(src, tmp_path / "opaque", 24, tmp_path / "cache2", opaque_names=True)
    assert outcome["same_split"] and outcome["same_pixels"], json.dumps(outcome)
    a = load_split(src, 24, "test", cache_dir=tmp_path / "c3", progress=False)
    b = load_split(tmp_path / "opaque", 24, "test", cache_dir=tmp_path / "c3", progress=False)
    assert a.patients == b.patients and np.array_equal(a.x, b.x)
