"""The daemon's own parser (reason masks), and every parser a knob may declare.

The generic parsers (numbers, booleans, names, counter resets) are
``migd.sysfs``'s, which a migrator's parameter declaration uses too.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..mm import parse_reason_mask
from ..sysfs import Anything, Bool, Choice, Int


@dataclass(frozen=True)
class Reasons:
    """A reason mask: ``all``, ``none``, a number or reason names; the value is the mask."""

    kind = "reasons"

    def __call__(self, text: str, what: str, sys=None, inst=None) -> int:
        try:
            return parse_reason_mask(text)
        except ValueError as e:
            raise ValueError(f"{what}: {e}") from None

    def describe(self) -> str:
        return "all, none, a number or reason names"


Parser = Int | Bool | Reasons | Choice | Anything
