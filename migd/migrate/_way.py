"""A batch's way through ``migrate_pages_batch()``, decided once, in one place.

migd runs a batch by one of three implementations of the same kernel steps:

- ``GENERAL``: the engine's step-by-step code (``_migrate_batch``), either
  clock; the only one that handles retries, splits, faults and interleaving;
- ``COMPILED``: real clock, whole clean batches in one compiled call
  (``_fastpath``, ``_kernels.migrate_pages_batch_fast``);
- ``CLOSED_FORM``: virtual clock, a batch nothing can interleave with, its
  modelled time computed at once (``_vclock``);

and copies it one of three ways (the copier): ``VANILLA``, the move loop's
``folio_mc_copy()`` folio by folio (no migrator, or a batch it does not take);
``CPU_BATCH``, the migrator's batch copy on CPU threads; ``OFFLOAD``, the
migrator's own ``migrate_offc()`` (a DMA migrator's channels, or the DMA copy
threads through the compiled path).  :func:`batch_way` decides both from the
clock, the profile (through the migrator's ``compiled_copy()``), the migrator,
the reason and the faults armed, before the batch starts; the automatic
CPU/offload choice is made here too.  Everything downstream reads the
:class:`Way`.  Rejected: each implementation deciding for itself (five places,
a sentinel thread count and a ``closed`` flag threaded through the files, and
books that disagreed on who copied a batch).

Two emulator-only knobs of the RFC's open questions are read here too:
``batch_copy`` (``gated``, the RFC: a batch copy only when
``migrate_should_offload()`` holds; ``always``: every batch no migrator takes
is batch-copied by the core's ``folios_mc_copy()`` on the calling CPU, books
``none``), and ``decline_latency_sensitive`` (the migrator declines the
batches of a caller that declared itself latency-sensitive, :data:`LATENCY_TOLERANT`,
which the caller sets around its ``migrate_pages()`` calls: a context
variable, so concurrent callers' hints never mix and ``do_pages_move()``
needs no new argument).

Two things stay dynamic because they are facts of the run, not choices: a
compiled batch whose first folio will not unmap at once is left to the general
path (``_kernels.migrate_folio_unmap_clean`` undoes it), and a closed-form
batch that another task could observe (``still_alone``) is run step by step.
"""

from __future__ import annotations

import enum
from contextvars import ContextVar
from dataclasses import dataclass, replace

import numpy as np

from ..mm import MigrateReason
from ..offload import FOLIOS_MC_COPY, CompiledCopy, CpuMigrator, Migrator, Offload
from . import _kernels as _k


class Path(enum.Enum):
    GENERAL = "general"
    COMPILED = "compiled"
    CLOSED_FORM = "closed-form"


class Copier(enum.Enum):
    VANILLA = "vanilla"  # folio_mc_copy() per folio in the move loop
    CPU_BATCH = "cpu-batch"  # the migrator's batch copy on CPU threads
    OFFLOAD = "offload"  # the migrator's migrate_offc() (DMA)


#: Every path: what an engine may take unless a test narrows it.
ALL_PATHS = frozenset(Path)

#: ``kernel/mm/migrate_offload/batch_copy``: ``gated`` (the RFC, the default)
#: or ``always`` (the core batch-copies what no migrator takes).
BATCH_COPY_MODES = ("gated", "always")

#: The calling caller's hint: True (latency-tolerant, the default) or False.
#: Set with ``LATENCY_TOLERANT.set()`` by a caller around its calls.
LATENCY_TOLERANT: ContextVar[bool] = ContextVar("migd_latency_tolerant", default=True)


def should_offload(offload: Offload, reason: MigrateReason) -> bool:
    """RFC v6 ``migrate_should_offload()``: a migrator registered and the reason
    in its mask.  False for the vanilla default, whose batches are never
    batch-copied."""
    return not offload.is_default and bool((offload.reason_mask >> reason) & 1)


@dataclass(frozen=True)
class Way:
    """How one batch runs and who copies it."""

    path: Path
    copier: Copier
    #: Whose books the batch goes in: the migrator's when it takes the batch
    #: copy, else ``none`` (the vanilla kernel's).
    name: str
    #: The automatic choice's ``(cell, offloaded)`` when it decided.
    choice: tuple | None = None
    #: CPU_BATCH: the copy threads.
    threads: int = 0
    #: COMPILED and OFFLOAD: the migrator's compiled copy.
    dma: CompiledCopy | None = None
    #: Whose ``migrate_offc()`` copies the batch when it is not the active
    #: migrator's: the core's ``folios_mc_copy()`` under ``batch_copy = always``.
    copy_migrator: Migrator | None = None

    @property
    def taken(self) -> bool:
        """The active migrator takes the batch copy."""
        return self.copier is not Copier.VANILLA

    @property
    def declined(self) -> bool:
        """The automatic choice declined the batch (-EOPNOTSUPP)."""
        return self.choice is not None and not self.choice[1]

    def general(self) -> Way:
        """The same copier, step by step."""
        return self if self.path is Path.GENERAL else replace(self, path=Path.GENERAL, dma=None)

    def vanilla(self) -> Way:
        """The migrator did not take the batch after all (nothing eligible, a
        stop): the move loop copies it, in the vanilla kernel's books."""
        if self.copier is Copier.VANILLA:
            return self
        return replace(self, copier=Copier.VANILLA, name=CpuMigrator.name, threads=0, dma=None,
                       copy_migrator=None)


def still_alone(eng) -> bool:
    """Nothing can interleave with a batch starting (or going on) now on the
    virtual clock: no fault armed, no other call in flight, no stop."""
    return (eng.clock.virtual and eng.calls_in_flight == 1 and not eng.stopping
            and not eng.faults.armed)


def batch_way(eng, offload: Offload, reason: MigrateReason, cum: np.ndarray, i: int,
              bound: int) -> Way:
    """The way of the batch starting at folio ``i`` (``cum``: the list's running
    page count, ``bound``: its batch bound)."""
    migrator = offload.migrator
    taken = should_offload(offload, reason)
    if taken and eng.decline_latency_sensitive and not LATENCY_TOLERANT.get():
        taken = False  # the migrator declines a latency-sensitive caller's batch
    choice = None
    if taken and migrator.auto:
        j = int(_k.batch_end(cum, i, bound, True))
        done = int(cum[i - 1]) if i else 0
        choice = eng.fast.choose(migrator, j - i, int(cum[j - 1]) - done)
        taken = bool(choice[1])
    core = None
    if not taken and choice is None and eng.batch_copy == "always":
        copier, name, core = Copier.CPU_BATCH, CpuMigrator.name, FOLIOS_MC_COPY
    elif not taken:
        copier, name = Copier.VANILLA, CpuMigrator.name
    else:
        copier = Copier.CPU_BATCH if migrator.cpu_threads else Copier.OFFLOAD
        name = migrator.name
    threads = (core or migrator).cpu_threads if copier is Copier.CPU_BATCH else 0
    path, dma = Path.GENERAL, None
    if eng.clock.virtual:
        if still_alone(eng):
            path = Path.CLOSED_FORM
    elif not eng.faults.armed:
        if copier is Copier.OFFLOAD and Path.COMPILED in eng.paths:
            dma = migrator.compiled_copy()
            if dma is not None:
                path = Path.COMPILED
        elif copier is not Copier.OFFLOAD:
            path = Path.COMPILED
    if path not in eng.paths:
        path, dma = Path.GENERAL, None
    return Way(path, copier, name, choice, threads, dma, core)
