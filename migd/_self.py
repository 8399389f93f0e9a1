"""A Python that imports this migd, whatever the working directory holds."""

from __future__ import annotations

import os
import sys

#: The directory holding this migd package, as numba names its cached kernels'
#: sources: ``os.path.abspath``, symlinks kept.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def this_migd(env: dict[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
    """The command's start (``python -P``: no working directory on its path)
    and ``env`` (default: this process's) with this package's root first on
    PYTHONPATH, for a re-exec or a child that must run this migd.  ``-m`` and
    ``-c`` put the working directory first: another checkout's ``migd`` there
    would be run instead, and compile into this one's cache for nothing
    (numba files kernels by their sources' path)."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    return [sys.executable, "-P"], env
