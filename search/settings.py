"""Everything a `run` needs to know, validated once, as a plain dataclass."""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import UserError

PRUNERS = ("hyperband", "median", "none")


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
    space: str = "default"
    pruner: str | None = None  # None: the engine's default (hyperband for optuna, none otherwise)
    engine: str = "optuna"
    val_fraction: float = 0.2
    patience: int = 3
    cache_dir: str | None = None
    export: bool = True
    report: bool = True
    max_failures: int | None = None
    progress: bool = True
    overrides: dict = field(default_factory=dict)
    input_sizes: tuple | None = None
    threshold_rule: str = "bootstrap"

    def __post_init__(self) -> None:
        if self.trials is None or self.trials < 1:
            raise UserError(f"--trials must be a positive number of trials, got {self.trials}")
        if not 0.0 < self.min_recall <= 1.0:
            raise UserError(f"--min-recall must be in (0, 1], got {self.min_recall}")
        if self.max_epochs < 1:
            raise UserError(f"--max-epochs must be at least 1, got {self.max_epochs}")
        if not 0.0 < self.val_fraction < 0.5:
            raise UserError(f"--val-fraction must be in (0, 0.5), got {self.val_fraction}")
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
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.study or ""):
            raise UserError(f"--study must be letters, digits, '_', '-' or '.', got {self.study!r}")
        self.out = Path(self.out) if self.out else Path("runs") / self.study
        if not self.storage:
            self.storage = f"sqlite:///{self.out / 'study.db'}"
        if self.max_failures is None:
            self.max_failures = max(3, self.trials)

    def build_space(self, source_resolution: int):
        """The study's space: named, restricted to the user's choices and the data's resolution."""
        from spaces import UnknownSpace, get_space

        try:
            space = get_space(self.space)
        except UnknownSpace as exc:
            raise UserError(str(exc)) from None
        try:
            if self.input_sizes:
                space = space.restrict_choices("input_size", self.input_sizes)
        except ValueError as exc:
            raise UserError(f"--input-sizes: {exc}") from None
        space = space.restrict_input_size(source_resolution)
        return space.with_overrides(**self.overrides) if self.overrides else space

    @property
    def model_dir(self) -> Path:
        return Path(self.out) / "best_model"

    @property
    def report_path(self) -> Path:
        return Path(self.out) / "report.html"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["out"] = str(self.out)
        return d
