"""Load (or compile) every compiled path once, before anything is timed or served."""

from __future__ import annotations

import numpy as np
import trio

from ..dma import DmaDevice
from ..hw import Clock, dma_schedule, get_profile
from ..mm import Machine, NodeSpec, TenantSpec
from ..mm._copy import compile_copies
from ..offload import offload_migrators
from . import _kernels as _k
from ._engine import MigrationEngine


async def warm_up() -> None:
    """numba compiles on first call, or loads its on-disk cache (tens of ms per
    kernel; ~0.7 s to compile the uncached parallel copy), holding the GIL.
    Done at first use, that lands in a bench's timed region or stalls a
    running daemon's tree readers; done here, it costs start-up time only."""
    machine = Machine([NodeSpec(8 << 20), NodeSpec(8 << 20)], words_per_page=1)
    tenant = machine.add_tenant(TenantSpec("warm", 4 << 20, order=0))
    engine = MigrationEngine(machine, Clock(), get_profile("native"))
    await engine.move_pages(tenant, np.arange(tenant.nr_pages), 1)  # the CPU fast path
    machine.memory.refcount[machine.tenant_folios(tenant)[:1]] += 1  # a pinned folio
    await engine.move_pages(tenant, np.arange(tenant.nr_pages), 0)  # the general path
    machine.memory.refcount[machine.tenant_folios(tenant)[:1]] -= 1
    # each catalogue migrator: its copy from the fast path (a DMA migrator's
    # compiled posts, the channel thread's loop) and from the general path
    # (a pinned folio again); a channel thread compiles its loop the first
    # time it runs it, ~0.3 s with the GIL held
    dma = DmaDevice(0, machine.memory, engine.clock, engine.profile.dma, engine.faults)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(dma.run)
        for entry in offload_migrators():
            migrator = entry.make(dma, entry.lo)
            engine.registry.register(migrator)
            await engine.move_pages(tenant, np.arange(tenant.nr_pages), 1)
            machine.memory.refcount[machine.tenant_folios(tenant)[:1]] += 1
            await engine.move_pages(tenant, np.arange(tenant.nr_pages), 0)
            machine.memory.refcount[machine.tenant_folios(tenant)[:1]] -= 1
            await engine.registry.unregister(migrator)
        nursery.cancel_scope.cancel()
    mem = machine.memory
    compile_copies(mem)
    none = np.empty(0, dtype=np.int64)
    mem.copy_folios(none, none, none)  # the DMA channels' copy
    # the virtual clock's closed form (``_vclock``, ``hw.dma_schedule``)
    _k.migrate_folio_unmap_clean(*engine.kernel_state, none, 0, 0, 0, none)
    dma_schedule(get_profile("zen3-ptdma").dma, np.zeros(1), np.zeros(1, dtype=np.int64),
                 np.zeros(1, dtype=np.int8), 64)
