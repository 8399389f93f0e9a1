"""Load (or compile) every compiled path once, before anything is timed or served."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import trio
from numba.core.dispatcher import Dispatcher

from ..dma import DmaDevice, book_slices, sg_nents_slices, slice_bounds_array
from ..hw import Clock, dma_schedule, get_profile
from ..mm import Machine, NodeSpec, TenantSpec, compile_copies
from ..offload import offload_migrators
from . import _kernels as _k
from ._engine import MigrationEngine

#: The stages of :func:`warm_up`, as ``progress`` is told them.
STAGES = ("the CPU fast path", "the general path", "the DMA paths", "the copies",
          "the virtual clock")


#: Written into the cache directory once a warm-up completed: what a
#: start looks for (numba writes index files at import for eagerly compiled
#: kernels, so their presence says nothing of the rest).
WARM_MARK = "migd-warm"
#: Whether a warm-up had completed into the cache at this process's first look.
_cached_at_start: bool | None = None


def _cache_dir() -> Path:
    return Path(os.environ.get("NUMBA_CACHE_DIR", ""))


def compile_cache() -> tuple[Path, int, bool]:
    """(numba's cache directory for this migd, its cached kernels, whether a
    warm-up had filled it when this process first asked): a first start of a
    version compiles them all.  The answer is the first look's, because
    building a System already compiles (and caches) a few."""
    global _cached_at_start
    path = _cache_dir()
    if _cached_at_start is None:
        _cached_at_start = (path / WARM_MARK).is_file()
    kernels = {id(obj) for name, mod in list(sys.modules.items())
               if name.startswith("migd.") and mod is not None
               for obj in vars(mod).values()
               if isinstance(obj, Dispatcher) and type(obj._cache).__name__ == "FunctionCache"}
    return path, len(kernels), _cached_at_start


def warm_up_virtual_clock(engine: MigrationEngine | None = None) -> None:
    """The last stage of :func:`warm_up`: the virtual clock's closed form
    (``_vclock``, ``hw.dma_schedule``) and the DMA books' passes.  Callable
    alone, on a small engine of its own: the compile child of a first start
    runs it on the other CPU, and the daemon then loads it from the cache."""
    if engine is None:
        machine = Machine([NodeSpec(8 << 20)], words_per_page=1)
        engine = MigrationEngine(machine, Clock(), get_profile("native"))
    mem = engine.machine.memory
    none = np.empty(0, dtype=np.int64)
    _k.migrate_folio_unmap_clean(*engine.kernel_state, none, 0, 0, 0, none, none)
    dma_schedule(get_profile("zen3-ptdma").dma, np.zeros(1), np.zeros(1, dtype=np.int64),
                 np.zeros(1, dtype=np.int8), 64)
    book_slices(mem.mem_map, none, np.empty(0, dtype=np.int8), none, none, np.zeros(0),
                np.zeros(1), np.zeros(1), none)
    sg_nents_slices(np.empty(0, dtype=np.int8), np.empty(0, dtype=np.int8),  # map_sgtables
                    slice_bounds_array(0, 1), 65536, True)  # read-only, as there


async def warm_up(progress: Callable[[str], None] = lambda stage: None) -> None:
    """numba compiles on first call, or loads its on-disk cache (tens of ms per
    kernel; ~0.7 s to compile the uncached parallel copy), holding the GIL.
    Done at first use, that lands in a bench's timed region or stalls a
    running daemon's tree readers; done here, it costs start-up time only.
    ``progress(stage)`` is called before each of :data:`STAGES` (a cold cache
    takes seconds each: the daemon logs them and extends systemd's timeout)."""
    progress(STAGES[0])
    machine = Machine([NodeSpec(8 << 20), NodeSpec(8 << 20)], words_per_page=1)
    tenant = machine.add_tenant(TenantSpec("warm", 4 << 20, order=0))
    engine = MigrationEngine(machine, Clock(), get_profile("native"))
    await engine.move_pages(tenant, np.arange(tenant.nr_pages), 1)  # the CPU fast path
    progress(STAGES[1])
    machine.memory.refcount[machine.tenant_folios(tenant)[:1]] += 1  # a pinned folio
    await engine.move_pages(tenant, np.arange(tenant.nr_pages), 0)  # the general path
    machine.memory.refcount[machine.tenant_folios(tenant)[:1]] -= 1
    progress(STAGES[2])
    # each catalogue migrator: its copy from the fast path (a DMA migrator's
    # compiled posts, the channel thread's loop) and from the general path
    # (a pinned folio again); a channel thread compiles its loop the first
    # time it runs it, ~0.3 s with the GIL held
    dma = DmaDevice(0, machine.memory, engine.clock, engine.profile.dma, engine.faults)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(dma.run)
        for entry in offload_migrators():
            migrator = entry.make(dma, entry.lo)
            if hasattr(migrator, "set_variant"):  # the variant the compiled copy serves
                migrator.set_variant("v6")
            engine.registry.register(migrator)
            await engine.move_pages(tenant, np.arange(tenant.nr_pages), 1)
            machine.memory.refcount[machine.tenant_folios(tenant)[:1]] += 1
            await engine.move_pages(tenant, np.arange(tenant.nr_pages), 0)
            machine.memory.refcount[machine.tenant_folios(tenant)[:1]] -= 1
            await engine.registry.unregister(migrator)
        nursery.cancel_scope.cancel()
    progress(STAGES[3])
    mem = machine.memory
    compile_copies(mem)
    none = np.empty(0, dtype=np.int64)
    mem.copy_folios(none, none, none)  # the DMA channels' copy
    progress(STAGES[4])
    warm_up_virtual_clock(engine)
    if os.environ.get("NUMBA_CACHE_DIR"):  # set by migd/__init__ unless the user did
        with contextlib.suppress(OSError):  # a read-only cache only costs the next start
            _cache_dir().mkdir(parents=True, exist_ok=True)
            (_cache_dir() / WARM_MARK).touch()
