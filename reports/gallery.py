"""Error analysis: the X-rays the exported model got wrong, with where it looked: the data's test
split when the model was scored on one (its images decoded at the card's input size and matched
to ``test_predictions.csv`` by id), else the validation X-rays.

Missed pneumonia (false negatives) come first, most confident misses first; then false alarms
(false positives), most confident first. Each thumbnail is shown beside the same X-ray with a
heat map (``reports.saliency``) and its pneumonia probability underneath.
"""
from __future__ import annotations

import html
from typing import NamedTuple

import numpy as np
import pandas as pd

from ._blocks import HtmlBlock, NoticeBlock, Section
from ._imaging import overlay, png_data_uri
from .inputs import ReportInputs, missing_model_notice
from .saliency import GRADCAM, _get_saliency_info
from .scored_sets import called_positive

MAX_PER_KIND = 8
THUMBNAIL_PX = 160


class _GallerySource(NamedTuple):
    """Which X-rays the gallery draws from: the test split when there is one, else validation."""

    split: str                           # "test" or "validation"
    predictions: pd.DataFrame | None     # id, label, probability (+ patient)
    x: np.ndarray | None                 # the split's images, (N, S, S) uint8
    ids: list[str] | None                # their ids, matched to the predictions
    images_missing: str | None           # why the images are absent, in one sentence
    notes: list[str]                     # sentences worth saying (e.g. the test images changed)


def _get_gallery_source(inputs: ReportInputs) -> _GallerySource:
    model = inputs.model
    if model.test_predictions is not None:
        test = inputs.test_images
        notes = []
        expected = (model.test_block or {}).get("fingerprint")
        if test is not None and expected and test.fingerprint and test.fingerprint != expected:
            notes.append("The test images changed since the model was scored on them (fingerprint differs).")
        return _GallerySource("test", model.test_predictions, test.x if test is not None else None,
                              test.ids if test is not None else None,
                              None if test is not None else inputs.missing.get("test-images",
                                                                               "the test images could not be loaded."),
                              notes)
    images = inputs.images
    return _GallerySource("validation", model.predictions, images.x_val if images is not None else None,
                          images.ids_val if images is not None else None,
                          None if images is not None else inputs.missing.get("images",
                                                                              "the data set could not be loaded."),
                          [])


class _GalleryItem(NamedTuple):
    id: str
    kind: str                  # "FN" (missed pneumonia) or "FP" (false alarm)
    label: int
    probability: float
    row: int | None            # index into the split's images; None when the id is not there


class _GalleryInfo(NamedTuple):
    false_negatives: list[_GalleryItem]
    false_positives: list[_GalleryItem]
    n_false_negatives: int     # in all, before keeping the first MAX_PER_KIND
    n_false_positives: int
    threshold: float
    n_unmatched: int           # shown cases whose id is not among the loaded images


def _get_gallery_info(predictions: pd.DataFrame, threshold: float, ids_val: list[str] | None,
                      max_per_kind: int = MAX_PER_KIND) -> _GalleryInfo:
    y = predictions["label"].to_numpy(dtype=int)
    p = predictions["probability"].to_numpy(dtype=np.float64)
    ids = predictions["id"].astype(str).to_numpy()
    called = called_positive(p, threshold)
    fn_idx = np.flatnonzero((y == 1) & ~called)
    fp_idx = np.flatnonzero((y == 0) & called)
    fn_idx = fn_idx[np.argsort(p[fn_idx], kind="stable")]          # lowest probability first
    fp_idx = fp_idx[np.argsort(-p[fp_idx], kind="stable")]         # highest probability first
    where = {i: r for r, i in enumerate(ids_val)} if ids_val is not None else {}

    def items(idx: np.ndarray, kind: str) -> list[_GalleryItem]:
        return [_GalleryItem(str(ids[i]), kind, int(y[i]), float(p[i]), where.get(str(ids[i])))
                for i in idx[:max_per_kind]]

    fns, fps = items(fn_idx, "FN"), items(fp_idx, "FP")
    unmatched = sum(1 for it in fns + fps if it.row is None) if ids_val is not None else 0
    return _GalleryInfo(fns, fps, int(len(fn_idx)), int(len(fp_idx)), float(threshold), unmatched)


class _Thumb(NamedTuple):
    item: _GalleryItem
    image_uri: str | None
    heat_uri: str | None


