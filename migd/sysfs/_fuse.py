"""The control tree over FUSE (fusepy on libfuse2): a thin adapter.

Opens run on libfuse's threads, straight from the model (``show()`` only
reads), so ``cat`` never waits for the event loop: an open takes the file's
value (for a file with a ``view``, ``trace``, what it holds at open), and the
getattr, reads and release of a ``cat`` are answered in compiled code without
the GIL (``_cread``); a read at offset 0 after the first shows the value
again, as sysfs does.  Files are direct_io with size 0, so ``cat`` reads
whole values.  Writes are parsed on libfuse's thread and only the parsed
value is handed to the trio thread (``trio.from_thread.run``), where stores
apply between batches; ``echo v >`` truncates first, which a writable
attribute accepts and ignores.  A blocking ``trace_pipe`` read polls
libfuse's ``fuse_interrupted()``: the kernel sends FUSE_INTERRUPT when its
reader gets any signal (``request_wait_answer()``), and the read then ends
with EINTR.  Once the tree is deactivated, whatever is in flight or arrives
ends with ENODEV.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import signal
import stat
import subprocess
import threading
import time

import trio
from fuse import FUSE, Operations, _libfuse, fuse_operations

from ._cread import H_HANDOFF, PY_CALLBACKS, Nodes, Records, compiled_ops
from ._tree import STORE_MAX, Directory, SysfsTree, apply_store
from ._tstate import ThreadStates

#: Operations that touch a file's contents: ENODEV once the tree is deactivated.
_ACTIVE_OPS = frozenset({"open", "read", "write", "truncate"})


def _node_paths(root: Directory, prefix: str = "") -> list[str]:
    """Every node's path as libfuse gives it: ``/``, ``/a``, ``/a/b``."""
    out = [prefix or "/"]
    for name, child in root.children.items():
        path = f"{prefix}/{name}"
        out += _node_paths(child, path) if isinstance(child, Directory) else [path]
    return out


def fuse_interrupted() -> bool:
    """libfuse's ``fuse_interrupted()``: whether the request this libfuse
    thread is answering was interrupted (its caller got a signal)."""
    return bool(_libfuse.fuse_interrupted())


