"""The command line's declarations: options, commands, and their parser.

Each subcommand is a :class:`Command` declaring its options (:class:`Option`) once;
the CLI (``cli.py``) builds argparse parsers from the declarations and runs
every command in one frame, which alone prints errors and maps them to exit
statuses: a ``ValueError`` is bad input (one line on stderr, exit 2, never a
traceback or a screenful of usage), :class:`Failed` a run that failed.  The
core packages declare their options with these classes and never print.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any


class Parser(argparse.ArgumentParser):
    """argparse with usage errors on one line (the usage is in ``--help``)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message}\n")


def with_default(help_text: str, default: str | None) -> str:
    """``help (default: X)``; the help says the default itself when there is none."""
    return help_text if default is None else f"{help_text} (default: {default})"


def check_output(path: str | None, what: str) -> None:
    """Fail before the run, not after it, on a file that cannot be written."""
    if path is not None and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        raise ValueError(f"{what}: no such directory for {path!r}")


def check_mountpoint(path: str) -> None:
    """A directory, or a dead mount (ENOTCONN: the start clears it)."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        mode = 0
    except OSError:
        return  # e.g. "Transport endpoint is not connected": a stale mount
    if not stat.S_ISDIR(mode):
        raise ValueError(f"--mount: not a directory: {path!r}")


class Progress:
    """One status line on a terminal's stderr, with the time so far; nothing
    when stderr is a file or a pipe (logs stay clean).

    The line has no newline (each update overwrites it), so ``clear()`` must
    run before anything else is printed: without it the first result line is
    glued to the last status line when stdout and stderr share the terminal.
    """

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self.shown = False
        self.t0 = time.monotonic()

    def __call__(self, msg: str) -> None:
        if self.enabled:
            self.stream.write(f"\r\x1b[K[{time.monotonic() - self.t0:5.0f}s] {msg}")
            self.stream.flush()
            self.shown = True

    def clear(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False


class Failed(Exception):
    """A run that failed (not bad input): one line, exit ``status`` (1)."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def in_range(flag: str, lo: float, hi: float, kind: type = int, unit: str = "a number"
             ) -> Callable[[str], Any]:
    """A parser of ``kind`` values ``lo..hi`` for ``flag``: one-line ValueErrors
    (``bad FLAG 'x' (expected UNIT)``, ``FLAG must be LO..HI: 'x'``)."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise ValueError(f"bad {flag} {text!r} (expected {unit})") from None
        if not lo <= value <= hi:
            show = (lambda v: f"{v:g}") if kind is float else str
            raise ValueError(f"{flag} must be {show(lo)}..{show(hi)}: {text!r}")
        return value
    return parse


@dataclass(frozen=True)
class Option:
    """One command-line option, declared once.

    ``dest`` is the name its value goes by (a ``BenchOptions`` field, a key of
    the values a command's run gets), ``parse`` turns the typed text into that
    value (ValueError with a one-line message on bad input; None for a flag),
    ``default`` is the text used when the option is absent (None: the value is
    None, or the field's own default, which ``help`` then describes).  A
    ``flag`` without dashes is a positional argument.  The parser builds the
    option, its help line and its shown default from this; the command gets
    the parsed value.  The alternative - argparse arguments written out per
    command - is what left ``--orders`` and ``--total`` without a word of help.
    """

    flag: str
    dest: str
    help: str
    parse: Callable[[str], Any] | None = None
    default: str | None = None
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    shown: str | None = None  # the default as ``--help`` shows it, when ``default`` is long
    #: Given any number of times (a positional: one or more); the value is the
    #: list of each one parsed.
    repeatable: bool = False

    @property
    def shown_default(self) -> str | None:
        return self.shown or self.default

    def but(self, **changes: Any) -> Option:
        """The same option with another default or help, for one command."""
        return replace(self, **changes)

    def value(self, text: str) -> Any:
        """The parsed value of ``text`` (the default's text too); a list for a
        repeatable option."""
        return [self.parse(text)] if self.repeatable else self.parse(text)


Options = tuple[Option, ...]


@dataclass(frozen=True)
class Command:
    """One subcommand, declared once: what ``--help`` says, its options, and
    ``run(values, call)``, which returns a result or raises (ValueError: bad
    input; :class:`Failed`: the run failed) and never prints an error itself.

    A result is an exit status (``int``) or an object with ``table()`` (the
    text for stdout), ``write_json(path)`` when ``json`` is declared (the
    help of ``--json FILE``) and ``ok`` (False: exit 1); ``draw(result,
    path, values)`` draws it when ``plot`` is declared (``--plot FILE.png``).
    ``options`` and ``commands`` (the subcommands of a group, as bench's
    experiments) may be functions, called when the parser is built: what
    they import is imported only then.
    """

    name: str
    help: str
    description: str
    run: Callable[[dict[str, Any], Any], Any] | None = None
    options: Options | Callable[[], Options] = ()
    json: str | None = None
    plot: str | None = None
    draw: Callable[[Any, str, dict[str, Any]], None] | None = None
    epilog: str | None = None
    commands: tuple[Command, ...] | Callable[[], tuple[Command, ...]] = ()
    metavar: str = "COMMAND"  # of the subcommands, in the group's usage line

    def declared(self) -> Options:
        return self.options() if callable(self.options) else self.options

    def subcommands(self) -> tuple[Command, ...]:
        return self.commands() if callable(self.commands) else self.commands


def add_options(parser: argparse.ArgumentParser, options: Options) -> None:
    """One argparse argument per declared option, help with its default."""
    for o in options:
        help_text = with_default(o.help, o.shown_default)
        if not o.flag.startswith("-"):
            parser.add_argument(o.dest, metavar=o.metavar, help=help_text,
                                nargs="+" if o.repeatable else None)
        elif o.parse is None:
            parser.add_argument(o.flag, dest=o.dest, action="store_true", help=o.help)
        else:
            parser.add_argument(o.flag, dest=o.dest, default=None, metavar=o.metavar,
                                choices=o.choices, help=help_text,
                                action="append" if o.repeatable else "store")


def option_values(args: argparse.Namespace, options: Options) -> dict[str, Any]:
    """Every declared option's value by ``dest``: given (parsed), else its
    declared default (parsed), else None (False for an absent flag);
    ValueError on bad text."""
    values = {}
    for o in options:
        given = getattr(args, o.dest)
        if o.parse is None:
            values[o.dest] = bool(given)
        elif given is not None:
            values[o.dest] = [o.parse(g) for g in given] if o.repeatable else o.parse(given)
        else:
            values[o.dest] = None if o.default is None else o.value(o.default)
    return values
