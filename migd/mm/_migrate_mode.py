"""``enum migrate_reason`` and ``enum migrate_mode`` (include/linux/migrate_mode.h)."""

from __future__ import annotations

import enum
import re


class MigrateReason(enum.IntEnum):
    """Why folios are migrated, in the kernel's enum order; names as tracepoints print them."""

    MR_COMPACTION = 0
    MR_MEMORY_FAILURE = 1
    MR_MEMORY_HOTPLUG = 2
    MR_SYSCALL = 3  # also cpuset
    MR_MEMPOLICY_MBIND = 4
    MR_NUMA_MISPLACED = 5
    MR_CONTIG_RANGE = 6
    MR_LONGTERM_PIN = 7
    MR_DEMOTION = 8
    MR_DAMON = 9

    @property
    def label(self) -> str:
        """The name ``trace/events/migrate.h`` (MIGRATE_REASON) prints."""
        return _LABELS[self]

    @classmethod
    def from_label(cls, label: str) -> MigrateReason:
        try:
            return _BY_LABEL[label]
        except KeyError:
            raise ValueError(f"unknown migrate reason {label[:40]!r}") from None


_LABELS = {
    MigrateReason.MR_COMPACTION: "compaction",
    MigrateReason.MR_MEMORY_FAILURE: "memory_failure",
    MigrateReason.MR_MEMORY_HOTPLUG: "memory_hotplug",
    MigrateReason.MR_SYSCALL: "syscall_or_cpuset",
    MigrateReason.MR_MEMPOLICY_MBIND: "mempolicy_mbind",
    MigrateReason.MR_NUMA_MISPLACED: "numa_misplaced",
    MigrateReason.MR_CONTIG_RANGE: "contig_range",
    MigrateReason.MR_LONGTERM_PIN: "longterm_pin",
    MigrateReason.MR_DEMOTION: "demotion",
    MigrateReason.MR_DAMON: "damon",
}
_BY_LABEL = {v: k for k, v in _LABELS.items()}
MR_TYPES = len(MigrateReason)
#: A reason mask with every reason set.
REASON_MASK_ALL = (1 << MR_TYPES) - 1


#: A number as ``kstrtoul(s, 0)`` takes it (lib/kstrtox.c): ``0x`` hex, a
#: leading ``0`` octal, else decimal; one leading ``+``.
_KSTRTOUL = re.compile(r"\+?(?:0[xX](?P<hex>[0-9a-fA-F]+)|(?P<oct>0[0-7]*)|(?P<dec>[1-9][0-9]*))")


def parse_reason_mask(text: str) -> int:
    """Parse ``all``, ``none``, a number, or comma-separated reason names.

    As a sysfs store takes it: one trailing newline, no spaces; a number as
    ``kstrtoul(s, 0)`` (so ``010`` is 8, and ``1_0``, ``0b11`` or `` 3 `` are
    refused, as Python's ``int(s, 0)`` would not).  Raises ValueError (EINVAL
    at the tree) for anything else, including a number with bits beyond the
    last reason.
    """
    s = text[:-1] if text.endswith("\n") else text
    if s == "all":
        return REASON_MASK_ALL
    if s == "none":
        return 0
    if not s:
        raise ValueError("empty reason mask")
    m = _KSTRTOUL.fullmatch(s)
    if m is None:
        value = 0
        for part in s.split(","):
            value |= 1 << MigrateReason.from_label(part)
        return value
    digits, base = next((m[k], b) for k, b in (("hex", 16), ("oct", 8), ("dec", 10)) if m[k])
    if len(digits) > 24:  # 2**64 has 20 digits, 22 octal: the kernel's ERANGE
        raise ValueError("reason mask: numerical result out of range")
    value = int(digits, base)
    if value > REASON_MASK_ALL:
        raise ValueError(f"reason mask {value:#x} has bits beyond the {MR_TYPES} reasons")
    return value


def format_reason_mask(mask: int) -> str:
    """Comma-separated reason names, ``none`` for an empty mask."""
    names = [r.label for r in MigrateReason if mask & (1 << r)]
    return ",".join(names) if names else "none"


class MigrateMode(enum.Enum):
    """``enum migrate_mode``: how hard migration tries (passes, waiting)."""

    MIGRATE_ASYNC = "async"
    #: kcompactd and direct compaction's second try: waits for a locked
    #: folio, not for writeback (include/linux/migrate_mode.h).
    MIGRATE_SYNC_LIGHT = "sync_light"
    MIGRATE_SYNC = "sync"

    @property
    def label(self) -> str:
        """The name ``trace/events/migrate.h`` (MIGRATE_MODE) prints."""
        return self.name
