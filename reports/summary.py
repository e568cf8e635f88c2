"""Summary section: the data, the study, the best trial, and a sortable table of all trials; at the
top, a warning when the exported model does worse on the test split than validation suggests."""
from __future__ import annotations

import datetime
import html
import math
from typing import Any, NamedTuple

import optuna
from optuna.trial import TrialState

from ._blocks import HtmlBlock, NoticeBlock, Section
from ._labels import (TRIAL_METRIC_LABELS, duration, is_number, num, objective_label, param_label,
                      pct)
from .inputs import ReportInputs
from .shift import _draw_shift_warning, _get_shift_info

_TRIAL_METRICS = ("rc_accuracy", "auc", "recall", "precision", "specificity", "threshold",
                  "epochs", "best_epoch", "seconds", "n_params")
_MAX_SKIPPED_LISTED = 20


# ----------------------------------------------------------------------------- data
class _DataSummaryInfo(NamedTuple):
    available: bool
    source: str
    kind: str
    fingerprint: str
    val_strategy: str
    splits: list[str]
    class_names: list[str]
    counts: dict[str, dict[str, int]]     # split -> class -> images
    patients: dict[str, int]              # split -> patients
    skipped: list[tuple[str, str]]        # (path, reason), at most _MAX_SKIPPED_LISTED
    n_skipped: int


def _get_data_summary_info(study: optuna.Study) -> _DataSummaryInfo:
    data = study.user_attrs.get("data")
    if not isinstance(data, dict):
        return _DataSummaryInfo(False, str(study.user_attrs.get("data_source", "")), "", "", "",
                                [], [], {}, {}, [], 0)
    counts = {str(s): {str(c): int(n) for c, n in (v or {}).items()}
              for s, v in (data.get("counts") or {}).items()}
    class_names: list[str] = []
    for per_class in counts.values():
        for c in per_class:
            if c not in class_names:
                class_names.append(c)
    skipped_all = data.get("skipped") or []
    skipped = [(str(s.get("path", "")), str(s.get("reason", ""))) if isinstance(s, dict)
               else (str(s), "") for s in skipped_all[:_MAX_SKIPPED_LISTED]]
    return _DataSummaryInfo(
        available=True,
        source=str(data.get("source", study.user_attrs.get("data_source", ""))),
        kind=str(data.get("kind", "")),
        fingerprint=str(data.get("fingerprint", "")),
        val_strategy=str(data.get("val_strategy", "")),
        splits=list(counts),
        class_names=class_names,
        counts=counts,
        patients={str(k): int(v) for k, v in (data.get("patients") or {}).items()},
        skipped=skipped,
        n_skipped=len(skipped_all),
    )


def _draw_data_summary(info: _DataSummaryInfo) -> str:
    if not info.available:
        return ('<p class="notice">The study does not record a data summary'
                + (f" (source: {_e(info.source)})" if info.source else "") + ".</p>")
    rows = [("Source", _e(info.source) + (f" <span class=muted>({_e(info.kind)})</span>" if info.kind else ""))]
    if info.val_strategy:
        rows.append(("Validation split", _e(info.val_strategy)))
    if info.fingerprint:
        rows.append(("Fingerprint", f"<code>{_e(info.fingerprint[:16])}</code>"))
    rows.append(("Files skipped", f"{info.n_skipped:,}"))
    out = [_kv_table(rows)]
    head = "".join(f"<th>{_e(c)}</th>" for c in info.class_names)
    body = []
    for split in info.splits:
        per = info.counts.get(split, {})
        total = sum(per.values())
        cells = "".join(f"<td class=num>{per.get(c, 0):,}</td>" for c in info.class_names)
        patients = info.patients.get(split)
        body.append(f"<tr><th>{_e(split)}</th>{cells}<td class=num>{total:,}</td>"
                    f"<td class=num>{'–' if patients is None else f'{patients:,}'}</td></tr>")
    out.append(f'<table class="grid" data-table="data-counts"><thead><tr><th>Split</th>{head}'
               f"<th>Total images</th><th>Patients</th></tr></thead><tbody>{''.join(body)}</tbody></table>")
    if info.skipped:
        items = "".join(f"<li><code>{_e(p)}</code> — {_e(r)}</li>" for p, r in info.skipped)
        more = (f"<li>… and {info.n_skipped - len(info.skipped):,} more</li>"
                if info.n_skipped > len(info.skipped) else "")
        out.append(f"<details><summary>Skipped files ({info.n_skipped:,})</summary><ul>{items}{more}</ul></details>")
    return "\n".join(out)


