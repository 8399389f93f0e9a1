"""The compiled callbacks of ``_cread``: compiled (or loaded from numba's
cache) when this module is imported, which ``compiled_ops()`` does at the
first mount.  The handle's offset is that of fusepy's own ``fuse_file_info``,
as its Python callbacks read it."""

from __future__ import annotations

import numpy as np
from fuse import fuse_file_info
from llvmlite import ir
from numba import carray, cfunc, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from ._cread import (
    DATA,
    FRESH,
    IN_SLOT,
    KIND,
    LEN,
    PY_READ,
    PY_RELEASE,
    PYTHON,
    RECORD_FIELDS,
)

_FH = fuse_file_info.fh.offset // 8
_I64 = ir.IntType(64)


@intrinsic
def _as_pointer(typingctx, addr):
    """An address as a ``void *``."""
    def codegen(context, builder, sig, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)
    return types.voidptr(types.int64), codegen


@intrinsic
def _call_read(typingctx, fn, path, buf, size, offset, fi):
    """Call ``int read(path, buf, size, offset, fi)`` at address ``fn``."""
    sig = types.int32(types.int64, types.voidptr, types.voidptr, types.uint64, types.int64,
                      types.voidptr)

    def codegen(context, builder, signature, args):
        vp = cgutils.voidptr_t
        fnty = ir.FunctionType(ir.IntType(32), [vp, vp, _I64, _I64, vp])
        return builder.call(builder.inttoptr(args[0], fnty.as_pointer()), args[1:])
    return sig, codegen


@intrinsic
def _call_release(typingctx, fn, path, fi):
    """Call ``int release(path, fi)`` at address ``fn``."""
    sig = types.int32(types.int64, types.voidptr, types.voidptr)

    def codegen(context, builder, signature, args):
        vp = cgutils.voidptr_t
        fnty = ir.FunctionType(ir.IntType(32), [vp, vp])
        return builder.call(builder.inttoptr(args[0], fnty.as_pointer()), args[1:])
    return sig, codegen


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
    if rec[KIND] == PYTHON or (offset == 0 and rec[FRESH] == 0):
        return _call_read(rec[PY_READ], path, buf, size, offset, fi)
    if offset == 0 and rec[FRESH] == 1:
        rec[FRESH] = 0
    n = rec[LEN] - offset
    if n <= 0:
        return 0
    n = min(n, np.int64(size))
    carray(buf, n, np.uint8)[:] = carray(_as_pointer(rec[DATA] + offset), n, np.uint8)
    return n


@cfunc(types.int32(types.voidptr, types.voidptr), cache=True)
def c_release(path, fi):
    """``release``: a slotted record is free again; the others are Python's."""
    rec = _record(fi)
    if rec[KIND] == IN_SLOT:
        rec[KIND] = 0
        return 0
    return _call_release(rec[PY_RELEASE], path, fi)


CALLBACKS = {"read": c_read, "release": c_release}
