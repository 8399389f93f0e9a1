"""Raw-memory intrinsics for compiled code: ``memcpy``, atomics, a spin hint,
``futex()`` and CPU-time clocks for the copy threads' hand-offs.

The arena and the copy threads' control block are plain addresses; these let
numba code touch them without building arrays around them.
"""

from __future__ import annotations

import platform

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


@intrinsic
def memcpy(typingctx, dst, src, nbytes):
    """``memcpy(dst, src, nbytes)`` on raw addresses."""
    def codegen(context, builder, signature, args):
        d, s, n = args
        i8p = ir.IntType(8).as_pointer()
        cgutils.raw_memcpy(builder, builder.inttoptr(d, i8p), builder.inttoptr(s, i8p), n, 1)
        return context.get_dummy_value()
    return types.void(types.intp, types.intp, types.intp), codegen


_i64 = ir.IntType(64)
_X86 = platform.machine() in ("x86_64", "AMD64", "i686")


def _ptr(builder, addr, bits=64):
    return builder.inttoptr(addr, ir.IntType(bits).as_pointer())


@intrinsic
def ctl_address(typingctx):
    """Address of the control block, resolved by the linker in each process."""
    def codegen(context, builder, signature, args):
        mod = builder.module
        gv = mod.globals.get("migd_copy_mt_ctl")
        if gv is None:
            gv = ir.GlobalVariable(mod, _i64, "migd_copy_mt_ctl")
            gv.linkage = "external"
        return builder.ptrtoint(gv, _i64)
    return types.int64(), codegen


@intrinsic
def atomic_load(typingctx, addr):
    def codegen(context, builder, signature, args):
        return builder.load_atomic(_ptr(builder, args[0]), "seq_cst", 8)
    return types.int64(types.int64), codegen


@intrinsic
def atomic_store(typingctx, addr, value):
    def codegen(context, builder, signature, args):
        builder.store_atomic(args[1], _ptr(builder, args[0]), "seq_cst", 8)
        return context.get_dummy_value()
    return types.void(types.int64, types.int64), codegen


@intrinsic
def atomic_add(typingctx, addr, value):
    def codegen(context, builder, signature, args):
        return builder.atomic_rmw("add", _ptr(builder, args[0]), args[1], "seq_cst")
    return types.int64(types.int64, types.int64), codegen


@intrinsic
def atomic_cas(typingctx, addr, expected, new):
    """Compare-and-swap; returns the old value."""
    def codegen(context, builder, signature, args):
        pair = builder.cmpxchg(_ptr(builder, args[0]), args[1], args[2], "seq_cst", "seq_cst")
        return builder.extract_value(pair, 0)
    return types.int64(types.int64, types.int64, types.int64), codegen


@intrinsic
def load_i64(typingctx, addr):
    def codegen(context, builder, signature, args):
        return builder.load(_ptr(builder, args[0]))
    return types.int64(types.int64), codegen


@intrinsic
def load_i8(typingctx, addr):
    def codegen(context, builder, signature, args):
        return builder.sext(builder.load(_ptr(builder, args[0], 8)), _i64)
    return types.int64(types.int64), codegen


@intrinsic
def cpu_relax(typingctx):
    """The ``pause`` of a spin loop."""
    def codegen(context, builder, signature, args):
        if _X86:
            fnty = ir.FunctionType(ir.VoidType(), [])
            builder.call(cgutils.get_or_insert_function(builder.module, fnty,
                                                        "llvm.x86.sse2.pause"), [])
        return context.get_dummy_value()
    return types.void(), codegen


