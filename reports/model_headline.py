"""The headline table of an exported model: the model card's numbers with their 95% bootstrap intervals,
validation beside every set scored after the model was final (test, per patient, an ``evaluate``
result). Every number printed comes from ``model_card.json`` (or the evaluation block); the predictions
are re-scored at the card's threshold and any disagreement with the card is shown, never silently
replaced. ``_get_headline_info`` turns a card into a plain NamedTuple, ``_draw_headline`` only draws it.
"""
from __future__ import annotations

import html
from typing import NamedTuple, Sequence

import numpy as np

from pneumo_models.metrics import headline_metrics

from ._labels import METRIC_LABELS, metric_interval, metric_value, num, pct
from .scored_sets import ScoredSet


class _MetricRow(NamedTuple):
    name: str                  # card key: accuracy, recall, ...
    label: str                 # clinical wording
    value: float
    ci95: tuple[float, float] | None


class _SetColumn(NamedTuple):
    """One more column of the headline table: a set scored after the model was final."""

    key: str                              # "test", "test-patients", "evaluation", ...
    title: str                            # column heading, e.g. "Test"
    rows: list[_MetricRow]
    best_at_floor: dict | None            # {accuracy, threshold, recall, specificity}: any threshold
    n: int | None                         # X-rays (or patients, for a per-patient column)
    n_positive: int | None
    n_patients: int | None
    per_patient: bool                     # the rows count patients, not X-rays
    interval_note: str
    recomputed: dict[str, float]          # the same metrics re-scored from the predictions
    disagreements: list[str]


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
    ensemble_left_out: list[int]          # candidates (the K best trials) the export's greedy choice left out
    input_size: int | None
    created_at: str
    threshold_rule: str                   # card's "threshold_rule" if it records one, else ""
    recomputed: dict[str, float]          # the same metrics re-scored from the predictions file
    disagreements: list[str]              # sentences where card and predictions differ
    columns: tuple[_SetColumn, ...] = ()  # test (and per patient) or evaluation columns beside validation
    selection_note: str = ""              # validation chose things, the other columns chose nothing


def _score(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    return headline_metrics(y, p, threshold)


def _metric_rows(figures: dict) -> list[_MetricRow]:
    rows = []
    for name, label in METRIC_LABELS.items():
        m = figures.get(name)
        if not isinstance(m, dict) or "value" not in m:
            continue
        ci = m.get("ci95")
        rows.append(_MetricRow(name, label, float(m["value"]),
                               (float(ci[0]), float(ci[1])) if ci and len(ci) == 2 else None))
    return rows


def _rescore(rows: list[_MetricRow], y: np.ndarray | None, p: np.ndarray | None, threshold: float,
             n: int | None, what: str = "predictions file") -> tuple[dict[str, float], list[str]]:
    """The metrics re-scored from the predictions, and a sentence per figure that differs."""
    recomputed: dict[str, float] = {}
    disagreements: list[str] = []
    if y is None or p is None or not len(y):
        return recomputed, disagreements
    recomputed = _score(y, p, threshold)
    for row in rows:
        again = recomputed.get(row.name)
        tol = 1e-6 if row.name == "auc" else 1e-9
        if again is not None and np.isfinite(again) and abs(again - row.value) > tol:
            disagreements.append(f"{row.label}: card {metric_value(row.name, row.value)}, "
                                 f"{what} {metric_value(row.name, again)}")
    if n is not None and int(n) != len(y):
        disagreements.append(f"cases: card {n}, {what} {len(y)}")
    return recomputed, disagreements


def _get_set_column(s: ScoredSet, threshold: float) -> _SetColumn:
    block = s.block or {}
    per = s.key.endswith("-patients")
    rows = _metric_rows(s.metrics)
    n = int(block["n"]) if block.get("n") is not None else None
    counts = block.get("counts") or {}
    n_positive = (int(block["n_positive"]) if block.get("n_positive") is not None
                  else int(counts["PNEUMONIA"]) if "PNEUMONIA" in counts else None)
    recomputed, disagreements = _rescore(rows, s.y if s.has_curves else None, s.p, threshold, n,
                                         f"{s.label.lower()} predictions")
    bf = block.get("best_at_floor")
    return _SetColumn(
        key=s.key, title=s.label, rows=rows, best_at_floor=dict(bf) if isinstance(bf, dict) else None,
        n=n, n_positive=n_positive,
        n_patients=n if per else (int(block["n_patients"]) if block.get("n_patients") is not None else None),
        per_patient=per, interval_note=str(block.get("interval", "")), recomputed=recomputed,
        disagreements=disagreements)


def _get_headline_info(card: dict, y: np.ndarray | None, p: np.ndarray | None,
                       others: Sequence[ScoredSet] = ()) -> _HeadlineInfo:
    """``others``: sets scored after the model was final (test, its per-patient view, an evaluation),
    each a column beside validation."""
    metrics = card.get("metrics") or {}
    rows = _metric_rows(metrics.get("validation") or {})
    threshold = float(card["threshold"])
    recomputed, disagreements = _rescore(rows, y, p, threshold, metrics.get("n"))
    best = card.get("best_trial") or {}
    ensemble = (card.get("training") or {}).get("ensemble") or {}
    members = ensemble.get("members", [])
    kept = {m["number"] for m in members}
    columns = [_get_set_column(s, threshold) for s in others]
    note = str(metrics.get("note") or "") if columns else ""
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
        ensemble_left_out=[int(n) for n in ensemble.get("candidates", []) if n not in kept],
        input_size=int(card["input_size"]) if card.get("input_size") is not None else None,
        created_at=str(card.get("created_at", "")),
        threshold_rule=str(card.get("threshold_rule") or (card.get("training") or {}).get("threshold_rule") or ""),
        recomputed=recomputed, disagreements=disagreements, columns=tuple(columns), selection_note=note,
    )


