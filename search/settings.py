"""Everything a `run` needs to know, validated once, as a plain dataclass (``run_search``'s input)."""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pneumo_models.data.framing import FRAMING_AUTO, FRAMING_CHOICES, FRAMINGS  # no Keras behind it

from .errors import UserError
from .layout import MODEL_DIR, REPORT_FILE, default_out

PRUNERS = ("hyperband", "median", "none")
# What a plain `python -m search run` does (README "What a default run does and costs").
TRIALS_DEFAULT = 100      # finished trials the study should hold ...
TIMEOUT_DEFAULT = 7200.0  # ... or stop starting trials after 2 h: search + export fit in 3 h on 2 CPU cores
THRESHOLD_RULE_DEFAULT = "umbrella"  # exported threshold rule (pneumo_models.metrics.choose_threshold)
ENSEMBLE_DEFAULT = 3      # networks averaged in the exported model (the best 3 distinct trials) ...
# which networks the export averages: all K best, those of them that lower the average's validation log-loss
# (pneumo_models.ensemble.choose_members), the best trial's configuration K times from K seeds, or `auto`:
# greedy where the K were trained on one loss, so that log-loss compares their ranking and not their
# calibration, else top (search.final_model.resolve_ensemble_rule; benchmarks/README.md "Fifteenth round")
ENSEMBLE_RULES = ("auto", "top", "greedy", "seeds")
ENSEMBLE_RULE_DEFAULT = "auto"
# each exported network's output layer: refitted after training as an L2-penalised logistic regression on its
# features of the training films where that lowers validation log-loss (pneumo_models.probe.refit_output_layer),
# or left as training left it; `auto`: refitted for networks fine-tuned from a backbone, not for CNNs
# (pneumo_models.ensemble.OUTPUT_LAYER_CHOICES, repeated here; benchmarks/README.md "Twentieth round")
OUTPUT_LAYERS = ("auto", "refit", "trained")
OUTPUT_LAYER_DEFAULT = "auto"
# The GPU training levers (pneumo_models.training.TrainOptions; README "Backends and throughput"),
# repeated here so that the command line is checked before Keras is imported.
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
JIT_MODES = ("auto", "on", "off")
TRAINING_DEFAULTS = {"precision": "float32", "batch_scale": 1, "jit_compile": "auto"}


