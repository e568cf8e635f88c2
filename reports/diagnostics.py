"""Search diagnostics: Optuna's own plots (``optuna.visualization.plot_*``), retitled in plain words.

``_get_diagnostics_info`` decides which plots the study can support (importances and contours
need at least two complete trials, a contour needs two parameters that vary, ...) and computes
the parameter importances once; ``plot_diagnostic`` only calls Optuna and relabels the result.
A plot the study cannot support yet becomes a sentence saying why.
"""
from __future__ import annotations

import re
from typing import NamedTuple

import optuna
import plotly.graph_objects as go
from optuna.trial import TrialState

from ._blocks import FigureBlock, NoticeBlock, Section
from ._labels import is_number, objective_label, param_label
from .inputs import ReportInputs

SLICE_PARAMS_PER_FIGURE = 4
PARALLEL_MAX_PARAMS = 10
_STATE_WORDS = {"COMPLETE": "Completed", "PRUNED": "Stopped early (pruned)", "FAIL": "Failed",
                "RUNNING": "Running", "WAITING": "Waiting", "INFEASIBLE": "Infeasible"}
_STATE_COLORS = {"COMPLETE": "#1f77b4", "PRUNED": "#ff7f0e", "RUNNING": "#2ca02c"}


class _PlotSpec(NamedTuple):
    key: str                   # "history", "importances", "parallel", "slice-1", "contour", ...
    kind: str                  # which optuna.visualization function draws it
    title: str
    caption: str
    params: list[str] | None   # parameters to show (None: Optuna's default)
    available: bool
    reason: str                # why it is not shown, when not available


class _DiagnosticsInfo(NamedTuple):
    objective: str                      # the objective in words, used as axis title
    n_complete: int
    params: list[str]                   # parameters of complete trials, most important first
    importances: dict[str, float]       # most important first; empty when not computable
    importance_problem: str
    trial_states: dict[int, str]        # trial number -> TrialState name
    plots: list[_PlotSpec]


def _get_importances(study: optuna.Study, n_complete: int) -> tuple[dict[str, float], str]:
    if n_complete < 2:
        return {}, "Parameter importances need at least two completed trials."
    try:
        imp = optuna.importance.get_param_importances(study, evaluator=_make_evaluator())
    except (ValueError, RuntimeError, ZeroDivisionError) as exc:
        return {}, f"Parameter importances could not be computed yet ({exc})."
    if not imp:
        return {}, "No parameter varied across the completed trials, so none can be ranked."
    return dict(imp), ""


def _make_evaluator():
    cls = getattr(optuna.importance, "PedAnovaImportanceEvaluator", None)
    if cls is not None:
        return cls()
    return optuna.importance.FanovaImportanceEvaluator(seed=0)


def _get_diagnostics_info(study: optuna.Study) -> _DiagnosticsInfo:
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    n_complete = len(complete)
    objective = objective_label(study.user_attrs.get("min_recall")
                                if is_number(study.user_attrs.get("min_recall")) else None)
    importances, imp_problem = _get_importances(study, n_complete)

    seen: list[str] = []
    for t in complete:
        for p in t.params:
            if p not in seen:
                seen.append(p)
    params = [p for p in importances if p in seen] + [p for p in seen if p not in importances]

    def varies(p: str) -> bool:
        return len({repr(t.params[p]) for t in complete if p in t.params}) >= 2

    none_complete = "No trial has completed yet."
    plots: list[_PlotSpec] = [
        _PlotSpec("history", "optimization_history", "How the best score improved as more models were tried",
                  "Each dot is one trained model (trial); the line is the best score reached so far.",
                  None, n_complete >= 1, none_complete),
        _PlotSpec("importances", "param_importances", "Which settings mattered most for the score",
                  "Share of the score's variation explained by each setting (higher = mattered more).",
                  None, bool(importances), imp_problem),
        _PlotSpec("parallel", "parallel_coordinate", "The settings of every completed model and the score it reached",
                  "Each line is one model; its colour is the score. Drag along an axis to filter.",
                  params[:PARALLEL_MAX_PARAMS] or None, n_complete >= 2,
                  "Comparing settings across models needs at least two completed trials."),
    ]
    if n_complete >= 1 and params:
        chunks = [params[i:i + SLICE_PARAMS_PER_FIGURE] for i in range(0, len(params), SLICE_PARAMS_PER_FIGURE)]
        for i, chunk in enumerate(chunks, 1):
            plots.append(_PlotSpec(
                f"slice-{i}", "slice",
                "Score against each setting" + (f" ({i} of {len(chunks)})" if len(chunks) > 1 else ""),
                "Each dot is one completed model; darker dots were tried later in the search.",
                chunk, True, ""))
    else:
        plots.append(_PlotSpec("slice-1", "slice", "Score against each setting", "", None, False,
                               none_complete if n_complete == 0 else "The trials have no parameters."))
    top2 = [p for p in importances if varies(p)][:2]
    if len(top2) == 2:
        plots.append(_PlotSpec(
            "contour", "contour",
            f"Score across the two most important settings: {param_label(top2[0])} and {param_label(top2[1])}",
            "Interpolated score surface; dots are the models actually trained.", top2, True, ""))
    else:
        why = imp_problem or "Fewer than two important settings vary across the completed trials."
        plots.append(_PlotSpec("contour", "contour", "Score across the two most important settings", "",
                               None, False, "A contour of the two most important settings is not possible yet: " + why))
    has_curves = any(t.intermediate_values for t in trials
                     if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING))
    plots.append(_PlotSpec(
        "intermediate", "intermediate_values", "Learning curves: validation score after each training epoch",
        "Blue curves ran to the end; orange dotted curves were stopped early by the pruner (their last "
        "epoch is marked ×) because they were unlikely to beat the best model.",
        None, has_curves, "No trial has reported a per-epoch score yet."))
    plots.append(_PlotSpec("timeline", "timeline", "When each trial ran and how it ended",
                           "Each bar is one trial, from its start to its end.",
                           None, len(trials) > 0, "The study has no trials yet."))
    return _DiagnosticsInfo(objective, n_complete, params, importances, imp_problem,
                            {t.number: t.state.name for t in trials}, plots)


