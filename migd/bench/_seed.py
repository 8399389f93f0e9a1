"""``bench seed``: the published experiments, re-run.

``seed`` reads the calibration set (the CSVs of shared/calibration, packaged
with migd) and runs every cell on the chosen clock and profile: move_pages()
of 1 GiB from node 0 to node 1 at the published folio size, migrator, channel
or thread count and batch bound; for the vanilla first-folio table, calls of
``n_folios`` folios each.  Each row carries the published value and the
relative error; the report ends with the median errors.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..hw import get_profile
from ..profile import parse_table
from ._options import MigratorSpec
from ._report import BenchReport, BenchRow
from ._rig import BenchOptions, Rig


@dataclass(frozen=True)
class Cell:
    """One published measurement to reproduce."""

    source: str
    migrator: MigratorSpec
    order: int
    batch_pages: int
    n_folios: int  # folios per move_pages() call; 0: all of the 1 GiB in one call
    gbps: float | None
    first_folio_us: float | None


TABLES = ("throughput.csv", "vanilla_first_folio.csv", "batch_sweep.csv", "mtcopy.csv")


def load_cells(directory: Path | None = None, profile: str = "zen3-ptdma") -> list[Cell]:
    """Every cell of the calibration set (the tables of ``directory`` that
    exist, else the packaged ones), read and checked by ``migd.profile``'s
    table reader: a bad table is a ValueError naming its file and line."""
    base = get_profile(profile)
    cells = []
    for name in TABLES:
        if directory is not None:
            path = directory / name
            if not path.exists():
                continue
            text, where = path.read_text(), str(path)
        else:
            text = importlib.resources.files(__package__).joinpath(
                "calibration", name).read_text()
            where = name
        for c in parse_table(text, where, base):
            spec = MigratorSpec(c.migrator, c.param)
            cells.append(Cell(name.removesuffix(".csv"), spec, c.order, c.batch_pages,
                              c.n_folios, c.gbps, c.first_folio_us))
    if not cells:
        raise ValueError(f"{directory}: none of {', '.join(TABLES)} there")
    return cells


#: At most this many move_pages() calls per small-call cell: on the virtual
#: clock every call of a cell costs the same, so more calls add nothing.
MAX_CALLS = 32


async def run_cell(rig: Rig, cell: Cell) -> BenchRow:
    """Run one cell on ``rig`` (whose tenant has the cell's order): the rig's
    measured move_pages(), in calls of ``n_folios`` folios for the small-call
    cells, with the published value and the relative error added."""
    row = await rig.migrate(cell.migrator, cell.batch_pages,
                            pages_per_call=cell.n_folios << cell.order,
                            max_calls=MAX_CALLS if cell.n_folios else 0)
    row.extra.update(source=cell.source, n_folios=cell.n_folios,
                     published_gbps=cell.gbps, published_first_folio_us=cell.first_folio_us,
                     gbps_error=_err(row.gbps, cell.gbps),
                     first_folio_error=_err(row.first_folio_us, cell.first_folio_us))
    return row


async def seed(opts: BenchOptions) -> BenchReport:
    """Every published cell of the calibration set, beside its published value."""
    cells = load_cells(opts.calibration, opts.profile_name)
    rows: list[BenchRow] = []
    rig = None
    for order in sorted({c.order for c in cells}):
        rig = Rig(opts, order, reuse=rig)
        mine = [c for c in cells if c.order == order]
        for k, cell in enumerate(mine):
            opts.progress(f"seed: order {order}, cell {k + 1}/{len(mine)} ({cell.source})")
            rows.append(await run_cell(rig, cell))
    report = BenchReport("seed", opts.clock, opts.profile_name, rows)
    summarise(report)
    return report


def _err(got: float | None, published: float | None) -> float | None:
    if got is None or published is None:
        return None
    return (got - published) / published


def summarise(report: BenchReport) -> None:
    """Append the median relative errors to the report's notes."""
    tp = [abs(r.extra["gbps_error"]) for r in report.rows if r.extra.get("gbps_error") is not None]
    ff = [abs(r.extra["first_folio_error"]) for r in report.rows
          if r.extra.get("first_folio_error") is not None]
    if tp:
        report.notes.append(f"throughput: median |error| {np.median(tp):.1%} over {len(tp)} cells")
    if ff:
        report.notes.append(f"first-folio latency: median |error| {np.median(ff):.1%} "
                            f"over {len(ff)} cells")
