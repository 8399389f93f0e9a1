"""Configurations from text: ``--migrators none,dcbm:16,mtcopy:4`` times
``--batch-pages`` times ``--reason-mask``, one profile.

``none`` is the vanilla kernel, as everywhere; parameters and masks are
checked here, before any work.
"""

from __future__ import annotations

from ..bench import MigratorSpec, parse_int_list, parse_migrators
from ..hw import get_profile
from ..migrate import NR_MAX_BATCHED_MIGRATION_LIMIT
from ..mm import parse_reason_mask
from ._replay import Config


def parse_migrator_list(text: str) -> list[MigratorSpec]:
    return parse_migrators(text)


def parse_batch_pages(text: str) -> list[int]:
    return parse_int_list(text, "batch pages", 1, NR_MAX_BATCHED_MIGRATION_LIMIT)


def parse_mask(text: str) -> int:
    try:
        return parse_reason_mask(text)
    except ValueError as e:
        raise ValueError(f"--reason-mask: {e}") from None


def configs(migrators: str, batch_pages: str = "512", reason_masks: list[str] | None = None,
            profile: str = "zen3-ptdma") -> list[Config]:
    """Every combination; ValueError with a one-line message on bad text."""
    get_profile(profile)
    specs = parse_migrator_list(migrators)
    bounds = parse_batch_pages(batch_pages)
    masks = [parse_mask(m) for m in (reason_masks or ["all"])]
    out = []
    for spec in specs:
        for b in bounds:
            for m in masks if spec.name != "none" else masks[:1]:
                out.append(Config(spec, b, m, profile))
    return list(dict.fromkeys(out))
