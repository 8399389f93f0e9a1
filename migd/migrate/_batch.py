"""The RFC's batch copy inside ``migrate_pages_batch()`` (RFC v6 mm/migrate_copy_offload.c).

Between the batched TLB flush and the move loop, when ``migrate_should_offload
(reason)`` holds — a migrator registered and the reason in its mask — the
eligible folios (not movable_ops; refcount was checked at unmap) go to the
migrator's ``migrate_offc()`` as one batch.  Whatever it did not mark
FOLIO_CONTENT_COPIED is copied by the CPU in the move loop, one folio at a
time, as the vanilla kernel copies every folio.  So nothing is ever remapped
uncopied, whatever the migrator returns — or raises.

A migrator that raises has a bug, not a hardware error: its batch falls back
like any other (its marks are not trusted: every folio of the batch is copied
by the CPU), the error is counted under its own fallback cause
``migrator_error`` and handed with its traceback to the error listeners (the
daemon logs it).  Rejected: mapping it to ``-EIO`` (it hid the traceback and
made a bug look like a DMA error) and letting it propagate (it would tear the
batch between unmap and move).
"""

from __future__ import annotations

import errno
import time
from dataclasses import dataclass

import numpy as np
import trio

from ..mm import FOLIO_CONTENT_COPIED, PG_movable_ops, cpu_threads_busy
from ..offload import CopyBatch
from ._stats import MIGRATOR_ERROR, MigratorError
from ._way import Path, still_alone


def errno_name(err: int) -> str:
    """The kernel's name of an errno (Python says ENOTSUP for 95; Linux, EOPNOTSUPP)."""
    return "EOPNOTSUPP" if err == errno.EOPNOTSUPP else errno.errorcode.get(err, f"E{err}")


@dataclass(frozen=True)
class Copied:
    """What the batch copy did: folios handed to the migrator, of those left
    to the CPU and why, the automatic choice's decision and the bytes handed."""

    nr_offloaded: int = 0
    nr_fallback: int = 0
    cause: str | None = None
    choice: tuple | None = None
    nr_bytes: int = 0
    #: Whether the migrator took the batch copy (its books hold the batch):
    #: not when the reason is outside its mask, the automatic choice declined
    #: the batch, or no folio was eligible.
    taken: bool = True


NOT_OFFLOADED = Copied(taken=False)


async def batch_copy(engine, ctx, src: np.ndarray, dst: np.ndarray,
                     nr_movable_ops: int) -> Copied:
    """The batch copy of the unmapped folios ``src`` -> ``dst``, if the batch's
    way (``ctx.way``) has one."""
    offload = ctx.offload
    way = ctx.way
    if not way.taken and not way.declined:
        return NOT_OFFLOADED  # vanilla: the move loop copies each folio
    mem = engine.memory
    if nr_movable_ops:
        eligible = (mem.flags[src] & PG_movable_ops) == 0
        src, dst = src[eligible], dst[eligible]
    if src.size == 0 or engine.stopping:
        return NOT_OFFLOADED  # shutting down: the move loop copies on the CPU
    migrator = way.copy_migrator or offload.migrator
    closed = way.path is Path.CLOSED_FORM and still_alone(engine)  # still, after the flush?
    batch = CopyBatch(mem, src, dst, mem.folio_order[src], engine.clock, engine.profile,
                      closed)
    choice = way.choice
    if way.declined:  # the CPU copies such batches faster here
        return _fell_back(engine, batch, "EOPNOTSUPP", choice, taken=False)
    rc = -errno.EINTR  # stays so when stop() cancels the copy
    with trio.CancelScope() as scope:
        engine.copy_scopes.add(scope)
        t0, w0 = trio.current_time(), time.perf_counter()
        try:
            rc = await migrator.migrate_offc(batch)
            if migrator.cpu_threads:  # a CPU copy: its threads' time is CPU time
                virtual = engine.clock.virtual
                seconds = trio.current_time() - t0 if virtual else time.perf_counter() - w0
                ctx.tally.cpu_batch += seconds * cpu_threads_busy(migrator.cpu_threads,
                                                                  virtual)
        except Exception as exc:
            mem.flags[src] &= np.invert(mem.flags.dtype.type(FOLIO_CONTENT_COPIED))  # untrusted
            engine.books.migrator_error(
                MigratorError(migrator.name, ctx.reason.label, batch.nr_folios, exc))
            return _fell_back(engine, batch, MIGRATOR_ERROR, choice)
        finally:
            engine.copy_scopes.discard(scope)
    missed = src.size - int(np.count_nonzero(mem.flags[src] & FOLIO_CONTENT_COPIED))
    if not missed:
        return Copied(batch.nr_folios, 0, None, choice, batch.nr_bytes)
    cause = errno_name(-rc) if rc < 0 else "incomplete"
    return Copied(batch.nr_folios, missed, cause, choice, batch.nr_bytes)


def _fell_back(engine, batch: CopyBatch, cause: str, choice, taken: bool = True) -> Copied:
    """The whole batch left to the move loop; the fallback is booked from the
    batch's ledger record."""
    return Copied(batch.nr_folios, batch.nr_folios, cause, choice, batch.nr_bytes, taken)