def _draw_headline(info: _HeadlineInfo) -> str:
    e = html.escape
    cases = ""
    if info.n is not None:
        cases = f"{info.n:,} validation X-rays"
        if info.n_positive is not None:
            cases += f" ({info.n_positive:,} with pneumonia, {info.n - info.n_positive:,} normal)"
    source = f'trial <strong data-card="best_trial">{info.best_trial_number}</strong>'
    if info.ensemble_trials and len(set(info.ensemble_trials)) == 1:
        source = (f'an ensemble of trial <strong data-card="ensemble">{info.ensemble_trials[0]}</strong>\'s '
                  f"configuration trained from {len(info.ensemble_trials)} seeds (their probabilities averaged)")
    elif info.ensemble_trials:
        source = (f'an ensemble of trials <strong data-card="ensemble">'
                  f'{", ".join(str(n) for n in info.ensemble_trials)}</strong> (their probabilities averaged; '
                  f'best: trial <span data-card="best_trial">{info.best_trial_number}</span>)')
    if info.ensemble_left_out:
        out = ", ".join(str(n) for n in info.ensemble_left_out)
        source += (f'; trial{"s" * (len(info.ensemble_left_out) > 1)} <span data-card="ensemble_left_out">{out}</span>'
                   " of the best left out: averaging it in did not lower the validation log-loss")
    intro = (f"<p>Exported model from {source}, "
             f"input {info.input_size}×{info.input_size} pixels, created {e(info.created_at)}. "
             f'It calls an X-ray <em>pneumonia</em> when its probability is at least '
             f'<strong data-card="threshold" data-value="{info.threshold!r}">{info.threshold:.3f}</strong>, '
             f"the threshold chosen to keep sensitivity at or above "
             f'<strong data-card="min_recall" data-value="{info.min_recall!r}">{pct(info.min_recall, 1)}</strong>'
             f"{_RULE_WORDS.get(info.threshold_rule, '')}. "
             f"Measured on {e(cases) or 'the validation set'}.</p>")
    note = "95% interval: bootstrap over validation cases"
    if info.bootstrap_resamples:
        note += f" ({info.bootstrap_resamples:,} resamples, threshold fixed)"
    if not info.columns:
        return intro + _draw_metrics_table(info) + f"<p class=muted>{e(note)}. Source: model_card.json.</p>"
    notes = [f"Validation: {note}."] if info.rows else []     # no validation figures: the other columns alone
    for c in info.columns:
        interval = f"; 95% interval: {c.interval_note}" if c.interval_note else ""
        notes.append(f"{c.title}: {_column_cases(c)}{interval}.")
    others = ", ".join(c.title.lower() for c in info.columns if not c.per_patient)
    why = info.selection_note[:1].upper() + info.selection_note[1:]
    selection = (f'<p class="notice selection" data-note="selection"><strong>Validation figures were used for '
                 f"selection; {e(others)} figures were not.</strong>{' ' + e(why) + '.' if why else ''}</p>")
    items = "".join(f"<li>{e(n)}</li>" for n in notes)
    return ((intro if info.rows else "") + selection + _draw_metrics_table(info)
            + f"<ul class=muted>{items}</ul><p class=muted>Source: model card (and evaluation results).</p>")


