"""Lung framing (``--framing lungs``): every film cropped to its lung fields before the resize, in
training, in the test scoring and in every prediction of the exported model."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import TINY, run_cli

from pneumo_models.data import DataError, decode_image, load_dataset, load_split, lung_box, resize_array
from pneumo_models.data.framing import FRAMING_VERSION

LUNGS = ((0.47, 0.33), (0.47, 0.67))  # lung centres (row, col) as fractions of the film
LUNG_RADII = (0.23, 0.11)


def film(rows: int = 96, cols: int = 96, *, pneumonia: bool = False, seed: int = 0) -> np.ndarray:
    """A chest-like film: dark air around a bright body, two dark lungs either side of a bright spine."""
    rng = np.random.default_rng(seed)
    r, c = np.mgrid[0:rows, 0:cols] / np.array([rows, cols])[:, None, None]
    img = np.full((rows, cols), 12.0)
    img[((r - 0.52) / 0.48) ** 2 + ((c - 0.5) / 0.42) ** 2 < 1] = 160
    for cr, cc in LUNGS:
        img[((r - cr) / LUNG_RADII[0]) ** 2 + ((c - cc) / LUNG_RADII[1]) ** 2 < 1] = 70
    img[(np.abs(c - 0.5) < 0.025) & (r > 0.1) & (r < 0.95)] = 210
    if pneumonia:
        img[((r - 0.55) / 0.07) ** 2 + ((c - 0.3) / 0.05) ** 2 < 1] = 150
    return np.clip(img + rng.normal(0, 5, img.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("shape", [(96, 96), (300, 240), (128, 200)])
def test_lung_box_bounds_both_lungs_and_crops_the_rest(shape):
    rows, cols = shape
    box = lung_box(film(rows, cols))
    assert box is not None
    r0, r1, c0, c1 = box
    top, bottom = (LUNGS[0][0] - LUNG_RADII[0]) * rows, (LUNGS[0][0] + LUNG_RADII[0]) * rows
    left, right = (LUNGS[0][1] - LUNG_RADII[1]) * cols, (LUNGS[1][1] + LUNG_RADII[1]) * cols
    slack = 0.04
    assert r0 <= top + slack * rows and r1 >= bottom - slack * rows      # both lungs inside, top to bottom
    assert c0 <= left + slack * cols and c1 >= right - slack * cols      # and side to side
    assert (r1 - r0) * (c1 - c0) < 0.75 * rows * cols                    # the air and the abdomen are cropped
    assert r0 > 0.1 * rows and r1 < 0.9 * rows


def test_a_film_without_lungs_is_kept_whole():
    blank = np.full((80, 80), 120, np.uint8)
    assert lung_box(blank) is None
    np.testing.assert_array_equal(resize_array(blank, 32, "lungs"), resize_array(blank, 32))


def test_framed_resize_is_the_crop_then_the_usual_resize(tmp_path):
    img = film(200, 160, seed=3)
    r0, r1, c0, c1 = lung_box(img)
    framed = resize_array(img, 48, "lungs")
    np.testing.assert_array_equal(framed, resize_array(img[r0:r1, c0:c1], 48))
    assert not np.array_equal(framed, resize_array(img, 48))
    path = tmp_path / "f.png"
    Image.fromarray(np.stack([img] * 3, -1)).save(path)              # an RGB file: grey first, then framing
    np.testing.assert_array_equal(decode_image(path, 48, "lungs"), framed)
    with pytest.raises(DataError, match="unknown framing 'tight'"):
        resize_array(img, 48, "tight")


def write_films(root: Path, splits: dict[str, int], *, size: int = 96) -> Path:
    """A Kermany-like folder of chest-like films, healthy ones framed looser than pneumonia ones."""
    offset = 0
    for k, (split, n) in enumerate(splits.items()):
        for i in range(n):
            label = i % 4 != 0
            img = film(size, size, pneumonia=label, seed=1000 * k + i)
            if not label:  # healthy films: more air and abdomen around the chest (the framing shortcut)
                img = np.asarray(Image.fromarray(img).resize((size - 16, size - 16)))
                img = np.pad(img, 8, constant_values=12)
            patient, shot = offset + i // 2, i % 2 + 1
            name = f"person{patient}_bacteria_{shot}.png" if label else f"IM-{patient:04d}-{shot:04d}.png"
            path = root / split / ("PNEUMONIA" if label else "NORMAL") / name
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(path)
        offset += n
    return root


def test_cache_holds_framed_and_full_films_apart(tmp_path):
    data = write_films(tmp_path / "xr", {"train": 40, "test": 8})
    cache = tmp_path / "cache"
    full = load_dataset(data, 32, cache_dir=cache, progress=False, min_val_images=4)
    framed = load_dataset(data, 32, cache_dir=cache, progress=False, min_val_images=4, framing="lungs")
    assert framed.framing == "lungs" and full.framing == "full" and framed.ids_train == full.ids_train
    for i in (0, 1, 5):
        path = Path(data) / framed.ids_train[i]
        np.testing.assert_array_equal(framed.x_train[i], decode_image(path, 32, "lungs"))
        np.testing.assert_array_equal(full.x_train[i], decode_image(path, 32))
    assert not np.array_equal(np.asarray(framed.x_train), np.asarray(full.x_train))
    test = load_split(data, 32, "test", cache_dir=cache, progress=False, framing="lungs")
    assert test.framing == "lungs"
    np.testing.assert_array_equal(test.x[0], decode_image(Path(data) / test.ids[0], 32, "lungs"))
    entries = sorted(p.name for p in (cache / "decoded").iterdir())
    framed_key = f"-lungs{FRAMING_VERSION}"  # crops made by another version of the box are never reused
    assert len(entries) == 3 and sum(name.endswith(framed_key) for name in entries) == 1
    assert sum(name.endswith(f"{framed_key}-test") for name in entries) == 1


QUICK = ["--trials", "2", "--max-epochs", "2", "--ensemble", "1", "--input-sizes", "64", "--no-progress",
         "--no-report", *TINY]


@pytest.fixture(scope="module")
def framed_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("framing")
    data = write_films(base / "xr", {"train": 160, "test": 40})
    out = base / "out"
    proc = run_cli("run", "--data", str(data), "--study", "lungs", "--out", str(out), "--framing", "lungs", *QUICK,
                   cache_dir=base / "cache")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return base, data, out


def test_exported_model_frames_what_it_predicts(framed_run):
    base, data, out = framed_run
    from pneumo_models import load_model
    from pneumo_models.training import predict_proba

    card = json.loads((out / "best_model" / "model_card.json").read_text())
    assert card["preprocessing"]["framing"] == "lungs" and card["data"]["framing"] == "lungs"
    model = load_model(out / "best_model")
    assert model.framing == "lungs"
    files = sorted((Path(data) / "test" / "NORMAL").glob("*.png"))[:3]
    got = [r.probability for r in model.predict_files(files)]
    framed = np.stack([decode_image(f, 64, "lungs") for f in files])
    np.testing.assert_allclose(got, predict_proba(model.keras_model, framed), atol=1e-6)
    assert not np.array_equal(framed, np.stack([decode_image(f, 64) for f in files]))
    raw = [np.asarray(Image.open(f)) for f in files]                    # whole films through the API: same
    np.testing.assert_allclose(model.predict_proba(raw), got, atol=1e-6)
    # the test split was scored on framed films, once, by the exported model
    rows = list(csv.DictReader((out / "best_model" / "test_predictions.csv").open()))
    test = load_split(data, 64, "test", cache_dir=base / "cache", progress=False, framing="lungs")
    assert [r["id"] for r in rows] == test.ids
    np.testing.assert_allclose([float(r["probability"]) for r in rows], predict_proba(model.keras_model, test.x),
                               atol=1e-6)
    assert card["metrics"]["test"]["framing"] == "lungs"
    assert card["preprocessing"]["framing_version"] == FRAMING_VERSION


def test_a_model_cropped_by_another_box_version_loads_with_a_warning(framed_run, tmp_path):
    import shutil
    import warnings

    from pneumo_models import load_model
    from pneumo_models.card import seal

    base, data, out = framed_run
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # today's version: no warning
        load_model(out / "best_model")
    older = tmp_path / "older"
    shutil.copytree(out / "best_model", older)
    card = json.loads((older / "model_card.json").read_text())
    card["preprocessing"]["framing_version"] = FRAMING_VERSION - 1
    (older / "model_card.json").write_text(json.dumps(seal(card)))
    with pytest.warns(UserWarning, match=f"box version {FRAMING_VERSION - 1}; this pneumo-search crops with version "
                                         f"{FRAMING_VERSION}"):
        model = load_model(older)
    files = sorted((Path(data) / "test" / "NORMAL").glob("*.png"))[:2]
    assert all(r.probability is not None for r in model.predict_files(files))  # it still predicts
    # on the command line the same warning is one line, like the tool's other messages
    proc = run_cli("evaluate", str(older), "--data", str(data), "--no-progress", cache_dir=base / "cache")
    assert proc.returncode == 0, proc.stderr[-2000:]
    said = [line for line in proc.stderr.splitlines() if f"box version {FRAMING_VERSION - 1}" in line]
    assert len(said) == 1 and said[0].startswith("warning: ") and "UserWarning" not in proc.stderr
    assert json.loads((older / "evaluation-xr-test.json").read_text())["evaluation"]["framing"] == "lungs"


def test_evaluate_uses_the_models_framing_and_resume_refuses_another(framed_run):
    base, data, out = framed_run
    proc = run_cli("evaluate", str(out / "best_model"), "--data", str(data), "--no-progress", cache_dir=base / "cache")
    assert proc.returncode == 0, proc.stderr[-2000:]
    payload = json.loads((out / "best_model" / "evaluation-xr-test.json").read_text())
    card = json.loads((out / "best_model" / "model_card.json").read_text())
    assert payload["evaluation"]["framing"] == "lungs"
    assert payload["evaluation"]["at_threshold"] == card["metrics"]["test"]["at_threshold"]
    again = run_cli("run", "--data", str(data), "--study", "lungs", "--out", str(out), "--framing", "full", *QUICK,
                    cache_dir=base / "cache")
    assert again.returncode == 2
    lines = again.stderr.strip().splitlines()
    assert len(lines) == 1 and "framing 'lungs' (now 'full')" in lines[0] and "--framing lungs resumes it" in lines[0] and "Traceback" not in again.stderr


def test_lung_framing_turns_reframing_off_unless_set():
    from pneumo_models.data.framing import resolve_framing
    from search import RunSettings

    def reframe(**kw):  # as a run builds it: the framing settled for 224 px films of a folder (StudyData.framing)
        settings = RunSettings(data="synthetic", study="s", space="default", **kw)
        space = settings.build_space(224, resolve_framing(settings.framing, 224, "folder"))
        return {d.name: getattr(d, "value", None) for d in space.dimensions}["reframe"]

    assert reframe(framing="full") == 0.3
    assert reframe(framing="lungs") == 0.0
    assert reframe(framing="lungs", overrides={"reframe": 0.2}) == 0.2
    assert reframe() == 0.0                                       # the default (auto): films of 224 px are framed
    assert reframe(framing="auto") == 0.0


def test_auto_frames_full_resolution_films_only(tmp_path):
    from search.data_access import StudyData

    assert StudyData("synthetic", val_fraction=0.2, seed=0, framing="auto").framing == "full"      # 64 px
    big = write_films(tmp_path / "big", {"train": 8}, size=160)
    small = write_films(tmp_path / "small", {"train": 8}, size=96)
    assert StudyData(str(big), val_fraction=0.2, seed=0, framing="auto").framing == "lungs"
    assert StudyData(str(small), val_fraction=0.2, seed=0, framing="auto").framing == "full"
    assert StudyData(str(big), val_fraction=0.2, seed=0, framing="full").framing == "full"


def test_centre_framing_is_medmnists_central_square():
    from pneumo_models.data.framing import frame, resolve_framing

    wide = np.arange(7 * 12, dtype=np.uint8).reshape(7, 12)
    np.testing.assert_array_equal(frame(wide, "centre"), wide[:, 2:9])      # side 7, the odd margin after
    np.testing.assert_array_equal(frame(wide.T, "centre"), wide.T[2:9, :])
    square = film(64, 64)
    assert frame(square, "centre") is square                                 # a MedMNIST array: unchanged
    np.testing.assert_array_equal(resize_array(wide, 5, "centre"), resize_array(wide[:, 2:9], 5))
    # auto: lungs from 128 px; below, a MedMNIST .npz's central square, a folder's whole films
    assert resolve_framing("auto", 28, "npz") == "centre" and resolve_framing("auto", 224, "npz") == "lungs"
    assert resolve_framing("auto", 96, "folder") == "full" and resolve_framing("full", 28, "npz") == "full"
    with pytest.raises(DataError, match="unknown framing 'center'"):
        frame(wide, "center")
