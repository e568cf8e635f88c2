"""Tests of the data layer (pneumo_models.data): real files made with PIL in tmp_path, no mocks."""
from __future__ import annotations

import hashlib
import io
import json
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pneumo_models.data import (
    CLASS_NAMES,
    DataError,
    Dataset,
    DataSummary,
    SourceInfo,
    decode_count,
    decode_image,
    default_cache_dir,
    load_dataset,
    probe_source,
    resize_array,
)
from pneumo_models.data.decode import UnreadableImage
from pneumo_models.data.download import PNEUMONIAMNIST_MD5, ensure_pneumoniamnist, fetch
from pneumo_models.data.patients import patient_id
from pneumo_models.data.split import grouped_split
from pneumo_models.data.synthetic import generate_synthetic

RNG = np.random.default_rng(1234)


# ----------------------------------------------------------------------------- helpers
def _gray(h: int, w: int, seed: int = 0, pneumonia: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = 60 + 80 * np.sin(xx / 5.0 + seed) * np.cos(yy / 7.0) + rng.normal(0, 10, (h, w))
    if pneumonia:
        img[h // 4 : h // 2, w // 4 : w // 2] += 90
    return np.clip(img, 0, 255).astype(np.uint8)


def _write(path: Path, arr: np.ndarray, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format=fmt)
    return path


def make_folder(root: Path, n_normal: int = 8, n_pneu: int = 16, val: tuple[int, int] = (0, 0),
                test: tuple[int, int] = (0, 0), side: int = 40) -> Path:
    """Kermany-like tree; normal patients IM-NNNN (1-2 images), pneumonia personN (1-3 images)."""
    seed = 0
    for split, (nn, npn) in {"train": (n_normal, n_pneu), "val": val, "test": test}.items():
        for i in range(nn):
            pid, k = divmod(i, 2)
            name = f"IM-{1000 * (split != 'train') + pid:04d}-{k + 1:04d}.jpeg"
            _write(root / split / "NORMAL" / name, _gray(side, side, seed := seed + 1))
        for i in range(npn):
            pid, k = divmod(i, 3)
            name = f"person{1000 * (split != 'train') + pid}_bacteria_{i}.jpeg"
            _write(root / split / "PNEUMONIA" / name, _gray(side, side, seed := seed + 1, True))
    return root


def _err(fn, *args, **kw) -> str:
    with pytest.raises(DataError) as ei:
        fn(*args, **kw)
    msg = str(ei.value)
    assert "\n" not in msg and msg.strip() == msg and msg
    return msg


# ----------------------------------------------------------------------------- decode
@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "LA", "CMYK", "1"])
def test_decode_image_any_mode(tmp_path, mode):
    base = Image.fromarray(np.stack([_gray(30, 45, 1), _gray(30, 45, 2), _gray(30, 45, 3)], -1))
    img = base.convert(mode) if mode != "P" else base.quantize(64)
    path = tmp_path / ("x.jpeg" if mode == "CMYK" else "x.png")
    img.save(path)
    out = decode_image(path, 16)
    assert out.shape == (16, 16) and out.dtype == np.uint8
    with Image.open(path) as reread:  # same pixels through resize_array -> same output
        rgbish = reread.convert("RGBA" if mode in ("RGBA",) else ("RGB" if mode in ("P", "CMYK") else "L"))
        if mode == "LA":
            rgbish = reread.getchannel("L")
        ref = resize_array(np.asarray(rgbish), 16)
    np.testing.assert_array_equal(out, ref)


def test_decode_large_non_square_jpeg_and_fileobj(tmp_path):
    arr = np.stack([_gray(900, 1500, 5)] * 3, -1)
    path = _write(tmp_path / "big.JPEG", arr)
    out = decode_image(path, 64)
    assert out.shape == (64, 64) and out.dtype == np.uint8
    with open(path, "rb") as f:
        np.testing.assert_array_equal(decode_image(f, 64), out)
    np.testing.assert_array_equal(decode_image(path.read_bytes(), 64), out)
    # squash, no crop: a bright left third stays a bright left third
    arr2 = np.zeros((90, 300), np.uint8)
    arr2[:, :100] = 255
    sq = decode_image(_write(tmp_path / "bar.png", arr2), 30)
    assert sq[:, :9].min() > 240 and sq[:, 11:].max() < 15