def _column_cases(c: _SetColumn) -> str:
    what = "patients" if c.per_patient else "X-rays"
    text = f"{c.n:,} {what}" if c.n is not None else what
    if c.n_patients is not None and not c.per_patient:
        text += f" of {c.n_patients:,} patients"
    if c.n is not None and c.n_positive is not None:
        text += f" ({c.n_positive:,} with pneumonia, {c.n - c.n_positive:,} normal)"
    return text


def _value_attrs(row: _MetricRow | None) -> str:
    lo, hi = row.ci95 if row is not None and row.ci95 else (None, None)
    return f'data-value="{row.value if row is not None else None!r}" data-ci-low="{lo!r}" data-ci-high="{hi!r}"'


def _value_cells(name: str, row: _MetricRow | None, attrs: str = "") -> str:
    """The value and interval cells of one metric (``attrs`` go on the value cell)."""
    if row is None:
        return "<td class=num>–</td><td class=num>–</td>"
    space = " " if attrs else ""
    return (f'<td class="num headline"{space}{attrs}>{metric_value(name, row.value)}</td>'
            f"<td class=num>{metric_interval(name, row.ci95)}</td>")


def _draw_metrics_table(info: _HeadlineInfo) -> str:
    """Metric | validation value | interval [| another set's value | interval ...]. Validation cells
    keep the row's data-value / data-ci-*; the other sets' cells carry data-set and their own."""
    e = html.escape
    validation = {r.name: r for r in info.rows}
    by_column = [{r.name: r for r in c.rows} for c in info.columns]
    head = "<th>Metric</th>"
    if not info.columns:
        head += "<th>Value</th><th>95% interval</th>"
    else:
        if info.rows:
            head += ('<th data-set="validation">Validation<br><span class=muted>chose the model: optimistic</span>'
                     "</th><th>95% interval</th>")
        head += "".join(f'<th data-set="{e(c.key)}">{e(c.title)}<br><span class=muted>chose nothing</span></th>'
                        f"<th>95% interval</th>" for c in info.columns)
    body = []
    for name, label in METRIC_LABELS.items():
        r = validation.get(name)
        others = [cells.get(name) for cells in by_column]
        if r is None and not any(others):
            continue
        attrs, cells = f'data-metric="{e(name)}"', ""
        if info.rows or not info.columns:
            attrs += " " + _value_attrs(r)
            cells += _value_cells(name, r)
        for c, o in zip(info.columns, others):
            cells += _value_cells(name, o, f'data-set="{e(c.key)}" {_value_attrs(o)}')
        body.append(f"<tr {attrs}><th>{e(label)}</th>{cells}</tr>")
    if info.columns and any(c.best_at_floor for c in info.columns):
        floor = f" ≥ {pct(info.min_recall, 1)}" if info.min_recall is not None else " at its floor"
        cells = ('<td class="num muted" colspan=2>the threshold was chosen here</td>' if info.rows else "")
        for c in info.columns:
            bf = c.best_at_floor
            if not bf:
                cells += "<td class=num>–</td><td></td>"
                continue
            cells += (f'<td class="num headline" data-set="{e(c.key)}" data-value="{float(bf["accuracy"])!r}" '
                      f'data-threshold="{float(bf["threshold"])!r}">{pct(bf["accuracy"])}</td>'
                      f'<td class="num muted">at threshold {num(bf["threshold"])}</td>')
        body.append(f'<tr data-extra="best_at_floor"><th>Best accuracy any threshold reaches with sensitivity'
                    f"{e(floor)}</th>{cells}</tr>")
    return (f'<table class="grid metrics" data-table="headline-metrics"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")


_RULE_WORDS = {
    "validation": " (the most accurate threshold that reaches it on the validation X-rays)",
    "bootstrap": " (lowered by a bootstrap safety margin so that it should also hold on new patients)",
    "umbrella": (" (the highest threshold that keeps the sensitivity on new patients with 95% probability, "
                 "set from the pneumonia X-rays' scores alone)"),
}
