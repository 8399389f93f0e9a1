"""The grid file: ``[axes]`` (lists) times ``[cell]`` (fixed options) -> cells.

Every value is checked when the grid is loaded, before any cell runs: an
unknown axis or cell key, a value of the wrong type or range, a trace that
cannot be read - one line naming the axis and the value.  A cell is a flat
dict of every parameter (axes and fixed options, defaults filled in); its
key is a hash of that dict and the migd version, so a result is reused only
for exactly the same question asked of the same code.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .._version import migd_version
from ..bench import parse_migrators, parse_size
from ..hw import get_profile
from ..migrate import MAX_INACCESSIBLE_US_LIMIT, NR_MAX_BATCHED_MIGRATION_LIMIT
from ..mm import MAX_FOLIO_ORDER
from ..offload import DCBM_VARIANTS
from ..replay import parse_mask
from ._cell import KINDS

EXPERIMENTS = tuple(KINDS)
#: A grid file is a few lines; past this it is not one (read no further).
MAX_GRID_BYTES = 1 << 20
#: Cells a grid may have unless --max-cells says otherwise, and the most it may say:
#: a finished sweep's rows (~2 KB a cell) are all read back for the table and --json.
DEFAULT_MAX_CELLS = 100_000
MAX_CELLS_LIMIT = 1_000_000
#: A throughput cell's largest ``total``: its virtual-clock machine takes ~50 bytes
#: per emulated page, two nodes of ``total`` each: ~0.5 GB a cell at 16G.
MAX_TOTAL = 16 << 30

#: Every parameter of a cell with its default (also the ``[cell]`` keys).
DEFAULTS: dict[str, Any] = {
    "experiment": "throughput", "profile": "zen3-ptdma", "migrator": "none",
    "batch_pages": 512, "reason_mask": "all", "budget_us": 0, "order": 9,
    "total": "64M", "trace": None, "repeat": 0, "variant": "v6",
}
#: The axes a grid may vary (``experiment`` and ``total`` are fixed per grid).
AXES = ("profile", "migrator", "batch_pages", "reason_mask", "budget_us", "order", "trace",
        "repeat", "variant")


def _int(lo: int, hi: int):
    def check(v: Any) -> None:
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise ValueError(f"expected an integer {lo}..{hi}")
    return check


def _str(parse):
    def check(v: Any) -> None:
        if not isinstance(v, str):
            raise ValueError("expected a string")
        parse(v)
    return check


def _migrator(v: str) -> None:
    if len(parse_migrators(v)) != 1:
        raise ValueError("expected one migrator")


def _trace(v: str) -> None:
    if not os.access(v, os.R_OK):
        raise ValueError("no such readable file")


def _total(v: str) -> None:
    if parse_size(v) > MAX_TOTAL:
        raise ValueError(f"at most {MAX_TOTAL >> 30}G")


def _variant(v: str) -> None:
    if v not in DCBM_VARIANTS:
        raise ValueError(f"expected one of {', '.join(DCBM_VARIANTS)}")


def _experiment(v: str) -> None:
    if v not in EXPERIMENTS:
        raise ValueError(f"expected one of {', '.join(EXPERIMENTS)}")


_CHECKS = {
    "experiment": _str(_experiment), "profile": _str(get_profile), "migrator": _str(_migrator),
    "batch_pages": _int(1, NR_MAX_BATCHED_MIGRATION_LIMIT), "reason_mask": _str(parse_mask),
    "budget_us": _int(0, MAX_INACCESSIBLE_US_LIMIT), "order": _int(0, MAX_FOLIO_ORDER),
    "total": _str(_total), "trace": _str(_trace), "repeat": _int(0, 1 << 20),
    "variant": _str(_variant),
}


@dataclass(frozen=True)
class Grid:
    path: str
    axes: dict[str, list]
    cell: dict[str, Any]

    @property
    def experiment(self) -> str:
        """What every cell runs (fixed per grid: not an axis)."""
        return self.cell.get("experiment", DEFAULTS["experiment"])

    @property
    def size(self) -> int:
        return math.prod(len(v) for v in self.axes.values())

    def cells(self) -> Iterator[dict[str, Any]]:
        """Every combination of the axes, in axis order, defaults filled in,
        one at a time: a grid's cells are never all in memory."""
        names = list(self.axes)
        for values in itertools.product(*(self.axes[n] for n in names)):
            yield {**DEFAULTS, **self.cell, **dict(zip(names, values, strict=True))}


