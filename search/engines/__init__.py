"""Search engines, by name: what proposes configurations and how many epochs each one trains.

    from search.engines import ENGINES, get_engine
    outcome = get_engine("kerastuner-hyperband").run(study, settings, data, space)  # a RunOutcome

Every engine stores its trials in the study's Optuna storage with the same attributes, so
report, export and predict work the same whichever engine ran. A study is searched by one
engine only (its user attribute ``engine``); resuming it with another is refused.
"""
from __future__ import annotations

from .base import Engine
from .kerastuner_engine import KerasTunerEngine
from .optuna_engine import OptunaEngine
from .random_engine import RandomEngine

__all__ = ["ENGINES", "Engine", "get_engine", "UnknownEngine"]

_ALL: dict[str, Engine] = {e.name: e for e in (
    OptunaEngine(), RandomEngine(),
    KerasTunerEngine("kerastuner-hyperband", "hyperband"), KerasTunerEngine("kerastuner-bayes", "bayes"))}

ENGINES: tuple[str, ...] = tuple(_ALL)


class UnknownEngine(KeyError):
    def __str__(self) -> str:
        return f"unknown engine {self.args[0]!r}; choose one of: {', '.join(ENGINES)}"


def get_engine(name: str) -> Engine:
    try:
        return _ALL[name]
    except KeyError:
        raise UnknownEngine(name) from None
