"""One cell: a virtual-clock experiment from a flat dict of parameters to a
flat dict row (SPEC section 7's row fields).  Runs in whichever process the
executor picked (a local worker, a Dask worker, this one), so it imports what
it needs, takes and returns plain data, and keeps no state but the compiled
paths warmed once per process.

``throughput``: the bench rig's move_pages() of ``total`` bytes of
``order`` folios (``Rig.migrate``), the migrator registered for
``reason_mask`` (the rig's calls are syscall_or_cpuset), the engine's
latency budget ``budget_us``.  ``replay``: the trace through the cell's
configuration; the row is the "all reasons" row plus the profile check.
``repeat`` only tells repetitions apart: the virtual clock is deterministic.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_warm = False


def warm_up() -> None:
    """The compiled paths, once per process."""
    global _warm
    if not _warm:
        import trio

        from ..migrate import warm_up

        trio.run(warm_up)
        _warm = True


def _throughput(p: dict[str, Any]) -> dict[str, Any]:
    import trio

    from ..bench import BenchOptions, Rig, parse_migrators, parse_size
    from ..hw import mock_clock
    from ..mm import parse_reason_mask

    spec = parse_migrators(p["migrator"])[0]
    mask = parse_reason_mask(p["reason_mask"])
    opts = BenchOptions(clock="virtual", profile=p["profile"], total=parse_size(p["total"]),
                        migrators=[spec], variant=p.get("variant", "v6"))

    def between(engine, dma, npass) -> None:
        if spec.name != "none":
            engine.registry.set_reason_mask(engine.registry.active.migrator, mask)

    async def main():
        rig = Rig(opts, p["order"])
        return await rig.migrate(spec, p["batch_pages"], budget_us=p["budget_us"],
                                 between=between)

    return trio.run(main, clock=mock_clock()).as_json()


def _replay(p: dict[str, Any]) -> dict[str, Any]:
    from ..bench import parse_migrators
    from ..mm import parse_reason_mask
    from ..replay import Config, load_traces, replay

    spec = parse_migrators(p["migrator"])[0]
    cfg = Config(spec, p["batch_pages"], parse_reason_mask(p["reason_mask"]), p["profile"],
                 p.get("variant", "v6"))
    report = replay(load_traces([p["trace"]]), [cfg], float(p["budget_us"] or 1e12))
    row = next(r for r in report.rows if r["config"] == cfg.name and r["reason"] == "all")
    row = {k: v for k, v in row.items() if k not in ("config", "reason")}
    row["median_error_pct"] = report.profile_check.get("median_error_pct")
    return row


@dataclass(frozen=True)
class CellKind:
    """One experiment a cell can run: the function and the row fields the
    sweep's table shows after the axes (the first one is what ``--plot``
    draws).  Declared here, with the experiment, so the table need not guess
    from whichever fields the rows happen to hold."""

    run: Callable[[dict[str, Any]], dict[str, Any]]
    columns: tuple[str, ...]


KINDS: dict[str, CellKind] = {
    "throughput": CellKind(_throughput, ("gbps", "seconds", "first_folio_us",
                                         "inaccessible_us_p99")),
    "replay": CellKind(_replay, ("seconds", "cpu_saved_seconds", "offloaded_pct",
                                 "first_folio_us_p99", "inaccessible_us_p99",
                                 "median_error_pct")),
}


def run_cell(params: dict[str, Any]) -> dict[str, Any]:
    """The cell's row; ``wall_seconds`` and ``sim_speed`` (the row's simulated
    seconds per wall second of the cell) are the only fields that depend on
    where and when it ran."""
    warm_up()
    t = time.perf_counter()
    row = KINDS[params["experiment"]].run(params)
    row["wall_seconds"] = time.perf_counter() - t
    row["sim_speed"] = row["seconds"] / row["wall_seconds"]
    return row
