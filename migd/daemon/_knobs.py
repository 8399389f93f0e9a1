"""The knob table: one declaration per tunable file of the control tree.

A :class:`Knob` says where the file is, how a written value parses (and so its
range), how the value is read and changed on a :class:`System`, which config
key sets it at start, what the soak may write into it, and one line of help.
From this table come the tree's files (``_attrs.build_tree``), the config
schema of ``[migrator]`` and ``[migrator.<name>]`` (``_config``), the config
applied at start (:func:`apply_config`), the soak's knob flipper
(:func:`soak_writes`) and the README's reference table (``reference``).  A
written value is parsed once, by the knob's parser; the store then only
applies it and emits ``knob_changed`` with the old and new value.

Families: the migration core (``kernel/mm/migrate_offload``), one per
catalogue migrator (generated from :mod:`migd.offload`'s catalogue: the
files every migrator has, and the parameters and counters it declares),
fault injection.  Read-only status files and triggers
(per node, per tenant, per channel) are in ``_files``.

Rejected: a method per knob on System (the six near-identical setters this
replaces), and parsing in the setters (a config value was then validated by the
schema, again by the setter and again by the migrator).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..faults import FaultInjector
from ..migrate import (
    BATCH_COPY_MODES,
    MAX_INACCESSIBLE_US_LIMIT,
    NR_MAX_BATCHED_MIGRATION,
    NR_MAX_BATCHED_MIGRATION_LIMIT,
)
from ..mm import REASON_MASK_ALL, format_reason_mask
from ..offload import MigratorEntry, Param, migrator_names, offload_migrators
from ._callers import CALLERS
from ._parsers import Bool, Choice, Int, Parser, Reasons

if TYPE_CHECKING:
    from ._system import System

# -- the declaration ---------------------------------------------------------------


@dataclass(frozen=True)
class Knob:
    """One tree file.  ``{}`` in ``path`` is filled per instance from ``each``."""

    path: str
    help: str
    #: (sys, inst) -> the value (what ``show`` formats and events carry).
    get: Callable[[Any, Any], Any] | None = None
    #: (sys, inst, parsed value) -> None or an awaitable (switches wait for batches).
    set: Callable[[Any, Any, Any], None | Awaitable[None]] | None = None
    parse: Parser | None = None
    fmt: Callable[[Any], str] = str
    #: (sys, inst) -> the shown text, when it is not ``fmt(get())``.
    show: Callable[[Any, Any], str] | None = None
    #: (sys, inst) -> a consuming, blocking reader (``trace_pipe``), see ``Attribute.stream``.
    stream: Callable[[Any, Any], Callable] | None = None
    #: (sys, inst) -> an open file's bytes, see ``Attribute.view``.
    view: Callable[[Any, Any], bytes] | None = None
    #: (sys, inst) -> None: what ``> file`` (O_TRUNC) does besides the store (``trace``).
    truncate: Callable[[Any, Any], None] | None = None
    #: The ``knob_changed`` event's name (``{}``: the instance); None: no event
    #: (the store emits its own, e.g. ``migrator_switched``).
    name: str | None = None
    #: Dotted config key that sets it at start, and its default.
    config: str | None = None
    default: Any = None
    #: Values the soak's flipper may write (empty: the soak leaves it alone).
    soak: tuple[str, ...] = ()
    #: (sys) -> [(path part, instance)]; None: one file, instance None.
    each: Callable[[Any], Iterable[tuple[str, Any]]] | None = None
    #: How the reference shows the ``{}`` of ``path``.
    slot: str = ""
    family: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def mode(self) -> int:
        readable = self.get is not None or self.show is not None or self.stream is not None
        return (0o444 if readable else 0) | (0o200 if self.set is not None else 0)

    def expand(self, sys) -> list[tuple[str, Any]]:
        """(path, instance) of every file this knob makes on ``sys``."""
        if self.each is None:
            return [(self.path, None)]
        return [(self.path.format(part), inst) for part, inst in self.each(sys)]

    def read(self, sys, inst) -> str:
        return self.show(sys, inst) if self.show is not None else self.fmt(self.get(sys, inst))

    def parse_text(self, sys, inst, text: str) -> Any:
        """The written text's value (ValueError: EINVAL, nothing changed); pure,
        so the tree runs it on the writer's thread."""
        return self.parse(text, self.path.rsplit("/", 1)[-1], sys, inst)

    def apply(self, sys, inst, value: Any):
        """Apply a parsed value and emit; may return an awaitable."""
        old = self.get(sys, inst) if self.name and self.get else None
        done = self.set(sys, inst, value)
        if inspect.isawaitable(done):
            return self._finish(sys, inst, done, old)
        self._emit(sys, inst, old)
        return None

    async def _finish(self, sys, inst, done, old) -> None:
        await done
        self._emit(sys, inst, old)

    def _emit(self, sys, inst, old) -> None:
        if self.name:
            sys.emit("knob_changed", knob=self.name.format(inst), old=old,
                     new=self.get(sys, inst))


