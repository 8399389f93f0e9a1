"""The control tree as a plain model of files: sysfs semantics, no FUSE.

Each file is an :class:`Attribute` with a ``show()`` (its value, without the
trailing newline) and, if writable, a ``store(value)``.  The rules are sysfs's:
values read back with ``\\n``; a write may carry one trailing ``\\n`` (numbers
and booleans parse as lib/kstrtox.c does, see ``_kstrtox``); a value the
store rejects (``ValueError``) fails with EINVAL and changes nothing; writing a
read-only file fails with EACCES (even for root); creating, removing or renaming
anything fails with EPERM; unknown paths are ENOENT.  Modes are sysfs's (0444,
0644, 0200), enforced by the kernel (the mount's ``default_permissions``): any
user reads, only root writes; root may chmod/chown files (``Owner``).  A store that raises
``OSError`` keeps its errno (EBUSY for a migrator already active).

A store takes at most :data:`STORE_MAX` bytes, as ``kernfs_fop_write_iter``
hands a sysfs store at most PAGE_SIZE: a longer write is a short write of
that many (the store refuses what it cannot parse).  An attribute's
``parse(text)`` runs on the writer's thread (the value parsed there, so a long
or bad value never occupies the trio thread); ``store(value)`` applies it.
Stores may be coroutines (``unregister`` waits for in-flight batches); the
adapter runs them in the trio thread.  ``show()`` runs in whatever thread reads
and must only read.  Once :meth:`SysfsTree.deactivate` ran (shutdown), every
open, read and write fails with ENODEV, as kernfs does for a removed node
(``kernfs_get_active()`` failing).
"""

from __future__ import annotations

import errno
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

Show = Callable[[], str]
Store = Callable[[Any], "None | Awaitable[None]"]

#: Bytes a store takes at most: PAGE_SIZE (``kernfs_fop_write_iter``).
STORE_MAX = 4096


@dataclass
class Owner:
    """What root may change with chmod/chown, as udev does on sysfs (e.g. to let
    a group write a knob).  Kept in memory only: a restart restores the
    defaults, as a reboot does on sysfs."""

    perm: int | None = None  # None: the default mode
    uid: int = 0
    gid: int = 0


@dataclass
class Attribute:
    show: Show | None = None
    store: Store | None = None
    #: A stream (trace_pipe): read(size, block, interrupted, read_before)
    #: waits for data unless ``block`` is False (O_NONBLOCK: OSError EAGAIN),
    #: and ends with OSError EINTR once ``interrupted()`` (the reader got a
    #: signal); ``read_before``: this open file has read something already.
    stream: Callable[[int, bool, Callable[[], bool], bool], bytes] | None = None
    #: A file read from a view taken at open (``trace``, a seq_file):
    #: ``view()`` at each open returns that open file's bytes, which it reads
    #: from any offset.  The others show their value at open and again at a
    #: read at offset 0 after the first.
    view: Callable[[], bytes] | None = None
    #: What opening for writing with O_TRUNC (``> file``) does besides the
    #: store; ``trace`` clears its ring.  Runs on the reader's thread.
    truncate: Callable[[], None] | None = None
    #: text -> the value ``store`` applies (ValueError: EINVAL); runs on the
    #: writer's thread.  None: ``store`` gets the text.
    parse: Callable[[str], Any] | None = None
    owner: Owner = field(default_factory=Owner)

    @property
    def mode(self) -> int:
        """sysfs' modes: 0444 read-only, 0644 read-write, 0200 write-only,
        unless root changed them."""
        if self.owner.perm is not None:
            return self.owner.perm
        readable = self.show is not None or self.stream is not None
        return (0o444 if readable else 0) | (0o200 if self.store else 0)


@dataclass
class Directory:
    children: dict[str, Attribute | Directory] = field(default_factory=dict)
    owner: Owner = field(default_factory=Owner)

    @property
    def mode(self) -> int:
        return 0o755 if self.owner.perm is None else self.owner.perm

    def add(self, path: str, node: Attribute | Directory) -> None:
        """Add ``node`` at ``path`` (slash-separated, relative), making directories."""
        parts = path.strip("/").split("/")
        d = self
        for p in parts[:-1]:
            d = d.children.setdefault(p, Directory())
            if not isinstance(d, Directory):
                raise ValueError(f"{path}: {p} is a file")
        existing = d.children.get(parts[-1])
        if isinstance(existing, Directory) and isinstance(node, Directory):
            existing.owner = node.owner  # a directory's mode, set before or after its files
            return
        d.children[parts[-1]] = node

    def lookup(self, path: str) -> Attribute | Directory:
        node: Attribute | Directory = self
        for p in path.strip("/").split("/"):
            if not p:
                continue
            if not isinstance(node, Directory) or p not in node.children:
                raise OSError(errno.ENOENT, f"no such file: {path}")
            node = node.children[p]
        return node


