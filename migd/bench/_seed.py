"""``bench seed`` and ``bench batch-sweep``: the published experiments, re-run.

``seed`` reads the calibration set (the CSVs of shared/calibration, packaged
with migd) and runs every cell on the chosen clock and profile: move_pages()
of 1 GiB from node 0 to node 1 at the published folio size, migrator, channel
or thread count and batch bound; for the vanilla first-folio table, calls of
``n_folios`` folios each.  Each row carries the published value and the
relative error; the report ends with the median errors.
"""

from __future__ import annotations

import csv
import importlib.resources
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trio

from ..dma import DmaDevice
from ..migrate import BatchRecords, MigrationEngine
from ..mm import PAGE_SIZE
from ._options import MigratorSpec
from ._report import BenchReport, BenchRow

_SIZES = {"4K": 0, "16K": 2, "64K": 4, "256K": 6, "1M": 8, "2M": 9}


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


def load_cells(directory: Path | None = None) -> list[Cell]:
    """Every cell of the calibration set."""
    def rows(name: str):
        if directory is not None:
            text = (directory / name).read_text()
        else:
            text = importlib.resources.files(__package__).joinpath(
                "calibration", name).read_text()
        return list(csv.DictReader(text.splitlines()))

    cells = []
    for r in rows("throughput.csv"):
        ch = int(r["channels"])
        spec = MigratorSpec("cpu") if r["path"] == "cpu" else MigratorSpec("dcbm", ch)
        for size, order in _SIZES.items():
            cells.append(Cell("throughput", spec, order, 512 if r["path"] == "cpu" else 262144,
                              0, float(r[size]), None))
    for r in rows("vanilla_first_folio.csv"):
        cells.append(Cell("vanilla_first_folio", MigratorSpec("cpu"), int(r["order"]), 512,
                          int(r["n_folios"]), float(r["gbps"]), float(r["first_folio_us"])))
    for r in rows("batch_sweep.csv"):
        cells.append(Cell("batch_sweep", MigratorSpec("dcbm", int(r["channels"])),
                          int(r["order"]), int(r["batch_pages"]), 0, float(r["gbps"]),
                          float(r["first_folio_us"])))
    for r in rows("mtcopy.csv"):
        cells.append(Cell("mtcopy", MigratorSpec("mtcopy", int(r["threads"])), int(r["order"]),
                          512, 0, float(r["gbps"]), None))
    return cells


#: At most this many move_pages() calls per small-call cell: on the virtual
#: clock every call of a cell costs the same, so more calls add nothing.
MAX_CALLS = 32


async def run_cell(rig, cell: Cell, make_migrator) -> BenchRow:
    """Run one cell on ``rig`` (a bench ``_Rig`` whose tenant has the cell's order)."""
    engine = MigrationEngine(rig.machine, rig.clock, rig.profile)
    engine.nr_max_batched_migration = cell.batch_pages
    dma = DmaDevice(0, rig.machine.memory, rig.clock, rig.profile.dma, engine.faults)
    migrator = make_migrator(cell.migrator, dma)
    if migrator is not None:
        engine.registry.register(migrator)
    records: list[BatchRecords] = []
    engine.subscribe(records.append)
    tenant = rig.tenant
    per_call = tenant.nr_pages if not cell.n_folios else cell.n_folios << cell.order
    calls = tenant.nr_pages // per_call
    if cell.n_folios:
        calls = min(calls, MAX_CALLS)
    target = 1 - rig.node
    async with trio.open_nursery() as nursery:
        nursery.start_soon(dma.run)
        t0 = trio.current_time()
        for c in range(calls):
            vpages = np.arange(c * per_call, (c + 1) * per_call, 1 << cell.order)  # per folio
            result = await engine.move_pages(tenant, vpages, target)
            if result.failed.size:
                raise RuntimeError(f"{result.failed.size} folios failed to migrate")
        seconds = trio.current_time() - t0
        nursery.cancel_scope.cancel()
    if migrator is not None:
        await engine.registry.unregister(migrator)
    # put the tenant back where it started, unmeasured
    back = MigrationEngine(rig.machine, rig.clock, rig.profile)
    back.nr_max_batched_migration = 262144
    await back.move_pages(tenant, np.arange(0, tenant.nr_pages, 1 << cell.order), rig.node)
    nbytes = calls * per_call * PAGE_SIZE
    ff = np.concatenate([r.first_folio_seconds for r in records])
    ff = ff[ff == ff]
    inacc = np.concatenate([r.inaccessible_seconds for r in records])
    gbps = nbytes / seconds / 1e9
    ff_us = float(np.median(ff)) * 1e6 if ff.size else None
    extra = {"source": cell.source, "n_folios": cell.n_folios,
             "published_gbps": cell.gbps, "published_first_folio_us": cell.first_folio_us,
             "gbps_error": _err(gbps, cell.gbps),
             "first_folio_error": _err(ff_us, cell.first_folio_us)}
    return BenchRow(
        migrator=cell.migrator.name, param=cell.migrator.param, order=cell.order,
        folio_bytes=PAGE_SIZE << cell.order, batch_pages=cell.batch_pages, total_bytes=nbytes,
        seconds=seconds, gbps=gbps, first_folio_us=ff_us,
        inaccessible_us_p50=float(np.percentile(inacc, 50)) * 1e6 if inacc.size else None,
        inaccessible_us_p99=float(np.percentile(inacc, 99)) * 1e6 if inacc.size else None,
        verified=False, extra=extra)


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
