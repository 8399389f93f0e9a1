"""Command-line helpers shared by the subcommands: parser, checks, progress line.

The CLI's adapters stay thin: they parse text into the core's option objects
with these helpers and print what the core returns.  Bad input is one line on
stderr and exit status 2, never a traceback or a screenful of usage.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
import time
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


def add_options(parser: argparse.ArgumentParser, options) -> None:
    """One argparse option per declared ``bench.Option``, help with its default."""
    for o in options:
        if o.parse is None:
            parser.add_argument(o.flag, dest=o.dest, action="store_true", help=o.help)
        else:
            parser.add_argument(o.flag, dest=o.dest, default=None, metavar=o.metavar,
                                choices=o.choices, help=with_default(o.help, o.shown_default),
                                action="append" if o.repeatable else "store")


def given_options(args: argparse.Namespace, options) -> dict[str, Any]:
    """The values of the declared options given on the command line, parsed
    (absent ones are left to the declaration's default); ValueError on bad text."""
    values = {}
    for o in options:
        given = getattr(args, o.dest)
        if o.parse is None:
            if given:
                values[o.dest] = True
        elif given is not None:
            values[o.dest] = [o.parse(g) for g in given] if o.repeatable else o.parse(given)
    return values