# ----------------------------------------------------------------------------- study
class _StudySummaryInfo(NamedTuple):
    name: str
    n_trials: int
    n_complete: int
    n_pruned: int
    n_failed: int
    n_running: int
    wall_seconds: float | None
    started_at: str
    sampler: str
    pruner: str
    min_recall: float | None
    max_epochs: int | None
    space: str
    engine: str
    seed: int | None
    patience: int | None
    overrides: dict[str, Any]            # settings fixed for the whole study (--set)
    still_running: bool


def _get_study_summary_info(study: optuna.Study, now: datetime.datetime | None = None) -> _StudySummaryInfo:
    trials = study.get_trials(deepcopy=False)
    by_state = {s: sum(1 for t in trials if t.state == s) for s in TrialState}
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    ends = [t.datetime_complete for t in trials if t.datetime_complete is not None]
    running = by_state[TrialState.RUNNING] > 0
    wall = None
    if starts:
        end = (now or datetime.datetime.now()) if running or not ends else max(ends)
        wall = max(0.0, (end - min(starts)).total_seconds())
    a = study.user_attrs
    return _StudySummaryInfo(
        name=study.study_name,
        n_trials=len(trials),
        n_complete=by_state[TrialState.COMPLETE],
        n_pruned=by_state[TrialState.PRUNED],
        n_failed=by_state[TrialState.FAIL],
        n_running=by_state[TrialState.RUNNING] + by_state[TrialState.WAITING],
        wall_seconds=wall,
        started_at=str(a.get("started_at", min(starts).isoformat(timespec="seconds") if starts else "")),
        sampler=str(a.get("sampler", "")),
        pruner=str(a.get("pruner", "")),
        min_recall=float(a["min_recall"]) if is_number(a.get("min_recall")) else None,
        max_epochs=int(a["max_epochs"]) if is_number(a.get("max_epochs")) else None,
        space=str(a.get("space", "")),
        engine=str(a.get("engine", "")),
        seed=int(a["seed"]) if is_number(a.get("seed")) else None,
        patience=int(a["patience"]) if is_number(a.get("patience")) else None,
        overrides=dict(a["overrides"]) if isinstance(a.get("overrides"), dict) else {},
        still_running=running,
    )


def _draw_study_summary(info: _StudySummaryInfo) -> str:
    status = "still running" if info.still_running else "finished"
    trials = (f'<span data-count="complete">{info.n_complete}</span> complete, '
              f'<span data-count="pruned">{info.n_pruned}</span> stopped early (pruned), '
              f'<span data-count="failed">{info.n_failed}</span> failed')
    if info.n_running:
        trials += f', <span data-count="running">{info.n_running}</span> running'
    rows = [
        ("Study", f"{_e(info.name)} <span class=muted>({status})</span>"),
        ("Trials", f"{info.n_trials} in all: {trials}"),
        ("Started", _e(info.started_at) or "–"),
        ("Wall time", duration(info.wall_seconds)),
        ("Objective", _e(objective_label(info.min_recall))),
        ("Minimum pneumonia recall", f'<span data-value="{info.min_recall}">{pct(info.min_recall, 1)}</span>'
         if info.min_recall is not None else "–"),
        ("Search space", _e(info.space) or "–"),
        ("Sampler", _e(info.sampler) or "–"),
        ("Pruner", _e(info.pruner) or "–"),
        ("Max epochs per trial", "–" if info.max_epochs is None else str(info.max_epochs)),
        ("Early-stopping patience", "–" if info.patience is None else f"{info.patience} epochs"),
        ("Settings fixed for all trials", ", ".join(f"{_e(param_label(k))} = {_fmt_cell(v)}"
                                                    for k, v in sorted(info.overrides.items())) or "none"),
        ("Engine", _e(info.engine) or "–"),
        ("Seed", "–" if info.seed is None else str(info.seed)),
    ]
    return _kv_table(rows, key="study")


