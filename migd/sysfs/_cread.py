"""A ``cat``'s getattr, reads and release, in compiled code without the GIL.

A ``cat`` of the tree is five FUSE requests: open, a getattr (its ``fstat``:
a read invalidates the kernel's atime, ``fuse_invalidate_atime()``, so the
next ``fstat`` asks again), a read, the read that finds EOF, and release.  As
Python callbacks each waited for the GIL, which the engine's thread holds
nearly always while migrating.  Here open stays in Python (it runs the file's
``show()``, or takes a ``trace`` view; a compiled trampoline asks for the GIL
first, ``migd._gil``) and leaves the whole value in an open
file's *record*; ``read`` and ``release`` are numba ``cfunc``\\ s that answer
from that record.  They call back into Python only where Python
has work to do: a stream (``trace_pipe``), a second read at offset 0 (sysfs
shows the value again, ``seq_read()`` from position 0), and the release of a
value too large for a slot.

The open file's handle (``fuse_file_info.fh``) is its record's address, so
the compiled code needs no global of the process: nothing is baked into it but
the layout below, and numba may cache it.  A record is a row of
:class:`Records` (values up to :data:`SLOT_BYTES` live in the row's slot of the
arena, and a compiled release frees the row) or, when every row is taken, a
record of its own that Python frees.

The getattr (a ``stat``, and the ``fstat`` of a ``cat``: the kernel's
``fuse_getattr()`` asks by path) is compiled too, from :class:`Nodes`: every
path of the tree (its shape never changes) in an open-addressed table of
FNV-1a hashes, with each node's mode and owner, which ``chmod``/``chown``
update.  It finds the table through libfuse's ``fuse_get_context()``: the
``private_data`` that fusepy's ``init`` callback returned (the table's header
address), so nothing of the process is baked into the compiled code.

Rejected: a C library of our own (a compiler on every machine that installs
migd); serving values from a snapshot the engine publishes (a ``show()`` per
file per period, read or not).
"""

from __future__ import annotations

import ctypes
import functools
import threading
import time

import numpy as np

#: Bytes of a value kept in a record's own slot (sysfs' show() gets PAGE_SIZE).
SLOT_BYTES = 4096
#: Records with a slot: open files at once answered without Python's release.
NR_SLOTS = 256
#: Seconds a replaced value outlives its replacement (see Records._hold).
RETIRED_FOR = 10.0

# A record's fields (int64 each).
KIND, FRESH, DATA, SHARED, GEN = range(5)
RECORD_FIELDS = 5
# KIND: 1 a value in the row's slot (released here), 2 a value Python holds
# (released by Python), 3 Python reads and releases (a stream, a write).
IN_SLOT, HELD, PYTHON = 1, 2, 3
# FRESH: 1 the first read at 0 is the value taken at open; 0 a read at 0
# asks Python for the value again; -1 the value is the open file's for good
# (a ``trace`` view).
# DATA: the address of a value: its length (int64), then its bytes.  A value
# is never changed once published: a read at offset 0 shows the value again
# into a new buffer and publishes its address with one store, while another
# thread's read of the same open file may still be copying the old one
# (FUSE does not serialise reads of a file; the kernel's seq_file has a
# lock for that).  The old buffers live until the release.
# SHARED: the address of two words every record shares: whether the tree is
# active (deactivate() zeroes it: reads are ENODEV) and the stores' generation
# (+1 at each store); GEN: the generation at open.  A first read at offset 0
# after a store since the open asks Python for the value, as sysfs shows it
# at the first read: open, ``echo`` elsewhere, read sees the store.
ACTIVE, GENERATION = 0, 1

#: A node's row: st_mode (with its type), uid, gid.
NODE_FIELDS = 3
# The header Nodes.init returns: where the tables are, and the mount's time.
H_SLOTS, H_NSLOTS, H_OFFSETS, H_PATHS, H_ATTRS, H_TIME_NS, H_HANDOFF, H_PY_OPEN, \
    H_PY_READDIR, H_PY_READ, H_PY_RELEASE = range(11)
