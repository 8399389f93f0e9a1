"""The callers of ``migrate_pages()`` as emulator knobs: each caller's list
bound and its latency hint (``kernel/mm/migrate_offload/callers/<caller>/``).

Neither is a kernel knob.  The kernel hard-codes each caller's list: one
folio per NUMA hinting fault (``migrate_misplaced_folio()``), SWAP_CLUSTER_MAX
= 32 base pages per reclaim isolation (MIN_LRU_BATCH = 64 under MGLRU),
COMPACT_CLUSTER_MAX = 32 per compaction list (mm/compaction.c, for
``compact_memory``, kcompactd and direct compaction alike), and no bound for
``do_pages_move()`` and ``damon_migrate_pages()`` beyond their runs.  migd
makes each bound a knob so that ``migd bench callers`` can show where the
bound binds DMA's payoff and what lifting it buys (the RFC's open question 4);
0 keeps the kernel's.  The hint is the RFC's open question 2: a caller
declares itself latency-tolerant or not, and with
``decline_latency_sensitive`` the migrator declines the batches of the
latency-sensitive ones (``_way.batch_way``).  Rejected: one hint per migrate
reason (that is the reason mask: it cannot tell kcompactd from direct
compaction, which share MR_COMPACTION).
"""

from __future__ import annotations

from dataclasses import dataclass

#: The callers, as ``_workloads`` runs them.
CALLERS = ("promotion", "demotion", "compaction", "kcompactd", "direct_compaction",
           "move_pages", "damon")

#: Whose latency a caller's migration is on: a NUMA hinting fault's task
#: waits for its promotion, an allocating task for direct compaction; the
#: others run in kswapd, kcompactd, kdamond or a syscall that waits for the
#: whole list anyway.
LATENCY_SENSITIVE = frozenset({"promotion", "direct_compaction"})


@dataclass
class CallerTuning:
    """One caller's emulator knobs."""

    #: Base pages per list (the folio reaching it included); 0: the kernel's.
    list_pages: int = 0
    latency_tolerant: bool = True


def default_callers() -> dict[str, CallerTuning]:
    return {c: CallerTuning(0, c not in LATENCY_SENSITIVE) for c in CALLERS}