def _bool(v: Any) -> str:
    return str(int(v))


def _spread(lo: int, hi: int) -> tuple[str, ...]:
    """What the soak writes into a ``lo..hi`` parameter: both ends and powers of two."""
    return tuple(str(v) for v in sorted({lo, hi, *(1 << k for k in range(hi.bit_length()))})
                 if lo <= v <= hi)


# -- families ----------------------------------------------------------------------

MO = "kernel/mm/migrate_offload"


def _set_engine(attr: str):
    def set_(sys, inst, v) -> None:
        setattr(sys.engine, attr, v)
    return set_


def _migrator_list(sys, inst) -> str:
    active = sys.active_migrator()
    return " ".join(f"[{n}]" if n == active else n for n in migrator_names())


def _core() -> list[Knob]:
    return [
        Knob(f"{MO}/migrator", "the active migrator in brackets; write a name to switch",
             get=lambda s, i: s.active_migrator(), show=_migrator_list,
             set=lambda s, i, v: s.set_migrator(v), parse=Choice(migrator_names),
             config="migrator.active", default="none", soak=migrator_names()),
        Knob(f"{MO}/nr_max_batched_migration", "batch bound in base pages",
             get=lambda s, i: s.engine.nr_max_batched_migration,
             set=_set_engine("nr_max_batched_migration"),
             parse=Int(1, NR_MAX_BATCHED_MIGRATION_LIMIT), name="nr_max_batched_migration",
             config="migrator.nr_max_batched_migration", default=NR_MAX_BATCHED_MIGRATION,
             soak=("1", "32", "256", "512", "2048", "8192")),
        Knob(f"{MO}/max_inaccessible_us",
             "latency budget: longest a folio may stay unmapped, in us (0: off)",
             get=lambda s, i: s.engine.max_inaccessible_us,
             set=_set_engine("max_inaccessible_us"),
             parse=Int(0, MAX_INACCESSIBLE_US_LIMIT), name="max_inaccessible_us",
             config="migrator.max_inaccessible_us", default=0),
        Knob(f"{MO}/profile", "the DMA hardware profile (config dma.profile)",
             show=lambda s, i: s.profile.name),
        Knob(f"{MO}/batch_copy", "emulator only: gated (the RFC: a batch copy only through "
             "a registered migrator) or always (the core batch-copies every other batch, "
             "folios_mc_copy)", get=lambda s, i: s.engine.batch_copy,
             set=_set_engine("batch_copy"), parse=Choice(lambda: BATCH_COPY_MODES),
             name="batch_copy", config="migrator.batch_copy", default="gated",
             soak=BATCH_COPY_MODES),
        Knob(f"{MO}/decline_latency_sensitive", "emulator only: 1: the migrator declines "
             "the batches of callers whose latency_tolerant is 0 (the move loop copies them)",
             get=lambda s, i: s.engine.decline_latency_sensitive, fmt=_bool, parse=Bool(),
             set=_set_engine("decline_latency_sensitive"), name="decline_latency_sensitive",
             config="migrator.decline_latency_sensitive", default=False, soak=("0", "1")),
        *_callers(),
    ]


def _caller_list(sys) -> list[tuple[str, str]]:
    return [(c, c) for c in CALLERS]


