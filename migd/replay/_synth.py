"""A synthetic kernel trace: a busy tiering host's migrate_pages() calls.

For the replay benchmark (100,000 calls must replay in <= 30 s a
configuration) and for users who want to try ``migd replay`` before they
record their own.  The mix follows the callers' lists (SPEC section 2):
promotion one folio per call (async, numa_misplaced), demotion one reclaim
isolation (one THP or up to 32 small folios, async), kcompactd clusters of
COMPACT_CLUSTER_MAX = 32 pages (sync-light), move_pages runs (sync,
syscall_or_cpuset); 4K and 2M folios; a few pinned failures.  Lines are
written by :func:`migd.tracing.format_line` (trace_output.c's layout and the
events' TP_printk), interleaved over a few tasks as on a multi-CPU host.
"""

from __future__ import annotations

import numpy as np

from ..mm import MigrateMode, MigrateReason
from ..tracing import MM_MIGRATE_PAGES, MM_MIGRATE_PAGES_START, MODE_VALUE, format_line

_KINDS = (  # reason, mode, weight
    (MigrateReason.MR_NUMA_MISPLACED, MigrateMode.MIGRATE_ASYNC, 0.45),
    (MigrateReason.MR_DEMOTION, MigrateMode.MIGRATE_ASYNC, 0.30),
    (MigrateReason.MR_COMPACTION, MigrateMode.MIGRATE_SYNC_LIGHT, 0.15),
    (MigrateReason.MR_SYSCALL, MigrateMode.MIGRATE_SYNC, 0.10),
)


def synthetic_trace(nr_calls: int, seed: int = 0, tasks: int = 4) -> str:
    """``nr_calls`` calls as ``trace_pipe`` text (two lines each)."""
    rng = np.random.default_rng(seed)
    kinds = rng.choice(len(_KINDS), nr_calls, p=[k[2] for k in _KINDS])
    thp = rng.random(nr_calls) < 0.2
    small = rng.integers(1, 33, nr_calls)
    fail = rng.random(nr_calls) < 0.02
    gap = rng.exponential(0.036, nr_calls)  # ~100,000 calls an hour
    t = 1000.0 + np.cumsum(gap)
    lines = []
    for i in range(nr_calls):
        reason, mode, _ = _KINDS[kinds[i]]
        if reason == MigrateReason.MR_NUMA_MISPLACED:
            thps, pages = (1, 512) if thp[i] else (0, 1)
        elif reason == MigrateReason.MR_COMPACTION:
            thps, pages = 0, 32
        elif reason == MigrateReason.MR_DEMOTION:
            thps, pages = (1, 512) if thp[i] else (0, int(small[i]))
        else:
            thps, pages = (int(small[i] % 4) + 1, (int(small[i] % 4) + 1) * 512) if thp[i] \
                else (0, int(small[i]) * 8)
        failed = (512 if thps else 1) if fail[i] else 0
        thp_failed = 1 if failed and thps else 0
        sym = (MODE_VALUE[mode], int(reason))
        pid = 100 + i % tasks
        start = float(t[i])
        lines.append(format_line(MM_MIGRATE_PAGES_START, start, sym, pid))
        dur = 20e-6 + pages * 0.6e-6
        lines.append(format_line(MM_MIGRATE_PAGES, start + dur,
                                 (pages - failed, failed, thps - thp_failed, thp_failed, 0, 0)
                                 + sym, pid))
    return "".join(lines)
