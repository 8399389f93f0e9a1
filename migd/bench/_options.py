"""The bench command line's values (sizes, lists, migrator specs, durations) and the
declarations of the options and experiments the CLI is built from."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .._args import Option
from ..hw import PROFILES, get_profile
from ..migrate import NR_MAX_BATCHED_MIGRATION_LIMIT
from ..mm import MAX_FOLIO_ORDER, memory_limit
from ..offload import CATALOGUE, DCBM_VARIANTS
from ._report import MIGRATION, Layout

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """``1G``, ``512M``, ``64K``, ``4096`` (binary units) -> bytes."""
    s = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = s[-1:] if s[-1:] in _UNITS and s[-1:] != "" else ""
    number = s[: len(s) - len(unit)]
    try:
        value = int(number) * _UNITS[unit]
    except ValueError:
        raise ValueError(f"bad size {text!r} (expected e.g. 1G, 512M, 64K)") from None
    if value <= 0:
        raise ValueError(f"size must be positive: {text!r}")
    return value


def max_total(mem_total: int | None = None) -> int:
    """The largest ``--total`` on a machine of ``mem_total`` bytes (default: this
    one's MemTotal): a quarter of it less 16 MiB, so the rig's two nodes of
    ``total`` plus their slack (8 MiB each; cat-latency's daemon 16 MiB) stay
    within mm's ``memory_limit`` (half)."""
    return memory_limit(mem_total) // 2 - (16 << 20)


def parse_total(text: str, mem_total: int | None = None) -> int:
    """``--total``: a size (``parse_size``) of at most :func:`max_total`, refused
    here, before the rig allocates anything."""
    value = parse_size(text)
    limit = max_total(mem_total)
    if value > limit:
        raise ValueError(f"--total {text.strip()}: larger than {limit >> 20}M, the most on "
                         f"this machine (a quarter of its memory: the two nodes need "
                         f"twice --total)")
    return value


def parse_int_list(text: str, what: str, lo: int, hi: int) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"bad {what} list {text!r} (expected comma-separated integers)") from None
    if not values or any(not lo <= v <= hi for v in values):
        raise ValueError(f"{what} must be {lo}..{hi}: {text!r}")
    return values


def parse_orders(text: str) -> list[int]:
    return parse_int_list(text, "folio order", 0, MAX_FOLIO_ORDER)


@dataclass(frozen=True)
class MigratorSpec:
    """``none``, ``mtcopy:THREADS``, ``dcbm:CHANNELS`` from ``--migrators``."""

    name: str
    param: int = 0

    def __str__(self) -> str:
        return self.name if not self.param else f"{self.name}:{self.param}"


def parse_migrators(text: str) -> list[MigratorSpec]:
    """``NAME[:PARAM],...`` against the migrator catalogue, read now (a test may add
    to it): each name's parameter range, (0, 0) for ``none``."""
    available = {e.name: (e.lo, e.hi) for e in CATALOGUE.values()}
    specs = []
    for item in text.split(","):
        name, _, param = item.strip().partition(":")
        if name not in available:
            # ``cpu`` was the vanilla path's bench name before it became ``none``
            # everywhere; a clear refusal beats an alias that keeps two names alive.
            hint = " (the vanilla kernel is now 'none')" if name == "cpu" else ""
            raise ValueError(f"unknown migrator {name!r}{hint} "
                             f"(available: {', '.join(sorted(available))})")
        lo, hi = available[name]
        if not param:
            value = lo
        else:
            try:
                value = int(param)
            except ValueError:
                raise ValueError(f"bad parameter in {item!r}") from None
            if not lo <= value <= hi or hi == 0:
                raise ValueError(f"{name} takes a parameter {lo}..{hi}, got {item!r}")
        specs.append(MigratorSpec(name, value))
    return specs


def parse_duration(text: str) -> float:
    """``30s``, ``10m``, ``2h`` or plain seconds -> seconds (positive)."""
    s = text.strip().lower()
    mult = {"s": 1, "m": 60, "h": 3600}.get(s[-1:])
    try:
        value = float(s[:-1]) * mult if mult else float(s)
    except ValueError:
        raise ValueError(f"bad duration {text!r} (expected e.g. 30s, 10m)") from None
    if value <= 0:
        raise ValueError(f"duration must be positive: {text!r}")
    return value


@dataclass(frozen=True)
class Experiment:
    """One ``migd bench`` experiment: its name, what it measures, its options, its runner."""

    name: str
    help: str  # one line, shown in ``migd bench --help``
    description: str  # a paragraph, shown in ``migd bench NAME --help``
    options: tuple[Option, ...]
    runner: Callable[..., Awaitable[Any]]  # async (BenchOptions) -> BenchReport
    table: Layout = MIGRATION  # its table, given to the report it returns


def _profile(text: str) -> str:
    get_profile(text)  # ValueError naming the profiles
    return text


# Options shared by the bench's experiments and replay: declared once here,
# adjusted per command with ``Option.but``.
PROFILE = Option("--profile", "profile", f"hardware profile: one of {', '.join(PROFILES)} "
                 "or a profile file (migd profile show NAME) (default: native on the real "
                 "clock, zen3-ptdma on the virtual one)",
                 _profile, metavar="NAME|FILE")
MIGRATORS = Option("--migrators", "migrators", "migrators, comma-separated: none (the vanilla "
                   "kernel), mtcopy:THREADS, dcbm:CHANNELS",
                   parse_migrators, "none", "M,...")
BATCH_PAGES = Option("--batch-pages", "batch_pages", "nr_max_batched_migration bounds in base "
                     "pages, comma-separated; one row each",
                     lambda t: parse_int_list(t, "--batch-pages", 1,
                                              NR_MAX_BATCHED_MIGRATION_LIMIT), "512", "N,...")
VARIANT = Option("--variant", "variant", "dcbm's iteration: v6 (channels claimed per batch "
                 "across devices: the published tables' semantics) or newest (acquired at "
                 "enable, one device group per batch)", str, "v6", choices=DCBM_VARIANTS)
