"""The exported model's curves, each set (validation, test, an ``evaluate`` result) drawn through the
same info and draw functions: ROC and precision-recall curves, the confusion matrix at the exported
threshold, accuracy/sensitivity against the threshold, the probabilities of each class (with a second
set), and a calibration curve. Curves are computed with scikit-learn from the predictions files
(``validation_predictions.csv``, ``test_predictions.csv``).
"""
from __future__ import annotations

import html
from typing import NamedTuple, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from sklearn.calibration import calibration_curve
from sklearn.metrics import (average_precision_score, brier_score_loss, precision_recall_curve,
                             roc_auc_score, roc_curve)

from ._blocks import FigureBlock
from ._labels import num
from .scored_sets import SET_STYLES, ScoredSet, called_positive

MAX_THRESHOLD_POINTS = 400
CALIBRATION_BINS = 10
SCORE_BINS = 20
_CLASS_COLORS = ("#2ca02c", "#d62728")     # normal, pneumonia (as in the data section)


# ----------------------------------------------------------------------------- curves
# Every info below names the set it was computed on (``label``, ``style``: a key of SET_STYLES); every
# plot_* takes one info or a list of them (one per set: validation, test, ...) and draws them together.
def _as_list(infos) -> list:
    return list(infos) if isinstance(infos, (list, tuple)) and not hasattr(infos, "_fields") else [infos]


def _color(info) -> str:
    return SET_STYLES.get(info.style, SET_STYLES["validation"])[0]


def _dash(info) -> str:
    return SET_STYLES.get(info.style, SET_STYLES["validation"])[1]


