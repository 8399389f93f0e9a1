"""Configurations from the command line: ``--migrators none,dcbm:16,mtcopy:4``
times ``--batch-pages`` times ``--reason-mask``, one profile.

The options are declared once (``OPTIONS``, the CLI layer's ``Option``), the
shared ones as the bench declares them, with replay's defaults; ``none`` is the
vanilla kernel, as everywhere; parameters and masks are checked when the
text is parsed, before any work.
"""

from __future__ import annotations

import os

from .._args import Option
from ..bench import BATCH_PAGES, MIGRATORS, PROFILE, VARIANT, MigratorSpec, parse_size
from ..mm import parse_reason_mask
from ._replay import Config


def parse_mask(text: str) -> int:
    try:
        return parse_reason_mask(text)
    except ValueError as e:
        raise ValueError(f"--reason-mask: {e}") from None


def _budget(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"--budget-us: not a number: {text!r}") from None
    if not value > 0:
        raise ValueError(f"--budget-us must be positive: {text}")
    return value


def ram_bytes() -> int:
    """This machine's RAM: MemTotal (sysinfo's totalram, which sysconf reports)."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def gib(nbytes: float) -> str:
    return f"{nbytes / (1 << 30):.1f}G"


def _max_memory(text: str) -> int:
    try:
        value = parse_size(text)
    except ValueError as e:
        raise ValueError(f"--max-memory: {e}") from None
    if value > ram_bytes():
        raise ValueError(f"--max-memory: {text} is more than this machine's RAM "
                         f"({gib(ram_bytes())})")
    return value


#: The default bound: a quarter of RAM, room for the rest of the machine.
DEFAULT_MAX_MEMORY = ram_bytes() // 4

OPTIONS = (
    Option("trace", "trace", "ftrace text files", str, metavar="TRACE", repeatable=True),
    MIGRATORS.but(default="none,mtcopy:2,dcbm:4",
                  help="configurations to replay through, comma-separated: none (the "
                  "vanilla kernel), mtcopy:THREADS, dcbm:CHANNELS"),
    PROFILE.but(default="zen3-ptdma", help=PROFILE.help.partition(" (default")[0]),
    BATCH_PAGES.but(help="nr_max_batched_migration values, comma-separated; a configuration "
                    "each"),
    Option("--reason-mask", "reason_masks", "offload reason mask, repeatable: all, none, a "
           "number or reason names", parse_mask, "all", "MASK", repeatable=True),
    VARIANT,
    Option("--budget-us", "budget_us", "p99 inaccessible-time budget of the recommendation, "
           "in microseconds", _budget, "1000", "US"),
    Option("--max-memory", "max_memory", "the most memory the replay may take beyond the "
           "interpreter: the trace's calls and the emulated machine, sized by the largest "
           "call or cluster of overlapping calls; a trace needing more is refused before "
           "the replay starts", _max_memory, f"{DEFAULT_MAX_MEMORY >> 20}M", "SIZE",
           shown=f"a quarter of RAM, {gib(DEFAULT_MAX_MEMORY)} here"),
)


def configs(migrators: list[MigratorSpec], batch_pages: list[int], reason_masks: list[int],
            profile: str, variant: str = "v6") -> list[Config]:
    """Every combination (``none`` once per bound: it offloads nothing, so the
    mask does not change it), in order, without repeats."""
    out = []
    for spec in migrators:
        for b in batch_pages:
            for m in reason_masks if spec.name != "none" else reason_masks[:1]:
                out.append(Config(spec, b, m, profile, variant))
    return list(dict.fromkeys(out))