# ----------------------------------------------------------------------------- drawing
def plot_diagnostic(study: optuna.Study, spec: _PlotSpec, info: _DiagnosticsInfo) -> go.Figure:
    """Draw one diagnostic with Optuna's own plot function, then retitle it in plain words."""
    vis = optuna.visualization
    target = info.objective
    if spec.kind == "optimization_history":
        fig = vis.plot_optimization_history(study, target_name=target)
        for tr in fig.data:
            if tr.name == target or tr.name == "Objective Value":
                tr.name = "Score of each model"
            elif tr.name == "Best Value":
                tr.name = "Best score so far"
        _axes(fig, "Trial (models in the order they were tried)", target)
    elif spec.kind == "param_importances":
        fig = vis.plot_param_importances(study, evaluator=_make_evaluator(), target_name=target)
        for tr in fig.data:
            if tr.y is not None:
                tr.y = [param_label(str(p)) for p in tr.y]
        _axes(fig, "Relative importance (sums to 1)", "Setting")
    elif spec.kind == "parallel_coordinate":
        fig = vis.plot_parallel_coordinate(study, params=spec.params, target_name=target)
        for tr in fig.data:
            dims = getattr(tr, "dimensions", None)
            if dims:
                tr.dimensions = [{**d.to_plotly_json(), "label": "Score" if d.label == target
                                  else param_label(d.label)} for d in dims]
    elif spec.kind == "slice":
        fig = vis.plot_slice(study, params=spec.params, target_name=target)
        _relabel_param_axes(fig)
    elif spec.kind == "contour":
        fig = vis.plot_contour(study, params=spec.params, target_name=target)
        _relabel_param_axes(fig)
    elif spec.kind == "intermediate_values":
        fig = vis.plot_intermediate_values(study)
        _style_learning_curves(fig, info.trial_states)
        _axes(fig, "Training epoch", target)
    elif spec.kind == "timeline":
        fig = vis.plot_timeline(study)
        for tr in fig.data:
            tr.name = _STATE_WORDS.get(tr.name, tr.name)
        _axes(fig, "Time", "Trial")
    else:  # pragma: no cover - specs come from _get_diagnostics_info
        raise ValueError(spec.kind)
    fig.update_layout(title_text=spec.title, template="plotly_white",
                      margin=dict(l=70, r=30, t=60, b=60))
    return fig


def _axes(fig: go.Figure, x: str | None, y: str | None) -> None:
    if x is not None:
        fig.update_xaxes(title_text=x)
    if y is not None:
        fig.update_yaxes(title_text=y)


def _relabel_param_axes(fig: go.Figure) -> None:
    for name in list(fig.layout):
        if re.fullmatch(r"[xy]axis\d*", name):
            axis = fig.layout[name]
            if axis.title is not None and axis.title.text:
                axis.title.text = param_label(axis.title.text)


def _style_learning_curves(fig: go.Figure, states: dict[int, str]) -> None:
    """Colour learning curves by how their trial ended and mark where pruned ones stopped."""
    shown: set[str] = set()
    for tr in fig.data:
        m = re.fullmatch(r"Trial\s*(\d+)", str(tr.name or ""))
        if not m:
            continue
        number = int(m.group(1))
        state = states.get(number, "COMPLETE")
        color = _STATE_COLORS.get(state, "#7f7f7f")
        n = len(tr.x or ())
        symbols = ["circle"] * n
        sizes = [5] * n
        if state == "PRUNED" and n:
            symbols[-1] = "x"
            sizes[-1] = 10
        tr.update(
            name=f"Trial {number}", legendgroup=state, showlegend=state not in shown,
            legendgrouptitle=None, line=dict(color=color, dash="dot" if state == "PRUNED" else "solid",
                                             width=1.5),
            marker=dict(color=color, symbol=symbols, size=sizes, maxdisplayed=0),
            hovertemplate=f"Trial {number} ({_STATE_WORDS.get(state, state).lower()})<br>"
                          "epoch %{x}: %{y:.3f}<extra></extra>",
        )
        if state not in shown:
            tr.name = _STATE_WORDS.get(state, state)
        shown.add(state)
    fig.update_layout(showlegend=True)


def build_section(inputs: ReportInputs) -> Section:
    study = inputs.study
    info = _get_diagnostics_info(study)
    blocks: list = []
    for spec in info.plots:
        if not spec.available:
            blocks.append(NoticeBlock(spec.key, f"{spec.title}: not shown. {spec.reason}", missing=False))
            continue
        try:
            fig = plot_diagnostic(study, spec, info)
        except Exception as exc:  # noqa: BLE001 - an Optuna plot refusing this study: say so
            first = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
            blocks.append(NoticeBlock(spec.key, f"{spec.title}: Optuna could not draw it ({first}).",
                                      missing=False))
            continue
        height = 520 if spec.kind in ("parallel_coordinate", "contour") else 440
        if spec.kind == "timeline":
            height = max(360, min(900, 120 + 8 * len(info.trial_states)))
        blocks.append(FigureBlock(spec.key, fig, spec.caption, height))
    return Section("diagnostics", "Search diagnostics", blocks,
                   intro="How the hyperparameter search went, drawn with Optuna's own plots.")
