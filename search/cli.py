"""`python -m search ...`: argument parsing and the one place where errors become exit codes.

Each command is a thin layer: `run` builds ``RunSettings``, calls ``search.pipeline.run_search``
and turns its ``RunOutcome`` into a last line and an exit status."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import UserError
from .layout import CV_FILE, MODEL_DIR, REPORT_FILE, default_out
from .settings import (ENSEMBLE_DEFAULT, ENSEMBLE_RULE_DEFAULT, ENSEMBLE_RULES, FRAMING_AUTO, FRAMING_CHOICES,
                       OUTPUT_LAYER_DEFAULT, OUTPUT_LAYERS, THRESHOLD_RULE_DEFAULT, TIMEOUT_DEFAULT, TRIALS_DEFAULT)

DESCRIPTION = """\
pneumo-search: honest hyperparameter search for pneumonia CNNs on chest X-rays.
Trials are chosen by recall-constrained accuracy (best validation accuracy among decision
thresholds whose pneumonia recall stays >= --min-recall) on a patient-grouped validation split."""

EPILOG = """examples:
  python -m search run --trials 20 --data ../shared/data/chest_xray
  python -m search run --trials 6 --max-epochs 3 --data synthetic --study demo
  python -m search export --study demo
  python -m search report --study demo
  python -m search evaluate runs/demo/best_model --data hospital_xrays/
  python -m search predict runs/demo/best_model xray1.jpeg xray2.png scan.dcm
  python -m search export-serving runs/demo/best_model --format onnx --format tf_saved_model"""


def _add_study_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--study", default="default", help="study name (default: %(default)s)")
    p.add_argument("--out", type=Path, help="output folder (default: runs/<study>)")
    p.add_argument("--storage", help="Optuna storage URL (default: sqlite:///<out>/study.db); "
                                     "postgresql://user:pass@host/db lets several machines join one study")


def _add_cache_progress_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-dir", help="decoded-image cache (default: $PNEUMO_SEARCH_CACHE or ~/.cache/pneumo-search)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _add_threshold_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threshold-rule", choices=("umbrella", "bootstrap", "validation"), default=THRESHOLD_RULE_DEFAULT,
                   help="exported threshold: 'umbrella' = the highest threshold keeping pneumonia recall >= floor "
                        "on new patients with 95%% probability (Neyman-Pearson umbrella, reads only the pneumonia "
                        "scores); 'validation' = best validation accuracy with recall >= floor; 'bootstrap' = "
                        "that, lowered so recall stays >= floor in 95%% of bootstrap resamples (default: %(default)s)")


def _add_test_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-test", action="store_true",
                   help="do not score the data's test split (<root>/test/<CLASS>/ or test_images in an .npz); "
                        "by default the exported model is scored on it once, after everything is chosen")


def _add_ensemble_arg(p: argparse.ArgumentParser, what: str = "the exported model",
                      how: str = "kept by each trial, else retrained") -> None:
    p.add_argument("--ensemble", type=int, default=None, metavar="K",
                   help=f"{what} averages the networks of the K best distinct complete trials ({how}) in one .keras "
                        f"model; 1 = the best trial alone (default: {ENSEMBLE_DEFAULT}, or fewer when the study "
                        "has fewer complete trials)")
    if how == "kept by each trial, else retrained":  # export and run: the members are chosen after training
        p.add_argument("--ensemble-rule", choices=ENSEMBLE_RULES, default=ENSEMBLE_RULE_DEFAULT,
                       help="which of the K networks the export averages: 'auto' = 'greedy' where the K were trained "
                            "on one loss (label smoothing, class weights, mixup alike), else 'top'; 'top' = all K; "
                            "'greedy' = those that "
                            "lower the average's validation log-loss (forward selection from the best one, Caruana "
                            "et al. 2004); 'seeds' = the best trial's configuration K times, its kept network and "
                            "K-1 more trained at export from other seeds (default: %(default)s)")


def _add_output_layer_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output-layer", choices=OUTPUT_LAYERS, default=OUTPUT_LAYER_DEFAULT,
                   help="each network's output layer: 'refit' = refitted after training as an L2-penalised logistic "
                        "regression on its features of the training films (strength by validation log-loss), where "
                        "that lowers validation log-loss; 'trained' = as training left it; 'auto' = refit for networks "
                        "fine-tuned from an ImageNet backbone, trained for CNNs (default: %(default)s)")


def _ensemble(args, default: int) -> int:
    return default if args.ensemble is None else args.ensemble


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m search", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="search (create or resume a study), then export and report the best model",
                         description="Run an Optuna study until it holds --trials finished (complete or "
                                     "pruned) trials. Re-running the same command resumes and tops up.")
    run.add_argument("--trials", type=int, default=TRIALS_DEFAULT,
                     help="finished trials the study should hold in all (default: %(default)s)")
    run.add_argument("--data", help="a <root>/<split>/<CLASS>/ image folder, a MedMNIST .npz, or 'synthetic' "
                                    "(default: PneumoniaMNIST, downloaded once into the cache)")
    _add_study_args(run)
    run.add_argument("--max-epochs", type=int, default=10, help="epochs per trial at most (default: %(default)s)")
    run.add_argument("--min-recall", type=float, default=0.95, help="pneumonia recall floor in (0, 1] (default: %(default)s)")
    run.add_argument("--seed", type=int, default=0, help="seed of the sampler, the split and the weights (default: %(default)s)")
    run.add_argument("--timeout", type=float, default=TIMEOUT_DEFAULT,
                     help="stop starting new trials after this many seconds of this run, whichever comes first "
                          "with --trials; the trial in flight finishes, then export and report run; "
                          "0 = no limit (default: %(default)g, 2 h)")
    run.add_argument("--space", default="auto",
                     help="search space name (see --list-spaces) or auto: pretrained (EfficientNet-Lite0 from ImageNet "
                          "weights, fetched once) for films of >= 128 px when its weights can be had, default (CNNs) "
                          "otherwise; a resumed study keeps its space (default: %(default)s)")
    run.add_argument("--input-sizes", help="comma-separated input sizes to search among, e.g. 64,96,128 "
                                           "(default: the space's, capped at the data's resolution)")
    run.add_argument("--max-mmacs", type=float, default=150.0,
                     help="refuse (prune before training) configurations costing more than this many million "
                          "multiply-adds per image; 0 = no limit, sensible on a GPU (default: %(default)s)")
    run.add_argument("--weights", choices=("none", "imagenet"),
                     help="backbones (--space transfer) start from Keras' ImageNet weights, downloaded once and "
                          "checked against their published hash, or from random weights (the space's default: none)")
    run.add_argument("--list-spaces", action="store_true", help="list the search spaces and exit")
    run.add_argument("--no-starts", action="store_true",
                     help="a fresh study does not first try the space's known-good recipes (see `spaces`)")
    run.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                     help="fix one parameter of the space (JSON value), e.g. --set conv_blocks=3 --set optimizer=adam; repeatable")
    run.add_argument("--engine", default="optuna", metavar="ENGINE",
                     help="search engine: optuna (TPE sampler + --pruner), random (random search, no pruning), "
                          "kerastuner-hyperband or kerastuner-bayes (KerasTuner oracles on the same space); "
                          "default: %(default)s")
    run.add_argument("--pruner", default=None, help="hyperband, median or none (default: hyperband for "
                                                    "--engine optuna, none for the others)")
    run.add_argument("--val-fraction", type=float, default=0.2, help="validation share carved out of train when the data has no usable val split (default: %(default)s)")
    run.add_argument("--framing", choices=FRAMING_CHOICES, default=FRAMING_AUTO,
                     help="full: the whole film; lungs: each film cropped to its lung fields before the resize, "
                          "in training and in every prediction of the exported model; centre: its central square "
                          "(MedMNIST's crop); auto: lungs for films of >= 128 px, below centre for a MedMNIST .npz "
                          "and full for a folder (see README) (default: %(default)s)")
    run.add_argument("--patience", type=int, default=3, help="early stopping: epochs without improvement (default: %(default)s)")
    _add_cache_progress_args(run)
    run.add_argument("--no-export", action="store_true", help="do not export the best model")
    _add_test_arg(run)
    _add_threshold_arg(run)
    _add_ensemble_arg(run)
    _add_output_layer_arg(run)
    run.add_argument("--no-report", action="store_true", help="do not write <out>/report.html")
    run.add_argument("--max-failures", type=int, metavar="N",
                     help="stop after N failed trials in this run (diverged, out of memory, error); failed "
                          "trials never count toward --trials (default: max(3, --trials))")
    par = run.add_argument_group("parallel and distributed trials (see README)")
    par.add_argument("--workers", type=int, default=1, metavar="N",
                     help="worker processes on this machine, sharing its CPUs (each gets cores/N threads) "
                          "(default: %(default)s)")
    par.add_argument("--gpus", metavar="LIST",
                     help="one worker per listed GPU, each seeing only its own: e.g. 0,1 or 'all'")
    par.add_argument("--workers-per-gpu", type=int, default=1, metavar="K",
                     help="workers sharing each --gpus GPU (default: %(default)s)")
    gpu = run.add_argument_group("training speed on GPUs (see README, \"Backends and throughput\"); the "
                                 "defaults train as on a CPU")
    gpu.add_argument("--precision", default="float32", metavar="POLICY",
                     help="Keras dtype policy of the networks: float32, mixed_bfloat16 or mixed_float16 "
                          "(16-bit compute, float32 weights and output; float16 with loss scaling); "
                          "exported models compute in float32 (default: %(default)s)")
    gpu.add_argument("--batch-scale", type=int, default=1, metavar="K",
                     help="train with K times each configuration's batch size and learning rate "
                          "(linear scaling; a trial records both values) (default: %(default)s)")
    gpu.add_argument("--jit-compile", default="auto", metavar="MODE",
                     help="auto (Keras' choice: XLA on a TensorFlow GPU and on JAX, none on PyTorch), "
                          "on (XLA, or torch.compile under PyTorch) or off (default: %(default)s)")
    gpu.add_argument("--max-trial-seconds", type=float, default=0.0, metavar="S",
                     help="time guard: prune a trial after its first epoch when that epoch's seconds times "
                          "--max-epochs exceed S; 0 = no limit (default: %(default)g)")

    exp = sub.add_parser("export", help="export the best trials' networks of a study (retrained where not kept) to <out>/best_model")
    _add_study_args(exp)
    _add_cache_progress_args(exp)
    _add_threshold_arg(exp)
    _add_ensemble_arg(exp)
    _add_output_layer_arg(exp)
    _add_test_arg(exp)

    ev = sub.add_parser("evaluate", help="score an exported model on labelled images (a test split, or a "
                                         "hospital's own folder: external validation)",
                        description="Score an exported model on a labelled <root>/<CLASS>/ folder, a "
                                    "<root>/<split>/<CLASS>/ folder or a MedMNIST .npz, at its exported threshold. "
                                    "Writes evaluation-<name>.json and evaluation-<name>.html next to the model.")
    ev.add_argument("model_dir", type=Path, help="an exported model folder (…/best_model)")
    ev.add_argument("--data", required=True, help="labelled images: <root>/<CLASS>/*, <root>/<split>/<CLASS>/* or an .npz")
    ev.add_argument("--split", help="which split of a split folder or .npz (default: test; a plain <CLASS>/ folder: all)")
    ev.add_argument("--name", help="names the output files evaluation-<name>.* (default: the data's name and split)")
    _add_cache_progress_args(ev)

    rep = sub.add_parser("report", help="write the study's HTML report (also for running or unexported studies)")
    _add_study_args(rep)
    rep.add_argument("--file", type=Path, help="report path (default: <out>/report.html)")
    rep.add_argument("--no-progress", action="store_true", help="no progress output")

    cv = sub.add_parser("cv", help="patient-grouped k-fold cross-validation of a study's best recipe",
                        description="Train the best trial's configuration k times, each time scoring a held-out "
                                    "fold of patients it never saw (early stopping and threshold on an inner "
                                    "patient-grouped split). Writes <out>/crossval.json.")
    _add_study_args(cv)
    cv.add_argument("--folds", type=int, default=5, help="number of folds (default: %(default)s)")
    cv.add_argument("--trial", type=int, help="cross-validate this trial instead of the best one")
    _add_cache_progress_args(cv)
    _add_threshold_arg(cv)
    _add_ensemble_arg(cv, "the recipe (as export would ship it; not with --trial)", how="each trained on every fold")
    _add_output_layer_arg(cv)
    cv.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="replace one parameter of the recipe (JSON value), e.g. --set class_weight=balanced; repeatable")
    cv.add_argument("--file", type=Path, help="where to write the results (default: <out>/crossval.json)")

    pred = sub.add_parser("predict", help="predict pneumonia on image files with an exported model")
    pred.add_argument("model_dir", type=Path, help="an exported model folder (…/best_model)")
    pred.add_argument("files", nargs="+", type=Path, help="JPEG, PNG or DICOM files, or folders of them (searched recursively)")
    fmt = pred.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print JSON instead of a table")
    fmt.add_argument("--csv", action="store_true", help="print CSV (path, patient, probability, label, error)")
    pred.add_argument("--per-patient", action="store_true",
                      help="also one line per patient (DICOM PatientID, else Kermany-style file names): the patient's highest "
                           "probability, called pneumonia if any image is")
    pred.add_argument("--no-progress", action="store_true", help="no progress bar (it goes to stderr, the results to stdout)")

    srv = sub.add_parser("export-serving", help="write an exported model as ONNX and/or TensorFlow SavedModel "
                                                "for ONNX Runtime or TensorFlow Serving",
                         description="Write the model of MODEL_DIR, ensemble included, through Keras' model.export "
                                     "next to model.keras (model.onnx, saved_model/), each checked against "
                                     "model.keras, with serving.json (input and output names and shapes, threshold); "
                                     "then attach them to the study as Optuna artifacts.")
    srv.add_argument("model_dir", type=Path, help="an exported model folder (…/best_model)")
    srv.add_argument("--format", action="append", required=True, choices=("onnx", "tf_saved_model"),
                     help="serving format; repeat for both")
    srv.add_argument("--study", help="the model's study (default: the one its card names)")
    srv.add_argument("--storage", help="the study's storage (default: <MODEL_DIR>/../study.db, else the card's)")
    srv.add_argument("--no-artifacts", action="store_true", help="do not attach the files to the study")
    srv.add_argument("--no-progress", action="store_true", help="no progress bar")

    sub.add_parser("spaces", help="list the search spaces")
    return parser


def _list_spaces() -> int:
    from spaces import list_spaces

    print("auto (the default)\n  pretrained for films of >= 128 px when EfficientNet-Lite0's ImageNet weights can be "
          "had (cached, or downloaded once); default for smaller images, offline, --weights none or CNN --set values")
    for space in list_spaces():
        print(f"{space.name}\n  {space.description}")
        for line in space.describe():
            print(f"    {line}")
        if space.starts:
            print(f"    a fresh study first tries {len(space.starts)} known-good recipes (--no-starts: not)")
    return 0


def _load_existing_study(args):
    """(out folder, storage URL, study) of ``--study``/``--out``/``--storage``, as ``run`` made them."""
    from .storage import default_url
    from .study import load_study

    out = args.out or default_out(args.study)
    url = args.storage or default_url(out)
    return out, url, load_study(args.study, url)


def _cmd_run(args) -> int:
    if args.list_spaces:
        return _list_spaces()
    from .pipeline import run_search
    from .settings import RunSettings
    from .workers import parse_gpus

    settings = RunSettings(trials=args.trials, data=args.data, study=args.study, out=args.out,
                           storage=args.storage, max_epochs=args.max_epochs, min_recall=args.min_recall,
                           seed=args.seed, timeout=args.timeout or None, space=args.space, pruner=args.pruner, engine=args.engine,
                           val_fraction=args.val_fraction, framing=args.framing, patience=args.patience,
                           cache_dir=args.cache_dir,
                           export=not args.no_export, test=not args.no_test, report=not args.no_report,
                           progress=not args.no_progress,
                           overrides=_weights(args, parse_overrides(args.set)), input_sizes=parse_sizes(args.input_sizes),
                           threshold_rule=args.threshold_rule, ensemble=_ensemble(args, ENSEMBLE_DEFAULT), ensemble_rule=args.ensemble_rule, output_layer=args.output_layer, starts=not args.no_starts, max_failures=args.max_failures, max_mmacs=args.max_mmacs or None,
                           workers=args.workers, gpus=parse_gpus(args.gpus), workers_per_gpu=args.workers_per_gpu,
                           precision=args.precision, batch_scale=args.batch_scale, jit_compile=args.jit_compile,
                           max_trial_seconds=args.max_trial_seconds or None)
    return _exit_status(run_search(settings), settings)


def _exit_status(outcome, settings) -> int:
    """The run's last word and exit status: 0 done (the study holds its trials, or --timeout came);
    3 stopped by --max-failures before the study held --trials finished trials; 1 workers died
    before it did (re-run to resume); 130 interrupted; (2 bad input: see ``_guarded``)."""
    if outcome.stopped_by == "interrupted":
        from .storage import redact

        print(f"\ninterrupted: {outcome.finished} finished trials are kept in {redact(settings.storage)}; "
              "re-run the same command to resume", file=sys.stderr)
        return 130
    if outcome.stopped_by == "failures":
        last = outcome.failures[-1][1] if outcome.failures else "see the trials' fail_reason"
        print(f"error: stopped after {len(outcome.failures)} failed trials (--max-failures {settings.max_failures}) "
              f"with {outcome.finished} of {settings.trials} finished; last reason: {last}", file=sys.stderr)
        return 3
    if outcome.stopped_by == "workers":
        print(f"error: the study holds {outcome.finished} of {settings.trials} finished trials because workers "
              "stopped early; re-run the same command to resume", file=sys.stderr)
        return 1
    return 0


def parse_sizes(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"--input-sizes takes comma-separated integers, got {text!r}") from None


def _weights(args, overrides: dict) -> dict:
    """``--weights X`` is ``--set backbone_weights=X`` (the two cannot disagree)."""
    if args.weights is None:
        return overrides
    if overrides.get("backbone_weights", args.weights) != args.weights:
        raise UserError(f"--weights {args.weights} and --set backbone_weights={overrides['backbone_weights']} disagree")
    return {**overrides, "backbone_weights": args.weights}


def parse_overrides(items: list[str]) -> dict:
    """``--set NAME=VALUE`` items -> {name: value}; an unknown name, or a value the parameter cannot
    take (``pneumo_models.params.DOMAINS``), is a one-line UserError before any study starts."""
    from pneumo_models.params import DEFAULTS, value_problem
    from spaces import get_space

    known = set(get_space("default").names) | set(DEFAULTS) | {"batch_size", "class_weight"}
    out = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            raise UserError(f"--set takes NAME=VALUE, got {item!r}")
        if name not in known:
            raise UserError(f"--set {name}: unknown parameter; known: {', '.join(sorted(known))}")
        try:
            out[name] = json.loads(raw)
        except json.JSONDecodeError:
            out[name] = raw
        problem = value_problem(name, out[name])
        if problem:
            raise UserError(f"--set {name}={raw}: {name} {problem}")
    return out


def _cmd_export(args) -> int:
    from .pipeline import export_step

    out, url, study = _load_existing_study(args)
    export_step(study, out, storage_url=url, cache_dir=args.cache_dir, progress=not args.no_progress,
                threshold_rule=args.threshold_rule, ensemble=_ensemble(args, ENSEMBLE_DEFAULT),
                ensemble_rule=args.ensemble_rule, output_layer=args.output_layer, test=not args.no_test)
    return 0


def _cmd_evaluate(args) -> int:
    from .pipeline import print_block
    from .scoring import evaluate_model

    done = evaluate_model(args.model_dir, args.data, split=args.split, name=args.name, cache_dir=args.cache_dir,
                          progress=not args.no_progress)
    block = done.payload["evaluation"]
    print(f"evaluated on {block['n']} images of {block['source']} ({block['split']}): written to {done.json_path}")
    print_block(block, done.card)
    if done.page_path:
        print(f"page: {done.page_path}")
    return 0


def _cmd_report(args) -> int:
    from .pipeline import report_step

    out, _, study = _load_existing_study(args)
    report_step(study, args.file or out / REPORT_FILE, out / MODEL_DIR, not args.no_progress)
    return 0


def _cmd_cv(args) -> int:
    from .study_cv import crossvalidate_study, format_cv

    out, _, study = _load_existing_study(args)
    report = crossvalidate_study(study, out, folds=args.folds, trial_number=args.trial, cache_dir=args.cache_dir,
                                 progress=not args.no_progress, threshold_rule=args.threshold_rule,
                                 ensemble=_ensemble(args, 1 if args.trial is not None else ENSEMBLE_DEFAULT),
                                 overrides=parse_overrides(args.set), file=args.file, output_layer=args.output_layer)
    print(format_cv(report))
    print(f"written to {args.file or out / CV_FILE}")
    return 0


def _cmd_export_serving(args) -> int:
    from .serving import export_serving_step

    export_serving_step(args.model_dir, args.format, storage=args.storage, study_name=args.study,
                        artifacts=not args.no_artifacts, progress=not args.no_progress)
    return 0


def _expand_files(paths: list[Path]) -> list[str]:
    """Files as given; a folder gives its image files (recursively, sorted)."""
    from pneumo_models.data.constants import IMAGE_KINDS
    from pneumo_models.data.sources import image_files

    out = []
    for path in paths:
        if path.is_dir():
            found = [str(f) for f in image_files(path)]  # JPEG, PNG and DICOM (by name or preamble)
            if not found:
                raise UserError(f"no image files ({IMAGE_KINDS}) in folder {path}")
            out.extend(found)
        else:
            out.append(str(path))
    return out


def _cmd_predict(args) -> int:
    import csv

    from pneumo_models import load_model
    from pneumo_models.data.patients import file_patient as patient_id  # DICOM PatientID, else the file name

    model = load_model(args.model_dir)
    results = model.predict_files(_expand_files(args.files), progress=not args.no_progress)
    patients = None
    if args.per_patient:
        patients = {}
        for r in results:
            if r.error is None:
                pid = patient_id(r.path)
                patients[pid] = max(patients.get(pid, -1.0), r.probability)
    label = lambda p: model.class_names[1] if p >= model.threshold else model.class_names[0]  # noqa: E731
    if args.json:
        out = {"threshold": model.threshold, "predictions": [r.__dict__ for r in results]}
        if patients is not None:
            out["patients"] = [{"patient": k, "probability": v, "label": label(v)} for k, v in patients.items()]
        print(json.dumps(out, indent=2))
    elif args.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["path", "patient", "probability", "label", "error"])
        for r in results:
            writer.writerow([r.path, patient_id(r.path), "" if r.probability is None else repr(r.probability),
                             r.label or "", r.error or ""])
        for k, v in (patients or {}).items():
            writer.writerow(["", k, repr(v), label(v), ""])
    else:
        width = max(len(r.path) for r in results)
        print(f"{'file':<{width}}  probability  label")
        for r in results:
            if r.error:
                print(f"{r.path:<{width}}  {'-':>11}  unreadable: {r.error}")
            else:
                print(f"{r.path:<{width}}  {r.probability:>11.4f}  {r.label}")
        if patients is not None:
            width = max([len("patient")] + [len(k) for k in patients])
            print(f"\n{'patient':<{width}}  probability  label  (highest of the patient's images)")
            for k, v in patients.items():
                print(f"{k:<{width}}  {v:>11.4f}  {label(v)}")
        print(f"(label = {model.class_names[1]} when probability >= {model.threshold:.4f})")
    return 1 if any(r.error for r in results) else 0


COMMANDS = {"run": _cmd_run, "export": _cmd_export, "evaluate": _cmd_evaluate, "report": _cmd_report, "predict": _cmd_predict, "cv": _cmd_cv,
            "export-serving": _cmd_export_serving, "spaces": lambda args: _list_spaces()}


def main(argv: list[str] | None = None) -> int:
    from .runtime import import_keras_quietly
    from .workers import WORKER_COMMAND, worker_main

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == [WORKER_COMMAND]:  # a worker process started by `run --workers/--gpus`
        return _guarded(worker_main)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    if args.command in ("export", "report", "predict", "cv", "evaluate", "export-serving"):
        import_keras_quietly()  # `run` imports Keras once its input is checked (or never, with workers)
    return _guarded(lambda: COMMANDS[args.command](args))


def _guarded(command) -> int:
    """Run a command; a user mistake becomes one line on stderr and exit status 2, no traceback."""
    from pneumo_models.card import ModelFolderError
    from pneumo_models.data import DataError

    try:
        return command()
    except (UserError, DataError, ModelFolderError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
