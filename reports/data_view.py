"""Data section: how many X-rays of each kind each split holds, and what an average normal and an
average pneumonia X-ray look like (mean and standard-deviation images, and their difference)."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ._blocks import FigureBlock, NoticeBlock, Section
from ._imaging import resize_map
from .inputs import ImageData, ReportInputs

MAX_IMAGES_PER_CLASS = 2000
MAX_DISPLAY_PX = 128
_CLASS_COLORS = {"NORMAL": "#2ca02c", "PNEUMONIA": "#d62728"}
_SPLIT_WORDS = {"train": "Training", "val": "Validation", "test": "Test"}


class _ClassBalanceInfo(NamedTuple):
    splits: list[str]
    class_names: list[str]
    counts: dict[str, dict[str, int]]      # split -> class -> X-rays


def _get_class_balance_info(data_summary: dict | None, images: ImageData | None) -> _ClassBalanceInfo | None:
    counts: dict[str, dict[str, int]] = {}
    if isinstance(data_summary, dict) and data_summary.get("counts"):
        counts = {str(s): {str(c): int(n) for c, n in v.items()} for s, v in data_summary["counts"].items()}
    elif images is not None:
        for split, y in (("train", images.y_train), ("val", images.y_val)):
            counts[split] = {name: int(np.sum(np.asarray(y) == k)) for k, name in enumerate(images.class_names)}
    if not counts:
        return None
    class_names: list[str] = []
    for per in counts.values():
        class_names += [c for c in per if c not in class_names]
    return _ClassBalanceInfo(list(counts), class_names, counts)


def plot_class_balance(info: _ClassBalanceInfo) -> go.Figure:
    fig = go.Figure()
    x = [_SPLIT_WORDS.get(s, s) for s in info.splits]
    for c in info.class_names:
        values = [info.counts[s].get(c, 0) for s in info.splits]
        totals = [max(1, sum(info.counts[s].values())) for s in info.splits]
        fig.add_trace(go.Bar(x=x, y=values, name=c.capitalize(), marker_color=_CLASS_COLORS.get(c),
                             text=[f"{v:,} ({v / t:.0%})" for v, t in zip(values, totals)], textposition="auto",
                             hovertemplate="%{x}: %{y:,} " + c.lower() + " X-rays<extra></extra>"))
    fig.update_layout(barmode="group", title_text="How many normal and pneumonia X-rays each split holds",
                      xaxis_title="Data split", yaxis_title="Number of X-rays", template="plotly_white",
                      margin=dict(l=70, r=30, t=60, b=60))
    return fig


class _ClassImagesInfo(NamedTuple):
    class_names: list[str]
    means: list[np.ndarray]           # per class, (s, s) float32 in 0-255 (display resolution)
    stds: list[np.ndarray]
    mean_difference: np.ndarray       # last class minus first (pneumonia - normal)
    std_difference: np.ndarray
    n_images: list[int]               # images averaged per class
    n_available: list[int]            # images of that class in the split
    split: str
    input_size: int


def _mean_std(x: np.ndarray, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    total = np.zeros(x.shape[1:], dtype=np.float64)
    total_sq = np.zeros(x.shape[1:], dtype=np.float64)
    for start in range(0, len(x), chunk):
        block = x[start:start + chunk].astype(np.float64)
        total += block.sum(axis=0)
        total_sq += np.square(block).sum(axis=0)
    n = max(1, len(x))
    mean = total / n
    std = np.sqrt(np.maximum(total_sq / n - np.square(mean), 0.0))
    return mean, std


def _display(a: np.ndarray) -> np.ndarray:
    s = max(a.shape)
    if s <= MAX_DISPLAY_PX:
        return a.astype(np.float32)
    return resize_map(a, round(a.shape[0] * MAX_DISPLAY_PX / s), round(a.shape[1] * MAX_DISPLAY_PX / s))


def _get_class_images_info(images: ImageData, split: str = "train", seed: int = 0) -> _ClassImagesInfo:
    x = np.asarray(images.x_train if split == "train" else images.x_val)
    y = np.asarray(images.y_train if split == "train" else images.y_val).astype(int)
    if x.ndim == 4:
        x = x[..., 0]
    rng = np.random.default_rng(seed)
    means, stds, used, available = [], [], [], []
    for k in range(len(images.class_names)):
        idx = np.flatnonzero(y == k)
        available.append(int(len(idx)))
        if len(idx) > MAX_IMAGES_PER_CLASS:
            idx = np.sort(rng.choice(idx, MAX_IMAGES_PER_CLASS, replace=False))
        mean, std = _mean_std(x[idx])
        means.append(_display(mean))
        stds.append(_display(std))
        used.append(int(len(idx)))
    return _ClassImagesInfo(list(images.class_names), means, stds, means[-1] - means[0], stds[-1] - stds[0],
                            used, available, split, int(x.shape[1]))


def plot_class_images(info: _ClassImagesInfo, which: str) -> go.Figure:
    """``which``: "mean" (average X-ray) or "std" (how much X-rays vary, pixel by pixel)."""
    maps = info.means if which == "mean" else info.stds
    diff = info.mean_difference if which == "mean" else info.std_difference
    neg, pos = info.class_names[0].lower(), info.class_names[-1].lower()
    titles = [f"{c.capitalize()} (n={n:,})" for c, n in zip(info.class_names, info.n_images)]
    titles.append(f"Difference: {pos} − {neg}")
    fig = make_subplots(rows=1, cols=len(maps) + 1, subplot_titles=titles, horizontal_spacing=0.04)
    vmax = float(max(m.max() for m in maps)) if maps else 255.0
    for i, m in enumerate(maps, 1):
        fig.add_trace(go.Heatmap(z=m, colorscale="Gray", zmin=0, zmax=vmax, showscale=False,
                                 hovertemplate="row %{y}, column %{x}: %{z:.0f}<extra></extra>"), 1, i)
    lim = float(np.abs(diff).max()) or 1.0
    fig.add_trace(go.Heatmap(z=diff, colorscale="RdBu_r", zmid=0, zmin=-lim, zmax=lim,
                             colorbar=dict(title=dict(text="brighter in<br>" + pos + " (+)", side="right"),
                                           thickness=12),
                             hovertemplate="row %{y}, column %{x}: %{z:+.1f}<extra></extra>"), 1, len(maps) + 1)
    for i in range(1, len(maps) + 2):
        suffix = "" if i == 1 else str(i)
        fig.update_layout(**{f"yaxis{suffix}": dict(autorange="reversed", scaleanchor=f"x{suffix}",
                                                    showticklabels=False, showgrid=False, zeroline=False),
                             f"xaxis{suffix}": dict(showticklabels=False, showgrid=False, zeroline=False,
                                                    constrain="domain")})
    split = {"train": "training", "val": "validation"}.get(info.split, info.split)
    title = (f"The average {neg} and the average {pos} X-ray ({split} images, brightness 0–255)"
             if which == "mean" else
             f"How much X-rays vary, pixel by pixel: standard deviation per class ({split} images)")
    fig.update_layout(title_text=title, template="plotly_white",
                      margin=dict(l=20, r=20, t=80, b=20))
    return fig


class _LayoutCheckInfo(NamedTuple):
    blocks: int
    val_auc: float
    healthy_median: float
    pneumonia_median: float
    framing: str               # "lungs": the films were cropped to their lung fields
    warns: bool


def _get_layout_check_info(data_summary: dict | None) -> _LayoutCheckInfo | None:
    """The run's layout check (pneumo_models.layout), from the study's data record."""
    from pneumo_models.layout import LayoutCheck, layout_warning

    check = (data_summary or {}).get("layout_check")
    if not check:
        return None
    check = LayoutCheck(int(check["blocks"]), float(check["val_auc"]), float(check["healthy_median"]),
                        float(check["pneumonia_median"]), check.get("framing", "full"))  # "full": recorded before framing
    return _LayoutCheckInfo(*check, warns=layout_warning(check) is not None)


def _describe_layout_check(info: _LayoutCheckInfo) -> str:
    """What ``search run`` printed about it, as sentences (pneumo_models.layout words it)."""
    from pneumo_models.layout import LayoutCheck, describe, layout_warning

    check = LayoutCheck(info.blocks, info.val_auc, info.healthy_median, info.pneumonia_median, info.framing)
    text = describe(check)
    text = (f"{text[0].upper()}{text[1:]} (median pneumonia probability {info.healthy_median:.2f} for normal "
            f"X-rays, {info.pneumonia_median:.2f} for pneumonia).")
    warning = layout_warning(check)
    return f"{text} {warning[0].upper()}{warning[1:]}." if warning else text


def build_section(inputs: ReportInputs) -> Section:
    blocks: list = []
    layout = _get_layout_check_info(inputs.study.user_attrs.get("data"))
    if layout is not None:
        blocks.append(NoticeBlock("layout-check", _describe_layout_check(layout), missing=False))
    balance = _get_class_balance_info(inputs.study.user_attrs.get("data"), inputs.images)
    if balance is None:
        blocks.append(NoticeBlock("class-balance", "The class balance is missing: the study records no data "
                                  "summary and no images could be loaded."))
    else:
        blocks.append(FigureBlock("class-balance", plot_class_balance(balance),
                                  "Pneumonia usually outnumbers normal X-rays in this kind of data; the search "
                                  "keeps sensitivity above the floor rather than chasing raw accuracy.", 400))
    if inputs.images is None:
        blocks.append(NoticeBlock("class-images", "The average images are missing: "
                                  + inputs.missing.get("images", "no images could be loaded.")))
    else:
        info = _get_class_images_info(inputs.images)
        cap = ""
        if any(u < a for u, a in zip(info.n_images, info.n_available)):
            cap = f" Up to {MAX_IMAGES_PER_CLASS:,} randomly chosen X-rays per class are averaged."
        blocks.append(FigureBlock("class-mean", plot_class_images(info, "mean"),
                                  "Red in the difference: brighter on average in pneumonia X-rays (e.g. "
                                  "consolidation); blue: brighter in normal ones." + cap, 380))
        blocks.append(FigureBlock("class-std", plot_class_images(info, "std"),
                                  "Where X-rays of each class differ most from their own average; "
                                  "systematic differences outside the lungs (labels, borders) would hint at "
                                  "shortcuts the model could learn." + cap, 380))
    return Section("data", "Data", blocks, intro="The X-rays the models were trained and validated on.")
