"""The exported model on its validation set: headline metrics (the model card's numbers, with
their 95% bootstrap intervals), ROC and precision-recall curves, the confusion matrix at the
exported threshold, accuracy/sensitivity against the threshold, and a calibration curve.

Curves are computed with scikit-learn from ``validation_predictions.csv``; every number printed
as a headline comes from ``model_card.json``. The predictions are re-scored at the card's
threshold and any disagreement with the card is shown, never silently replaced.
"""
from __future__ import annotations

import html
from typing import NamedTuple

import numpy as np
import plotly.graph_objects as go
from sklearn.calibration import calibration_curve
from sklearn.metrics import (average_precision_score, brier_score_loss, precision_recall_curve,
                             roc_auc_score, roc_curve)

from pneumo_models.metrics import headline_metrics

from ._blocks import FigureBlock, HtmlBlock, NoticeBlock, Section
from ._labels import METRIC_LABELS, metric_interval, metric_value, num, pct
from .inputs import ReportInputs, missing_model_notice

MAX_THRESHOLD_POINTS = 400
CALIBRATION_BINS = 10


def called_positive(p: np.ndarray, threshold: float) -> np.ndarray:
    """The model card's rule: pneumonia when probability >= threshold."""
    return np.asarray(p, dtype=np.float64) >= float(threshold)


# ----------------------------------------------------------------------------- headline metrics
class _MetricRow(NamedTuple):
    name: str                  # card key: accuracy, recall, ...
    label: str                 # clinical wording
    value: float
    ci95: tuple[float, float] | None


class _HeadlineInfo(NamedTuple):
    rows: list[_MetricRow]
    threshold: float
    min_recall: float | None
    n: int | None
    n_positive: int | None
    bootstrap_resamples: int | None
    interval_note: str
    best_trial_number: int | None
    ensemble_trials: list[int]            # trials averaged in the exported model (empty: one network)
    input_size: int | None
    created_at: str
    threshold_rule: str                   # card's "threshold_rule" if it records one, else ""
    recomputed: dict[str, float]          # the same metrics re-scored from the predictions file
    disagreements: list[str]              # sentences where card and predictions differ