def parse_store_value(data: bytes) -> str:
    """What a store sees: the written bytes as text, newline included.

    As the kernel hands a store its whole buffer: ``kstrtoul`` accepts one
    trailing newline and refuses ``"1\\n\\n"``, which stripping one newline here
    would have turned into an accepted ``"1\\n"``.
    """
    return data.decode("utf-8", errors="strict")


async def apply_store(store: Store, value: Any) -> None:
    """Run a store in the trio thread: ValueError becomes EINVAL (nothing changed)."""
    try:
        result = store(value)
        if inspect.isawaitable(result):
            await result
    except ValueError as e:
        raise OSError(errno.EINVAL, str(e)) from None


class SysfsTree:
    """The whole tree; the FUSE adapter and the tests both drive it."""

    def __init__(self) -> None:
        self.root = Directory()
        self.active = True
        #: Called by :meth:`deactivate` (the compiled reads' own flag).
        self.on_deactivate: list[Callable[[], None]] = []

    def deactivate(self) -> None:
        """``kernfs_deactivate()`` of every node: from now on opens, reads
        and writes fail with ENODEV (the daemon is stopping)."""
        self.active = False
        for hook in self.on_deactivate:
            hook()

    def get_active(self) -> None:
        """``kernfs_get_active()``: ENODEV once the tree is deactivated."""
        if not self.active:
            raise OSError(errno.ENODEV, "migd is stopping")

    def add(self, path: str, node: Attribute | Directory) -> None:
        self.root.add(path, node)

    def lookup(self, path: str) -> Attribute | Directory:
        return self.root.lookup(path)

    def attribute(self, path: str) -> Attribute:
        node = self.lookup(path)
        if isinstance(node, Directory):
            raise OSError(errno.EISDIR, path)
        return node

    def chmod(self, path: str, mode: int) -> None:
        """Who may do it is the kernel's check (default_permissions: owner or root)."""
        self.lookup(path).owner.perm = mode & 0o7777

    def chown(self, path: str, uid: int, gid: int) -> None:
        """-1 leaves that id unchanged, as chown(2)."""
        owner = self.lookup(path).owner
        if uid != -1:
            owner.uid = uid
        if gid != -1:
            owner.gid = gid

    def listdir(self, path: str) -> list[str]:
        node = self.lookup(path)
        if not isinstance(node, Directory):
            raise OSError(errno.ENOTDIR, path)
        return sorted(node.children)

    def read(self, path: str) -> bytes:
        """The whole value of a non-stream attribute, newline-terminated, unless
        it ends with a NUL (``/proc/<pid>/cmdline``: NUL-separated, no newline)."""
        attr = self.attribute(path)
        if attr.show is None:
            raise OSError(errno.EACCES, f"{path} is write-only")
        value = attr.show()
        return (value if value.endswith(("\n", "\0")) else value + "\n").encode()

    def check_write(self, path: str) -> Attribute:
        attr = self.attribute(path)
        if attr.store is None:
            raise OSError(errno.EACCES, f"{path} is read-only")
        return attr

    def prepare_store(self, path: str, data: bytes) -> tuple[Store, Any]:
        """Check a write's target, decode and parse it on the caller's thread:
        (store, value), or OSError (EINVAL: bad value, nothing changed).  The
        caller takes only ``data[:STORE_MAX]``."""
        attr = self.check_write(path)
        try:
            text = parse_store_value(data[:STORE_MAX])
        except UnicodeDecodeError:
            raise OSError(errno.EINVAL, f"{path}: value is not UTF-8") from None
        if attr.parse is None:
            return attr.store, text
        try:
            return attr.store, attr.parse(text)
        except ValueError as e:
            raise OSError(errno.EINVAL, str(e)) from None

    async def write(self, path: str, data: bytes) -> int:
        """A write as the FUSE adapter does it (tests drive the model with it):
        bytes taken, at most :data:`STORE_MAX`."""
        store, value = self.prepare_store(path, data)
        await apply_store(store, value)
        return min(len(data), STORE_MAX)

    def files(self, path: str = "") -> list[str]:
        """Every file under ``path``, relative, depth first."""
        node = self.lookup(path)
        if isinstance(node, Attribute):
            return [path]
        out = []
        for name, child in node.children.items():
            sub = f"{path}/{name}" if path else name
            out += [sub] if isinstance(child, Attribute) else self.files(sub)
        return out
