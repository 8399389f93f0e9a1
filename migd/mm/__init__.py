"""The emulated machine: nodes, folios, tenants (mm/ in the kernel)."""

from ._content import page_keys, verify_pages, write_pages
from ._machine import IntegrityReport, Machine
from ._memory import (
    MAX_NUMNODES,
    WORDS_PER_PAGE_REAL,
    Node,
    NodeSpec,
    PhysMemory,
    host_memory,
    memory_limit,
)
from ._migrate_mode import (
    MR_TYPES,
    REASON_MASK_ALL,
    MigrateMode,
    MigrateReason,
    format_reason_mask,
    parse_reason_mask,
)
from ._page import (
    FOLIO_CONTENT_COPIED,
    FOLIO_WAS_MAPPED,
    FOLIO_WAS_MLOCKED,
    HPAGE_PMD_NR,
    HPAGE_PMD_ORDER,
    MAX_FOLIO_ORDER,
    NR_MAX_BATCHED_MIGRATION,
    NR_MAX_BATCHED_MIGRATION_LIMIT,
    PAGE_SIZE,
    PG_isolated,
    PG_locked,
    PG_mlocked,
    PG_movable_ops,
)
from ._tenant import Tenant, TenantSpec, TenantStatistics

__all__ = [
    "FOLIO_CONTENT_COPIED", "FOLIO_WAS_MAPPED", "FOLIO_WAS_MLOCKED", "HPAGE_PMD_NR",
    "HPAGE_PMD_ORDER", "MAX_FOLIO_ORDER", "MAX_NUMNODES", "PAGE_SIZE", "PG_isolated",
    "PG_locked", "PG_mlocked", "PG_movable_ops", "WORDS_PER_PAGE_REAL", "IntegrityReport",
    "Machine", "Node", "NodeSpec", "PhysMemory", "Tenant", "TenantSpec", "TenantStatistics",
    "page_keys", "verify_pages", "write_pages", "host_memory", "memory_limit", "MR_TYPES",
    "REASON_MASK_ALL", "MigrateMode", "MigrateReason", "format_reason_mask", "parse_reason_mask",
    "NR_MAX_BATCHED_MIGRATION", "NR_MAX_BATCHED_MIGRATION_LIMIT",
]