class SysfsOperations(Operations):
    use_ns = True  # utimens() times in ns (fusepy warns otherwise); they are ignored
    # Not registered, so libfuse answers in C, without a Python callback and
    # its wait for the GIL: ENOSYS for flush and xattrs (the kernel then stops
    # asking), success for opendir/releasedir, and ENOTTY for an ioctl (the
    # isatty() in Python's open()).
    flush = getxattr = listxattr = opendir = releasedir = ioctl = None

    def __init__(self, tree: SysfsTree, trio_token: trio.lowlevel.TrioToken) -> None:
        self.tree = tree
        self.token = trio_token
        self.mounted_at = time.time_ns()  # use_ns: getattr times in ns too
        self._nonblock: set[int] = set()  # streams opened O_NONBLOCK
        self._streamed: set[int] = set()  # streams that have read something (iter->pos)
        self._lock = threading.Lock()
        self._kept = threading.local()  # this libfuse thread's Python state is kept
        self.thread_states = ThreadStates()
        #: The open files' records (``_cread``), made by serve().
        self.records: Records | None = None
        #: Every node's path, mode and owner, for the compiled getattr.
        self.nodes = Nodes(_node_paths(tree.root), self.mounted_at)
        for path in self.nodes.row:
            self._set_node(path)

    def _set_node(self, path: str) -> None:
        node = self.tree.lookup(path)
        kind = stat.S_IFDIR if isinstance(node, Directory) else stat.S_IFREG
        self.nodes.set(path, kind | node.mode, node.owner.uid, node.owner.gid)

    def init(self, path):
        """libfuse's ``private_data``: where the compiled getattr finds the nodes."""
        return self.nodes.address()

    def __call__(self, op, *args):
        # Not for init/destroy: destroy runs in the thread that called serve(),
        # a trio worker that later runs other jobs (DMA copies among them).
        # (Its nice value each libfuse thread has from serve()'s thread.)
        if op not in ("init", "destroy") and not getattr(self._kept, "done", False):
            self.thread_states.hold()  # first, or the thread-local is lost with the callback
            self._kept.done = True
        if op in _ACTIVE_OPS:
            self.tree.get_active()
        try:
            return getattr(self, op)(*args)
        except OSError:
            raise
        except BaseException:  # trio.Cancelled too: fusepy's _wrapper fails on those
            if self.tree.active:
                raise
            # trio's run ended under a write in flight (RunFinishedError, or
            # Cancelled at the end of the run): the device is gone.
            raise OSError(errno.ENODEV, "migd stopped") from None

    def readdir(self, path, fh):
        """The names with their type (``d_type``), as kernfs' readdir gives
        them: perf lists tracepoints only from entries that say DT_DIR."""
        node = self.tree.lookup(path)
        if not isinstance(node, Directory):
            raise OSError(errno.ENOTDIR, path)
        return [".", "..", *((name, {"st_mode": stat.S_IFDIR if isinstance(child, Directory)
                                     else stat.S_IFREG}, 0)
                             for name, child in sorted(node.children.items()))]

    def open(self, path, flags):
        """Checks, then the open file's record: the value shown now (or a
        view's bytes), which the compiled reads serve (see ``_cread``)."""
        attr = self.tree.attribute(path)
        accmode = flags & os.O_ACCMODE
        if accmode in (os.O_WRONLY, os.O_RDWR) and attr.store is None:
            raise OSError(errno.EACCES, path)
        if accmode in (os.O_RDONLY, os.O_RDWR) and attr.show is None and attr.stream is None:
            raise OSError(errno.EACCES, path)
        if flags & os.O_TRUNC and attr.truncate is not None:  # atomic_o_trunc kernels
            attr.truncate()
            self.records.stored()
        if accmode != os.O_RDONLY or attr.stream is not None:
            fh = self.records.open(None)  # shown at its first read, by Python
            if attr.stream is not None and flags & os.O_NONBLOCK:
                with self._lock:
                    self._nonblock.add(fh)
            return fh
        if attr.view is not None:
            return self.records.open(attr.view(), fixed=True)
        gen = self.records.generation()  # before the value: a store after it shows again
        return self.records.open(self.tree.read(path), gen=gen)

    def read(self, path, size, offset, fh):
        """What the compiled read leaves to Python: a stream, a read at
        offset 0 after the first, which shows the value again (the reads
        after it continue from that value), and the first read of a file
        opened for writing too."""
        attr = self.tree.attribute(path)
        if attr.stream is not None:
            with self._lock:
                before = fh in self._streamed
            data = attr.stream(size, fh not in self._nonblock, fuse_interrupted, before)
            if data and not before:
                with self._lock:
                    self._streamed.add(fh)
            return data
        data = self.tree.read(path)
        self.records.refill(fh, data)
        return data[offset:offset + size]

    def release(self, path, fh):
        """What the compiled release leaves to Python: a record it cannot
        free alone (a held value, a stream's or a writer's)."""
        with self._lock:
            self._nonblock.discard(fh)
            self._streamed.discard(fh)
        self.records.release(fh)
        return 0

    def write(self, path, data, offset, fh):
        """``kernfs_fop_write_iter``: the store takes at most STORE_MAX bytes
        (a longer write is short); the offset is ignored, as sysfs does."""
        store, value = self.tree.prepare_store(path, data)
        try:
            trio.from_thread.run(apply_store, store, value, trio_token=self.token)
        finally:  # a store that failed may have changed something before it did
            self.records.stored()
        return min(len(data), STORE_MAX)

    def truncate(self, path, length, fh=None):
        attr = self.tree.check_write(path)
        if attr.truncate is not None:
            attr.truncate()
            self.records.stored()
        return 0

    def _eperm(self, *args, **kwargs):
        raise OSError(errno.EPERM, "the control tree's shape is fixed")

    create = mkdir = mknod = unlink = rmdir = rename = symlink = link = _eperm
    setxattr = removexattr = _eperm

    def chmod(self, path, mode):
        # The kernel allowed it (default_permissions: the owner, i.e. root).
        self.tree.chmod(path, mode)
        self._set_node(path)
        return 0

    def chown(self, path, uid, gid):
        self.tree.chown(path, uid, gid)
        self._set_node(path)
        return 0

    def utimens(self, path, times=None):
        return 0


