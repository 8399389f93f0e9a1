"""The virtual clock's closed-form batch: when nothing can interleave.

On the virtual clock the engine's time is the profile's model, charged as the
step-by-step path runs: the unmap loop pass by pass (``_steps.unmap_loop``:
fault draws, retry bookkeeping), the batch copy (a DMA migrator's channels
sleep chunk by chunk, ~128 trio sleeps and 512 callbacks per 512-folio
batch), the move loop.  When nothing can interleave with a batch — no fault
armed, no other ``migrate_pages()`` call in flight, no stop requested — its
outcome is known before it runs: every folio unmaps on the first pass (or
the batch is not clean, and nothing was touched), and the copy's time follows
from the batch alone.  Then:

- the unmap loop is one compiled call (``migrate_folio_unmap_clean``); its
  vectorised costs (``CpuModel.unmap_seconds``) give each folio's unmap
  time, their running sum as ``unmap_pass`` computes them, and are slept
  with the TLB flush in one sleep (nothing changes between the two);
- the batch copy is handed ``CopyBatch.closed_form`` (decided again after
  the flush: still alone?): a DMA migrator may compute its channels'
  schedule at once and sleep once unless another task could run before the
  copy ends — one runnable, or one whose sleep ends first, which could
  enter the engine and claim channels mid-copy;
- the move loop (``_steps.move``) and the records are the engine's own
  code; its two sleeps (to folio 0's remap, then to the end) are one only
  when no task waits on a folio, none is runnable and no sleep ends before
  the loop does, so a mutator waiting on a migration entry still wakes at
  folio 0's remap, and first-folio latency is the same number.

Measured: up to 20x less real time per modelled second, same results
(figures in docs/design.md).

Anything that can interleave keeps the step-by-step path: a fault armed (a
draw could fire at any folio), a second caller (its batches claim channels
and change the bus share mid-batch), a stop.  Rejected: one sleep for a
whole call (all its batches): a mutator waiting on a migration entry would
wake at the end of the call instead of at its folio's remap.
"""

from __future__ import annotations

import numpy as np
import trio

from . import _kernels as _k
from ._stats import NO_FOLIOS
from ._steps import Unmapped


def unmap_clean(eng, ctx, folios: np.ndarray) -> tuple[Unmapped, float] | None:
    """The unmap loop of a clean batch in one step, or None (nothing done)
    when some folio would not unmap on the first pass.  Returns what is
    unmapped and the unmap loop's modelled seconds, not yet slept: the
    engine sleeps them with the flush's, as one sleep (nothing changes
    between the two)."""
    dst = np.empty(folios.size, dtype=np.int64)
    t0 = trio.current_time()
    if not _k.migrate_folio_unmap_clean(*eng.kernel_state, folios, 0, folios.size,
                                        ctx.target_nid, dst, NO_FOLIOS):
        return None
    eng.closed_form_batches += 1
    costs = eng.profile.cpu.unmap_seconds(eng.memory.folio_order[folios], ctx.pos)
    t_unmap = t0 + np.cumsum(costs)
    return Unmapped(folios, dst, t_unmap, 0), float(costs.sum())
