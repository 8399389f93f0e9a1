"""The offload registry: one active migrator, SRCU-protected (RFC ``migrate_offc``).

``register()`` installs a migrator with the reasons it serves; ``unregister()``
removes it and, like ``synchronize_srcu()``, returns only once every batch that
was dispatched to it has finished.  Each batch takes the read side for its whole
copy (:meth:`OffloadRegistry.read_lock`), so a migrator is never torn away under
a batch and a knob change takes effect at the next batch.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import trio

from ..mm import REASON_MASK_ALL
from ._cpu import CpuMigrator
from ._migrator import Migrator


@dataclass(frozen=True)
class Offload:
    """What a batch sees under the read lock: the migrator and its reason mask."""

    migrator: Migrator
    reason_mask: int

    @property
    def is_default(self) -> bool:
        return isinstance(self.migrator, CpuMigrator)


class OffloadRegistry:
    def __init__(self) -> None:
        self.default = CpuMigrator()
        self._active: Offload | None = None
        self._readers: dict[int, int] = {}  # id(migrator) -> batches in flight
        self._drained = trio.Event()

    @property
    def active(self) -> Offload:
        return self._active or Offload(self.default, REASON_MASK_ALL)

    def register(self, migrator: Migrator, reason_mask: int = REASON_MASK_ALL) -> None:
        """Make ``migrator`` active for the reasons in ``reason_mask``.

        OSError EINVAL: not a migrator (no name, no ``migrate_offc``) or a bad
        mask; EBUSY: another migrator is active.
        """
        if (not isinstance(migrator, Migrator) or not migrator.name
                or isinstance(migrator, CpuMigrator)):
            raise OSError(errno.EINVAL, f"not a registrable migrator: {migrator!r}")
        if not 0 <= reason_mask <= REASON_MASK_ALL:
            raise OSError(errno.EINVAL, f"bad reason mask {reason_mask:#x}")
        if self._active is not None:
            raise OSError(errno.EBUSY, f"migrator {self._active.migrator.name} is active")
        migrator.enable()  # the newest dcbm: dcbm_get_channels() before registering
        self._active = Offload(migrator, reason_mask)

    def set_reason_mask(self, migrator: Migrator, reason_mask: int) -> None:
        """Change the active migrator's reasons; applies from the next batch."""
        if self._active is None or self._active.migrator is not migrator:
            raise OSError(errno.EINVAL, f"{migrator!r} is not the active migrator")
        if not 0 <= reason_mask <= REASON_MASK_ALL:
            raise OSError(errno.EINVAL, f"bad reason mask {reason_mask:#x}")
        self._active = Offload(migrator, reason_mask)

    async def unregister(self, migrator: Migrator) -> None:
        """Deactivate ``migrator`` and wait for its in-flight batches (SRCU sync).

        OSError EINVAL if it is not the active migrator.
        """
        if self._active is None or self._active.migrator is not migrator:
            raise OSError(errno.EINVAL, f"{migrator!r} is not the active migrator")
        self._active = None
        while self._readers.get(id(migrator), 0):
            await self._drained.wait()
        migrator.disable()  # no batch in flight past unregister: channels idle

    def in_flight(self, migrator: Migrator) -> int:
        return self._readers.get(id(migrator), 0)

    @contextmanager
    def read_lock(self) -> Iterator[Offload]:
        """``srcu_read_lock()`` for one batch: yields the offload to use."""
        offload = self.active
        key = id(offload.migrator)
        self._readers[key] = self._readers.get(key, 0) + 1
        try:
            yield offload
        finally:
            left = self._readers[key] - 1
            if left:
                self._readers[key] = left
            else:
                del self._readers[key]
                self._drained.set()
                self._drained = trio.Event()