def _callers() -> list[Knob]:
    """``kernel/mm/migrate_offload/callers/<caller>/``: emulator-only knobs
    (``_callers``), not the kernel's: it hard-codes each caller's list."""
    def set_bound(sys, c, v) -> None:
        sys.callers[c].list_pages = v

    def set_hint(sys, c, v) -> None:
        sys.callers[c].latency_tolerant = v
    return [
        Knob(f"{MO}/callers/{{}}/list_pages", "emulator only: the caller's list bound in "
             "base pages (0: the kernel's: 1 folio promotion, 32 compaction and classic "
             "reclaim, 64 MGLRU, none for move_pages and DAMON)",
             get=lambda s, c: s.callers[c].list_pages, set=set_bound,
             parse=Int(0, NR_MAX_BATCHED_MIGRATION_LIMIT), each=_caller_list,
             name="callers.{}.list_pages", slot="<caller>", family="callers",
             soak=("0", "1", "32", "512", "4096")),
        Knob(f"{MO}/callers/{{}}/latency_tolerant", "emulator only: 1: the caller declares "
             "itself latency-tolerant (0 for promotion and direct_compaction by default)",
             get=lambda s, c: s.callers[c].latency_tolerant, set=set_hint, fmt=_bool,
             parse=Bool(), each=_caller_list, name="callers.{}.latency_tolerant",
             slot="<caller>", family="callers", soak=("0", "1")),
    ]


PZ = "kernel/mm/prezero_pool"


def _prezero() -> list[Knob]:
    """mm/prezero_pool.c's attributes: ``enabled`` and ``max_per_node``
    (kstrtobool / kstrtouint; nothing but the value checked), ``size`` (every
    node's parked folios), ``hits``, ``misses``."""
    return [
        Knob(f"{PZ}/enabled", "1: park pre-zeroed PMD folios for THP faults (a refill "
             "worker clears them through the provider); 0: drain",
             get=lambda s, i: s.prezero.enabled, fmt=_bool, parse=Bool(),
             set=lambda s, i, v: s.prezero.set_enabled(v), name="prezero_pool.enabled",
             soak=("0", "1"), family="prezero_pool"),
        Knob(f"{PZ}/max_per_node", "folios parked per node at most; lowering it trims",
             get=lambda s, i: s.prezero.max_per_node, parse=Int(0, 2**32 - 1),
             set=lambda s, i, v: s.prezero.set_max_per_node(v),
             name="prezero_pool.max_per_node", soak=("0", "8", "64", "256"),
             family="prezero_pool"),
        Knob(f"{PZ}/size", "folios parked now, all nodes", get=lambda s, i: s.prezero.size,
             family="prezero_pool"),
        Knob(f"{PZ}/hits", "THP faults served a parked folio",
             get=lambda s, i: int(s.prezero.hits.sum()), family="prezero_pool"),
        Knob(f"{PZ}/misses", "THP faults that found none (cleared at fault time)",
             get=lambda s, i: int(s.prezero.misses.sum()), family="prezero_pool"),
    ]


def _auto_set(e: MigratorEntry):
    def set_(sys, inst, v) -> None:
        sys.migrators[e.name].auto = v
    return set_


def _mask_set(e: MigratorEntry):
    def set_(sys, inst, v) -> None:
        sys.set_reason_mask(e.name, v)
    return set_


def _param(e: MigratorEntry, p: Param) -> Knob:
    """A file the migrator declares (``module_param_cb()``): its parser, its
    own setter as the store; a counter shows a view that a write resets."""
    key = f"{e.name}.{p.name}"

    def get(sys, inst):
        return p.value(sys.migrators[e.name]) - sys.counter_base.get(key, 0)

    def reset(sys, inst, v) -> None:
        sys.counter_base[key] = p.value(sys.migrators[e.name])

    def store(sys, inst, v) -> None:
        p.store(sys.migrators[e.name], v)

    return Knob(f"{e.tree}/{p.name}", p.help,
                get=get if p.counter else (lambda s, i: p.value(s.migrators[e.name])),
                fmt=p.fmt or (_bool if isinstance(p.parse, Bool) else str),
                set=None if p.parse is None else reset if p.counter else store,
                parse=p.parse, name=key if p.parse is not None else None,
                config=f"migrator.{key}" if p.default is not None else None,
                default=p.default, soak=p.soak or _soak_values(p), family=e.name)


