"""One emulated kernel: machine, engine, DMA, migrators, callers' counters, tracing.

The daemon's state, with the knobs the control tree exposes as methods that
validate first and change nothing on bad input (ValueError -> EINVAL; OSError
keeps its errno, e.g. EBUSY).  No FUSE, no HTTP, no logging sink: observers
subscribe to :attr:`System.events` (knob changes, migrator switches, ...).
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
from ..mm import (
    Machine,
    NodeSpec,
    TenantSpec,
    format_reason_mask,
    parse_reason_mask,
)
from ..offload import DcbmMigrator, Migrator, MtcopyMigrator
from ._config import Config
from ._trace import TraceBuffer

Listener = Callable[[str, dict[str, Any]], None]


def parse_int(text: str, lo: int, hi: int, what: str) -> int:
    try:
        value = int(text.strip(), 0)
    except ValueError:
        raise ValueError(f"{what}: expected an integer {lo}..{hi}") from None
    if not lo <= value <= hi:
        raise ValueError(f"{what}: expected an integer {lo}..{hi}")
    return value


def parse_bool(text: str, what: str) -> bool:
    v = text.strip()
    if v in ("1", "Y", "y"):
        return True
    if v in ("0", "N", "n"):
        return False
    raise ValueError(f"{what}: expected 0 or 1")


class System:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        seed = cfg.daemon["seed"]
        self.machine = Machine([
            NodeSpec(n["capacity"], n["name"],
                     None if n["demotion_target"] < 0 else n["demotion_target"])
            for n in cfg.nodes])
        self.tenants = [self.machine.add_tenant(TenantSpec(
            t["name"], t["size"], t["order"], t["home_node"], t["access_rate"],
            t["write_fraction"], t["mlocked"])) for t in cfg.tenants]
        self.clock = Clock()
        self.profile = get_profile(cfg.dma["profile"])
        self.faults = FaultInjector(seed)
        self.engine = MigrationEngine(self.machine, self.clock, self.profile, faults=self.faults)
        self.engine.nr_max_batched_migration = cfg.migrator["nr_max_batched_migration"]
        self.engine.max_inaccessible_us = cfg.migrator["max_inaccessible_us"]
        self.dma = DmaDevice(0, self.machine.memory, self.clock, self.profile.dma, self.faults)
        self.dcbm = DcbmMigrator(self.dma, cfg.dcbm["nr_dma_chan"])
        self.dcbm.batch_size = cfg.dcbm["batch_size"]
        self.dcbm.min_batch_pages = cfg.dcbm["min_batch_pages"]
        self.mtcopy = MtcopyMigrator(cfg.mtcopy["threads"])
        self.dcbm.auto = cfg.dcbm["auto"]
        self.mtcopy.auto = cfg.mtcopy["auto"]
        self.reason_masks = {"dcbm": parse_reason_mask(cfg.dcbm["reason_mask"]),
                             "mtcopy": parse_reason_mask(cfg.mtcopy["reason_mask"])}
        #: Tree view of dcbm's counters: a write resets the view, not the counter.
        self.dcbm_counter_base = {"folios_migrated": 0, "folios_failures": 0}
        nn = len(self.machine.memory.nodes)
        #: Counters the callers keep, as the kernel's vmstat items per node.
        self.node_vmstat = {k: np.zeros(nn, dtype=np.int64) for k in (
            "pgdemote_kswapd", "pgdemote_direct", "pgpromote_success",
            "compact_migrate_scanned", "compact_isolated", "compact_success")}
        self.trace = TraceBuffer()
        self.engine.subscribe(self.trace.on_batches)
        self.events: list[Listener] = []
        self.engine.subscribe_errors(self._migrator_error)
        self.rng = np.random.default_rng(seed)

    # -- events ----------------------------------------------------------------

    def emit(self, event: str, **fields: Any) -> None:
        for listener in list(self.events):
            listener(event, fields)

    def _migrator_error(self, err: MigratorError) -> None:
        """A migrator raised: its batch fell back; the event carries the traceback."""
        self.emit("migrator_error", migrator=err.migrator, reason=err.reason,
                  folios=err.nr_folios, error=repr(err.error),
                  traceback="".join(traceback.format_exception(err.error)))

    def _knob(self, name: str, old: Any, new: Any) -> None:
        self.emit("knob_changed", knob=name, old=old, new=new)

    # -- migrators -------------------------------------------------------------

    @property
    def migrators(self) -> dict[str, Migrator]:
        return {"mtcopy": self.mtcopy, "dcbm": self.dcbm}

    def active_migrator(self) -> str:
        offload = self.engine.registry.active
        return "none" if offload.is_default else offload.migrator.name

    async def set_migrator(self, name: str) -> None:
        """Switch: ``none`` for the CPU default, or ``mtcopy`` / ``dcbm``."""
        if name not in ("none", *self.migrators):
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

    def set_reason_mask(self, name: str, text: str) -> None:
        mask = parse_reason_mask(text)
        old = self.reason_masks[name]
        self.reason_masks[name] = mask
        if self.active_migrator() == name:
            self.engine.registry.set_reason_mask(self.migrators[name], mask)
        self._knob(f"{name}.reason_mask", format_reason_mask(old), format_reason_mask(mask))

    # -- callers' bookkeeping --------------------------------------------------------

    def tenant_by_pid(self, pid: int):
        return self.tenants[pid - TENANT_PID_BASE]

    def folios_on(self, nid: int, tenant=None) -> np.ndarray:
        """Head pfns of the tenants' folios on ``nid``."""
        mem = self.machine.memory
        ts = self.tenants if tenant is None else [tenant]
        heads = [self.machine.tenant_folios(t) for t in ts]
        heads = np.concatenate(heads) if heads else np.empty(0, dtype=np.int64)
        return heads[mem.nid_of[heads] == nid]


#: Tenants appear as processes ``proc/<pid>`` from this pid on.
TENANT_PID_BASE = 1000
