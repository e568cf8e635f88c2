"""The kinds of search dimension a space is made of: plain, engine-neutral data."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class IntDim:
    """An integer in [low, high] (both included)."""

    name: str
    low: int
    high: int
    step: int = 1
    log: bool = False

    def contains(self, value: Any) -> bool:
        return isinstance(value, (int,)) and self.low <= value <= self.high


@dataclass(frozen=True)
class FloatDim:
    """A real number in [low, high], sampled on a log scale when ``log``."""

    name: str
    low: float
    high: float
    log: bool = False

    def contains(self, value: Any) -> bool:
        return isinstance(value, (int, float)) and self.low <= value <= self.high


@dataclass(frozen=True)
class CategoricalDim:
    """One of a fixed tuple of JSON-able choices (str, int, float, bool)."""

    name: str
    choices: tuple

    def contains(self, value: Any) -> bool:
        return value in self.choices


@dataclass(frozen=True)
class FixedDim:
    """A parameter that is set, not searched."""

    name: str
    value: Any

    def contains(self, value: Any) -> bool:
        return value == self.value


Dimension = IntDim | FloatDim | CategoricalDim | FixedDim