HEADER_FIELDS = 11
#: fusepy's Python callbacks the compiled ones call, and where in the header
#: their addresses are: open and readdir always (after asking for the GIL),
#: read and release where Python has work to do.
PY_CALLBACKS = {"open": H_PY_OPEN, "readdir": H_PY_READDIR, "read": H_PY_READ,
                "release": H_PY_RELEASE}
FNV_OFFSET, FNV_PRIME, _U64 = 0xCBF29CE484222325, 0x100000001B3, (1 << 64) - 1


def fnv1a(data: bytes) -> int:
    """FNV-1a, 64 bits: the compiled lookup's hash."""
    h = FNV_OFFSET
    for b in data:
        h = ((h ^ b) * FNV_PRIME) & _U64
    return h


class Nodes:
    """Every node's path, mode and owner, as the compiled getattr reads them."""

    def __init__(self, paths: list[str], time_ns: int) -> None:
        self.row = {p: i for i, p in enumerate(paths)}
        raw = [p.encode() for p in paths]
        self.paths = np.frombuffer(b"".join(raw), dtype=np.uint8).copy()
        self.offsets = np.cumsum([0] + [len(r) for r in raw]).astype(np.int64)
        self.attrs = np.zeros((len(paths), NODE_FIELDS), dtype=np.int64)
        nslots = 1 << max(4, (2 * len(paths) - 1).bit_length())
        self.slots = np.zeros(nslots, dtype=np.int64)  # node + 1; 0 empty
        for i, r in enumerate(raw):
            k = fnv1a(r) & (nslots - 1)
            while self.slots[k]:
                k = (k + 1) & (nslots - 1)
            self.slots[k] = i + 1
        self.header = np.array([self.slots.ctypes.data, nslots, self.offsets.ctypes.data,
                                self.paths.ctypes.data, self.attrs.ctypes.data, time_ns,
                                0, 0, 0, 0, 0], dtype=np.int64)

    def set(self, path: str, st_mode: int, uid: int, gid: int) -> None:
        self.attrs[self.row[path]] = (st_mode, uid, gid)

    def address(self) -> int:
        """What fusepy's ``init`` returns: libfuse's ``private_data``."""
        return self.header.ctypes.data


