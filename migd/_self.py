"""A Python that imports this migd, whatever the working directory holds."""

from __future__ import annotations

import os
import site
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
    (numba files kernels by their sources' path).  An installed migd (its root
    a site-packages directory) is found there without PYTHONPATH, which would
    put all of site-packages ahead of the standard library."""
    env = dict(os.environ if env is None else env)
    if ROOT not in {*site.getsitepackages(), site.getusersitepackages()}:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    return [sys.executable, "-P"], env
