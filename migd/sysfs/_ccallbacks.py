"""The compiled callbacks of ``_cread``: compiled (or loaded from numba's
cache) when this module is imported, which ``compiled_ops()`` does at the
first mount.  The handle's offset is that of fusepy's own ``fuse_file_info``,
as its Python callbacks read it."""

from __future__ import annotations

import ctypes

import numpy as np
from fuse import _libfuse_path, c_stat, fuse_context, fuse_file_info
from llvmlite import binding
from numba import carray, cfunc, njit, types

from .._ccall import address_of, call5_int
from .._ccall import as_pointer as _as_pointer
from .._gil import ask, done_at
from ..mm import memcpy
from ._cread import (
    ACTIVE,
    DATA,
    FNV_OFFSET,
    FNV_PRIME,
    FRESH,
    GEN,
    GENERATION,
    H_ATTRS,
    H_HANDOFF,
    H_NSLOTS,
    H_OFFSETS,
    H_PATHS,
    H_PY_OPEN,
    H_PY_READ,
    H_PY_READDIR,
    H_PY_RELEASE,
    H_SLOTS,
    H_TIME_NS,
    HEADER_FIELDS,
    IN_SLOT,
    KIND,
    NODE_FIELDS,
    PYTHON,
    RECORD_FIELDS,
    SHARED,
)