def _clock_gettime_ns(builder, clockid):
    i32, i64 = ir.IntType(32), ir.IntType(64)
    timespec = ir.LiteralStructType([i64, i64])
    fnty = ir.FunctionType(i32, [i32, timespec.as_pointer()])
    clock_gettime = cgutils.get_or_insert_function(builder.module, fnty, "clock_gettime")
    ts = cgutils.alloca_once(builder, timespec)
    rc = builder.call(clock_gettime, [clockid, ts])
    sec = builder.load(builder.gep(ts, [ir.Constant(i32, 0), ir.Constant(i32, 0)]))
    nsec = builder.load(builder.gep(ts, [ir.Constant(i32, 0), ir.Constant(i32, 1)]))
    ns = builder.add(builder.mul(sec, ir.Constant(i64, 1_000_000_000)), nsec)
    # 0 when the clock is gone (EINVAL: a thread that has exited): a clock that
    # stands still, never the stack's garbage
    return builder.select(builder.icmp_signed("==", rc, ir.Constant(i32, 0)), ns,
                          ir.Constant(i64, 0))


@intrinsic
def ktime_get_ns(typingctx):
    """``ktime_get_ns()``: CLOCK_MONOTONIC in ns, the clock of ``time.perf_counter()``."""
    def codegen(context, builder, signature, args):
        return _clock_gettime_ns(builder, ir.Constant(ir.IntType(32), 1))  # CLOCK_MONOTONIC
    return types.int64(), codegen


@intrinsic
def thread_cpu_clock_ns(typingctx, clockid):
    """``clock_gettime(clockid)`` in ns for another thread's CPU-time clock
    (``time.pthread_getcpuclockid()``), which advances only while it runs;
    0 for clockid 0 (no thread: CLOCK_REALTIME would always look running)
    and for a thread that has exited."""
    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        ns = _clock_gettime_ns(builder, builder.trunc(args[0], ir.IntType(32)))
        return builder.select(builder.icmp_signed("==", args[0], ir.Constant(i64, 0)),
                              ir.Constant(i64, 0), ns)
    return types.int64(types.int64), codegen


#: ``SYS_futex`` of the machines migd runs on.
_SYS_FUTEX = {"x86_64": 202, "aarch64": 98}.get(platform.machine(), 202)
FUTEX_WAIT_PRIVATE, FUTEX_WAKE_PRIVATE = 0 | 128, 1 | 128


def _futex(builder, addr, op, val, timeout):
    i64 = ir.IntType(64)
    fnty = ir.FunctionType(i64, [i64], var_arg=True)
    syscall = cgutils.get_or_insert_function(builder.module, fnty, "syscall")
    zero = ir.Constant(i64, 0)
    return builder.call(syscall, [ir.Constant(i64, _SYS_FUTEX), addr, ir.Constant(i64, op),
                                  val, timeout, zero, zero])


@intrinsic
def futex_wait(typingctx, addr, val, timeout_ns):
    """``futex(addr, FUTEX_WAIT_PRIVATE, val, timeout)``: sleep while the 32-bit
    word at ``addr`` holds ``val``, at most ``timeout_ns`` (0: no limit);
    returns at once if it does not hold it, and may wake spuriously."""
    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        timespec = ir.LiteralStructType([i64, i64])
        ts = cgutils.alloca_once(builder, timespec)
        billion = ir.Constant(i64, 1_000_000_000)
        i32 = ir.IntType(32)
        builder.store(builder.sdiv(args[2], billion),
                      builder.gep(ts, [ir.Constant(i32, 0), ir.Constant(i32, 0)]))
        builder.store(builder.srem(args[2], billion),
                      builder.gep(ts, [ir.Constant(i32, 0), ir.Constant(i32, 1)]))
        unlimited = builder.icmp_signed("<=", args[2], ir.Constant(i64, 0))
        tsp = builder.select(unlimited, ir.Constant(i64, 0), builder.ptrtoint(ts, i64))
        return _futex(builder, args[0], FUTEX_WAIT_PRIVATE, args[1], tsp)
    return types.int64(types.int64, types.int64, types.int64), codegen


@intrinsic
def futex_wake(typingctx, addr, n):
    """``futex(addr, FUTEX_WAKE_PRIVATE, n)``: wake up to ``n`` sleepers on ``addr``."""
    def codegen(context, builder, signature, args):
        return _futex(builder, args[0], FUTEX_WAKE_PRIVATE, args[1], ir.Constant(ir.IntType(64), 0))
    return types.int64(types.int64, types.int64), codegen