def _get_thumbnails(info: _GalleryInfo, x: np.ndarray | None, model) -> tuple[list[_Thumb], str, str]:
    """(thumbnails, saliency method, note) for every gallery item; ``x``: the images rows index."""
    items = info.false_negatives + info.false_positives
    have = [it for it in items if it.row is not None and x is not None]
    heat: dict[str, np.ndarray] = {}
    method, note = "", ""
    if have and model is not None:
        sal = _get_saliency_info(model, np.stack([x[it.row] for it in have]))
        method, note = sal.method, sal.note
        heat = {it.id: m for it, m in zip(have, sal.maps)}
    thumbs = []
    for it in items:
        if it.row is None or x is None:
            thumbs.append(_Thumb(it, None, None))
            continue
        img = x[it.row]
        h = heat.get(it.id)
        thumbs.append(_Thumb(it, png_data_uri(img, size=THUMBNAIL_PX),
                             png_data_uri(overlay(img, h), size=THUMBNAIL_PX) if h is not None else None))
    return thumbs, method, note


def _draw_gallery(thumbs: list[_Thumb], kind: str) -> str:
    e = html.escape
    cards = []
    for t in thumbs:
        if t.item.kind != kind:
            continue
        pics = []
        if t.image_uri:
            pics.append(f'<img src="{t.image_uri}" alt="X-ray {e(t.item.id)}" width="{THUMBNAIL_PX}">')
        else:
            pics.append('<div class="noimg">image unavailable</div>')
        if t.heat_uri:
            pics.append(f'<img src="{t.heat_uri}" alt="Heat map for {e(t.item.id)}" width="{THUMBNAIL_PX}">')
        cards.append(
            f'<figure class="case" data-case="{kind}" data-id="{e(t.item.id)}" data-probability="{t.item.probability!r}">'
            f'<div class="pair">{"".join(pics)}</div>'
            f"<figcaption>Probability of pneumonia <strong>{t.item.probability:.3f}</strong>"
            f"<br><code>{e(t.item.id)}</code></figcaption></figure>")
    return f'<div class="gallery" data-gallery="{kind}">{"".join(cards)}</div>'


def build_section(inputs: ReportInputs) -> Section:
    title = "Error analysis"
    model = inputs.model
    if (notice := missing_model_notice(inputs, "The error gallery")) is not None:
        return Section("errors", title, [NoticeBlock("gallery", notice)])
    source = _get_gallery_source(inputs)
    if source.predictions is None:
        return Section("errors", title, [NoticeBlock("gallery", "The error gallery is missing: the model "
                                                     "folder has no validation predictions.")])
    info = _get_gallery_info(source.predictions, float(model.card["threshold"]), source.ids)
    blocks: list = [NoticeBlock(f"gallery-note-{i}", note, missing=False) for i, note in enumerate(source.notes)]
    if source.x is None:
        blocks.append(NoticeBlock("gallery-images", "X-ray images are missing from the gallery: "
                                  + source.images_missing))
    elif info.n_unmatched:
        blocks.append(NoticeBlock("gallery-unmatched", f"{info.n_unmatched} of the cases below are not in the "
                                  f"loaded {source.split} images (the data changed since the export?).",
                                  missing=False))
    thumbs, method, note = _get_thumbnails(info, source.x, model.keras_model)
    if note:
        blocks.append(NoticeBlock("saliency-fallback", note, missing=False))
    if source.x is not None and model.keras_model is None:
        blocks.append(NoticeBlock("saliency", "Heat maps are missing: the Keras model could not be loaded."))
    how = ""
    if method:
        how = (" The second picture of each pair colours where the model found evidence of pneumonia "
               f"({'Grad-CAM' if method == GRADCAM else method}; brighter = stronger).")
    for kind, words, n, shown in (
        ("FN", "Missed pneumonia (false negatives)", info.n_false_negatives, len(info.false_negatives)),
        ("FP", "False alarms (false positives)", info.n_false_positives, len(info.false_positives)),
    ):
        head = (f"<h3>{words}: {n}</h3><p class=muted>"
                + (f"Showing the {shown} most confident of {n}." if n > shown else
                   ("None at the exported threshold." if n == 0 else f"All {n} shown."))
                + (how if shown else "") + "</p>")
        blocks.append(HtmlBlock(f"gallery-{kind.lower()}", head + (_draw_gallery(thumbs, kind) if shown else "")))
    intro = (f"Validation X-rays the exported model got wrong at threshold {info.threshold:.3f}, as a radiologist "
             "would review them.")
    if source.split == "test":
        intro = (f"Test X-rays (never used to choose the model) the exported model got wrong at threshold "
                 f"{info.threshold:.3f}, as a radiologist would review them.")
    return Section("errors", title, blocks, intro=intro)