#: Nice value of the threads answering the tree (see :func:`raise_thread_priority`).
TREE_THREAD_NICE = -20


def raise_thread_priority() -> None:
    """Run this thread (serve()'s, whose nice value every libfuse thread it
    starts inherits, or one of the /metrics server's) at
    :data:`TREE_THREAD_NICE`.

    In the kernel a sysfs read runs in the reader's own context; here it is
    answered by a thread of a daemon whose other threads copy gigabytes (numba's
    pool, DMA channel workers).  On a 2-CPU machine a woken tree thread waited
    for a CPU behind them at each of a ``cat``'s 4-5 requests: the nice value
    lets it preempt them at once (docs/design.md, "Tree threads at nice -20").
    Real-time scheduling (SCHED_RR) was no better and risks more.  The
    price: a reader looping over large attributes (``numa_maps``) takes CPU
    from migration at this priority rather than at its own.  Without
    CAP_SYS_NICE the thread keeps its priority.
    """
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), TREE_THREAD_NICE)


def is_mounted(mountpoint: str) -> bool:
    """Whether ``mountpoint`` is in this process's mount table.

    Read from /proc/self/mountinfo, not by ``stat`` of the mount: the process
    serving the mount must never wait on it (a thread waiting on its own FUSE
    mount cannot die if the process is killed meanwhile).
    """
    target = os.path.realpath(mountpoint)
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            # field 5 is the mount point, octal-escaped (\040 for a space)
            field = line.split(b" ")[4].decode("unicode_escape", "replace")
            if field == target:
                return True
    return False


async def wait_mounted(mountpoint: str, timeout: float = 10.0) -> None:
    """Until ``mountpoint`` is mounted (by this process's FUSE thread): polled
    with :func:`is_mounted`, never a lookup on the mount; TooSlowError after
    ``timeout`` seconds."""
    with trio.fail_after(timeout):
        while not is_mounted(mountpoint):
            await trio.sleep(0.01)


def clear_stale_mount(mountpoint: str) -> bool:
    """Unmount a dead FUSE mount ("Transport endpoint is not connected").

    Returns True if one was cleared.  A live mount (another daemon) is left
    alone and reported as OSError EBUSY.
    """
    try:
        os.stat(mountpoint)
        if os.path.ismount(mountpoint):
            os.listdir(mountpoint)  # stat may come from the attribute cache; this may not
    except FileNotFoundError:
        os.makedirs(mountpoint, exist_ok=True)
        return False
    except OSError as e:
        if e.errno != errno.ENOTCONN:
            raise
        subprocess.run(["fusermount", "-uz", mountpoint], check=False, capture_output=True,
                   timeout=30)
        return True
    if os.path.ismount(mountpoint):
        raise OSError(errno.EBUSY, f"{mountpoint} is already mounted (another migd?)")
    return False


def serve(tree: SysfsTree, mountpoint: str, trio_token: trio.lowlevel.TrioToken) -> None:
    """Mount and serve until unmounted (blocks: run it in a worker thread).

    The tree's shape and attributes never change but by chmod/chown, whose
    reply refreshes the kernel's copy, so the kernel may cache lookups and
    attributes for an hour: a ``cat`` costs its open in Python, and a getattr
    (its fstat: a read invalidates atime), its reads and release in compiled
    code (``_cread``).

    ``allow_other`` lets every user in (libfuse2 wants ``user_allow_other`` in
    /etc/fuse.conf only when a non-root user mounts; migd mounts as root) and
    ``default_permissions`` has the kernel check the modes, as on sysfs: without
    it any user could write any knob (the mode bits were decoration), and
    checking the caller's uid in each handler was rejected as slower (a
    fuse_get_context() per request) and easier to get wrong than the kernel's
    own generic_permission().
    """
    ops = SysfsOperations(tree, trio_token)
    # libfuse's threads start at this thread's nice value (a thread that
    # only answers compiled reads never calls Python to raise its own)
    nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    raise_thread_priority()
    try:
        _FUSE(ops, mountpoint, foreground=True, direct_io=True,
              nothreads=False, allow_other=True, default_permissions=True, attr_timeout=3600,
              entry_timeout=3600, fsname="migd", subtype="migd")
    finally:
        with contextlib.suppress(OSError):  # this trio worker runs other jobs next
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
        ops.thread_states.release_dead()  # libfuse joined its threads
        _ignore_sigpipe()