_FH = fuse_file_info.fh.offset // 8
_PRIVATE = fuse_context.private_data.offset // 8
_MODE, _UID, _GID = (getattr(c_stat, f).offset // 4 for f in ("st_mode", "st_uid", "st_gid"))
_NLINK = c_stat.st_nlink.offset // 8
_TIMES = tuple(getattr(c_stat, f).offset // 8
               for f in ("st_atimespec", "st_mtimespec", "st_ctimespec"))
_STAT_WORDS = ctypes.sizeof(c_stat) // 8
_ENOENT, _ENODEV = 2, 19
_S_IFDIR, _S_IFMT = 0o040000, 0o170000
#: Found by name when the code is linked or loaded from the cache: no address
#: of this process is baked into it.
binding.load_library_permanently(_libfuse_path)
_fuse_get_context = types.ExternalFunction("fuse_get_context", types.voidptr())


@njit(cache=True)
def _header():
    """The tree's header: libfuse's ``private_data`` for this request (what
    fusepy's ``init`` returned, ``Nodes.address()``)."""
    ctx = carray(_fuse_get_context(), _PRIVATE + 1, np.int64)
    return carray(_as_pointer(ctx[_PRIVATE]), HEADER_FIELDS, np.int64)


@njit(cache=True)
def _record(fi):
    """The open file's record: ``fi->fh`` is its address."""
    fh = carray(fi, _FH + 1, np.int64)[_FH]
    return carray(_as_pointer(fh), RECORD_FIELDS, np.int64)


@cfunc(types.int32(types.voidptr, types.voidptr, types.uint64, types.int64, types.voidptr),
       cache=True)
def c_read(path, buf, size, offset, fi):
    """``read``: bytes of the value the record holds, from ``offset``."""
    rec = _record(fi)
    shared = carray(_as_pointer(rec[SHARED]), 2, np.int64)
    if shared[ACTIVE] == 0:
        return -_ENODEV  # the tree was deactivated: kernfs_get_active() fails
    if rec[KIND] == PYTHON or (offset == 0 and (
            rec[FRESH] == 0 or (rec[FRESH] == 1 and rec[GEN] != shared[GENERATION]))):
        return np.int32(call5_int(_header()[H_PY_READ], address_of(path), address_of(buf),
                                  size, offset, address_of(fi)))
    if offset == 0 and rec[FRESH] == 1:
        rec[FRESH] = 0
    data = rec[DATA]  # one load: a refill publishes a new value, never changes one
    n = carray(_as_pointer(data), 1, np.int64)[0] - offset
    if n <= 0:
        return 0
    n = min(n, np.int64(size))
    memcpy(address_of(buf), data + 8 + offset, n)  # not a slice copy: 1.7 s to compile
    return n


@cfunc(types.int32(types.voidptr, types.voidptr), cache=True)
def c_release(path, fi):
    """``release``: a slotted record is free again; the others are Python's."""
    rec = _record(fi)
    if rec[KIND] == IN_SLOT:
        rec[KIND] = 0
        return 0
    return np.int32(call5_int(_header()[H_PY_RELEASE], address_of(path), address_of(fi),
                              0, 0, 0))


@njit(cache=True)
def _lookup(path, hdr):
    """The node of the NUL-terminated ``path``, or -1: its FNV-1a hash in
    the open-addressed slots, the bytes compared."""
    p = carray(path, 4096, np.uint8)  # PATH_MAX; read only up to the NUL
    h, n = np.uint64(FNV_OFFSET), 0
    while n < 4096 and p[n] != 0:
        h = (h ^ np.uint64(p[n])) * np.uint64(FNV_PRIME)
        n += 1
    slots = carray(_as_pointer(hdr[H_SLOTS]), hdr[H_NSLOTS], np.int64)
    mask = hdr[H_NSLOTS] - 1
    k = np.int64(h & np.uint64(mask))
    while slots[k]:
        node = slots[k] - 1
        ends = carray(_as_pointer(hdr[H_OFFSETS] + 8 * node), 2, np.int64)
        if ends[1] - ends[0] == n:
            text = carray(_as_pointer(hdr[H_PATHS] + ends[0]), n, np.uint8)
            same = True
            for j in range(n):
                if text[j] != p[j]:
                    same = False
                    break
            if same:
                return node
        k = (k + 1) & mask
    return np.int64(-1)


@njit(cache=True)
def _getattr(path, st):
    hdr = _header()
    node = _lookup(path, hdr)
    if node < 0:
        return -_ENOENT
    attrs = carray(_as_pointer(hdr[H_ATTRS] + 8 * NODE_FIELDS * node), NODE_FIELDS, np.int64)
    words = carray(st, _STAT_WORDS, np.int64)
    words[:] = 0
    half = carray(st, 2 * _STAT_WORDS, np.uint32)
    half[_MODE] = attrs[0]
    half[_UID] = attrs[1]
    half[_GID] = attrs[2]
    words[_NLINK] = 2 if attrs[0] & _S_IFMT == _S_IFDIR else 1
    sec, nsec = hdr[H_TIME_NS] // 1_000_000_000, hdr[H_TIME_NS] % 1_000_000_000
    for t in _TIMES:
        words[t] = sec
        words[t + 1] = nsec
    return 0


@cfunc(types.int32(types.voidptr, types.voidptr), cache=True)
def c_getattr(path, st):
    """``getattr`` by path (``stat``, and a ``cat``'s ``fstat``): the node's
    mode and owner, 2 links for a directory, size 0, the mount's time."""
    return _getattr(path, st)


@cfunc(types.int32(types.voidptr, types.voidptr, types.voidptr), cache=True)
def c_fgetattr(path, st, fi):
    """``fgetattr``: the same, by the open file's path."""
    return _getattr(path, st)


@cfunc(types.int32(types.voidptr, types.voidptr), cache=True)
def c_open(path, fi):
    """``open``: fusepy's Python open, the GIL asked for first (``migd._gil``)."""
    hdr = _header()
    ask(hdr[H_HANDOFF])
    ret = call5_int(hdr[H_PY_OPEN], address_of(path), address_of(fi), 0, 0, 0)
    done_at(hdr[H_HANDOFF])
    return np.int32(ret)


@cfunc(types.int32(types.voidptr, types.voidptr, types.voidptr, types.int64, types.voidptr),
       cache=True)
def c_readdir(path, buf, filler, offset, fi):
    """``readdir`` (an ``ls``, a tool's walk): fusepy's Python readdir, the
    GIL asked for first."""
    hdr = _header()
    ask(hdr[H_HANDOFF])
    ret = call5_int(hdr[H_PY_READDIR], address_of(path), address_of(buf), address_of(filler),
                    offset, address_of(fi))
    done_at(hdr[H_HANDOFF])
    return np.int32(ret)


CALLBACKS = {"getattr": c_getattr, "fgetattr": c_fgetattr, "read": c_read,
             "release": c_release, "open": c_open, "readdir": c_readdir}
