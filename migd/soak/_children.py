"""The soak's children: the processes that touch the mount.

The flipper writes random knob values (and arms faults) as ``echo`` does; the
reader times ``cat`` of random attributes (a thread of ours would measure our
own GIL, not the daemon's).  Both are processes, not threads, for a reason
beyond the GIL: see :data:`_CHILD`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from typing import TYPE_CHECKING

import numpy as np

from ..daemon import soak_fault_settings
from ..faults import FaultInjector

if TYPE_CHECKING:
    from ._soak import SoakSummary

#: ``cat`` latencies are kept as a histogram of 10 us bins up to 1 s (bounded
#: memory for runs of hours; the p99 is exact to 10 us).
_CAT_BIN_S = 1e-5
_CAT_BINS = 100_000

#: The children that touch the mount.  No thread of the daemon's process may
#: do file I/O on its own mount: after a SIGKILL a thread waiting in a FUSE
#: request cannot die (the request waits for an answer from the very process
#: that is exiting, whose /dev/fuse stays open until that thread exits), so the
#: process never exits and its stale mount never clears.  A child's request
#: fails with ENOTCONN instead, and the child ends with its parent.
_CHILD = r"""
import json, os, random, sys, time
mode, seed, mount = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rng = random.Random(seed)
out, parent = sys.stdout, os.getppid()

def alive():
    return os.getppid() == parent  # ends with the soak, even a killed one

def write(rel, value):
    try:
        with open(os.path.join(mount, rel), "w") as f:
            f.write(value + "\n")
        out.write("ok\n")
    except OSError as e:  # EBUSY: offloading while another migrator is active, etc.
        out.write((e.strerror or str(e.errno)) + "\n")
    out.flush()

if mode == "cat":
    paths = []
    for dirpath, _, names in os.walk(mount):
        paths += [os.path.join(dirpath, n) for n in names if n != "trace_pipe"
                  and os.stat(os.path.join(dirpath, n)).st_mode & 0o444]
    while alive():
        p = rng.choice(paths)
        t = time.perf_counter()
        try:
            with open(p, "rb") as f:
                f.read()
        except OSError:
            continue
        out.write(f"{time.perf_counter() - t:.7f}\n")
        out.flush()
        time.sleep(0.005)
else:
    writes, settings, points, faults = json.loads(sys.stdin.readline())
    while alive():
        time.sleep(rng.uniform(0.02, 0.2))
        rel, values = rng.choice(writes)
        write(rel, rng.choice(values))
        if faults and rng.random() < 0.3:
            base = f"kernel/debug/{rng.choice(points)}"
            if rng.random() < 0.5:
                for attr, values in settings.items():
                    write(f"{base}/{attr}", rng.choice(values))
            else:
                write(f"{base}/probability", "0")
"""


class _Child:
    """A child process of :data:`_CHILD` and a thread collecting its lines."""

    def __init__(self, mode: str, mount: str, seed: int, stdin: str = "") -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", _CHILD, mode, str(seed), mount],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.proc.stdin.write(stdin + "\n")
        self.proc.stdin.close()
        self.thread = threading.Thread(target=self._collect, name=f"soak-{mode}", daemon=True)
        self.thread.start()

    def _collect(self) -> None:
        for line in self.proc.stdout:
            self.line(line.strip())

    def line(self, text: str) -> None:
        raise NotImplementedError

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:  # stuck in a request on a dying mount
            self.proc.kill()
            self.proc.wait(10)
        self.thread.join(10)


class Flipper(_Child):
    """Random knob writes (and fault arming) through the mount, as ``echo`` does,
    from a child process; each write's outcome is counted here."""

    def __init__(self, mount: str, seed: int, faults: bool, summary: SoakSummary,
                 writes: list[tuple[str, tuple[str, ...]]],
                 points: tuple[str, ...] = FaultInjector.POINTS) -> None:
        self.summary = summary
        super().__init__("flip", mount, seed, json.dumps(
            [writes, soak_fault_settings(), list(points), faults]))

    def line(self, text: str) -> None:
        if text == "ok":
            self.summary.knob_writes += 1
        else:
            self.summary.knob_errors[text] = self.summary.knob_errors.get(text, 0) + 1


class CatSampler(_Child):
    """A reader process timing ``open``/``read``/``close`` of random attributes."""

    def __init__(self, mount: str, seed: int) -> None:
        self.hist = np.zeros(_CAT_BINS + 1, dtype=np.int64)
        super().__init__("cat", mount, seed)

    def line(self, text: str) -> None:
        self.hist[min(int(float(text) / _CAT_BIN_S), _CAT_BINS)] += 1

    @property
    def reads(self) -> int:
        return int(self.hist.sum())

    def p99_ms(self) -> float:
        if not self.reads:
            return 0.0
        i = int(np.searchsorted(np.cumsum(self.hist), 0.99 * self.reads))
        return round((i + 1) * _CAT_BIN_S * 1e3, 2)  # the bin's upper edge