def _with_diagonal(name: str) -> go.Figure:
    """A figure with the grey dashed diagonal the ROC and calibration curves are read against."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name=name, line=dict(color="#999", dash="dash"),
                             hoverinfo="skip"))
    return fig


def _marker(info, one: bool) -> dict:
    """The exported threshold's diamond: red with one set, the set's colour (outlined) with several."""
    if one:
        return dict(size=12, color="#d62728", symbol="diamond")
    return dict(size=12, color=_color(info), symbol="diamond", line=dict(color="#333", width=1))


class _RocInfo(NamedTuple):
    fpr: np.ndarray
    tpr: np.ndarray
    auc: float                             # the card's AUC
    auc_ci95: tuple[float, float] | None
    operating_point: tuple[float, float]   # (false-alarm rate, sensitivity) at the threshold
    label: str = "Validation"
    style: str = "validation"


def _get_roc_info(y: np.ndarray, p: np.ndarray, threshold: float, card_auc: float | None,
                  card_auc_ci: tuple[float, float] | None, label: str = "Validation",
                  style: str = "validation") -> _RocInfo:
    fpr, tpr, _ = roc_curve(y, p)
    pred = called_positive(p, threshold)
    op = (float(np.mean(pred[y == 0])) if np.any(y == 0) else 0.0,
          float(np.mean(pred[y == 1])) if np.any(y == 1) else 0.0)
    auc = float(card_auc) if card_auc is not None else float(roc_auc_score(y, p))
    return _RocInfo(fpr, tpr, auc, card_auc_ci, op, label, style)


def plot_roc(infos: _RocInfo | Sequence[_RocInfo]) -> go.Figure:
    infos = _as_list(infos)
    one = len(infos) == 1
    fig = _with_diagonal("Chance (coin toss)")
    for info in infos:
        name = "Model" if one else info.label
        fig.add_trace(go.Scatter(x=info.fpr, y=info.tpr, mode="lines", name=f"{name}, AUC {info.auc:.3f}",
                                 line=dict(color=_color(info) if not one else "#1f77b4", width=2.5,
                                           dash=None if one else _dash(info)),
                                 hovertemplate="false alarms %{x:.1%}<br>sensitivity %{y:.1%}<extra>"
                                 + ("" if one else html.escape(name)) + "</extra>"))
    for info in infos:
        fig.add_trace(go.Scatter(x=[info.operating_point[0]], y=[info.operating_point[1]], mode="markers",
                                 name="Exported threshold" + ("" if one else f" ({info.label})"),
                                 marker=_marker(info, one),
                                 hovertemplate="false alarms %{x:.1%}<br>sensitivity %{y:.1%}<extra>threshold</extra>"))
    if one:
        info = infos[0]
        ci = f" (95% interval {num(info.auc_ci95[0])}–{num(info.auc_ci95[1])})" if info.auc_ci95 else ""
        title = f"How well the model separates pneumonia from normal: ROC curve, AUC {info.auc:.3f}{ci}"
    else:
        title = ("How well the model separates pneumonia from normal: ROC curves, "
                 + ", ".join(f"{i.label.lower()} AUC {i.auc:.3f}" for i in infos))
    fig.update_layout(title_text=title, xaxis_title="False-alarm rate (1 − specificity)",
                      yaxis_title="Sensitivity (pneumonia recall)")
    fig.update_xaxes(range=[0, 1], tickformat=".0%")
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%")
    return fig


class _PrInfo(NamedTuple):
    recall: np.ndarray
    precision: np.ndarray
    average_precision: float
    prevalence: float
    operating_point: tuple[float, float]   # (sensitivity, precision) at the threshold
    label: str = "Validation"
    style: str = "validation"


def _get_pr_info(y: np.ndarray, p: np.ndarray, threshold: float, label: str = "Validation",
                 style: str = "validation") -> _PrInfo:
    precision, recall, _ = precision_recall_curve(y, p)
    pred = called_positive(p, threshold)
    tp = float(np.sum(pred & (y == 1)))
    op = (tp / max(1.0, float(np.sum(y == 1))), tp / max(1.0, float(np.sum(pred))))
    return _PrInfo(recall, precision, float(average_precision_score(y, p)), float(np.mean(y)), op, label, style)


def plot_pr(infos: _PrInfo | Sequence[_PrInfo]) -> go.Figure:
    infos = _as_list(infos)
    one = len(infos) == 1
    fig = go.Figure()
    for info in infos:
        fig.add_trace(go.Scatter(x=[0, 1], y=[info.prevalence] * 2, mode="lines",
                                 name=f"Chance ({'' if one else info.label.lower() + ' '}pneumonia prevalence "
                                      f"{info.prevalence:.0%})",
                                 line=dict(color="#999", dash="dash") if one else dict(color=_color(info), dash="dash",
                                                                                      width=1),
                                 hoverinfo="skip"))
    for info in infos:
        fig.add_trace(go.Scatter(x=info.recall, y=info.precision, mode="lines", line_shape="hv",
                                 name=f"{'Model' if one else info.label}, "
                                      f"average precision {info.average_precision:.3f}",
                                 line=dict(color="#1f77b4" if one else _color(info), width=2.5,
                                           dash=None if one else _dash(info)),
                                 hovertemplate="sensitivity %{x:.1%}<br>precision %{y:.1%}<extra></extra>"))
    for info in infos:
        fig.add_trace(go.Scatter(x=[info.operating_point[0]], y=[info.operating_point[1]], mode="markers",
                                 name="Exported threshold" + ("" if one else f" ({info.label})"),
                                 marker=_marker(info, one)))
    fig.update_layout(title_text="When the model says pneumonia, how often is it right? Precision-recall curve"
                      + ("" if one else "s"),
                      xaxis_title="Sensitivity (share of pneumonia cases found)",
                      yaxis_title="Positive predictive value (precision)")
    fig.update_xaxes(range=[0, 1.02], tickformat=".0%")
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%")
    return fig


class _ConfusionInfo(NamedTuple):
    tn: int
    fp: int
    fn: int
    tp: int
    threshold: float
    class_names: list[str]
    label: str = "Validation"
    style: str = "validation"


def _get_confusion_info(y: np.ndarray, p: np.ndarray, threshold: float, class_names: list[str],
                        label: str = "Validation", style: str = "validation") -> _ConfusionInfo:
    pred = called_positive(p, threshold)
    return _ConfusionInfo(tn=int(np.sum(~pred & (y == 0))), fp=int(np.sum(pred & (y == 0))),
                          fn=int(np.sum(~pred & (y == 1))), tp=int(np.sum(pred & (y == 1))),
                          threshold=float(threshold), class_names=list(class_names), label=label, style=style)


def plot_confusion(info: _ConfusionInfo, *, named: bool = False) -> go.Figure:
    """``named``: say which set it is in the title (when several sets are shown)."""
    neg, pos = (n.capitalize() for n in info.class_names[:2])
    z = [[info.tn, info.fp], [info.fn, info.tp]]   # rows: truth, columns: model's call
    words = [["correctly called normal", "false alarms"], ["missed pneumonia", "pneumonia found"]]
    totals = [info.tn + info.fp, info.fn + info.tp]
    text = [[f"<b>{z[r][c]}</b><br>{words[r][c]}<br>({z[r][c] / max(1, totals[r]):.1%} of {[neg, pos][r].lower()})"
             for c in range(2)] for r in range(2)]
    high = "#6baed6" if info.style == "validation" else "#fdae6b" if info.style in ("test", "evaluation") else "#bcbddc"
    fig = go.Figure(go.Heatmap(
        z=z, x=[f"Model says {neg.lower()}", f"Model says {pos.lower()}"],
        y=[f"Truly {neg.lower()}", f"Truly {pos.lower()}"], text=text, texttemplate="%{text}",
        colorscale=[[0, "#f7fbff"], [1, high]], showscale=False, hoverinfo="skip",
        textfont=dict(size=15)))
    fig.update_layout(title_text=(f"{info.label}: c" if named else "C")
                      + f"onfusion matrix at the exported threshold ({info.threshold:.3f})",
                      xaxis_title="The model's call", yaxis_title="The radiologists' label")
    fig.update_yaxes(autorange="reversed")
    return fig


class _ThresholdInfo(NamedTuple):
    thresholds: np.ndarray
    accuracy: np.ndarray
    recall: np.ndarray
    specificity: np.ndarray
    min_recall: float | None
    threshold: float
    label: str = "Validation"
    style: str = "validation"
    words: str = "validation X-rays"


def _get_threshold_info(y: np.ndarray, p: np.ndarray, threshold: float, min_recall: float | None,
                        label: str = "Validation", style: str = "validation",
                        words: str = "validation X-rays") -> _ThresholdInfo:
    p = np.asarray(p, dtype=np.float64)
    grid = np.unique(np.concatenate([[0.0, 1.0, threshold], p]))
    if len(grid) > MAX_THRESHOLD_POINTS:
        keep = np.unique(np.concatenate([np.linspace(0, len(grid) - 1, MAX_THRESHOLD_POINTS).round().astype(int),
                                         np.searchsorted(grid, [threshold])]))
        grid = grid[np.clip(keep, 0, len(grid) - 1)]
    pos = np.sort(p[y == 1])
    neg = np.sort(p[y == 0])
    tp = len(pos) - np.searchsorted(pos, grid, side="left")   # p >= threshold
    fp = len(neg) - np.searchsorted(neg, grid, side="left")
    tn = len(neg) - fp
    recall = tp / max(1, len(pos))
    specificity = tn / max(1, len(neg))
    accuracy = (tp + tn) / max(1, len(p))
    return _ThresholdInfo(grid, accuracy, recall, specificity, min_recall, float(threshold), label, style, words)


def plot_threshold(infos: _ThresholdInfo | Sequence[_ThresholdInfo]) -> go.Figure:
    """One set: sensitivity, accuracy and specificity. Several: sensitivity and accuracy of each (line
    dash tells the sets apart; specificity is in the legend, hidden until clicked)."""
    infos = _as_list(infos)
    one = len(infos) == 1
    fig = go.Figure()
    for info in infos:
        for values, name, color in ((info.recall, "Sensitivity (pneumonia recall)", "#d62728"),
                                    (info.accuracy, "Accuracy", "#1f77b4"),
                                    (info.specificity, "Specificity", "#2ca02c")):
            label = name if one else f"{info.label}: {name.split(' (')[0].lower()}"
            fig.add_trace(go.Scatter(x=info.thresholds, y=values, mode="lines", name=label, line_shape="hv",
                                     line=dict(color=color, width=2.2, dash=None if one else _dash(info)),
                                     visible=None if one or name != "Specificity" else "legendonly",
                                     hovertemplate="threshold %{x:.3f}: %{y:.1%}<extra>" + html.escape(label)
                                     + "</extra>"))
    info = infos[0]
    if info.min_recall is not None:
        fig.add_hline(y=info.min_recall, line=dict(color="#d62728", dash="dot"),
                      annotation_text=f"required sensitivity {info.min_recall:.0%}",
                      annotation_position="bottom left")
    fig.add_vline(x=info.threshold, line=dict(color="#333", dash="dash"),
                  annotation_text=f"chosen threshold {info.threshold:.3f}", annotation_position="top right")
    fig.update_layout(title_text="Choosing the decision threshold: accuracy and sensitivity"
                      + ("" if one else " (" + " and ".join(i.label.lower() for i in infos) + ")"),
                      xaxis_title="Decision threshold (probability at or above which the model says pneumonia)",
                      yaxis_title=f"Share of {info.words}" if one else "Share of each set")
    fig.update_xaxes(range=[0, 1])
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%")
    return fig


class _ScoreDistributionInfo(NamedTuple):
    edges: np.ndarray             # SCORE_BINS + 1 bin edges from 0 to 1
    counts: list[np.ndarray]      # per class (normal, pneumonia): X-rays per bin
    n: list[int]                  # X-rays per class
    class_names: list[str]
    threshold: float
    label: str = "Validation"
    style: str = "validation"


def _get_score_distribution_info(y: np.ndarray, p: np.ndarray, threshold: float, class_names: list[str],
                                 n_bins: int = SCORE_BINS, label: str = "Validation",
                                 style: str = "validation") -> _ScoreDistributionInfo:
    y = np.asarray(y).astype(int)
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    counts = [np.histogram(p[y == k], bins=edges)[0] for k in (0, 1)]
    return _ScoreDistributionInfo(edges, counts, [int(np.sum(y == k)) for k in (0, 1)], list(class_names[:2]),
                                  float(threshold), label, style)


def plot_score_distributions(infos: _ScoreDistributionInfo | Sequence[_ScoreDistributionInfo]) -> go.Figure:
    """One row per set: the share of each class's X-rays per probability bin, the threshold marked."""
    infos = _as_list(infos)
    titles = [f"{i.label}: {i.n[0]:,} {i.class_names[0].lower()}, {i.n[1]:,} {i.class_names[1].lower()}"
              for i in infos]
    fig = make_subplots(rows=len(infos), cols=1, shared_xaxes=True, subplot_titles=titles, vertical_spacing=0.12)
    for r, info in enumerate(infos, 1):
        centers = (info.edges[:-1] + info.edges[1:]) / 2
        for k in (0, 1):
            share = info.counts[k] / max(1, info.n[k])
            fig.add_trace(go.Bar(x=centers, y=share, width=np.diff(info.edges), name=info.class_names[k].capitalize(),
                                 marker_color=_CLASS_COLORS[k], opacity=0.6, legendgroup=info.class_names[k],
                                 showlegend=r == 1, customdata=info.counts[k],
                                 hovertemplate="probability %{x:.2f}: %{y:.0%} (%{customdata} X-rays)<extra>"
                                 + html.escape(f"{info.label}, {info.class_names[k].lower()}") + "</extra>"), r, 1)
        fig.add_vline(x=info.threshold, line=dict(color="#333", dash="dash"), row=r, col=1)
        fig.update_yaxes(title_text="Share of the class", tickformat=".0%", row=r, col=1)
    fig.update_xaxes(range=[0, 1], row=len(infos), col=1,
                     title_text=f"Predicted probability of pneumonia (dashed: threshold {infos[0].threshold:.3f})")
    fig.update_layout(barmode="overlay", bargap=0,
                      title_text="Where each class's probabilities fall: "
                      + " and ".join(i.label.lower() for i in infos))
    return fig


