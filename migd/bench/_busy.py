"""Is the machine busy?  Said before a real-clock bench, which measures wall time.

A real-clock run beside a running daemon measured mtcopy at 0.86 GB/s instead
of 16.5: the numbers were the neighbour's, not migd's, and nothing said so.
Two signs are checked, both cheap (one read of /proc/loadavg, one pass over
/proc/*/cmdline, ~5 ms): the 1-minute load average per core, and another migd
process (``migd run``, ``migd soak``, another bench).  The bench still runs -
the user may want exactly that - but stderr says why its numbers may be low.
Rejected: refusing to run, or sampling the CPU for a second before each run
(the load average already is that sample, over a minute).
"""

from __future__ import annotations

import os

#: 1-minute load average per core above which real-clock numbers suffer: at 0.5
#: another runnable task holds a core half the time, and a copy loop that
#: shares its core runs at about half speed.
BUSY_LOAD_PER_CORE = 0.5


def is_migd(argv: list[str]) -> bool:
    """``migd ...``, ``python .../bin/migd ...`` or ``python [options] -m migd
    ...`` (the daemon re-executes itself as ``python -P -m migd``)."""
    if not argv:
        return False
    if os.path.basename(argv[0]) == "migd":
        return True
    if not os.path.basename(argv[0]).startswith("python"):
        return False
    k = 1
    while k < len(argv) and argv[k].startswith("-") and argv[k] not in ("-m", "-c", "-"):
        k += 2 if argv[k] in ("-X", "-W", "--check-hash-based-pycs") else 1
    if k < len(argv) and argv[k] == "-m":
        return argv[k + 1:k + 2] == ["migd"]
    return k < len(argv) and os.path.basename(argv[k]) == "migd"


def _ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def other_migd_processes() -> dict[int, str]:
    """pid -> command line of every migd process but this one and its parents."""
    mine = _ancestors()
    found = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit() or int(entry) in mine:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")[:-1]
        except OSError:
            continue
        if is_migd(argv):
            found[int(entry)] = " ".join(argv)
    return found


def busy_reasons(load: float | None = None, cores: int | None = None,
                 others: dict[int, str] | None = None) -> list[str]:
    """Why a real-clock run would measure less than the machine can do; [] if idle.

    The arguments default to this machine's state (tests pass their own).
    """
    if load is None:
        load = os.getloadavg()[0]
    cores = cores or os.cpu_count() or 1
    if others is None:
        others = other_migd_processes()
    reasons = []
    if load / cores > BUSY_LOAD_PER_CORE:
        reasons.append(f"load average {load:.2f} on {cores} cores")
    if others:
        pids = sorted(others)
        more = f" and {len(pids) - 8} more" if len(pids) > 8 else ""
        reasons.append(f"another migd is running (pid {', '.join(map(str, pids[:8]))}{more}: "
                       f"{others[pids[0]][:60]})")
    return reasons
