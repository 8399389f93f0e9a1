"""Measurement tables in the calibration formats (``migd/bench/calibration/README.md``).

A table is a CSV file whose header says which of the four kinds it is:

* ``path,channels,4K,...,2M`` (any of the sizes): throughput.csv, GB/s of
  1 GiB of folios of each size, ``path`` cpu (the vanilla kernel, also
  ``none``) at the default bound or dcbm with ``channels`` at 262144 pages;
* ``order,batch_pages,channels,gbps,first_folio_us``: batch_sweep.csv (dcbm);
* ``order,n_folios,gbps,first_folio_us``: vanilla_first_folio.csv;
* ``order,threads,gbps``: mtcopy.csv (default bound).

Anything else (an unknown column, a value that is not a positive number, an
empty file, a row the base profile cannot express) is a :class:`TableError`
naming the file and line.  Bounded: a table is at most ``MAX_TABLE_BYTES``.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ..hw import HardwareProfile
from ..mm import HPAGE_PMD_ORDER, NR_MAX_BATCHED_MIGRATION, NR_MAX_BATCHED_MIGRATION_LIMIT
from ._cells import DCBM_MAX_CHANNELS, Cell

MAX_TABLE_BYTES = 1 << 20
MTCOPY_MAX_THREADS = 64
SIZES = {"4K": 0, "8K": 1, "16K": 2, "32K": 3, "64K": 4, "128K": 5, "256K": 6, "512K": 7,
         "1M": 8, "2M": 9}

KINDS = {
    "batch_sweep": ("order", "batch_pages", "channels", "gbps", "first_folio_us"),
    "vanilla_first_folio": ("order", "n_folios", "gbps", "first_folio_us"),
    "mtcopy": ("order", "threads", "gbps"),
}


class TableError(ValueError):
    """A table that cannot be used: ``file:line: why``."""


def _number(text: str, at: str, col: str, whole: bool = False) -> float:
    try:
        v = float(text)
    except (TypeError, ValueError):
        v = float("nan")
    if not v > 0 or v == float("inf") or (whole and not v.is_integer()):
        kind = "a positive whole number" if whole else "a positive number"
        raise TableError(f"{at}: {col} must be {kind}, not {text!r}")
    return v


def read_table(path: str | Path, base: HardwareProfile) -> list[Cell]:
    """The cells of one table file."""
    p = Path(path)
    try:
        if p.stat().st_size > MAX_TABLE_BYTES:
            raise TableError(f"{p}:0: larger than {MAX_TABLE_BYTES} bytes")
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise TableError(f"{p}:0: cannot read: {getattr(e, 'strerror', None) or e}") from None
    return parse_table(text, str(p), base)


def parse_table(text: str, name: str, base: HardwareProfile) -> list[Cell]:
    rows = list(csv.reader(io.StringIO(text)))
    lines = [(i, r) for i, r in enumerate(rows, 1) if r and any(c.strip() for c in r)]
    if not lines:
        raise TableError(f"{name}:1: empty table (expected a header and rows)")
    hline, header = lines[0]
    header = [h.strip() for h in header]
    kind = _kind(header, f"{name}:{hline}")
    if len(lines) == 1:
        raise TableError(f"{name}:{hline}: no rows after the header")
    table = Path(name).name
    cells = []
    for line, row in lines[1:]:
        at = f"{name}:{line}"
        if len(row) != len(header):
            raise TableError(f"{at}: {len(row)} values, the header has {len(header)}")
        r = dict(zip(header, (c.strip() for c in row), strict=True))
        cells += _cells(kind, r, at, table, line, base)
    return cells


def _kind(header: list[str], at: str) -> str:
    if header[:2] == ["path", "channels"]:
        unknown = [h for h in header[2:] if h not in SIZES]
        if unknown or len(header) == 2:
            raise TableError(f"{at}: unknown column {unknown[0]!r} (folio sizes: "
                             f"{', '.join(SIZES)})" if unknown else f"{at}: no size columns")
        return "throughput"
    for kind, cols in KINDS.items():
        if tuple(header) == cols:
            return kind
    known = {"throughput": "path,channels,4K,...,2M", **{k: ",".join(v) for k, v in KINDS.items()}}
    extra = [h for h in header if h not in {c for v in KINDS.values() for c in v}
             | {"path", "channels"} | set(SIZES)]
    what = f"unknown column {extra[0]!r}" if extra else "unknown header"
    raise TableError(f"{at}: {what}; expected one of: " + "; ".join(known.values()))


def _cells(kind: str, r: dict, at: str, table: str, line: int,
           base: HardwareProfile) -> list[Cell]:
    if kind == "throughput":
        path = r["path"]
        if path not in ("cpu", "none", "dcbm"):
            raise TableError(f"{at}: path must be cpu (or none) or dcbm, not {path!r}")
        if path == "dcbm":
            ch = _channels(r["channels"], at, base)
            mig, bound = "dcbm", NR_MAX_BATCHED_MIGRATION_LIMIT
        else:
            if r["channels"] not in ("0", ""):
                raise TableError(f"{at}: channels must be 0 for the vanilla path")
            ch, mig, bound = 0, "none", NR_MAX_BATCHED_MIGRATION
        return [Cell(table, line, mig, ch, order, bound, 0, _number(r[s], at, s), None)
                for s, order in SIZES.items() if s in r]
    order = _order(r["order"], at)
    gbps = _number(r["gbps"], at, "gbps")
    if kind == "mtcopy":
        t = int(_number(r["threads"], at, "threads", whole=True))
        if t > MTCOPY_MAX_THREADS:
            raise TableError(f"{at}: threads must be 1..{MTCOPY_MAX_THREADS}")
        return [Cell(table, line, "mtcopy", t, order, NR_MAX_BATCHED_MIGRATION, 0, gbps, None)]
    ff = _number(r["first_folio_us"], at, "first_folio_us")
    if kind == "vanilla_first_folio":
        n = int(_number(r["n_folios"], at, "n_folios", whole=True))
        if n << order > NR_MAX_BATCHED_MIGRATION_LIMIT:
            raise TableError(f"{at}: n_folios {n} of order {order} exceeds 1 GiB")
        return [Cell(table, line, "none", 0, order, NR_MAX_BATCHED_MIGRATION, n, gbps, ff)]
    b = int(_number(r["batch_pages"], at, "batch_pages", whole=True))
    if b > NR_MAX_BATCHED_MIGRATION_LIMIT:
        raise TableError(f"{at}: batch_pages must be 1..{NR_MAX_BATCHED_MIGRATION_LIMIT}")
    return [Cell(table, line, "dcbm", _channels(r["channels"], at, base), order, b, 0, gbps, ff)]


def _order(text: str, at: str) -> int:
    try:
        o = int(text)
    except ValueError:
        o = -1
    if not 0 <= o <= HPAGE_PMD_ORDER:
        raise TableError(f"{at}: order must be 0..{HPAGE_PMD_ORDER}, not {text!r}")
    return o


def _channels(text: str, at: str, base: HardwareProfile) -> int:
    ch = int(_number(text, at, "channels", whole=True))
    most = min(base.dma.nr_channels, DCBM_MAX_CHANNELS)
    if base.dma.native:
        raise TableError(f"{at}: base profile {base.name!r} has no DMA timing to fit "
                         "(native); pass --base with a DMA model, e.g. zen3-ptdma")
    if ch > most:
        raise TableError(f"{at}: {ch} channels, base profile {base.name!r} has {most}")
    return ch
