"""Calls of C functions by address from numba code: the intrinsics the
compiled tree, the GIL's hand-over and the metrics server's sockets share.
An address comes in as an argument (an int64), never baked into the code, so
numba may cache what calls it.  Every argument is passed as an int64 (a
pointer as its address, :func:`address_of`): on x86-64 and aarch64 integer
and pointer parameters take the same registers and an ``int`` takes its
register's low half, so one shape calls ``send()``, ``poll()``, fusepy's
callbacks or ``PyEval_SaveThread()`` alike (unused trailing arguments are
ignored by the callee; a ``void`` function's return register is ignored by
the caller)."""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_I64 = ir.IntType(64)
_I32 = ir.IntType(32)


@intrinsic
def as_pointer(typingctx, addr):
    """An address as a ``void *``."""
    def codegen(context, builder, sig, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)
    return types.voidptr(types.int64), codegen


@intrinsic
def address_of(typingctx, ptr):
    """A ``void *`` as an address."""
    def codegen(context, builder, sig, args):
        return builder.ptrtoint(args[0], _I64)
    return types.int64(types.voidptr), codegen


@intrinsic
def call5(typingctx, fn, a, b, c, d, e):
    """Call ``long fn(a, b, c, d, e)`` (int64 arguments): ``ssize_t`` returns."""
    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(_I64, [_I64] * 5)
        return builder.call(builder.inttoptr(args[0], fnty.as_pointer()), args[1:])
    return types.int64(*[types.int64] * 6), codegen


@intrinsic
def call5_int(typingctx, fn, a, b, c, d, e):
    """Call ``int fn(a, b, c, d, e)`` (int64 arguments), its ``int`` sign-extended."""
    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(_I32, [_I64] * 5)
        ret = builder.call(builder.inttoptr(args[0], fnty.as_pointer()), args[1:])
        return builder.sext(ret, _I64)
    return types.int64(*[types.int64] * 6), codegen