# ----------------------------------------------------------------------------- best trial
class _BestTrialInfo(NamedTuple):
    number: int | None
    value: float | None
    params: list[tuple[str, Any]]
    fixed_params: list[tuple[str, Any]]  # settings the space fixed (not searched), if recorded
    metrics: list[tuple[str, Any]]       # (user-attr key, value)


def _get_best_trial_info(study: optuna.Study) -> _BestTrialInfo:
    try:
        best = study.best_trial
    except ValueError:
        return _BestTrialInfo(None, None, [], [], [])
    metrics = [(k, best.user_attrs[k]) for k in _TRIAL_METRICS if k in best.user_attrs]
    fixed = best.user_attrs.get("fixed_params")
    fixed_items = sorted((k, v) for k, v in fixed.items() if k not in best.params) if isinstance(fixed, dict) else []
    return _BestTrialInfo(best.number, best.value, sorted(best.params.items()), fixed_items, metrics)


def _draw_best_trial(info: _BestTrialInfo, min_recall: float | None) -> str:
    if info.number is None:
        return '<p class="notice" data-missing="best-trial">No trial has completed yet, so there is no best trial.</p>'
    head = (f'<p>Trial <strong data-best="number">{info.number}</strong> scored '
            f'<strong data-best="value" data-value="{info.value!r}">{pct(info.value)}</strong> '
            f"({_e(objective_label(min_recall)).lower()}).</p>")
    params = _kv_table([(_e(param_label(k)), _fmt_cell(v)) for k, v in info.params]
                       + [(_e(param_label(k)), _fmt_cell(v) + " <span class=muted>(fixed)</span>")
                          for k, v in info.fixed_params], key="best-params")
    metrics = _kv_table([(_e(TRIAL_METRIC_LABELS.get(k, k)), _fmt_metric(k, v)) for k, v in info.metrics],
                        key="best-metrics")
    return (f'{head}<div class="cols"><div><h4>Settings</h4>{params}</div>'
            f"<div><h4>Validation metrics at its best epoch</h4>{metrics}</div></div>")


# ----------------------------------------------------------------------------- trials table
class _Column(NamedTuple):
    key: str
    label: str
    numeric: bool


class _TrialsTableInfo(NamedTuple):
    columns: list[_Column]
    rows: list[list[Any]]                 # one list per trial, aligned with columns; None = blank


def _get_trials_table_info(study: optuna.Study) -> _TrialsTableInfo:
    trials = study.get_trials(deepcopy=False)
    param_names: list[str] = []
    for t in trials:
        for p in t.params:
            if p not in param_names:
                param_names.append(p)
    metric_keys = [k for k in _TRIAL_METRICS if any(k in t.user_attrs for t in trials)]
    columns = [_Column("number", "trial", True), _Column("state", "state", False),
               _Column("value", "score", True)]
    columns += [_Column(k, TRIAL_METRIC_LABELS.get(k, k), True) for k in metric_keys]
    columns += [_Column(f"params_{p}", param_label(p), all(
        is_number(t.params[p]) for t in trials if p in t.params)) for p in param_names]
    has_start = any(t.user_attrs.get("start_point") for t in trials)
    if has_start:
        columns.append(_Column("start_point", "start point", False))
    has_fail = any("fail_reason" in t.user_attrs for t in trials)
    if has_fail:
        columns.append(_Column("fail_reason", "why it failed", False))
    rows = []
    for t in trials:
        row: list[Any] = [t.number, _state_word(t.state), t.value]
        row += [t.user_attrs.get(k) for k in metric_keys]
        row += [t.params.get(p) for p in param_names]
        if has_start:
            row.append(_start_point_note(t.user_attrs))
        if has_fail:
            row.append(t.user_attrs.get("fail_reason"))
        rows.append(row)
    return _TrialsTableInfo(columns, rows)