class Records:
    """The records of open files: Python fills one at open and frees those
    the compiled release leaves to it; the compiled callbacks read records
    and free slotted ones (``KIND`` to 0)."""

    def __init__(self) -> None:
        self.table = np.zeros((NR_SLOTS, RECORD_FIELDS), dtype=np.int64)
        self.arena = np.zeros((NR_SLOTS, 8 + SLOT_BYTES), dtype=np.uint8)
        self.shared = np.array([1, 0], dtype=np.int64)  # ACTIVE, GENERATION
        self._base = self.table.ctypes.data
        self._row_bytes = self.table.strides[0]
        self._lock = threading.Lock()
        self._next = 0
        self._own: dict[int, np.ndarray] = {}  # fh -> a record without a slot
        # fh -> the values it published: (buffer, when it was replaced or None)
        self._held: dict[int, list[tuple[np.ndarray, float | None]]] = {}

    def deactivate(self) -> None:
        """From now on every compiled read is ENODEV (``kernfs_get_active()``)."""
        self.shared[ACTIVE] = 0

    def _new(self) -> tuple[int, np.ndarray, int]:
        """(fh, record, slot or -1): a free row, else a record of its own."""
        with self._lock:
            kinds = self.table[:, KIND]
            free = np.flatnonzero(kinds[self._next:] == 0)
            if free.size:
                slot = self._next + int(free[0])
            else:
                free = np.flatnonzero(kinds[:self._next] == 0)
                slot = int(free[0]) if free.size else -1
            if slot >= 0:
                self._next = (slot + 1) % NR_SLOTS
                self.table[slot, KIND] = -1  # taken, not yet filled
                return self._base + slot * self._row_bytes, self.table[slot], slot
            rec = np.zeros(RECORD_FIELDS, dtype=np.int64)
            fh = rec.ctypes.data
            self._own[fh] = rec
            return fh, rec, -1

    def generation(self) -> int:
        """The stores' generation: taken before a value is shown at open."""
        return int(self.shared[GENERATION])

    def open(self, value: bytes | None, fixed: bool = False, gen: int = 0) -> int:
        """A record for an open file: ``value`` its contents (None: Python
        reads), ``fixed`` for a view's, ``gen`` the generation taken before
        the value was shown.  Returns the fh (its address)."""
        fh, rec, slot = self._new()
        rec[SHARED], rec[GEN] = self.shared.ctypes.data, gen
        rec[FRESH], rec[DATA] = 0, 0  # nothing of the row's last file
        kind = PYTHON
        if value is not None:
            if slot >= 0 and len(value) <= SLOT_BYTES:
                row = self.arena[slot]
                row[:8] = np.frombuffer(np.int64(len(value)).tobytes(), dtype=np.uint8)
                row[8:8 + len(value)] = np.frombuffer(value, dtype=np.uint8)
                rec[DATA], kind = row.ctypes.data, IN_SLOT
            else:
                rec[DATA], kind = self._hold(fh, value), HELD
            rec[FRESH] = -1 if fixed else 1
        rec[KIND] = kind  # last: the record is complete
        return fh

    def stored(self) -> None:
        """A store happened: files opened before it show their value again
        at their first read."""
        with self._lock:
            self.shared[GENERATION] += 1

    def refill(self, fh: int, value: bytes) -> None:
        """The value again (a read at offset 0), for the reads after it: a
        new buffer, published by one store (see DATA)."""
        rec, _ = self.record(fh)
        rec[DATA] = self._hold(fh, value)
        rec[KIND] = HELD  # its release is Python's now (the slot's row too)
        if rec[FRESH] == 1:
            rec[FRESH] = 0

    def _hold(self, fh: int, value: bytes) -> int:
        """A new buffer for ``value``, kept until the release; the ones it
        replaces go :data:`RETIRED_FOR` seconds after they were replaced (a
        compiled read copies in microseconds; an open file polled at offset
        0 would otherwise keep every value it ever showed)."""
        buf = np.empty(8 + len(value), dtype=np.uint8)
        buf[:8] = np.frombuffer(np.int64(len(value)).tobytes(), dtype=np.uint8)
        buf[8:] = np.frombuffer(value, dtype=np.uint8)
        now = time.monotonic()
        with self._lock:
            held = self._held.setdefault(fh, [])
            if held:
                held[-1] = (held[-1][0], now)  # replaced now
            held[:] = [(b, at) for b, at in held if at is None or now - at < RETIRED_FOR]
            held.append((buf, None))
        return buf.ctypes.data

    def record(self, fh: int) -> tuple[np.ndarray, int]:
        rec = self._own.get(fh)
        if rec is not None:
            return rec, -1
        slot = (fh - self._base) // self._row_bytes
        return self.table[slot], slot

    def value(self, fh: int) -> bytes:
        """The value a record publishes now."""
        data = int(self.record(fh)[0][DATA])
        n = ctypes.c_int64.from_address(data).value
        return ctypes.string_at(data + 8, n)

    def release(self, fh: int) -> None:
        """Python's part of a release: the held values and the record."""
        rec, slot = self.record(fh)
        with self._lock:
            self._held.pop(fh, None)
            if slot < 0:
                del self._own[fh]
            else:
                rec[KIND] = 0

    def in_use(self) -> int:
        """Records taken (slots and own)."""
        return int(np.count_nonzero(self.table[:, KIND])) + len(self._own)


@functools.cache
def compiled_ops() -> dict[str, int]:
    """The compiled ``getattr``, ``fgetattr``, ``read``, ``release``, and
    ``open`` and ``readdir`` (which ask for the GIL, ``migd._gil``, then call
    Python's): name -> address.
    Compiled (or loaded from numba's cache) at the first call."""
    from . import _ccallbacks
    return {name: f.address for name, f in _ccallbacks.CALLBACKS.items()}
