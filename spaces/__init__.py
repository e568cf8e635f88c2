"""Search spaces: declarative definitions shared by every search engine.

    from spaces import get_space, list_spaces
    space = get_space("default").restrict_input_size(224)
"""
from __future__ import annotations

from .catalog import SPACES
from .dimensions import CategoricalDim, Dimension, FixedDim, FloatDim, IntDim
from .space import Space

__all__ = ["Space", "Dimension", "IntDim", "FloatDim", "CategoricalDim", "FixedDim",
           "get_space", "list_spaces", "UnknownSpace"]


class UnknownSpace(KeyError):
    def __str__(self) -> str:
        return f"unknown space {self.args[0]!r}; choose one of: {', '.join(SPACES)}"


def get_space(name: str) -> Space:
    try:
        return SPACES[name]
    except KeyError:
        raise UnknownSpace(name) from None


def list_spaces() -> list[Space]:
    return list(SPACES.values())