def _start_point_note(attrs: dict) -> str | None:
    """A start point runs whole; where the pruner would have stopped it, the epoch it named."""
    if not attrs.get("start_point"):
        return None
    epoch = attrs.get("pruner_would_stop_at")
    return "yes" if epoch is None else f"yes (run whole; the pruner would have stopped it at epoch {epoch})"


def _draw_trials_table(info: _TrialsTableInfo) -> str:
    if not info.rows:
        return '<p class="notice">The study has no trials yet.</p>'
    head = "".join(f'<th data-key="{_e(c.key)}" class="{"num" if c.numeric else ""}" '
                   f'title="Click to sort">{_e(c.label)}</th>' for c in info.columns)
    body = []
    for row in info.rows:
        cells = []
        for col, v in zip(info.columns, row):
            if v is None:
                cells.append('<td data-v=""></td>')
                continue
            sort = repr(float(v)) if is_number(v) else _e(str(v))
            text = _fmt_metric(col.key, v) if col.key in _TRIAL_METRICS or col.key == "value" else _fmt_cell(v)
            cls = ' class="num"' if is_number(v) else ""
            cells.append(f'<td data-v="{sort}"{cls}>{text}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="scroll"><table class="grid sortable" data-table="trials">'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>")


# ----------------------------------------------------------------------------- section
def build_section(inputs: ReportInputs) -> Section:
    study = inputs.study
    study_info = _get_study_summary_info(study)
    blocks = [
        HtmlBlock("data-summary", "<h3>Data</h3>" + _draw_data_summary(_get_data_summary_info(study))),
        HtmlBlock("study-summary", "<h3>Study</h3>" + _draw_study_summary(study_info)),
        HtmlBlock("best-trial", "<h3>Best trial</h3>" + _draw_best_trial(_get_best_trial_info(study),
                                                                          study_info.min_recall)),
        HtmlBlock("trials-table", "<h3>All trials</h3><p class=muted>Click a column header to sort.</p>"
                  + _draw_trials_table(_get_trials_table_info(study))),
    ]
    if study_info.still_running:
        blocks.insert(0, NoticeBlock("study-running", "The study is still running: this report shows "
                                     "the trials finished so far.", missing=False))
    if inputs.model is not None:
        shift = _get_shift_info(inputs.model.card, inputs.model.test_block, "new patients")
        if shift.warning:
            blocks.insert(0, HtmlBlock("shift-warning", _draw_shift_warning(shift)))
    return Section("summary", "Summary", blocks)


# ----------------------------------------------------------------------------- helpers
def _e(s: Any) -> str:
    return html.escape(str(s), quote=True)


def _state_word(state: TrialState) -> str:
    return {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed",
            "RUNNING": "running", "WAITING": "waiting"}.get(state.name, state.name.lower())


def _fmt_cell(v: Any) -> str:
    if isinstance(v, float):
        if not math.isfinite(v):
            return _e(v)
        return f"{v:.3g}" if (abs(v) < 1e-2 or abs(v) >= 1e4) and v != 0 else f"{v:.3f}".rstrip("0").rstrip(".")
    return _e(v)


def _fmt_metric(key: str, v: Any) -> str:
    if key in ("rc_accuracy", "recall", "precision", "specificity", "value"):
        return pct(v)
    if key in ("auc", "threshold"):
        return num(v, 3)
    if key == "seconds":
        return duration(float(v)) if is_number(v) else _e(v)
    if key in ("epochs", "best_epoch", "n_params") and is_number(v):
        return f"{int(v):,}"
    return _fmt_cell(v)


def _kv_table(rows: list[tuple[str, str]], key: str = "") -> str:
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    attr = f' data-table="{_e(key)}"' if key else ""
    return f'<table class="kv"{attr}><tbody>{body}</tbody></table>'