def _soak_values(p: Param) -> tuple[str, ...]:
    """What the soak writes into a parameter that does not say: a counter's
    reset, a number's range, both booleans, every name."""
    if p.parse is None:
        return ()
    if p.counter:
        return ("0",)
    if isinstance(p.parse, Int):
        return _spread(p.parse.lo, p.parse.hi)
    return ("0", "1") if isinstance(p.parse, Bool) else getattr(p.parse, "choices", ())


def _migrator(e: MigratorEntry) -> list[Knob]:
    """The files every catalogue migrator has, under its own directory, and its own."""
    cfg, fam = f"migrator.{e.name}", e.name
    return [
        Knob(f"{e.tree}/offloading",
             f"0/1: unregister/register {e.name} (EBUSY if another migrator is active)",
             get=lambda s, i: s.active_migrator() == e.name, fmt=_bool, parse=Bool(),
             set=lambda s, i, v: s.set_offloading(e.name, v), family=fam),
        *(_param(e, p) for p in e.params),
        Knob(f"{e.tree}/reason_mask", f"the reasons {e.name} serves; reads back names",
             get=lambda s, i: format_reason_mask(s.reason_masks[e.name]), set=_mask_set(e),
             parse=Reasons(), name=f"{e.name}.reason_mask", config=f"{cfg}.reason_mask",
             default=REASON_MASK_ALL, family=fam,
             soak=("all", "none", "demotion,compaction", "syscall_or_cpuset", "0x3ff",
                   "numa_misplaced,demotion")),
        Knob(f"{e.tree}/auto", "1: decline the batches the CPU copies faster (learnt)",
             get=lambda s, i: s.migrators[e.name].auto, set=_auto_set(e), fmt=_bool,
             parse=Bool(), name=f"{e.name}.auto", config=f"{cfg}.auto", default=False,
             family=fam),
    ]


def _fault_points(sys) -> list[tuple[str, str]]:
    return [(p, p) for p in FaultInjector.POINTS]


def _faults() -> list[Knob]:
    out = []
    for attr, parser, soak, what in (
            ("probability", Int(0, 100), ("5", "20", "100"), "percent of chances that fail "
             "(the soak arms them with --faults)"),
            ("interval", Int(1, 2**31 - 1), ("1", "3", "17"), "a chance every N calls"),
            ("times", Int(-1, 2**31 - 1), ("-1", "1", "5"), "failures left (-1: no limit)")):
        def get(sys, point, a=attr):
            return getattr(sys.faults[point], a)

        def set_(sys, point, v, a=attr) -> None:
            sys.faults[point].set(**{a: v})
        out.append(Knob(f"kernel/debug/{{}}/{attr}", f"fault injection: {what}", get=get,
                        set=set_, parse=parser, soak=soak, each=_fault_points,
                        name=f"{{}}.{attr}",
                        slot="fail_*", family="faults", extra={"attr": attr}))
    return out


def knobs() -> list[Knob]:
    """The tunable files, the catalogue read now."""
    out = _core() + _prezero()
    for e in offload_migrators():
        out += _migrator(e)
    return out + _faults()


def config_knobs() -> list[Knob]:
    return [k for k in knobs() if k.config]


def apply_config(sys: System, values: dict[str, Any]) -> None:
    """Set every config-keyed knob from its validated value (by dotted key), without
    events; ``migrator.active`` is left to the caller (switching is async)."""
    for k in config_knobs():
        if k.config != "migrator.active" and k.config in values:
            k.set(sys, None, values[k.config])


def soak_writes(sys: System, faults: bool) -> list[tuple[str, tuple[str, ...]]]:
    """(path, values) the soak's flipper writes: every knob with soak values, fault
    knobs only with ``faults``."""
    return [(path, k.soak) for k in knobs() if k.soak and (faults or k.family != "faults")
            for path, _ in k.expand(sys)]


def soak_fault_settings() -> dict[str, tuple[str, ...]]:
    """What a random ``fail_*`` point is armed with: attribute -> values."""
    return {k.extra["attr"]: k.soak for k in _faults()}