class _FUSE(FUSE):
    """fusepy's ``FUSE`` with ``getattr``, ``fgetattr``, ``read``, ``release``,
    ``open`` and ``readdir`` compiled (``_cread``); fusepy's own Python
    callbacks for the last four are what the compiled ones call.  fusepy builds its table
    and mounts in one constructor, so this is that constructor (fusepy
    3.0.1's) less what migd does not use (raw_fi, a float ``use_ns``, the
    critical-exception record, which fusepy's static ``_wrapper`` cannot set)."""

    def __init__(self, operations: SysfsOperations, mountpoint: str, **kwargs) -> None:
        self.operations = operations
        self.raw_fi = False
        self.encoding = "utf-8"
        self.use_ns = True
        args = ["fuse", *(flag for arg, flag in self.OPTIONS if kwargs.pop(arg, False)),
                "-o", ",".join(self._normalize_fuse_options(**kwargs)), mountpoint]
        argv = (ctypes.c_char_p * len(args))(*(a.encode() for a in args))
        compiled = compiled_ops()
        table, python = fuse_operations(), {}
        for name, prototype, *_ in fuse_operations._fields_:
            if not hasattr(prototype, "argtypes"):
                continue  # a flag
            if name in compiled:
                setattr(table, name, prototype(compiled[name]))
            if name in PY_CALLBACKS or name not in compiled and getattr(
                    operations, name[1:] if name == "ftruncate" else name, None) is not None:
                python[name] = prototype(functools.partial(self._wrapper, getattr(self, name)))
                if name not in compiled:
                    setattr(table, name, python[name])
        operations.records = Records()
        operations.tree.on_deactivate.append(operations.records.deactivate)
        from .. import _gil  # compiled: with the callbacks, not with this module
        operations.nodes.header[H_HANDOFF] = _gil.block_address()
        for name, field in PY_CALLBACKS.items():
            operations.nodes.header[field] = ctypes.cast(python[name], ctypes.c_void_p).value
        try:
            old_handler = signal.signal(signal.SIGINT, signal.SIG_DFL)
        except ValueError:  # not the main thread
            old_handler = None
        err = _libfuse.fuse_main_real(len(args), argv, ctypes.pointer(table),
                                      ctypes.sizeof(table), None)
        if old_handler is not None:
            signal.signal(signal.SIGINT, old_handler)
        del self.operations
        if err:
            raise RuntimeError(err)


def _ignore_sigpipe() -> None:
    """SIGPIPE ignored again, as Python starts (writes then fail with EPIPE).

    libfuse2's ``fuse_remove_signal_handlers()`` resets SIGPIPE to SIG_DFL
    when it finds it ignored (``set_one_signal_handler(SIGPIPE, SIG_IGN, 1)``
    cannot tell Python's SIG_IGN from its own): a process that served a tree
    in-process (the soak, the tests) was then killed by its next write to a
    closed socket or pipe.  A handler of its own (the daemon's signal
    receiver) is left alone by libfuse and here.  ``signal.signal`` only works
    on the main thread, hence libc's ``signal()``.
    """
    if signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN:
        libc = ctypes.CDLL(None)
        libc.signal.restype = ctypes.c_void_p
        libc.signal.argtypes = [ctypes.c_int, ctypes.c_void_p]
        libc.signal(signal.SIGPIPE, ctypes.c_void_p(int(signal.SIG_IGN)))


def unmount(mountpoint: str) -> None:
    subprocess.run(["fusermount", "-uz", mountpoint], check=False, capture_output=True,
                   timeout=30)