def check_ensemble(k) -> int:
    """``--ensemble``: a positive number of networks (one line for anything else)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise UserError(f"--ensemble must be a positive number of networks, got {k}")
    return k


def check_ensemble_rule(rule) -> str:
    """``--ensemble-rule``: one of ENSEMBLE_RULES."""
    if rule not in ENSEMBLE_RULES:
        raise UserError(f"--ensemble-rule must be one of {', '.join(ENSEMBLE_RULES)}, got {rule!r}")
    return rule


def check_output_layer(choice) -> str:
    """``--output-layer``: one of OUTPUT_LAYERS."""
    if choice not in OUTPUT_LAYERS:
        raise UserError(f"--output-layer must be one of {', '.join(OUTPUT_LAYERS)}, got {choice!r}")
    return choice


@dataclass
class RunSettings:
    trials: int = 20
    data: str | None = None
    study: str = "default"
    out: Path | None = None
    storage: str | None = None
    max_epochs: int = 10
    min_recall: float = 0.95
    seed: int = 0
    timeout: float | None = None
    space: str = "auto"              # a name of spaces.SPACES, or "auto" (search.space_choice: chosen per data)
    pruner: str | None = None  # None: the engine's default (hyperband for optuna, none otherwise)
    engine: str = "optuna"
    val_fraction: float = 0.2
    framing: str = FRAMING_AUTO      # "lungs": every film cropped to its lung fields before the resize;
                                     # "auto": lungs for films of >= 128 px, full below
    patience: int = 3
    cache_dir: str | None = None
    export: bool = True
    test: bool = True                # score the data's test split once, after the export is final
    report: bool = True
    max_failures: int | None = None
    progress: bool = True
    overrides: dict = field(default_factory=dict)
    input_sizes: tuple | None = None
    threshold_rule: str = THRESHOLD_RULE_DEFAULT
    ensemble: int = ENSEMBLE_DEFAULT
    ensemble_rule: str = ENSEMBLE_RULE_DEFAULT
    output_layer: str = OUTPUT_LAYER_DEFAULT
    starts: bool = True              # a fresh study first tries the space's known-good recipes
    max_mmacs: float | None = 150.0  # cost guard per image; 0/None = none (see README)
    workers: int = 1                 # worker processes on this machine (CPU, or sharing GPUs as they are)
    gpus: tuple | None = None        # one worker (x workers_per_gpu) per listed GPU, each seeing only its own
    workers_per_gpu: int = 1
    worker_index: int = 0            # set in a spawned worker process (0 in the command's own process)
    run_id: str = ""                 # names this command's trials (user attribute run_id), workers included
    precision: str = "float32"       # Keras dtype policy of the trials' networks (mixed_* for GPUs)
    batch_scale: int = 1             # batch size x K, learning rate x K (for GPUs)
    jit_compile: str = "auto"        # auto (Keras' choice), on (XLA / torch.compile), off
    max_trial_seconds: float | None = None  # time guard: prune after epoch 1 when epoch-1 s x epochs exceeds it

    def __post_init__(self) -> None:
        if self.trials is None or self.trials < 1:
            raise UserError(f"--trials must be a positive number of trials, got {self.trials}")
        if not 0.0 < self.min_recall <= 1.0:
            raise UserError(f"--min-recall must be in (0, 1], got {self.min_recall}")
        if self.max_epochs < 1:
            raise UserError(f"--max-epochs must be at least 1, got {self.max_epochs}")
        if not 0.0 < self.val_fraction < 0.5:
            raise UserError(f"--val-fraction must be in (0, 0.5), got {self.val_fraction}")
        if self.framing not in FRAMING_CHOICES:
            raise UserError(f"--framing must be one of {', '.join(FRAMING_CHOICES)}, got {self.framing!r}")
        if self.timeout is not None and self.timeout <= 0:
            raise UserError(f"--timeout must be positive seconds, got {self.timeout}")
        from .engines import UnknownEngine, get_engine

        try:
            engine = get_engine(self.engine)
        except UnknownEngine as exc:
            raise UserError(str(exc)) from None
        if self.pruner is None:
            self.pruner = engine.default_pruner
        if self.pruner not in PRUNERS:
            raise UserError(f"unknown pruner {self.pruner!r}; choose one of: {', '.join(PRUNERS)}")
        if not engine.takes_pruner and self.pruner != "none":
            raise UserError(f"--pruner {self.pruner} does not apply to --engine {self.engine}: "
                            "KerasTuner decides trial lengths itself; leave --pruner out")
        self._check_space()
        self._check_workers(engine)
        self._check_training()
        check_ensemble(self.ensemble)
        check_ensemble_rule(self.ensemble_rule)
        check_output_layer(self.output_layer)
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.study or ""):
            raise UserError(f"--study must be letters, digits, '_', '-' or '.', got {self.study!r}")
        self.out = Path(self.out) if self.out else default_out(self.study)
        if not self.storage:
            from .storage import default_url

            self.storage = default_url(self.out)
        if self.n_workers > 1 and self.storage.startswith("sqlite") and ":memory:" in self.storage:
            raise UserError("an in-memory SQLite storage cannot be shared by several workers; "
                            "leave --storage out (a study.db file) or pass a database URL")
        if not self.run_id:
            import uuid

            self.run_id = uuid.uuid4().hex[:12]
        if self.max_failures is None:
            self.max_failures = max(3, self.trials)
        if self.max_failures < 1:
            raise UserError(f"--max-failures must be at least 1, got {self.max_failures}")

    def _check_training(self) -> None:
        if self.precision not in PRECISIONS:
            raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if isinstance(self.batch_scale, bool) or not isinstance(self.batch_scale, int) or not 1 <= self.batch_scale <= 256:
            raise UserError(f"--batch-scale must be a whole number from 1 to 256 (batch size and learning rate "
                            f"times K), got {self.batch_scale}")
        if self.jit_compile not in JIT_MODES:
            raise UserError(f"--jit-compile must be one of {', '.join(JIT_MODES)}, got {self.jit_compile!r}")
        if self.max_trial_seconds is not None and not (self.max_trial_seconds > 0 and self.max_trial_seconds < float("inf")):
            raise UserError(f"--max-trial-seconds must be positive seconds (0 = no limit), got {self.max_trial_seconds}")

    @property
    def training(self) -> dict:
        """The training levers as the study records them (``TrainOptions(**settings.training)``)."""
        return {"precision": self.precision, "batch_scale": self.batch_scale, "jit_compile": self.jit_compile}

    def train_options(self):
        from pneumo_models.training import TrainOptions

        return TrainOptions(**self.training)

    def _check_workers(self, engine) -> None:
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise UserError(f"--workers must be a positive number of processes, got {self.workers}")
        if isinstance(self.workers_per_gpu, bool) or not isinstance(self.workers_per_gpu, int) \
                or self.workers_per_gpu < 1:
            raise UserError(f"--workers-per-gpu must be a positive number of processes, got {self.workers_per_gpu}")
        if self.gpus is not None:
            self.gpus = tuple(str(g).strip() for g in self.gpus)
            if not self.gpus or any(not g or not re.fullmatch(r"[A-Za-z0-9:_-]+", g) for g in self.gpus):
                raise UserError(f"--gpus takes GPU indices or UUIDs separated by commas, e.g. 0,1; got {','.join(self.gpus)!r}")
            if len(set(self.gpus)) != len(self.gpus):
                raise UserError(f"--gpus lists a GPU twice: {','.join(self.gpus)} (use --workers-per-gpu for more workers per GPU)")
            if self.workers != 1:
                raise UserError("give either --workers N (this machine's CPUs) or --gpus LIST with "
                                "--workers-per-gpu K, not both")
        elif self.workers_per_gpu != 1:
            raise UserError("--workers-per-gpu needs --gpus (the GPUs to put the workers on)")
        if self.parallel and not engine.supports_workers:
            raise UserError(f"--engine {engine.name} runs in one process (its tuner keeps its state in memory); "
                            "--workers and --gpus work with the optuna and random engines")

    @property
    def n_workers(self) -> int:
        """Worker processes this command runs."""
        return len(self.gpus) * self.workers_per_gpu if self.gpus else self.workers

    @property
    def parallel(self) -> bool:
        """Whether this command spawns worker processes (several, or any on named GPUs)."""
        return self.n_workers > 1 or self.gpus is not None

    @property
    def sampler_seed(self) -> int:
        """The sampler's seed in this process: ``seed`` for a lone local worker, distinct otherwise.

        Workers with one seed would propose the same first (random start-up) trials. On a shared
        database the same command may run on several machines, each a worker 0: their host and
        process id are mixed in too (the sampler of a distributed search is not reproducible).
        """
        from .storage import is_shared

        seed = int(self.seed) + 7919 * int(self.worker_index)
        if self.storage and is_shared(self.storage):
            import os
            import socket
            import zlib

            seed += zlib.crc32(f"{socket.gethostname()}:{os.getpid()}".encode()) % 1_000_003
        return seed % (2**31 - 1)

    @classmethod
    def from_dict(cls, d: dict) -> "RunSettings":
        """Inverse of ``to_dict`` (how a worker process receives its command's settings)."""
        d = dict(d)
        for key in ("input_sizes", "gpus"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return cls(**d)

    def _check_space(self) -> None:
        from spaces import SPACES

        from .space_choice import AUTO

        if self.space != AUTO and self.space not in SPACES:
            raise UserError(f"unknown space {self.space!r}; choose one of: {', '.join([AUTO, *SPACES])}")

    def build_space(self, source_resolution: int, framing: str):
        """The study's space: named, restricted to the user's choices, the data's resolution and its
        ``framing`` (settled: ``full``, ``lungs`` or ``centre``, as ``StudyData.framing`` gives it)."""
        from spaces import UnknownSpace, get_space

        from .space_choice import AUTO, affordable_sizes

        if self.space == AUTO:
            raise ValueError("settings.space 'auto' must be resolved first (search.space_choice.choose_space)")
        if framing not in FRAMINGS:
            raise ValueError(f"framing {framing!r} must be settled first (StudyData.framing)")
        try:
            space = get_space(self.space)
        except UnknownSpace as exc:
            raise UserError(str(exc)) from None
        try:
            if self.input_sizes:
                space = space.restrict_choices("input_size", self.input_sizes)
        except ValueError as exc:
            raise UserError(f"--input-sizes: {exc}") from None
        space = affordable_sizes(space.restrict_input_size(source_resolution), self.max_mmacs)
        if framing == "lungs" and "reframe" in space.names \
                and "reframe" not in self.overrides:
            # films cropped to their lungs are framed alike whatever their class: re-framing healthy
            # films has no shortcut left to undo, and only cuts lung edges (benchmarks/README.md "Sixth round")
            space = space.with_overrides(reframe=0.0)
        return space.with_overrides(**self.overrides) if self.overrides else space

    @property
    def model_dir(self) -> Path:
        return Path(self.out) / MODEL_DIR

    @property
    def report_path(self) -> Path:
        return Path(self.out) / REPORT_FILE

    def to_dict(self) -> dict:
        d = asdict(self)
        d["out"] = str(self.out)
        return d
