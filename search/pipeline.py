"""``run_search``: what ``python -m search run`` does, as one call a notebook can make.

    from search import RunSettings, run_search
    outcome = run_search(RunSettings(data="synthetic", trials=20, study="demo"))
    outcome.study, outcome.model, outcome.report_path, outcome.failures, outcome.stopped_by

The steps, in order: the data (probed, split, cached), the study (created or resumed), the
search (the engine's loop in this process, or the worker processes), then, unless the search was
stopped by failures or by dying workers, the finish: the export (the best trials' networks, choose the threshold,
score the test split once) and the report, both attached to the study as Optuna artifacts. It prints what the command prints, progress bars
through ``tqdm.auto`` (widgets in a notebook). Bad input raises ``UserError`` (one line); Ctrl-C
or SIGTERM during the search ends it with ``stopped_by == "interrupted"``, the study resumable.
"""
from __future__ import annotations

import os
import sys
import time
from collections import Counter
from pathlib import Path

from pneumo_models.data.framing import AUTO_LUNGS_FROM  # no Keras behind it

from .errors import UserError
from .failures import reason_kind
from .outcome import RunOutcome
from .runtime import import_keras_quietly, quiet_libraries
from .settings import ENSEMBLE_RULE_DEFAULT, OUTPUT_LAYER_DEFAULT, RunSettings


def run_search(settings: RunSettings) -> RunOutcome:
    """Search until the study holds ``settings.trials`` finished trials (or the timeout, or
    ``settings.max_failures`` failures), then export and report; see ``RunOutcome``.

    Calling it again with the same settings resumes the study; with more trials it runs only
    the difference.
    """
    quiet_libraries()
    import optuna

    from .data_access import StudyData
    from .engines import get_engine
    from .study import open_study

    # Optuna's own per-trial warnings (with tracebacks) would bury ours: failures are summed up below.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if settings.parallel:  # this process may start JAX (cost estimates) before its workers: it must not hold the GPUs' memory
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    if settings.cache_dir:  # one cache for every later load in this process (export, report)
        os.environ["PNEUMO_SEARCH_CACHE"] = str(settings.cache_dir)
    data = StudyData(settings.data, val_fraction=settings.val_fraction, seed=settings.seed,
                     cache_dir=settings.cache_dir, progress=settings.progress, framing=settings.framing)
    if settings.export and settings.test:  # a broken test split is refused now, not after hours of search
        from .scoring import check_test_split

        check_test_split(settings.data, cache_dir=settings.cache_dir)
    engine = get_engine(settings.engine)
    settings = _resolve_space(settings, data.info.resolution)
    space = settings.build_space(data.info.resolution, data.framing)  # once per run
    _backbones_ready(space)
    study, requeued = open_study(settings, data, space, engine)
    if requeued:
        print(f"resuming: {len(requeued)} start point{'s' * (len(requeued) > 1)} cut off by an interruption "
              "queued again (a start point runs whole once)", flush=True)
    first = data.at(min(space.input_sizes()))
    print(first.summary.format(), flush=True)
    if data.framing != "full" or settings.framing == "auto":
        print(f"framing: {data.framing}" + ("" if settings.framing != "auto" else
              f" (--framing auto, films of {data.info.resolution} px: lungs from {AUTO_LUNGS_FROM} px up"
              + ("; below, a MedMNIST .npz's central square, as MedMNIST cropped its images)"
                 if data.framing == "centre" else ")")), flush=True)
    check = _layout_check(first)
    if "data" not in study.user_attrs:
        study.set_user_attr("data", {**first.summary.to_dict(), "layout_check": check and check.to_dict()})

    started = time.monotonic()
    if settings.parallel:
        from .workers import run_workers

        outcome = run_workers(study, settings)
    else:
        import_keras_quietly()
        outcome = engine.run(study, settings, data, space)
    outcome.stopped_by = _stopped_by(outcome, settings, time.monotonic() - started)
    if outcome.stopped_by == "interrupted":
        return outcome
    _say_what_ran(outcome, settings)
    if outcome.stopped_by not in ("failures", "workers"):
        _finish(outcome, settings)
    return outcome


