"""One emulated kernel: machine, engine, DMA, migrators, callers' counters, tracing.

The daemon's state.  Its knobs are declared in ``_knobs`` (which parses a
value once and applies it here); the methods below are the ones that need more
than an assignment: switching migrators (EBUSY keeps its errno).  No FUSE, no
HTTP, no logging sink: observers subscribe to :attr:`System.events` (knob
changes, migrator switches, ...).
"""

from __future__ import annotations

import errno
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np

from ..dma import DmaDevice
from ..faults import FaultInjector
from ..hw import Clock, get_profile
from ..migrate import MigrationEngine, MigratorError
from ..mm import REASON_MASK_ALL, Machine, NodeSpec, TenantSpec
from ..offload import Migrator, PrezeroPool, anon_fault, migrator_names, offload_migrators
from ..tracing import Tracing
from ._callers import default_callers
from ._config import Config
from ._knobs import apply_config
from ._memcg import MemcgStats
from ._snapshot import ReadSnapshots

Listener = Callable[[str, dict[str, Any]], None]


class System:
    def __init__(self, cfg: Config, clock: Clock | None = None, populate: bool = True) -> None:
        """``clock``: the real clock (the daemon's), or a virtual one (``bench
        callers`` runs the callers on the daemon's System); ``populate``: back
        the memory's arena now, or leave it to ``system_running`` (the daemon,
        whose start would otherwise wait on it)."""
        self.cfg = cfg
        seed = cfg.daemon["seed"]
        self.machine = Machine([
            NodeSpec(n["capacity"], n["name"],
                     None if n["demotion_target"] < 0 else n["demotion_target"])
            for n in cfg.nodes], populate=populate)
        self.tenants = [self.machine.add_tenant(TenantSpec(
            t["name"], t["size"], t["order"], t["home_node"], t["access_rate"],
            t["write_fraction"], t["mlocked"])) for t in cfg.tenants]
        self.clock = clock or Clock()
        self.profile = get_profile(cfg.dma["profile"])
        self.faults = FaultInjector(seed)
        self.engine = MigrationEngine(self.machine, self.clock, self.profile, faults=self.faults)
        self.dma = DmaDevice(0, self.machine.memory, self.clock, self.profile.dma, self.faults)
        #: The catalogue's migrators by name (``none`` is the registry's default).
        self.migrators: dict[str, Migrator] = {
            e.name: e.make(self.dma, e.default) for e in offload_migrators()}
        self.reason_masks: dict[str, int] = {name: REASON_MASK_ALL for name in self.migrators}
        #: Tree view of the migrators' counters (``<migrator>.<counter>``): a write
        #: resets the view, not the counter.
        self.counter_base: dict[str, int] = {}
        nn = len(self.machine.memory.nodes)
        #: Counters the callers keep, as the kernel's vmstat items per node.
        self.node_vmstat = {k: np.zeros(nn, dtype=np.int64) for k in (
            "pgdemote_kswapd", "pgdemote_direct", "pgpromote_success",
            "compact_migrate_scanned", "compact_isolated", "compact_stall", "compact_fail",
            "compact_success", "compact_daemon_wake", "compact_daemon_migrate_scanned")}
        #: kernel/tracing; its boot clock is set when the System starts running
        #: (``system_running``), trio's clock zero until then.
        #: kernel/mm/prezero_pool (off, as the kernel's) and the faults that use it
        #: and the clearing offload: faults by how they got a zeroed folio.
        self.prezero = PrezeroPool(self.machine, self.engine.registry, self.clock,
                                   self.profile)
        self.faults_by_how = {"pool": 0, "dma": 0, "cpu": 0}
        self.fault_cpu_seconds = 0.0
        self.tracing = Tracing()
        self.tracing.attach(self.engine)
        self.events: list[Listener] = []
        self.engine.subscribe_errors(self._migrator_error)
        self.dma.subscribe_unreported(self._dma_unreported)
        self.rng = np.random.default_rng(seed)
        #: The callers' emulator knobs (``_callers``): list bounds and hints.
        self.callers = default_callers()
        #: Tenants as cgroups: their events (``_memcg``).
        self.memcg = MemcgStats(self.machine, len(self.tenants))
        #: What the node files and the metrics read (see ``_snapshot``).
        self.reads = ReadSnapshots(self)
        apply_config(self, cfg.knob_values())  # each value validated once, by the schema

    # -- events ----------------------------------------------------------------

    def emit(self, event: str, **fields: Any) -> None:
        for listener in list(self.events):
            listener(event, fields)

    def _dma_unreported(self, channel: str, n: int) -> None:
        """Descriptors failed or completed short on an engine that reports no
        errors (PTDMA): their folios were marked copied and remapped with
        stale contents.  Logged as an error, as a migrator's exception is."""
        self.emit("dma_unreported_error", channel=channel, descriptors=n,
                  total=self.dma.unreported_errors,
                  hazard="folios marked copied were not; the integrity check finds them")

    def _migrator_error(self, err: MigratorError) -> None:
        """A migrator raised: its batch fell back; the event carries the traceback."""
        self.emit("migrator_error", migrator=err.migrator, reason=err.reason,
                  folios=err.nr_folios, error=repr(err.error),
                  traceback="".join(traceback.format_exception(err.error)))

    # -- migrators -------------------------------------------------------------

    def dma_migrators(self) -> list[str]:
        """The migrators whose copies run on the DMA device (catalogue ``dma``)."""
        return [e.name for e in offload_migrators() if e.dma]

    def migrator_labels(self) -> list[str]:
        """Every migrator's name, ``none`` first (labels of per-migrator lines)."""
        return list(migrator_names())

    def active_migrator(self) -> str:
        offload = self.engine.registry.active
        return "none" if offload.is_default else offload.migrator.name

    async def set_migrator(self, name: str) -> None:
        """Switch: ``none`` for the CPU default, or a catalogue migrator's name."""
        if name not in migrator_names():
            raise ValueError(f"unknown migrator {name!r}")
        old = self.active_migrator()
        if old == name:
            return
        if old != "none":
            await self.engine.registry.unregister(self.migrators[old])
        if name != "none":
            self.engine.registry.register(self.migrators[name], self.reason_masks[name])
        self.emit("migrator_switched", old=old, new=name)

    async def set_offloading(self, name: str, on: bool) -> None:
        """``offloading`` of one migrator: 1 registers it (EBUSY if another is
        active), 0 unregisters it if it is the active one."""
        active = self.active_migrator()
        if on:
            if active == name:
                return
            if active != "none":
                raise OSError(errno.EBUSY, f"migrator {active} is active")
            await self.set_migrator(name)
        elif active == name:
            await self.set_migrator("none")

    def set_reason_mask(self, name: str, mask: int) -> None:
        """The reasons ``name`` serves (a parsed mask); applies from the next batch."""
        self.reason_masks[name] = mask
        if self.active_migrator() == name:
            self.engine.registry.set_reason_mask(self.migrators[name], mask)

    async def fault(self, tenant, vhead: int) -> str:
        """Free the region at ``vhead`` and fault it in again (``anon_fault``)."""
        f = await anon_fault(self.machine, tenant, vhead, self.engine.registry, self.prezero,
                             self.clock, self.profile)
        if f.how != "none":
            self.faults_by_how[f.how] += 1
            self.fault_cpu_seconds += f.cpu_seconds
            order = tenant.spec.order
            self.tracing.on_clear(f.at, self.active_migrator(), f.how,
                                  int(self.machine.memory.nid_of[tenant.pte_pfn[vhead]]),
                                  order, f.seconds, f.cpu_seconds)
        return f.how

    # -- callers' bookkeeping --------------------------------------------------------

    def folios_on(self, nid: int, tenant=None) -> np.ndarray:
        """Head pfns of the tenants' folios on ``nid``."""
        mem = self.machine.memory
        ts = self.tenants if tenant is None else [tenant]
        heads = [self.machine.tenant_folios(t) for t in ts]
        heads = np.concatenate(heads) if heads else np.empty(0, dtype=np.int64)
        return heads[mem.nid_of[heads] == nid]


#: Tenants appear as processes ``proc/<pid>`` from this pid on.
TENANT_PID_BASE = 1000
