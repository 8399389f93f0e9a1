"""How a written value parses: one function per kind, and the parsers files declare.

:func:`parse_int` and :func:`parse_bool` are the only places a tree write's
number or boolean is read (so pointing them at the kernel's ``kstrtox`` rules
changes every file at once); the parser classes add a range or a set of names,
say what they accept for the generated reference, and give the config schema
its kind.  A parser raises ValueError (EINVAL at the tree) and returns the
value the file's store applies.  Here, beside ``kstrtox``, because the
daemon's knob table and a migrator's own declaration of its parameters (as
``module_param_cb()`` declares them with their ``kernel_param_ops``) both use
them; the reason-mask parser is the daemon's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._kstrtox import kstrtobool, kstrtoll, kstrtoull


def parse_int(text: str, lo: int, hi: int, what: str) -> int:
    """A number as the kernel's store would parse it: ``kstrtoull(buf, 0)``
    (``kstrtoll`` where the knob may be negative, as debugfs' signed
    attributes), then the knob's own range."""
    try:
        value = (kstrtoll if lo < 0 else kstrtoull)(text, 0)
    except ValueError as e:
        raise ValueError(f"{what}: expected an integer {lo}..{hi} ({e})") from None
    if not lo <= value <= hi:
        raise ValueError(f"{what}: expected an integer {lo}..{hi}")
    return value


def parse_bool(text: str, what: str) -> bool:
    """A boolean as ``kstrtobool``: ``1/y/Y/on`` or ``0/n/N/off``."""
    try:
        return kstrtobool(text)
    except ValueError as e:
        raise ValueError(f"{what}: {e}") from None


@dataclass(frozen=True)
class Int:
    """Integers ``lo..hi``; ``hi`` may depend on the instance (a node's pages)."""

    lo: int
    hi: int | Callable[[Any, Any], int]
    doc: str = ""
    kind = "int"

    def __call__(self, text: str, what: str, sys=None, inst=None) -> int:
        hi = self.hi(sys, inst) if callable(self.hi) else self.hi
        return parse_int(text, self.lo, hi, what)

    def describe(self) -> str:
        return self.doc or f"{self.lo}..{self.hi}"


@dataclass(frozen=True)
class Bool:
    kind = "bool"

    def __call__(self, text: str, what: str, sys=None, inst=None) -> bool:
        return parse_bool(text, what)

    def describe(self) -> str:
        return "1/y/on or 0/n/off"


@dataclass(frozen=True)
class Choice:
    """One of a set of names, read when parsed (the catalogue may grow)."""

    names: Callable[[], tuple[str, ...]]
    kind = "choice"

    @property
    def choices(self) -> tuple[str, ...]:
        return self.names()

    def __call__(self, text: str, what: str, sys=None, inst=None) -> str:
        v = text.strip()
        if v not in self.names():
            raise ValueError(f"{what}: expected one of {', '.join(self.names())}")
        return v

    def describe(self) -> str:
        return " ".join(self.names())


@dataclass(frozen=True)
class Anything:
    """Any write (a counter's reset)."""

    doc: str = "any (resets)"
    kind = "any"

    def __call__(self, text: str, what: str, sys=None, inst=None) -> str:
        return text

    def describe(self) -> str:
        return self.doc

