"""Replay a trace's call shapes through one configuration on the virtual clock.

The machine is sized to what the trace touches: per folio order, one tenant
of twice the most folios one call hands in, so whichever node a call's
folios must come from holds enough of them (each call moves its folios to
the other node; a per-(order, node) stack says where every folio is).  One
machine and one engine serve every shape of a configuration, in one
``trio.run`` under MockClock: building an engine per call cost more than the
call.  Each shape runs once on an idle machine (see ``_shapes``); replaying
every call (~0.8 ms of Python each) was rejected: 100,000 calls would take
80 s against the 30 s target, for the same numbers.

What the machine cannot know about the traced host (other CPUs' calls
contending for DMA channels at the same time) is not modelled: calls replay
one at a time, as on a host whose migrations do not overlap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import trio

from ..bench import MigratorSpec, make_migrator
from ..dma import DmaDevice
from ..hw import VirtualClock, get_profile, mock_clock
from ..migrate import BatchRecords, MigrationEngine
from ..mm import (
    PAGE_SIZE,
    REASON_MASK_ALL,
    Machine,
    MigrateMode,
    MigrateReason,
    NodeSpec,
    TenantSpec,
    format_reason_mask,
)
from ._shapes import Shapes

_MODES = list(MigrateMode)
#: Per-shape result columns.
RESULT_COLUMNS = ("seconds", "first_folio", "inaccessible", "cpu_seconds", "pages",
                  "pages_offloaded", "succeeded", "failed", "thp_succeeded", "thp_failed",
                  "thp_split", "split")


@dataclass(frozen=True)
class Config:
    """One configuration the trace is replayed through."""

    migrator: MigratorSpec  # none | mtcopy | dcbm
    batch_pages: int = 512
    reason_mask: int = REASON_MASK_ALL
    profile: str = "zen3-ptdma"

    @property
    def name(self) -> str:
        parts = [str(self.migrator)]
        if self.batch_pages != 512:
            parts.append(f"b{self.batch_pages}")
        if self.reason_mask != REASON_MASK_ALL and self.migrator.name != "none":
            parts.append(f"mask={format_reason_mask(self.reason_mask)}")
        return " ".join(parts)


def _machine(shapes: Shapes) -> tuple[Machine, dict[int, tuple[int, int]]]:
    """Two nodes each able to hold every tenant; per order (vbase, folios)."""
    need = sum(2 * n << o for o, n in shapes.max_folios.items()) * PAGE_SIZE
    cap = -(-(need + (8 << 20)) // (2 << 20)) * (2 << 20)
    machine = Machine([NodeSpec(cap, "dram", demotion_target=1), NodeSpec(cap, "far")],
                      words_per_page=1)
    tenants = {}
    for o, n in sorted(shapes.max_folios.items(), reverse=True):
        t = machine.add_tenant(TenantSpec(f"order{o}", (2 * n << o) * PAGE_SIZE, order=o))
        tenants[o] = (t, 2 * n)
    return machine, tenants


async def _replay(shapes: Shapes, config: Config) -> dict[str, np.ndarray]:
    machine, tenants = _machine(shapes)
    mem = machine.memory
    clock = VirtualClock()
    profile = get_profile(config.profile)
    engine = MigrationEngine(machine, clock, profile)
    engine.nr_max_batched_migration = config.batch_pages
    dma = DmaDevice(0, mem, clock, profile.dma, engine.faults)
    migrator = make_migrator(config.migrator, dma)
    if migrator is not None:
        engine.registry.register(migrator, config.reason_mask)
    records: list[BatchRecords] = []
    engine.subscribe(records.append)
    cpu = engine.books.cpu_copy_seconds
    # Where each tenant's folios are: per order, a stack of folio indices per node.
    stacks = {o: ([*range(n)], []) for o, (_, n) in tenants.items()}
    out = {c: np.zeros(len(shapes.shapes)) for c in RESULT_COLUMNS}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(dma.run)
        for k, (reason, mode, folios) in enumerate(shapes.shapes):
            if not folios:  # a call that counted no page: nothing to replay
                out["first_folio"][k] = np.nan
                continue
            src = 0 if all(len(stacks[o][0]) >= n for o, n, _ in folios) else 1
            picked, pinned = [], []
            for o, n, npin in folios:
                t, _ = tenants[o]
                st = stacks[o][src]
                idx = st[len(st) - n:]
                del st[len(st) - n:]
                heads = t.pte_pfn[np.asarray(idx, dtype=np.int64) << o]
                picked.append((o, idx, heads))
                pinned.append(heads[:npin])
            pins = np.concatenate(pinned)
            mem.refcount[pins] += 1
            del records[:]
            cpu0 = sum(cpu.values())
            t0 = trio.current_time()
            res = await engine.migrate_pages(np.concatenate([h for _, _, h in picked]),
                                             1 - src, MigrateReason(reason), _MODES[mode])
            out["seconds"][k] = trio.current_time() - t0
            mem.refcount[pins] -= 1
            for o, idx, _ in picked:
                t, _ = tenants[o]
                nid = mem.nid_of[t.pte_pfn[np.asarray(idx, dtype=np.int64) << o]]
                for i, node in zip(idx, nid.tolist(), strict=True):
                    stacks[o][node].append(i)
            s = res.stats
            for c, v in (("succeeded", s.nr_succeeded), ("failed", s.nr_failed_pages),
                         ("thp_succeeded", s.nr_thp_succeeded), ("thp_failed", s.nr_thp_failed),
                         ("thp_split", s.nr_thp_split), ("split", s.nr_split)):
                out[c][k] = v
            out["cpu_seconds"][k] = sum(cpu.values()) - cpu0
            _batches(out, k, records, t0)
        nursery.cancel_scope.cancel()
    if getattr(migrator, "cpu_threads", 0):
        # A CPU-thread migrator's copies sleep on the virtual clock without
        # being booked as CPU time; the report charges them as none's copies
        # of the same bytes (threads spread that work, they do not shrink it).
        out["cpu_as_none"] = np.ones(len(shapes.shapes))
    return out


def _batches(out: dict[str, np.ndarray], k: int, records: list[BatchRecords],
             t0: float) -> None:
    """First-folio latency (call entry to the first folio remapped), the
    longest inaccessible time, pages and pages offloaded, from the call's batches."""
    ff, longest, pages, off = np.nan, 0.0, 0, 0.0
    for r in records:
        if ff != ff:
            got = np.flatnonzero(r.first_folio_seconds == r.first_folio_seconds)
            if got.size:
                b = got[0]
                ff = float(r.start[b] - t0 + r.first_folio_seconds[b])
        if len(r):
            longest = max(longest, float(r.longest_inaccessible().max()))
        pages += int(r.nr_pages.sum())
        share = (r.nr_offloaded - r.nr_fallback) / np.maximum(r.nr_folios, 1)
        off += float((share * r.nr_pages).sum())
    out["first_folio"][k] = ff
    out["inaccessible"][k] = longest
    out["pages"][k] = pages
    out["pages_offloaded"][k] = off


def replay_shapes(shapes: Shapes, config: Config) -> dict[str, np.ndarray]:
    """Per-shape results of ``config`` (columns of :data:`RESULT_COLUMNS`)."""
    get_profile(config.profile)
    return trio.run(_replay, shapes, config, clock=mock_clock())