def test_decode_16bit_png_scaling(tmp_path):
    for value, expected in [(65535, 255), (32768, 128), (1000, 4), (0, 0)]:
        arr = np.full((20, 30), value, np.uint16)
        path = tmp_path / f"v{value}.png"
        Image.fromarray(arr).save(path)
        with Image.open(path) as im:
            assert im.mode.startswith("I")
        out = decode_image(path, 8)
        assert out.dtype == np.uint8 and np.all(out == expected), (value, np.unique(out))
    grad = (np.arange(40 * 50, dtype=np.uint32).reshape(40, 50) * 32).astype(np.uint16)
    path = tmp_path / "grad.png"
    Image.fromarray(grad).save(path)
    np.testing.assert_array_equal(decode_image(path, 24), resize_array(grad, 24))


@pytest.mark.parametrize("shape", [(37, 50), (37, 50, 1), (37, 50, 3), (37, 50, 4)])
def test_resize_array_matches_decode_of_png(tmp_path, shape):
    arr = RNG.integers(0, 256, shape, dtype=np.uint8)
    to_save = arr[:, :, 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr
    path = _write(tmp_path / "a.png", to_save)
    out = resize_array(arr, 20)
    assert out.shape == (20, 20) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, decode_image(path, 20))


def test_resize_array_dtypes_and_errors():
    arr = RNG.integers(0, 256, (33, 21), dtype=np.uint8)
    np.testing.assert_array_equal(resize_array(arr / 255.0, 12), resize_array(arr, 12))
    np.testing.assert_array_equal(resize_array(arr.astype(np.float32), 12), resize_array(arr, 12))
    np.testing.assert_array_equal(resize_array(arr.astype(np.uint16) * 257, 12), resize_array(arr, 12))
    np.testing.assert_array_equal(resize_array(arr, 33)[:, :5].shape, (33, 5))
    same = RNG.integers(0, 256, (28, 28), dtype=np.uint8)
    np.testing.assert_array_equal(resize_array(same, 28), same)  # same size: identity
    assert "shape" in _err(resize_array, np.zeros((4, 4, 5), np.uint8), 8)
    assert "shape" in _err(resize_array, np.zeros((2, 4, 4, 3), np.uint8), 8)
    assert "0..255" in _err(resize_array, np.full((4, 4), 300, np.int32), 8)
    assert "size" in _err(resize_array, arr, 0)


