"""The building blocks a section is made of; ``reports.html`` turns them into markup.

Section builders return these plain tuples, so what a report contains (which figures, which
"missing" sentences) can be checked without rendering anything.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Union


class FigureBlock(NamedTuple):
    key: str                 # stable id, e.g. "roc"; becomes data-figure="roc" on the page
    figure: Any              # plotly.graph_objects.Figure
    caption: str = ""        # one or two sentences under the plot, in plain words
    height: int = 440        # pixels


class HtmlBlock(NamedTuple):
    key: str
    html: str                # trusted markup produced by a _draw_* function (already escaped)


class NoticeBlock(NamedTuple):
    key: str
    message: str             # plain text; escaped when rendered
    missing: bool = True     # True: something the report should show is absent (listed at the top)


Block = Union[FigureBlock, HtmlBlock, NoticeBlock]


class Section(NamedTuple):
    id: str                  # anchor for the navigation bar
    title: str
    blocks: list[Block]
    intro: str = ""          # one plain sentence under the heading

    @property
    def figures(self) -> list[FigureBlock]:
        return [b for b in self.blocks if isinstance(b, FigureBlock)]

    @property
    def missing(self) -> list[NoticeBlock]:
        return [b for b in self.blocks if isinstance(b, NoticeBlock) and b.missing]