class _CalibrationInfo(NamedTuple):
    predicted: np.ndarray      # mean predicted probability per (non-empty) bin
    observed: np.ndarray       # fraction with pneumonia per bin
    counts: np.ndarray         # X-rays per bin
    brier: float
    n_bins: int
    label: str = "Validation"
    style: str = "validation"
    words: str = "validation X-rays"


def _get_calibration_info(y: np.ndarray, p: np.ndarray, n_bins: int = CALIBRATION_BINS, label: str = "Validation",
                          style: str = "validation", words: str = "validation X-rays") -> _CalibrationInfo:
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    observed, predicted = calibration_curve(y, p, n_bins=n_bins, strategy="uniform")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ids = np.searchsorted(edges[1:-1], p)          # the same binning scikit-learn uses
    counts = np.bincount(ids, minlength=n_bins)
    counts = counts[counts > 0]
    return _CalibrationInfo(predicted, observed, counts, float(brier_score_loss(y, p)), n_bins, label, style, words)


def plot_calibration(infos: _CalibrationInfo | Sequence[_CalibrationInfo]) -> go.Figure:
    infos = _as_list(infos)
    one = len(infos) == 1
    fig = _with_diagonal("Perfectly calibrated")
    biggest = max(max(i.counts) for i in infos)
    for info in infos:
        fig.add_trace(go.Scatter(x=info.predicted, y=info.observed, mode="lines+markers",
                                 name="Model" if one else f"{info.label}, Brier score {info.brier:.3f}",
                                 marker=dict(size=[6 + 14 * np.sqrt(c / (max(info.counts) if one else biggest))
                                                   for c in info.counts]),
                                 customdata=info.counts,
                                 line=dict(color="#1f77b4" if one else _color(info), width=2.2,
                                           dash=None if one else _dash(info)),
                                 hovertemplate="predicted %{x:.0%}<br>observed %{y:.0%}<br>%{customdata} "
                                 + info.words.split()[-1] + "<extra></extra>"))
    title = "Do the probabilities mean what they say? Calibration"
    fig.update_layout(title_text=title + (f" (Brier score {infos[0].brier:.3f})" if one else ""),
                      xaxis_title=f"Predicted probability of pneumonia ({infos[0].words if one else 'cases'} "
                      "grouped in bins)",
                      yaxis_title="Observed share with pneumonia")
    fig.update_xaxes(range=[0, 1], tickformat=".0%")
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%")
    return fig