def test_unreadable_files_raise(tmp_path):
    good = _write(tmp_path / "g.jpeg", _gray(200, 200, 3))
    data = good.read_bytes()
    (tmp_path / "t.jpeg").write_bytes(data[: len(data) // 2])
    (tmp_path / "z.jpeg").write_bytes(b"")
    (tmp_path / "n.png").write_bytes(b"this is not a png at all")
    before = decode_count()
    reasons = {}
    for name in ("t.jpeg", "z.jpeg", "n.png", "missing.png"):
        with pytest.raises(UnreadableImage) as ei:
            decode_image(tmp_path / name, 16)
        assert isinstance(ei.value, DataError) and "\n" not in str(ei.value) and name in str(ei.value)
        reasons[name] = ei.value.reason
    assert "truncated" in reasons["t.jpeg"]
    assert "empty" in reasons["z.jpeg"]
    assert "not a recognised image" in reasons["n.png"]
    assert "cannot open" in reasons["missing.png"]
    assert decode_count() == before + 4


# ----------------------------------------------------------------------------- patients
@pytest.mark.parametrize("name,expected", [
    ("person1000_bacteria_2931.jpeg", "person1000"),
    ("train/PNEUMONIA/person1_virus_6.jpeg", "person1"),
    ("person100_virus_184_2.jpeg", "person100"),
    ("IM-0115-0001.jpeg", "IM-0115"),
    ("NORMAL2-IM-1427-0001.jpeg", "IM-1427"),
    ("IM-0429-0001-0002.jpeg", "IM-0429"),
    ("scan_42.png", "scan_42"),
    ("/a/b/x.y.JPG", "x.y"),
])
def test_patient_ids(name, expected):
    assert patient_id(name) == expected


# ----------------------------------------------------------------------------- folders
def test_folder_with_broken_files(tmp_path):
    root = make_folder(tmp_path / "data", n_normal=10, n_pneu=20, val=(2, 2), test=(3, 3))
    good = (root / "train/NORMAL/IM-0000-0001.jpeg").read_bytes()
    (root / "train/NORMAL/IM-0099-0001.jpeg").write_bytes(good[: len(good) // 2])
    (root / "train/PNEUMONIA/person999_virus_1.jpeg").write_bytes(b"")
    (root / "train/PNEUMONIA/notes.txt").write_text("ignored")
    (root / "train/PNEUMONIA/.DS_Store").write_bytes(b"junk")
    before = decode_count()
    ds = load_dataset(root, 16, val_fraction=0.25, cache_dir=tmp_path / "cache", progress=False)
    assert decode_count() - before == 36  # 34 good + 2 broken; the 6 test images never decoded
    s = ds.summary
    assert len(s.skipped) == 2
    reasons = {Path(d["path"]).name: d["reason"] for d in s.skipped}
    assert "truncated" in reasons["IM-0099-0001.jpeg"] and "empty" in reasons["person999_virus_1.jpeg"]
    assert all(Path(d["path"]).is_absolute() for d in s.skipped)
    assert s.total("train") + s.total("val") == 34 == len(ds.y_train) + len(ds.y_val)
    assert s.counts["test"] == {"NORMAL": 3, "PNEUMONIA": 3}
    assert sum(s.counts[k]["NORMAL"] for k in ("train", "val")) == 12
    assert s.counts["val"]["NORMAL"] == int(np.sum(ds.y_val == 0))
    assert "source val had 4 images, merged" in s.val_strategy
    assert ds.x_train.shape == (len(ds.ids_train), 16, 16) and ds.x_train.dtype == np.uint8
    assert ds.y_train.dtype == np.uint8 and set(np.unique(ds.y_train)) == {0, 1}
    assert ds.class_names == CLASS_NAMES == ("NORMAL", "PNEUMONIA")
    assert ds.root == str(root.resolve()) and Path(ds.image_path(ds.ids_train[0])).is_file()
    assert ds.ids_train[0].startswith(("train/", "val/"))
    assert not set(ds.patients_train) & set(ds.patients_val)
    # labels follow the class folder
    for i, y in zip(ds.ids_train, ds.y_train):
        assert CLASS_NAMES[y] in i
    # pixels are the decode_image output
    k = 3
    np.testing.assert_array_equal(ds.x_train[k], decode_image(ds.image_path(ds.ids_train[k]), 16))
    # summary is JSON-able and round-trips
    d = json.loads(json.dumps(s.to_dict()))
    assert DataSummary.from_dict(d) == s
    text = s.format()
    assert "NORMAL" in text and "skipped 2" in text and "test" in text
    assert isinstance(ds, Dataset) and isinstance(ds.info, SourceInfo)


def test_probe_folder_layouts(tmp_path):
    flat = tmp_path / "flat"
    for i, (w, h) in enumerate([(40, 30), (50, 60), (100, 90)]):
        _write(flat / ("normal" if i == 0 else "Pneumonia") / f"img{i}.png", _gray(h, w, i))
    info = probe_source(flat)
    assert info.kind == "folder" and info.location == str(flat.resolve())
    assert info.resolution == 50  # median of min sides 30, 50, 90
    assert len(info.fingerprint) == 64
    ds = load_dataset(flat, 8, val_fraction=0.5, cache_dir=tmp_path / "c", progress=False)
    assert sorted(ds.ids_train + ds.ids_val) == ["Pneumonia/img1.png", "Pneumonia/img2.png", "normal/img0.png"]
    assert "source has no val split" in ds.summary.val_strategy


# ----------------------------------------------------------------------------- split
def test_grouped_split_properties():
    rng = np.random.default_rng(0)
    groups, labels = [], []
    for p in range(700):
        y = int(rng.random() < 0.74)
        for _ in range(int(rng.integers(1, 5))):
            groups.append(f"p{p}")
            labels.append(y)
    labels = np.asarray(labels)
    tr, va = grouped_split(labels, groups, 0.2, seed=0)
    assert len(tr) + len(va) == len(labels) and not set(tr) & set(va)
    g = np.asarray(groups)
    assert not set(g[tr]) & set(g[va])
    assert abs(len(va) / len(labels) - 0.2) < 0.03
    assert abs(labels[va].mean() - labels[tr].mean()) < 0.03
    tr2, va2 = grouped_split(labels, groups, 0.2, seed=0)
    np.testing.assert_array_equal(va, va2)
    _, va3 = grouped_split(labels, groups, 0.2, seed=1)
    assert not np.array_equal(va, va3)
    assert "patient" in _err(grouped_split, [0, 1, 0], ["a", "a", "b"], 0.2, 0)
    assert "val_fraction" in _err(grouped_split, labels, groups, 0.9, 0)


def test_synthetic_dataset_grouped_split(tmp_path):
    images, labels, patients = generate_synthetic(0)
    assert images.shape == (600, 64, 64) and images.dtype == np.uint8
    assert 0.68 < labels.mean() < 0.82
    again = generate_synthetic(0)
    np.testing.assert_array_equal(images, again[0])
    assert not np.array_equal(images, generate_synthetic(1)[0])
    per_patient = {p: patients.count(p) for p in set(patients)}
    assert set(per_patient.values()) <= {1, 2, 3} and max(per_patient.values()) > 1
    assert all(p.startswith("synthetic-") for p in patients)
    # pneumonia lungs are brighter (learnable signal)
    lungs = (slice(18, 46), slice(8, 56))
    assert images[labels == 1][:, lungs[0], lungs[1]].mean() > images[labels == 0][:, lungs[0], lungs[1]].mean() + 8

    a = load_dataset("synthetic", 32, seed=0, cache_dir=tmp_path, progress=False)
    b = load_dataset("synthetic", 32, seed=0, cache_dir=tmp_path, progress=False)
    c = load_dataset("synthetic", 32, seed=7, cache_dir=tmp_path, progress=False)
    assert a.info.kind == "synthetic" and a.info.resolution == 64 and a.root is None
    assert a.image_path(a.ids_train[0]) is None
    assert len(a.y_train) + len(a.y_val) == 600
    assert not set(a.patients_train) & set(a.patients_val)
    assert abs(len(a.y_val) / 600 - 0.2) < 0.04
    assert abs(a.y_val.mean() - a.y_train.mean()) < 0.06
    assert a.ids_val == b.ids_val and a.ids_val != c.ids_val
    assert probe_source("synthetic").fingerprint == a.info.fingerprint


# ----------------------------------------------------------------------------- cache
def test_cache_reuse_and_fingerprint(tmp_path):
    root = make_folder(tmp_path / "d", n_normal=6, n_pneu=12)
    cache = tmp_path / "cache"
    before = decode_count()
    a = load_dataset(root, 24, val_fraction=0.25, cache_dir=cache, progress=False)
    assert decode_count() - before == 18
    mid = decode_count()
    b = load_dataset(root, 24, val_fraction=0.25, cache_dir=cache, progress=False)
    assert decode_count() == mid  # decoded nothing
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.x_val, b.x_val)
    assert a.ids_train == b.ids_train and a.info == b.info
    entries = list((cache / "decoded").iterdir())
    assert len(entries) == 1
    assert np.load(entries[0] / "images.npy", allow_pickle=False).shape == (18, 24, 24)
    assert json.loads((entries[0] / "index.json").read_text())["input_size"] == 24
    # another size is another entry
    load_dataset(root, 16, val_fraction=0.25, cache_dir=cache, progress=False)
    assert decode_count() == mid + 18
    # changing one file's bytes changes the fingerprint and triggers a rebuild
    fp = probe_source(root).fingerprint
    _write(root / "train/NORMAL/IM-0000-0001.jpeg", _gray(40, 40, 99))
    assert probe_source(root).fingerprint != fp
    c = load_dataset(root, 24, val_fraction=0.25, cache_dir=cache, progress=False)
    assert decode_count() == mid + 36
    assert c.info.fingerprint != a.info.fingerprint
    # a corrupted cache file is rebuilt, not trusted
    entry = next(e for e in (cache / "decoded").iterdir() if c.info.fingerprint[:32] in e.name and e.name.endswith("24px-v1"))
    (entry / "images.npy").write_bytes(b"garbage")
    d = load_dataset(root, 24, val_fraction=0.25, cache_dir=cache, progress=False)
    assert decode_count() == mid + 54
    np.testing.assert_array_equal(c.x_train, d.x_train)


def test_default_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("PNEUMO_SEARCH_CACHE", str(tmp_path / "x"))
    assert default_cache_dir() == tmp_path / "x"
    monkeypatch.delenv("PNEUMO_SEARCH_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "pneumo-search"


def _load_worker(root: str, cache: str, barrier, queue) -> None:
    barrier.wait(timeout=60)
    ds = load_dataset(root, 32, val_fraction=0.25, cache_dir=cache, progress=False)
    digest = hashlib.sha256(np.ascontiguousarray(ds.x_train).tobytes() + np.ascontiguousarray(ds.x_val).tobytes()).hexdigest()
    queue.put((decode_count(), digest, ds.ids_val))


def test_two_processes_build_same_cache(tmp_path):
    root = make_folder(tmp_path / "d", n_normal=30, n_pneu=50, side=96)
    cache = tmp_path / "cache"
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_load_worker, args=(str(root), str(cache), barrier, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    try:
        results = [queue.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(timeout=60)
            assert p.exitcode == 0
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
    (c1, d1, v1), (c2, d2, v2) = results
    assert d1 == d2 and v1 == v2
    assert c1 + c2 == 80  # one decode pass in total: the second process reused the first one's cache
    entry = next((cache / "decoded").iterdir())
    assert np.load(entry / "images.npy", mmap_mode="r", allow_pickle=False).shape == (80, 32, 32)
    assert not [p for p in entry.iterdir() if p.name.endswith(".tmp")]


# ----------------------------------------------------------------------------- npz
def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def test_npz_generated_64px_without_val(tmp_path):
    n = 120
    labels = (np.arange(n) % 4 != 0).astype(np.uint8).reshape(n, 1)
    images = np.stack([_gray(64, 64, i, bool(labels[i, 0])) for i in range(n)])
    path = _npz(tmp_path / "m64.npz", train_images=images, train_labels=labels,
                test_images=images[:10], test_labels=labels[:10])
    info = probe_source(path)
    assert (info.kind, info.resolution) == ("npz", 64)
    assert info.fingerprint == hashlib.sha256(path.read_bytes()).hexdigest()
    ds = load_dataset(path, 32, cache_dir=tmp_path / "c", progress=False)
    assert ds.x_train.shape[1:] == (32, 32) and len(ds.y_train) + len(ds.y_val) == n
    assert abs(len(ds.y_val) - n * 0.2) <= 3
    assert ds.ids_train[0].startswith("train/") and ds.patients_train == ds.ids_train
    k = int(ds.ids_train[5].split("/")[1])
    np.testing.assert_array_equal(ds.x_train[5], resize_array(images[k], 32))
    assert ds.summary.counts["test"] == {"NORMAL": 3, "PNEUMONIA": 7}
    assert "no val split" in ds.summary.val_strategy and ds.root is None
    # channel-last images (N, H, W, 3) and (N, H, W, 1) load too
    rgb = np.repeat(images[..., None], 3, axis=-1)
    p3 = _npz(tmp_path / "rgb.npz", train_images=rgb, train_labels=labels[:, 0])
    ds3 = load_dataset(p3, 32, cache_dir=tmp_path / "c", progress=False)
    np.testing.assert_array_equal(ds3.x_train, ds.x_train)
    p1 = _npz(tmp_path / "c1.npz", train_images=images[..., None], train_labels=labels)
    assert load_dataset(p1, 16, cache_dir=tmp_path / "c", progress=False).x_val.shape[1:] == (16, 16)


def test_npz_errors(tmp_path):
    imgs = np.zeros((10, 28, 28), np.uint8)
    labs = np.array([0, 1] * 5, np.uint8)
    p = _npz(tmp_path / "a.npz", train_images=imgs, labels=labs)
    msg = _err(probe_source, p)
    assert "'train_labels'" in msg and "a.npz" in msg
    p = _npz(tmp_path / "b.npz", x=imgs)
    assert "'train_images'" in _err(probe_source, p)
    p = _npz(tmp_path / "c.npz", train_images=np.zeros((10, 28), np.uint8), train_labels=labs)
    msg = _err(probe_source, p)
    assert "'train_images'" in msg and "(10, 28)" in msg
    p = _npz(tmp_path / "d.npz", train_images=imgs, train_labels=np.zeros((9,), np.uint8))
    msg = _err(probe_source, p)
    assert "'train_labels'" in msg and "(9,)" in msg
    p = _npz(tmp_path / "e.npz", train_images=imgs, train_labels=labs * 2)
    assert "outside {0, 1}" in _err(probe_source, p)
    p = _npz(tmp_path / "f.npz", train_images=imgs, train_labels=labs, val_images=imgs)
    assert "'val_labels'" in _err(probe_source, p)
    (tmp_path / "g.npz").write_bytes(b"not a zip")
    assert "not a valid .npz" in _err(probe_source, tmp_path / "g.npz")
    p = _npz(tmp_path / "h.npz", train_images=imgs, train_labels=labs)
    assert "larger than the source images (28 px)" in _err(load_dataset, p, 64, cache_dir=tmp_path, progress=False)


# ----------------------------------------------------------------------------- DataError cases
def test_data_error_messages(tmp_path):
    cache = tmp_path / "cache"
    assert "data path does not exist: " in _err(load_dataset, tmp_path / "nope", 32, cache_dir=cache)
    odd = tmp_path / "odd"
    (odd / "cats").mkdir(parents=True)
    (odd / "dogs").mkdir()
    msg = _err(probe_source, odd)
    assert "NORMAL and PNEUMONIA" in msg and "cats, dogs" in msg
    half = tmp_path / "half"
    _write(half / "train" / "NORMAL" / "a.png", _gray(20, 20))
    (half / "train" / "other").mkdir()
    msg = _err(probe_source, half)
    assert "no PNEUMONIA class folder" in msg and "NORMAL, other" in msg
    nosplit = tmp_path / "nosplit"
    _write(nosplit / "test" / "NORMAL" / "a.png", _gray(20, 20))
    assert "no train folder" in _err(probe_source, nosplit)
    empty = tmp_path / "empty"
    _write(empty / "NORMAL" / "a.png", _gray(20, 20))
    (empty / "PNEUMONIA").mkdir()
    (empty / "PNEUMONIA" / "readme.txt").write_text("x")
    msg = _err(probe_source, empty)
    assert "PNEUMONIA" in msg and "has no images" in msg
    zeros = tmp_path / "zeros"
    for c in CLASS_NAMES:
        (zeros / c).mkdir(parents=True)
        (zeros / c / "x.jpeg").write_bytes(b"")
    msg = _err(load_dataset, zeros, 16, cache_dir=cache, progress=False)
    assert msg.startswith("no readable images in ") and "2 files skipped" in msg and "empty file" in msg
    trunc = tmp_path / "trunc"
    data = _write(tmp_path / "ok.jpeg", _gray(100, 100)).read_bytes()
    for c in CLASS_NAMES:
        (trunc / c).mkdir(parents=True)
        (trunc / c / "x.jpeg").write_bytes(data[: len(data) // 2])
    msg = _err(load_dataset, trunc, 16, cache_dir=cache, progress=False)
    assert msg.startswith("no readable images in ") and "truncated" in msg
    onecls = tmp_path / "onecls"
    _write(onecls / "NORMAL" / "a.png", _gray(20, 20))
    (onecls / "PNEUMONIA").mkdir()
    (onecls / "PNEUMONIA" / "b.png").write_bytes(b"")
    assert "no readable PNEUMONIA images" in _err(load_dataset, onecls, 16, cache_dir=cache, progress=False)
    small = make_folder(tmp_path / "small", 4, 6, side=20)
    assert "larger than the source images (20 px)" in _err(load_dataset, small, 32, cache_dir=cache)
    assert "val_fraction" in _err(load_dataset, small, 16, val_fraction=0, cache_dir=cache)
    txt = tmp_path / "x.txt"
    txt.write_text("x")
    assert "not a data folder or .npz file" in _err(probe_source, txt)
    assert "synthetic:SEED" in _err(probe_source, "synthetic:abc")


def test_download_paths_without_network(tmp_path):
    msg = _err(load_dataset, None, 28, cache_dir=tmp_path / "c", download=False, progress=False)
    assert msg.startswith("cannot download PneumoniaMNIST (") and "--data synthetic" in msg
    src = _npz(tmp_path / "local.npz", train_images=np.zeros((4, 28, 28), np.uint8),
               train_labels=np.array([0, 1, 0, 1]))
    url = src.resolve().as_uri()
    dest = tmp_path / "dl" / "pneumoniamnist.npz"
    msg = _err(fetch, url, dest, md5=PNEUMONIAMNIST_MD5, progress=False)
    assert "MD5 mismatch" in msg and not dest.exists() and not list(dest.parent.iterdir())
    assert "cannot download PneumoniaMNIST (" in _err(fetch, url + ".missing", dest, md5="0", progress=False)
    good = hashlib.md5(src.read_bytes()).hexdigest()
    assert fetch(url, dest, md5=good, progress=False) == dest and dest.read_bytes() == src.read_bytes()
    # the default source is the cached download: no network once it is there
    cache = tmp_path / "c2"
    (cache / "downloads").mkdir(parents=True)
    (cache / "downloads" / "pneumoniamnist.npz").write_bytes(src.read_bytes())
    assert ensure_pneumoniamnist(cache, download=False) == cache / "downloads" / "pneumoniamnist.npz"
    assert probe_source(None, cache_dir=cache, download=False).kind == "npz"


# ----------------------------------------------------------------------------- real data
@pytest.mark.realdata
def test_real_pneumoniamnist(shared_data, tmp_path):
    path = shared_data / "pneumoniamnist.npz"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    ds = load_dataset(path, 28, cache_dir=tmp_path, progress=False)
    assert ds.x_train.shape == (4708, 28, 28) and ds.x_val.shape == (524, 28, 28)
    assert ds.summary.val_strategy.startswith("source val split")
    assert ds.summary.counts == {"train": {"NORMAL": 1214, "PNEUMONIA": 3494}, "val": {"NORMAL": 135, "PNEUMONIA": 389}}
    with np.load(path) as z:
        np.testing.assert_array_equal(ds.x_train, z["train_images"])
        np.testing.assert_array_equal(ds.y_val, z["val_labels"][:, 0])
    assert ds.ids_train[17] == "train/17"
    assert "28 px" in _err(load_dataset, path, 64, cache_dir=tmp_path, progress=False)


@pytest.mark.realdata
def test_real_kermany_folder(shared_data, tmp_path):
    root = shared_data / "chest_xray"
    if not root.is_dir():
        pytest.skip(f"{root} is absent")
    t0 = time.perf_counter()
    ds = load_dataset(root, 64, val_fraction=0.2, seed=0, cache_dir=tmp_path, progress=False)
    assert time.perf_counter() - t0 < 30
    s = ds.summary
    assert ds.info.resolution == 224 and s.skipped == []
    assert s.total("train") + s.total("val") == 5232 == len(ds.y_train) + len(ds.y_val)
    assert sum(s.counts[k]["NORMAL"] for k in ("train", "val")) == 1349
    assert abs(len(ds.y_val) / 5232 - 0.2) < 0.02
    assert abs(ds.y_val.mean() - ds.y_train.mean()) < 0.02
    assert not set(ds.patients_train) & set(ds.patients_val)
    assert s.patients["train"] + s.patients["val"] == len(set(ds.patients_train) | set(ds.patients_val))
    assert "source val had 16 images, merged" in s.val_strategy
    assert ds.x_train.shape[1:] == (64, 64) and ds.x_train.dtype == np.uint8
    i = ds.ids_val.index(next(x for x in ds.ids_val if x.startswith("train/NORMAL/")))
    np.testing.assert_array_equal(ds.x_val[i], decode_image(ds.image_path(ds.ids_val[i]), 64))


@pytest.mark.realdata
def test_real_kermany_original_sizes(shared_data, tmp_path):
    root = shared_data / "kermany_val_original"
    if not root.is_dir():
        pytest.skip(f"{root} is absent")
    info = probe_source(root)
    assert info.kind == "folder" and 600 < info.resolution < 1500
    ds = load_dataset(root, 64, val_fraction=0.25, cache_dir=tmp_path, progress=False)
    assert len(ds.y_train) + len(ds.y_val) == 16 and ds.summary.skipped == []
    assert not set(ds.patients_train) & set(ds.patients_val)
    f = root / "NORMAL" / "NORMAL2-IM-1427-0001.jpeg"
    with Image.open(f) as im:
        big = np.asarray(im)
    np.testing.assert_array_equal(decode_image(f, 64), resize_array(big, 64))
    assert decode_image(io.BytesIO(f.read_bytes()), 224).shape == (224, 224)