def _score(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    return headline_metrics(y, p, threshold)


def _get_headline_info(card: dict, y: np.ndarray | None, p: np.ndarray | None) -> _HeadlineInfo:
    metrics = card.get("metrics") or {}
    validation = metrics.get("validation") or {}
    rows = []
    for name, label in METRIC_LABELS.items():
        m = validation.get(name)
        if not isinstance(m, dict) or "value" not in m:
            continue
        ci = m.get("ci95")
        rows.append(_MetricRow(name, label, float(m["value"]),
                               (float(ci[0]), float(ci[1])) if ci and len(ci) == 2 else None))
    threshold = float(card["threshold"])
    recomputed: dict[str, float] = {}
    disagreements: list[str] = []
    if y is not None and p is not None and len(y):
        recomputed = _score(y, p, threshold)
        for row in rows:
            again = recomputed.get(row.name)
            tol = 1e-6 if row.name == "auc" else 1e-9
            if again is not None and np.isfinite(again) and abs(again - row.value) > tol:
                disagreements.append(f"{row.label}: card {metric_value(row.name, row.value)}, "
                                     f"predictions file {metric_value(row.name, again)}")
        if metrics.get("n") is not None and int(metrics["n"]) != len(y):
            disagreements.append(f"cases: card {metrics['n']}, predictions file {len(y)}")
    best = card.get("best_trial") or {}
    members = ((card.get("training") or {}).get("ensemble") or {}).get("members", [])
    return _HeadlineInfo(
        rows=rows, threshold=threshold,
        min_recall=float(card["min_recall"]) if card.get("min_recall") is not None else None,
        n=int(metrics["n"]) if metrics.get("n") is not None else None,
        n_positive=int(metrics["n_positive"]) if metrics.get("n_positive") is not None else None,
        bootstrap_resamples=(int(metrics["bootstrap_resamples"])
                             if metrics.get("bootstrap_resamples") is not None else None),
        interval_note=str(metrics.get("interval", "")),
        best_trial_number=int(best["number"]) if best.get("number") is not None else None,
        ensemble_trials=[int(m["number"]) for m in members] if len(members) > 1 else [],
        input_size=int(card["input_size"]) if card.get("input_size") is not None else None,
        created_at=str(card.get("created_at", "")),
        threshold_rule=str(card.get("threshold_rule") or (card.get("training") or {}).get("threshold_rule") or ""),
        recomputed=recomputed, disagreements=disagreements,
    )


def _draw_headline(info: _HeadlineInfo) -> str:
    e = html.escape
    cases = ""
    if info.n is not None:
        cases = f"{info.n:,} validation X-rays"
        if info.n_positive is not None:
            cases += f" ({info.n_positive:,} with pneumonia, {info.n - info.n_positive:,} normal)"
    source = f'trial <strong data-card="best_trial">{info.best_trial_number}</strong>'
    if info.ensemble_trials:
        source = (f'an ensemble of trials <strong data-card="ensemble">'
                  f'{", ".join(str(n) for n in info.ensemble_trials)}</strong> (their probabilities averaged; '
                  f'best: trial <span data-card="best_trial">{info.best_trial_number}</span>)')
    intro = (f"<p>Exported model from {source}, "
             f"input {info.input_size}×{info.input_size} pixels, created {e(info.created_at)}. "
             f'It calls an X-ray <em>pneumonia</em> when its probability is at least '
             f'<strong data-card="threshold" data-value="{info.threshold!r}">{info.threshold:.3f}</strong>, '
             f"the threshold chosen to keep sensitivity at or above "
             f'<strong data-card="min_recall" data-value="{info.min_recall!r}">{pct(info.min_recall, 1)}</strong>'
             f"{_RULE_WORDS.get(info.threshold_rule, '')}. "
             f"Measured on {e(cases) or 'the validation set'}.</p>")
    body = []
    for r in info.rows:
        lo, hi = r.ci95 if r.ci95 else (None, None)
        body.append(
            f'<tr data-metric="{e(r.name)}" data-value="{r.value!r}" data-ci-low="{lo!r}" data-ci-high="{hi!r}">'
            f"<th>{e(r.label)}</th><td class=\"num headline\">{metric_value(r.name, r.value)}</td>"
            f"<td class=num>{metric_interval(r.name, r.ci95)}</td></tr>")
    note = "95% interval: bootstrap over validation cases"
    if info.bootstrap_resamples:
        note += f" ({info.bootstrap_resamples:,} resamples, threshold fixed)"
    table = (f'<table class="grid metrics" data-table="headline-metrics"><thead><tr><th>Metric</th>'
             f"<th>Value</th><th>95% interval</th></tr></thead><tbody>{''.join(body)}</tbody></table>"
             f"<p class=muted>{e(note)}. Source: model_card.json.</p>")
    return intro + table


_RULE_WORDS = {
    "validation": " (the most accurate threshold that reaches it on the validation X-rays)",
    "bootstrap": " (lowered by a bootstrap safety margin so that it should also hold on new patients)",
}


# ----------------------------------------------------------------------------- curves
class _RocInfo(NamedTuple):
    fpr: np.ndarray
    tpr: np.ndarray
    auc: float                             # the card's AUC
    auc_ci95: tuple[float, float] | None
    operating_point: tuple[float, float]   # (false-alarm rate, sensitivity) at the threshold


def _get_roc_info(y: np.ndarray, p: np.ndarray, threshold: float, card_auc: float | None,
                  card_auc_ci: tuple[float, float] | None) -> _RocInfo:
    fpr, tpr, _ = roc_curve(y, p)
    pred = called_positive(p, threshold)
    op = (float(np.mean(pred[y == 0])) if np.any(y == 0) else 0.0,
          float(np.mean(pred[y == 1])) if np.any(y == 1) else 0.0)
    auc = float(card_auc) if card_auc is not None else float(roc_auc_score(y, p))
    return _RocInfo(fpr, tpr, auc, card_auc_ci, op)


def plot_roc(info: _RocInfo) -> go.Figure:
    ci = f" (95% interval {num(info.auc_ci95[0])}–{num(info.auc_ci95[1])})" if info.auc_ci95 else ""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="Chance (coin toss)",
                             line=dict(color="#999", dash="dash"), hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=info.fpr, y=info.tpr, mode="lines", name=f"Model, AUC {info.auc:.3f}",
                             line=dict(color="#1f77b4", width=2.5),
                             hovertemplate="false alarms %{x:.1%}<br>sensitivity %{y:.1%}<extra></extra>"))
    fig.add_trace(go.Scatter(x=[info.operating_point[0]], y=[info.operating_point[1]], mode="markers",
                             name="Exported threshold", marker=dict(size=12, color="#d62728", symbol="diamond"),
                             hovertemplate="false alarms %{x:.1%}<br>sensitivity %{y:.1%}<extra>threshold</extra>"))
    fig.update_layout(title_text=f"How well the model separates pneumonia from normal: ROC curve, AUC {info.auc:.3f}{ci}",
                      xaxis_title="False-alarm rate (1 − specificity)", yaxis_title="Sensitivity (pneumonia recall)")
    fig.update_xaxes(range=[0, 1], tickformat=".0%")
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%")
    return fig