def cell_key(params: dict[str, Any]) -> str:
    text = json.dumps({"params": params, "migd": migd_version()}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _check(where: str, name: str, value: Any) -> None:
    try:
        _CHECKS[name](value)
    except ValueError as e:
        raise ValueError(f"{where}: {name} = {_shown(value)}: {e}") from None


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def _read(path: str) -> dict[str, Any]:
    """The TOML document, read at most MAX_GRID_BYTES + 1 bytes."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_GRID_BYTES + 1)
    except OSError as e:
        raise ValueError(f"cannot read the grid: {e}") from None
    if len(data) > MAX_GRID_BYTES:
        raise ValueError(f"{path}: larger than {MAX_GRID_BYTES >> 20} MiB: not a grid")
    try:
        return tomllib.loads(data.decode())
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: not TOML: {e}") from None
    except RecursionError:
        raise ValueError(f"{path}: not TOML: nested too deeply") from None


def load_grid(path: str, max_cells: int = DEFAULT_MAX_CELLS) -> Grid:
    """ValueError with one line on anything wrong, before any work; a grid of
    more than ``max_cells`` cells (the product of the axis lengths, counted
    without building a cell) included."""
    doc = _read(path)
    unknown = set(doc) - {"axes", "cell"}
    if unknown:
        raise ValueError(f"{path}: unknown table(s) {', '.join(map(_shown, sorted(unknown)))} "
                         "(expected [axes] and [cell])")
    axes, cell = doc.get("axes", {}), doc.get("cell", {})
    for name, table in (("axes", axes), ("cell", cell)):
        if not isinstance(table, dict):
            raise ValueError(f"{path}: {name} = {_shown(table)}: expected a table [{name}]")
    base = os.path.dirname(os.path.abspath(path))
    # Trace paths are relative to the grid file, as a config's paths are to the config.
    if isinstance(axes.get("trace"), list):
        axes["trace"] = [os.path.join(base, v) if isinstance(v, str) else v
                         for v in axes["trace"]]
    if isinstance(cell.get("trace"), str):
        cell["trace"] = os.path.join(base, cell["trace"])
    if not axes:
        raise ValueError(f"{path}: [axes] must hold at least one axis")
    for name, values in axes.items():
        if name not in AXES:
            raise ValueError(f"{path}: unknown axis {_shown(name)} (axes: {', '.join(AXES)})")
        if not isinstance(values, list) or not values:
            raise ValueError(f"{path}: [axes] {name} = {_shown(values)}: expected a non-empty "
                             "list")
    size = math.prod(len(v) for v in axes.values())
    if size > max_cells:
        raise ValueError(f"{path}: {' x '.join(str(len(v)) for v in axes.values())} = {size} "
                         f"cells, over --max-cells {max_cells}")
    for name, values in axes.items():
        if len(set(map(repr, values))) != len(values):
            raise ValueError(f"{path}: [axes] {name} repeats a value")
        for v in values:
            _check(f"{path}: [axes]", name, v)
    for name, v in cell.items():
        if name not in DEFAULTS:
            raise ValueError(f"{path}: unknown [cell] key {_shown(name)} "
                             f"(keys: {', '.join(DEFAULTS)})")
        if name in axes:
            raise ValueError(f"{path}: {name!r} is both an axis and a [cell] key")
        _check(f"{path}: [cell]", name, v)
    experiment = cell.get("experiment", DEFAULTS["experiment"])
    has_trace = "trace" in axes or "trace" in cell
    if experiment == "replay" and not has_trace:
        raise ValueError(f"{path}: experiment \"replay\" needs a trace (axis or [cell])")
    if experiment == "throughput" and has_trace:
        raise ValueError(f"{path}: trace is only for experiment \"replay\"")
    return Grid(path, dict(axes), dict(cell))
