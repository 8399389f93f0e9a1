"""Replay a trace's calls through one configuration on the virtual clock.

The machine is sized to what the trace touches: per folio order, one tenant
of twice the most folios in use at once (one call's, or a whole cluster's of
calls that overlap), so whichever node a call's folios must come from holds
enough of them (each call moves its folios to the other node; a per-(order,
node) stack says where every folio is, and a call in flight holds its own).
One machine and one engine serve every call of a configuration, in one
``trio.run`` under MockClock: building an engine per call cost more than the
call.

Calls are replayed at their recorded times, in two kinds:

* A call whose recorded [start, end] overlaps no other call's ran on a host
  with no other migration in flight; the emulation of a call on an idle
  machine depends only on its shape (reason, mode, folios by order, pinned
  ones; the virtual clock is deterministic and every call ends with the DMA
  channels released and nothing queued), so each such shape runs once and
  its result stands for all its calls (see ``_shapes``): 100,000 calls of a
  tiering host fall into a few hundred shapes.  Replaying every call
  (~0.8 ms of Python each) was rejected: 80 s against the 30 s target, for
  the same numbers.
* Calls whose intervals overlap form clusters (``_clusters``); each cluster
  runs in one nursery, every call started at its recorded offset from the
  cluster's first start, so they contend for the emulated DMA channels and
  engines as on the traced host (zen3-ptdma, one THP each under dcbm:1: the
  second call waits ~150 us, one 2 MiB copy at 14 GB/s, behind the first on
  the engine their channels share), and their results replace the shape
  results.  Their CPU work is not serialised: the engine has no CPU count,
  each call runs as on a CPU of its own, as the traced tasks ran on theirs
  (two overlapping ``none`` calls take their idle time each).  Clusters run
  one after another: between them the machine is idle, as it was on the host.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import trio
from trio.lowlevel import current_task

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
from ._clusters import Clusters
from ._shapes import Shape, Shapes

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
    variant: str = "v6"  # dcbm's iteration (``--variant``)

    @property
    def name(self) -> str:
        parts = [str(self.migrator)]
        if self.variant != "v6" and self.migrator.name == "dcbm":
            parts.append(self.variant)
        if self.batch_pages != 512:
            parts.append(f"b{self.batch_pages}")
        if self.reason_mask != REASON_MASK_ALL and self.migrator.name != "none":
            parts.append(f"mask={format_reason_mask(self.reason_mask)}")
        return " ".join(parts)


def need_folios(shapes: Shapes, clusters: Clusters | None) -> dict[int, int]:
    """Per order, the most folios in use at once: one call's, or a whole
    cluster's (its calls may all be in flight together, each on its own
    folios).  Summed in float64: counts up to int64 each, so an int64 sum
    could wrap; exact below 2^53, far past any machine that fits."""
    need = dict(shapes.max_folios)
    if clusters is None or not len(clusters):
        return need
    for o in need:
        per_shape = np.array([sum(n for oo, n, _ in s[2] if oo == o) for s in shapes.shapes],
                             dtype=np.float64)
        per_call = per_shape[shapes.index[clusters.calls]]
        need[o] = max(need[o], int(np.add.reduceat(per_call, clusters.bounds[:-1]).max()))
    return need


def _cap_pages(need: dict[int, int]) -> int:
    """Pages of each node: every tenant (twice the folios in use at once) and 8 MiB."""
    pages = sum(2 * n << o for o, n in need.items()) + (8 << 20) // PAGE_SIZE
    return -(-pages // 512) * 512


#: Bytes per emulated page (struct page, the arena word, the page table, the
#: buddy bitmap, the tenant's set-up arrays) and per tenant folio (the folio
#: stacks, a call's pfn lists and the engine's per-folio arrays), fitted to
#: ``/usr/bin/time -v`` of one call of 10^6 order-0 or 2*10^6 order-9 pages and
#: 1000 overlapping calls of 1000 pages, under none, mtcopy:4 and dcbm:16:
#: 256-373 bytes a page in flight, against the 320-416 of the model.
PAGE_BYTES = 80
FOLIO_BYTES = 48
#: Per traced call: its columns (as parsed, as numpy), the shape pass's
#: Python lists, the clustering's index arrays; and per configuration its 12
#: result columns, expanded from the shapes.  200,000 calls of the synthetic
#: trace: 438 bytes a call through none, 571 through three configurations;
#: a call with remove_migration_pte orders adds its dict and often a shape of
#: its own (~330).
CALL_BYTES = 768
CALL_BYTES_PER_CONFIG = 128


def memory_estimate(need: dict[int, int], nr_calls: int, nr_configs: int) -> int:
    """Bytes a replay takes beyond the interpreter: one machine at a time (each
    configuration's is freed before the next is built) and every call's columns."""
    folios = sum(need.values())
    return (2 * _cap_pages(need) * PAGE_BYTES + 2 * folios * FOLIO_BYTES
            + nr_calls * (CALL_BYTES + CALL_BYTES_PER_CONFIG * nr_configs))


def _machine(need: dict[int, int]) -> tuple[Machine, dict[int, tuple[int, int]]]:
    """Two nodes each able to hold every tenant; per order (vbase, folios)."""
    cap = _cap_pages(need) * PAGE_SIZE
    machine = Machine([NodeSpec(cap, "dram", demotion_target=1), NodeSpec(cap, "far")],
                      words_per_page=1)
    tenants = {}
    for o, n in sorted(need.items(), reverse=True):
        t = machine.add_tenant(TenantSpec(f"order{o}", (2 * n << o) * PAGE_SIZE, order=o))
        tenants[o] = (t, 2 * n)
    return machine, tenants


class _Replayer:
    """One configuration's machine, engine and DMA device; runs calls of a
    shape, alone or concurrently, and books each call's results by its task.

    Batch records and CPU copy seconds are attributed to the trio task that
    produced them (the engine emits both from the calling task): with calls
    in flight together, the engine-wide totals no longer say whose they are.
    """

    def __init__(self, need: dict[int, int], config: Config) -> None:
        machine, self.tenants = _machine(need)
        self.mem = machine.memory
        profile = get_profile(config.profile)
        self.engine = engine = MigrationEngine(machine, VirtualClock(), profile)
        engine.nr_max_batched_migration = config.batch_pages
        self.dma = DmaDevice(0, self.mem, engine.clock, profile.dma, engine.faults)
        self.migrator = make_migrator(config.migrator, self.dma, config.variant)
        if self.migrator is not None:
            engine.registry.register(self.migrator, config.reason_mask)
        self.batches: dict[object, _Batches] = {}
        engine.subscribe(lambda r: self.batches[current_task()].add(r))
        # Where each tenant's folios are: per order and node, a stack of folio
        # indices (an array and its top: 8 bytes a folio, where a list of
        # Python ints took ~36).
        self.stacks = {o: _Stacks(n) for o, (_, n) in self.tenants.items()}

    async def call(self, shape: Shape, out: dict[str, np.ndarray], k: int) -> None:
        """Run one call of ``shape``; its results into row ``k`` of ``out``."""
        reason, mode, folios = shape
        if not folios:  # a call that counted no page: nothing to replay
            out["first_folio"][k] = np.nan
            return
        mem, stacks = self.mem, self.stacks
        src = 0 if all(stacks[o].top[0] >= n for o, n, _ in folios) else 1
        picked, pinned = [], []
        for o, n, npin in folios:
            t, _ = self.tenants[o]
            idx = stacks[o].pop(src, n)
            heads = t.pte_pfn[idx << o]
            picked.append((o, idx, heads))
            pinned.append(heads[:npin])
        pins = np.concatenate(pinned)
        mem.refcount[pins] += 1
        task = current_task()
        t0 = trio.current_time()
        self.batches[task] = batches = _Batches(t0)
        res = await self.engine.migrate_pages(np.concatenate([h for _, _, h in picked]),
                                              1 - src, MigrateReason(reason), _MODES[mode])
        out["seconds"][k] = trio.current_time() - t0
        mem.refcount[pins] -= 1
        for o, idx, _ in picked:
            t, _ = self.tenants[o]
            stacks[o].push(idx, mem.nid_of[t.pte_pfn[idx << o]])
        s = res.stats
        for c, v in (("succeeded", s.nr_succeeded), ("failed", s.nr_failed_pages),
                     ("thp_succeeded", s.nr_thp_succeeded), ("thp_failed", s.nr_thp_failed),
                     ("thp_split", s.nr_thp_split), ("split", s.nr_split)):
            out[c][k] = v
        out["cpu_seconds"][k] = s.cpu_copy_seconds
        del self.batches[task]
        batches.book(out, k)

    async def cluster(self, shapes: list[Shape], offsets: np.ndarray,
                      out: dict[str, np.ndarray], first: int) -> None:
        """A cluster's calls in one nursery, each started at its recorded
        offset from the cluster's first start; returns when all are done
        (the machine is idle again for the next cluster)."""

        async def at(delay: float, shape: Shape, k: int) -> None:
            await trio.sleep(delay)
            await self.call(shape, out, k)

        async with trio.open_nursery() as nursery:
            for j, (shape, delay) in enumerate(zip(shapes, offsets.tolist(), strict=True)):
                nursery.start_soon(at, delay, shape, first + j)


async def _replay(shapes: Shapes, config: Config, clusters: Clusters | None
                  ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    r = _Replayer(need_folios(shapes, clusters), config)
    per_shape = {c: np.zeros(len(shapes.shapes)) for c in RESULT_COLUMNS}
    n = 0 if clusters is None else clusters.calls.size
    per_call = {c: np.zeros(n) for c in RESULT_COLUMNS}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(r.dma.run)
        for k, shape in enumerate(shapes.shapes):
            await r.call(shape, per_shape, k)
        for c, (calls, offsets) in enumerate(clusters or ()):
            await r.cluster([shapes.shapes[i] for i in shapes.index[calls]], offsets,
                            per_call, int(clusters.bounds[c]))
        nursery.cancel_scope.cancel()
    return per_shape, per_call


class _Stacks:
    """One order's folios by node: ``folios[node][:top[node]]``, a stack each."""

    def __init__(self, n: int) -> None:
        self.folios = (np.arange(n, dtype=np.int64), np.empty(n, dtype=np.int64))
        self.top = [n, 0]

    def pop(self, node: int, n: int) -> np.ndarray:
        """``n`` folios from ``node``, the rest from the other when it has too
        few: calls of several orders can leave one order's folios mostly on
        each node, and neither then holds all of a call's.  Those migrate
        within their node, as the kernel's migrate_pages() does (its callers,
        not it, skip folios on the target); taking a short slice, as before,
        replayed fewer folios than the trace's call."""
        take = min(n, self.top[node])
        parts = []
        for nd, k in ((node, take), (1 - node, n - take)):
            top = self.top[nd]
            parts.append(self.folios[nd][top - k:top].copy())
            self.top[nd] = top - k
        return np.concatenate(parts)

    def push(self, idx: np.ndarray, nid: np.ndarray) -> None:
        for node in (0, 1):
            sel = idx[nid == node]
            top = self.top[node]
            self.folios[node][top:top + sel.size] = sel
            self.top[node] = top + sel.size


class _Batches:
    """One call's batches folded as the engine emits them: first-folio latency
    (call entry to the first folio remapped), the longest inaccessible time,
    pages and pages offloaded.  Keeping the records to fold at the end held
    ~2.5 KB a batch: 2.5 GB for a call of 10^6 folios at --batch-pages 1."""

    def __init__(self, t0: float) -> None:
        self.t0, self.ff, self.longest, self.pages, self.off = t0, np.nan, 0.0, 0, 0.0

    def add(self, r: BatchRecords) -> None:
        if self.ff != self.ff:
            got = np.flatnonzero(r.first_folio_seconds == r.first_folio_seconds)
            if got.size:
                b = got[0]
                self.ff = float(r.start[b] - self.t0 + r.first_folio_seconds[b])
        if len(r):
            self.longest = max(self.longest, float(r.longest_inaccessible().max()))
        self.pages += int(r.nr_pages.sum())
        share = (r.nr_offloaded - r.nr_fallback) / np.maximum(r.nr_folios, 1)
        self.off += float((share * r.nr_pages).sum())

    def book(self, out: dict[str, np.ndarray], k: int) -> None:
        out["first_folio"][k] = self.ff
        out["inaccessible"][k] = self.longest
        out["pages"][k] = self.pages
        out["pages_offloaded"][k] = self.off


def replay_shapes(shapes: Shapes, config: Config) -> dict[str, np.ndarray]:
    """Per-shape results of ``config`` (columns of :data:`RESULT_COLUMNS`),
    each shape run once on an idle machine."""
    get_profile(config.profile)
    return trio.run(_replay, shapes, config, None, clock=mock_clock())[0]


def replay_calls(shapes: Shapes, clusters: Clusters, config: Config) -> dict[str, np.ndarray]:
    """Per-call results of ``config``: a call in no cluster gets its shape's
    idle-machine result, a call in a cluster its concurrent replay's."""
    get_profile(config.profile)
    per_shape, per_call = trio.run(_replay, shapes, config, clusters, clock=mock_clock())
    out = {c: v[shapes.index] for c, v in per_shape.items()}
    for c, v in per_call.items():
        out[c][clusters.calls] = v
    return out