def _resolve_space(settings: RunSettings, resolution: int) -> RunSettings:
    """``--space auto`` made concrete once, here, so that workers and the study record one space."""
    from dataclasses import replace

    from .space_choice import AUTO, choose_space, lite0_weights_problem
    from .study import recorded_space

    if settings.space != AUTO:
        return settings
    choice = choose_space(settings.space, resolution, recorded=recorded_space(settings), overrides=settings.overrides,
                          input_sizes=settings.input_sizes, weights_problem=lite0_weights_problem)
    if choice.note:
        print(choice.note, file=sys.stderr, flush=True)
    print(f"space: {choice.name} ({choice.reason})", flush=True)
    return replace(settings, space=choice.name)


def _backbones_ready(space) -> None:
    """A space with ImageNet backbones: images large enough for them, and their ImageNet
    weights at hand (downloaded once, before any trial) when the run asks for them."""
    from pneumo_models.params import DEFAULTS, MIN_BACKBONE_SIDE as MIN_SIDE

    backbones = set(space.values("backbone", DEFAULTS["backbone"])) - {"none"}
    if not backbones:
        return
    # the smallest side a backbone may be given: the smallest input, unless every configuration enlarges it
    seen = max(min(space.input_sizes()), min(space.values("backbone_side", DEFAULTS["backbone_side"])))
    if seen < MIN_SIDE:
        raise UserError(f"the backbones of space {space.name!r} need inputs of at least {MIN_SIDE} px; this run's smallest "
                        f"is {seen} px (the data's resolution or --input-sizes); --set backbone_side=96 enlarges "
                        "smaller films inside the model, as --space pretrained does")
    if "imagenet" in space.values("backbone_weights", DEFAULTS["backbone_weights"]):
        import_keras_quietly()
        from pneumo_models.backbones import WeightsUnavailable, fetch_imagenet

        try:
            fetch_imagenet(backbones, space.input_sizes())
        except WeightsUnavailable as exc:
            raise UserError(str(exc)) from None


def _layout_check(dataset):
    """Print, with the data summary (stdout: it describes the data; stderr is for what went wrong),
    what the films' coarse layout alone says about the class (pneumo_models.layout), with a warning
    when it says much: the shortcut shows before any test split exists."""
    from pneumo_models.layout import describe, layout_check, layout_warning

    check = layout_check(dataset.x_train, dataset.y_train, dataset.x_val, dataset.y_val, framing=dataset.framing)
    if check is not None:
        print(describe(check), flush=True)
        warning = layout_warning(check)
        if warning:
            print(f"  warning: {warning}", flush=True)
    return check


def _stopped_by(outcome: RunOutcome, settings: RunSettings, elapsed: float) -> str:
    """Why the search ended, judged the same way whichever engine or worker pool ran it."""
    if outcome.stopped_by == "interrupted":
        return "interrupted"
    if outcome.finished >= settings.trials:
        return "trials"
    if settings.timeout is not None and elapsed >= settings.timeout:
        return "timeout"
    if outcome.stopped_by == "failures" or len(outcome.failures) >= settings.max_failures:
        return "failures"
    if settings.parallel:
        return "workers"
    return outcome.stopped_by


def _say_what_ran(outcome: RunOutcome, settings: RunSettings) -> None:
    failures = outcome.failures
    line = f"study {settings.study!r}: {outcome.finished} finished trials ({outcome.new} new)"
    if failures:
        reasons = Counter(reason_kind(r) for _, r in failures)
        line += (f"; {len(failures)} failed and not counted: "
                 + ", ".join(f"{n} {why}" for why, n in reasons.most_common())
                 + f" (trials {', '.join(str(n) for n, _ in failures[:10])}{', ...' if len(failures) > 10 else ''})")
    print(line, flush=True)
    for problem in outcome.problems:
        print(f"warning: {problem}", file=sys.stderr, flush=True)
    if outcome.stopped_by == "timeout":
        print(f"--timeout {settings.timeout:g} s came before --trials {settings.trials}: the study holds "
              f"{outcome.finished}; re-run the same command to go on", flush=True)