class _PrInfo(NamedTuple):
    recall: np.ndarray
    precision: np.ndarray
    average_precision: float
    prevalence: float
    operating_point: tuple[float, float]   # (sensitivity, precision) at the threshold


def _get_pr_info(y: np.ndarray, p: np.ndarray, threshold: float) -> _PrInfo:
    precision, recall, _ = precision_recall_curve(y, p)
    pred = called_positive(p, threshold)
    tp = float(np.sum(pred & (y == 1)))
    op = (tp / max(1.0, float(np.sum(y == 1))), tp / max(1.0, float(np.sum(pred))))
    return _PrInfo(recall, precision, float(average_precision_score(y, p)), float(np.mean(y)), op)


def plot_pr(info: _PrInfo) -> go.Figure:
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[info.prevalence] * 2, mode="lines",
                             name=f"Chance (pneumonia prevalence {info.prevalence:.0%})",
                             line=dict(color="#999", dash="dash"), hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=info.recall, y=info.precision, mode="lines", line_shape="hv",
                             name=f"Model, average precision {info.average_precision:.3f}",
                             line=dict(color="#1f77b4", width=2.5),
                             hovertemplate="sensitivity %{x:.1%}<br>precision %{y:.1%}<extra></extra>"))
    fig.add_trace(go.Scatter(x=[info.operating_point[0]], y=[info.operating_point[1]], mode="markers",
                             name="Exported threshold", marker=dict(size=12, color="#d62728", symbol="diamond")))
    fig.update_layout(title_text="When the model says pneumonia, how often is it right? Precision-recall curve",
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


def _get_confusion_info(y: np.ndarray, p: np.ndarray, threshold: float, class_names: list[str]) -> _ConfusionInfo:
    pred = called_positive(p, threshold)
    return _ConfusionInfo(tn=int(np.sum(~pred & (y == 0))), fp=int(np.sum(pred & (y == 0))),
                          fn=int(np.sum(~pred & (y == 1))), tp=int(np.sum(pred & (y == 1))),
                          threshold=float(threshold), class_names=list(class_names))


def plot_confusion(info: _ConfusionInfo) -> go.Figure:
    neg, pos = (n.capitalize() for n in info.class_names[:2])
    z = [[info.tn, info.fp], [info.fn, info.tp]]   # rows: truth, columns: model's call
    words = [["correctly called normal", "false alarms"], ["missed pneumonia", "pneumonia found"]]
    totals = [info.tn + info.fp, info.fn + info.tp]
    text = [[f"<b>{z[r][c]}</b><br>{words[r][c]}<br>({z[r][c] / max(1, totals[r]):.1%} of {[neg, pos][r].lower()})"
             for c in range(2)] for r in range(2)]
    fig = go.Figure(go.Heatmap(
        z=z, x=[f"Model says {neg.lower()}", f"Model says {pos.lower()}"],
        y=[f"Truly {neg.lower()}", f"Truly {pos.lower()}"], text=text, texttemplate="%{text}",
        colorscale=[[0, "#f7fbff"], [1, "#6baed6"]], showscale=False, hoverinfo="skip",
        textfont=dict(size=15)))
    fig.update_layout(title_text=f"Confusion matrix at the exported threshold ({info.threshold:.3f})",
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


def _get_threshold_info(y: np.ndarray, p: np.ndarray, threshold: float, min_recall: float | None) -> _ThresholdInfo:
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
    return _ThresholdInfo(grid, accuracy, recall, specificity, min_recall, float(threshold))


def plot_threshold(info: _ThresholdInfo) -> go.Figure:
    fig = go.Figure()
    for values, name, color in ((info.recall, "Sensitivity (pneumonia recall)", "#d62728"),
                                (info.accuracy, "Accuracy", "#1f77b4"),
                                (info.specificity, "Specificity", "#2ca02c")):
        fig.add_trace(go.Scatter(x=info.thresholds, y=values, mode="lines", name=name, line_shape="hv",
                                 line=dict(color=color, width=2.2),
                                 hovertemplate="threshold %{x:.3f}: %{y:.1%}<extra>" + name + "</extra>"))
    if info.min_recall is not None:
        fig.add_hline(y=info.min_recall, line=dict(color="#d62728", dash="dot"),
                      annotation_text=f"required sensitivity {info.min_recall:.0%}",
                      annotation_position="bottom left")
    fig.add_vline(x=info.threshold, line=dict(color="#333", dash="dash"),
                  annotation_text=f"chosen threshold {info.threshold:.3f}", annotation_position="top right")
    fig.update_layout(title_text="Choosing the decision threshold: accuracy and sensitivity",
                      xaxis_title="Decision threshold (probability at or above which the model says pneumonia)",
                      yaxis_title="Share of validation X-rays")
    fig.update_xaxes(range=[0, 1])
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%")
    return fig


class _CalibrationInfo(NamedTuple):
    predicted: np.ndarray      # mean predicted probability per (non-empty) bin
    observed: np.ndarray       # fraction with pneumonia per bin
    counts: np.ndarray         # X-rays per bin
    brier: float
    n_bins: int


def _get_calibration_info(y: np.ndarray, p: np.ndarray, n_bins: int = CALIBRATION_BINS) -> _CalibrationInfo:
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    observed, predicted = calibration_curve(y, p, n_bins=n_bins, strategy="uniform")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ids = np.searchsorted(edges[1:-1], p)          # the same binning scikit-learn uses
    counts = np.bincount(ids, minlength=n_bins)
    counts = counts[counts > 0]
    return _CalibrationInfo(predicted, observed, counts, float(brier_score_loss(y, p)), n_bins)


def plot_calibration(info: _CalibrationInfo) -> go.Figure:
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="Perfectly calibrated",
                             line=dict(color="#999", dash="dash"), hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=info.predicted, y=info.observed, mode="lines+markers", name="Model",
                             marker=dict(size=[6 + 14 * np.sqrt(c / max(info.counts)) for c in info.counts]),
                             customdata=info.counts, line=dict(color="#1f77b4", width=2.2),
                             hovertemplate="predicted %{x:.0%}<br>observed %{y:.0%}<br>%{customdata} X-rays<extra></extra>"))
    fig.update_layout(title_text=f"Do the probabilities mean what they say? Calibration (Brier score {info.brier:.3f})",
                      xaxis_title="Predicted probability of pneumonia (validation X-rays grouped in bins)",
                      yaxis_title="Observed share with pneumonia")
    fig.update_xaxes(range=[0, 1], tickformat=".0%")
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%")
    return fig


