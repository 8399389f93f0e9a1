"""migd's version, declared once in pyproject.toml.

A source checkout reads pyproject.toml itself (an editable install's metadata
keeps the version it had at install time); an installed wheel has no
pyproject.toml beside it and reads the package metadata.
"""

from __future__ import annotations

import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

_PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def migd_version() -> str:
    try:
        return tomllib.loads(_PYPROJECT.read_text())["project"]["version"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        pass
    try:
        return version("migd")
    except PackageNotFoundError:
        return "unknown"
