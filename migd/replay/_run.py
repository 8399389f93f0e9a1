"""``migd replay``'s core: trace files in, a :class:`ReplayReport` out."""

from __future__ import annotations

import gc
from collections.abc import Callable

import numpy as np

from ..bench import MigratorSpec
from ._clusters import overlap_clusters
from ._config import DEFAULT_MAX_MEMORY, gib, ram_bytes
from ._parse import TraceCalls, read_traces
from ._replay import (
    CALL_BYTES,
    CALL_BYTES_PER_CONFIG,
    Config,
    memory_estimate,
    need_folios,
    replay_calls,
)
from ._report import ReplayReport, build_report
from ._shapes import ORDER_ASSUMPTION, call_shapes


class ReplayError(ValueError):
    """Input the replay cannot work with (one line, for the CLI's exit 2)."""


def load_traces(paths: list[str], max_memory: int = DEFAULT_MAX_MEMORY,
                nr_configs: int = 1) -> TraceCalls:
    """Parse ``paths``; ReplayError when unreadable, corrupt, holding more
    calls than ``max_memory`` holds through ``nr_configs`` configurations
    (refused while reading, before they are all in memory) or no migrate call."""
    per_call = CALL_BYTES + CALL_BYTES_PER_CONFIG * nr_configs
    try:
        calls = read_traces(paths, max_memory // per_call)
    except OSError as e:
        raise ReplayError(f"cannot read the trace: {e}") from None
    except ValueError as e:
        raise ReplayError(str(e)) from None
    if not len(calls):
        what = (f"{calls.malformed} malformed line(s), first at {calls.malformed_shown[0][1]}"
                if calls.malformed else f"{calls.lines} line(s)")
        raise ReplayError(f"no migrate:mm_migrate_pages_start/mm_migrate_pages call in "
                          f"{', '.join(paths)} ({what})")
    return calls


def replay(calls: TraceCalls, configs: list[Config], budget_us: float,
           progress: Callable[[str], None] = lambda msg: None,
           max_memory: int = DEFAULT_MAX_MEMORY) -> ReplayReport:
    """Replay ``calls`` through each configuration; a ``none`` configuration
    of the first one's profile and bound is added as the baseline if absent.
    ReplayError, before any machine is built, when the replay would take more
    than ``max_memory`` (:func:`memory_estimate`)."""
    base = Config(MigratorSpec("none"), configs[0].batch_pages, profile=configs[0].profile)
    base = next((c for c in configs if c.migrator.name == "none"), base)
    todo = list(dict.fromkeys([base, *configs]))
    shapes = call_shapes(calls)
    clusters = overlap_clusters(calls["start"], calls["end"])
    need = need_folios(shapes, clusters)
    nbytes = memory_estimate(need, len(calls), len(todo))
    if nbytes > max_memory:
        pages = sum(n << o for o, n in need.items())
        raise ReplayError(f"the largest call or cluster of overlapping calls in the trace "
                          f"moves {pages} pages at once: replaying {len(calls)} calls "
                          f"through {len(todo)} configuration(s) needs ~{gib(nbytes)}, over "
                          f"--max-memory {gib(max_memory)} (at most this machine's RAM, "
                          f"{gib(ram_bytes())})")
    concurrent = {"calls": int(clusters.calls.size), "clusters": len(clusters),
                  "largest": int(clusters.sizes().max()) if len(clusters) else 0}
    results = {}
    for i, cfg in enumerate(todo):
        progress(f"replaying {len(shapes.shapes)} call shapes and {concurrent['calls']} "
                 f"overlapping calls through {cfg.name} ({i + 1}/{len(todo)})")
        results[cfg] = replay_calls(shapes, clusters, cfg)
        gc.collect()  # the machine's engine and its subscribers form cycles: free it now
    notes = [f"{len(calls)} calls rebuilt from {calls.lines} lines, "
             f"{len(shapes.shapes)} distinct call shapes replayed once each for the calls "
             "that overlap no other",
             f"{concurrent['calls']} calls overlapped on the traced host: replayed "
             f"concurrently at their recorded offsets in {concurrent['clusters']} clusters "
             f"(largest {concurrent['largest']} calls)"]
    if not calls.has_folio_orders:
        notes.append(ORDER_ASSUMPTION)
    if calls.other_events:
        notes.append(f"{calls.other_events} events of other systems skipped")
    if calls.unpaired:
        notes.append(f"{calls.unpaired} start or end event(s) without their pair skipped")
    notes += calls.truncated
    if calls.malformed:
        notes.append(f"{calls.malformed} malformed line(s) skipped")
    over = int((results[base]["seconds"] > np.diff(calls["start"], append=np.inf)).sum())
    if over:
        notes.append(f"{over} calls would still run on none when the next traced call "
                     "starts; calls that did not overlap on the traced host replay alone")
    return build_report(calls, results, base, budget_us, base.profile, notes,
                        concurrent)