def _finish(outcome: RunOutcome, settings: RunSettings) -> None:
    """Export and report, as far as each can; a step that cannot says why in one line."""
    if settings.export or settings.report:
        import_keras_quietly()
    if settings.export:
        try:
            outcome.model_dir = export_step(
                outcome.study, settings.out, storage_url=settings.storage, cache_dir=settings.cache_dir,
                progress=settings.progress, threshold_rule=settings.threshold_rule, ensemble=settings.ensemble,
                ensemble_rule=settings.ensemble_rule, output_layer=settings.output_layer, test=settings.test)
        except UserError as exc:
            print(f"not exported: {exc}", file=sys.stderr)
    if settings.report:
        try:
            outcome.report_path = report_step(outcome.study, settings.report_path, settings.model_dir,
                                              settings.progress)
        except UserError as exc:
            print(f"not reported: {exc}", file=sys.stderr)
    _attach_artifacts(outcome, settings)


def _attach_artifacts(outcome: RunOutcome, settings: RunSettings) -> None:
    """The report, model card and serving files as the study's Optuna artifacts (optuna-dashboard)."""
    from .artifacts import attach_run

    try:
        attach_run(outcome.study, settings.out, model_dir=outcome.model_dir, report=outcome.report_path,
                   storage_url=settings.storage)
    except Exception as exc:  # noqa: BLE001 - the model and report are written; this is a convenience
        print(f"not attached to the study as artifacts: {' '.join(str(exc).split())[:200]}", file=sys.stderr)


def export_step(study, out: Path, *, storage_url: str, cache_dir=None, progress: bool = True,
                threshold_rule: str, ensemble: int, ensemble_rule: str = ENSEMBLE_RULE_DEFAULT,
                output_layer: str = OUTPUT_LAYER_DEFAULT, test: bool = True) -> Path:
    """Retrain and export the study's best trials (``search.final_model``), then say how it scores."""
    from .final_model import export_best

    folder = export_best(study, out, storage_url=storage_url, cache_dir=cache_dir, progress=progress,
                         threshold_rule=threshold_rule, ensemble=ensemble, ensemble_rule=ensemble_rule,
                         output_layer=output_layer, test=test)
    print(f"exported the best model to {folder}")
    print_figures(folder)
    return folder


def report_step(study, path: Path, model_dir: Path, progress: bool = True) -> Path:
    """Write the study's HTML report (with the exported model's pages when there is one)."""
    try:
        from reports import write_report
    except ImportError as exc:  # a broken install: say so, never skip the report in silence
        raise UserError(f"cannot write the report: the reports package does not import ({exc})") from None
    written = write_report(study, path, model_dir=model_dir if model_dir.exists() else None, progress=progress)
    print(f"report: {written}")
    return Path(written)


def _figures(block: dict) -> str:
    return ", ".join(f"{k} {block[k]['value']:.3f} ({block[k]['ci95'][0]:.3f}-{block[k]['ci95'][1]:.3f})"
                     for k in ("accuracy", "recall", "specificity", "auc"))


def print_block(block: dict, card: dict, what: str = "new images") -> None:
    """One evaluation block's figures, and the warning when they fall below validation's intervals."""
    from pneumo_models.evaluation import shift_warning

    print(f"  per image ({block['n']} images, {block['n_patients']} patients; chose nothing): "
          f"{_figures(block['at_threshold'])} at threshold {block['threshold']:.3f}")
    if block.get("per_patient"):
        print(f"  per patient ({block['per_patient']['n']}): {_figures(block['per_patient']['at_threshold'])}")
    print(f"  best accuracy any threshold reaches at recall >= {block['min_recall']:g}: "
          f"{block['best_at_floor']['accuracy']:.3f} (threshold {block['best_at_floor']['threshold']:.3f})")
    if block.get("skipped"):
        print(f"  skipped {len(block['skipped'])} unreadable file(s), e.g. {block['skipped'][0]['path']}: "
              f"{block['skipped'][0]['reason']}")
    warning = shift_warning(card["metrics"]["validation"], block["at_threshold"], what)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)


def print_figures(folder: Path) -> None:
    """Validation and (when scored) test figures of the exported model, test first: it is the honest one."""
    from pneumo_models.card import read_card

    card = read_card(folder)
    m = card["metrics"]
    if m.get("test"):
        print("test split, scored once after the export was final:")
        print_block(m["test"], card, "new patients")
    else:
        print(f"test split: {m.get('test_status', 'not scored')}")
    print(f"validation (chose the model and threshold: optimistic): {_figures(m['validation'])}")