# ----------------------------------------------------------------------------- section
def build_section(inputs: ReportInputs) -> Section:
    title = "Exported model"
    model = inputs.model
    if (notice := missing_model_notice(inputs, "Model evaluation")) is not None:
        return Section("model", title, [NoticeBlock("model", notice)])
    card = model.card
    blocks: list = [NoticeBlock(f"model-problem-{i}", msg, missing=False) for i, msg in enumerate(model.problems)]
    y = p = None
    if model.predictions is not None and len(model.predictions):
        y = model.predictions["label"].to_numpy(dtype=int)
        p = model.predictions["probability"].to_numpy(dtype=np.float64)
    headline = _get_headline_info(card, y, p)
    best_now = _current_best_number(inputs)
    if best_now is not None and headline.best_trial_number is not None and best_now != headline.best_trial_number:
        blocks.append(NoticeBlock("model-stale", f"The study's best trial is now {best_now}; this model was "
                                  f"exported from trial {headline.best_trial_number}.", missing=False))
    card_study = (card.get("study") or {}).get("name")
    if card_study is not None and card_study != inputs.study.study_name:
        blocks.append(NoticeBlock("model-other-study", f"This model card belongs to study {card_study!r}, "
                                  f"not {inputs.study.study_name!r}.", missing=False))
    blocks.append(HtmlBlock("headline-metrics", _draw_headline(headline)))
    if headline.disagreements:
        blocks.append(NoticeBlock("model-disagree", "The predictions file does not reproduce the card's numbers "
                                  "(the card is shown): " + "; ".join(headline.disagreements) + ".", missing=False))
    if y is None:
        blocks.append(NoticeBlock("model-curves", "Curves are missing: the model folder has no validation "
                                  "predictions."))
        return Section("model", title, blocks)
    if y.min() == y.max():
        blocks.append(NoticeBlock("model-curves", "Curves are missing: the validation predictions hold only one class."))
        return Section("model", title, blocks)
    auc_row = next((r for r in headline.rows if r.name == "auc"), None)
    thr = headline.threshold
    class_names = list(card.get("class_names") or ["NORMAL", "PNEUMONIA"])
    blocks += [
        FigureBlock("roc", plot_roc(_get_roc_info(y, p, thr, auc_row.value if auc_row else None,
                                                  auc_row.ci95 if auc_row else None)),
                    "Each point of the curve is one possible threshold; the diamond is the exported one.", 480),
        FigureBlock("pr", plot_pr(_get_pr_info(y, p, thr)),
                    "The diamond is the exported threshold.", 480),
        FigureBlock("confusion", plot_confusion(_get_confusion_info(y, p, thr, class_names)),
                    "Counts of validation X-rays by true label and by the model's call.", 420),
        FigureBlock("threshold", plot_threshold(_get_threshold_info(y, p, thr, headline.min_recall)),
                    "Lowering the threshold finds more pneumonia (higher sensitivity) at the cost of more false "
                    "alarms. The dashed line is the exported threshold; the dotted line the required sensitivity.",
                    460),
        FigureBlock("calibration", plot_calibration(_get_calibration_info(y, p)),
                    "Points on the diagonal mean a predicted 80% is right about 80% of the time; marker size "
                    "shows how many X-rays fall in each bin.", 460),
    ]
    for b in blocks:
        if isinstance(b, FigureBlock):
            b.figure.update_layout(template="plotly_white", margin=dict(l=70, r=30, t=60, b=60),
                                   legend=dict(orientation="h", y=-0.2))
    return Section("model", title, blocks, intro="The model exported at the end of the search, measured on "
                   "the validation X-rays. Headline numbers are copied from its model card.")


def _current_best_number(inputs: ReportInputs) -> int | None:
    try:
        return inputs.study.best_trial.number
    except ValueError:
        return None
