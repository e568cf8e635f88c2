"""The plain-words warning shown at the top of a report or an evaluation page when a model does
worse on new X-rays than its validation figures suggest (``pneumo_models.evaluation.shift_warning``:
a figure on the new data below its validation 95% interval)."""
from __future__ import annotations

import html
from typing import NamedTuple

from pneumo_models.evaluation import ShiftFinding, shift_findings, shift_warning


class _ShiftInfo(NamedTuple):
    warning: str | None               # the sentence, or None when nothing fell below validation
    findings: list[ShiftFinding]      # every figure outside its validation interval (worse or better)
    what: str                         # the new data in words: "new patients", "new images"


def _get_shift_info(card: dict, block: dict | None, what: str) -> _ShiftInfo:
    """``block``: an evaluation block (the card's ``metrics.test``, or an ``evaluate`` result)."""
    validation = (card.get("metrics") or {}).get("validation") or {}
    if not isinstance(block, dict) or not block.get("at_threshold") or not validation:
        return _ShiftInfo(None, [], what)
    other = block["at_threshold"]
    return _ShiftInfo(shift_warning(validation, other, what), shift_findings(validation, other), what)


def _draw_shift_warning(info: _ShiftInfo) -> str:
    """The warning paragraph; empty when there is nothing to warn about."""
    if not info.warning:
        return ""
    worse = ",".join(f.metric for f in info.findings if f.worse)
    return (f'<p class="notice warning" data-warning="shift" data-metrics="{html.escape(worse)}">'
            f"<strong>Warning.</strong> {html.escape(info.warning)}</p>")