def _style(fig: go.Figure) -> go.Figure:
    fig.update_layout(template="plotly_white", margin=dict(l=70, r=30, t=60, b=60),
                      legend=dict(orientation="h", y=-0.2))
    return fig


def curve_blocks(sets: Sequence[ScoredSet], threshold: float, min_recall: float | None,
                 class_names: list[str], key_prefix: str = "") -> list[FigureBlock]:
    """The figures of every set that has predictions of both classes, drawn together: ROC, PR,
    one confusion matrix per set, threshold curves, probability distributions (with two or more
    sets) and calibration. The first set's confusion matrix is keyed "confusion", the others'
    "confusion-<key>"; ``key_prefix`` goes before every key (two calls on one page)."""
    sets = [s for s in sets if s.has_curves]
    if not sets:
        return []
    one = len(sets) == 1

    def auc(s: ScoredSet):
        m = s.metrics.get("auc") if isinstance(s.metrics.get("auc"), dict) else {}
        ci = m.get("ci95")
        return (float(m["value"]) if m.get("value") is not None else None,
                (float(ci[0]), float(ci[1])) if ci and len(ci) == 2 else None)

    blocks = [
        FigureBlock("roc", plot_roc([_get_roc_info(s.y, s.p, threshold, *auc(s), s.label, s.style) for s in sets]),
                    "Each point of the curve is one possible threshold; the diamond is the exported one.", 480),
        FigureBlock("pr", plot_pr([_get_pr_info(s.y, s.p, threshold, s.label, s.style) for s in sets]),
                    "The diamond is the exported threshold.", 480),
    ]
    for i, s in enumerate(sets):
        blocks.append(FigureBlock("confusion" if i == 0 else f"confusion-{s.key}",
                                  plot_confusion(_get_confusion_info(s.y, s.p, threshold, class_names, s.label,
                                                                     s.style), named=not one),
                                  f"Counts of {s.words} by true label "
                                  "and by the model's call.", 420))
    blocks.append(FigureBlock(
        "threshold", plot_threshold([_get_threshold_info(s.y, s.p, threshold, min_recall, s.label, s.style, s.words)
                                     for s in sets]),
        "Lowering the threshold finds more pneumonia (higher sensitivity) at the cost of more false "
        "alarms. The dashed line is the exported threshold; the dotted line the required sensitivity."
        + ("" if one else f" Solid lines: {sets[0].words}; dashed: " + ", ".join(s.words for s in sets[1:]) + "."),
        460))
    if not one:
        blocks.append(FigureBlock(
            "scores", plot_score_distributions([_get_score_distribution_info(s.y, s.p, threshold, class_names,
                                                                             label=s.label, style=s.style)
                                                for s in sets]),
            "Each class's X-rays by the probability the model gave them, as a share of that class. If the "
            "pneumonia bars slide left of the threshold on the new data, or the normal ones right, the new "
            "X-rays differ from the validation ones (a shift) and the threshold no longer sits where it was put.",
            240 + 200 * len(sets)))
    blocks.append(FigureBlock(
        "calibration", plot_calibration([_get_calibration_info(s.y, s.p, label=s.label, style=s.style, words=s.words)
                                         for s in sets]),
        "Points on the diagonal mean a predicted 80% is right about 80% of the time; marker size "
        f"shows how many {sets[0].unit} fall in each bin.", 460))
    for b in blocks:
        _style(b.figure)
    return [b._replace(key=key_prefix + b.key) for b in blocks]
