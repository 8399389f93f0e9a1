"""The emulated machine: nodes, folios, tenants (mm/ in the kernel).

Besides the machine, the compiled helpers other packages' compiled code calls
(the migration engine's and the DMA engine's kernels): the buddy allocator,
the copy routines, rmap's per-folio steps and the raw atomics and clocks, as
include/linux/rmap.h declares try_to_migrate() for mm/migrate.c.
"""

from ._buddy import alloc_block, free_block
from ._content import page_keys, verify_pages, write_pages
from ._copy import (
    compile_copies,
    copy_folio_prefixes,
    copy_folios,
    cpu_threads_busy,
    folios_copy_mt,
    folios_mc_copy,
    folios_set_content_copied,
    memcpy,
    wake_helpers,
)
from ._machine import ZERO_VERSION, IntegrityReport, Machine
from ._memory import (
    MAX_NUMNODES,
    WORDS_PER_PAGE_REAL,
    Node,
    NodeSpec,
    PhysMemory,
    host_memory,
    madvise_populate_write,
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
from ._mtpool import copy_piece
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
    PG_writeback,
)
from ._raw import (
    atomic_add,
    atomic_cas,
    atomic_load,
    atomic_store,
    cpu_relax,
    futex_wait,
    futex_wake,
    ktime_get_ns,
    thread_cpu_clock_ns,
)
from ._rmap import (
    NOT_COPIED_MASK,
    UNLOCK_MASK,
    folio_free,
    folio_init,
    folio_isolate_batch,
    folio_putback_batch,
    remove_migration_ptes,
    try_to_migrate,
)
from ._tenant import Tenant, TenantSpec, TenantStatistics

__all__ = [
    "FOLIO_CONTENT_COPIED", "FOLIO_WAS_MAPPED", "FOLIO_WAS_MLOCKED", "HPAGE_PMD_NR",
    "HPAGE_PMD_ORDER", "MAX_FOLIO_ORDER", "MAX_NUMNODES", "PAGE_SIZE", "PG_isolated",
    "PG_locked", "PG_mlocked", "PG_movable_ops", "PG_writeback", "WORDS_PER_PAGE_REAL",
    "ZERO_VERSION",
    "IntegrityReport",
    "Machine", "Node", "NodeSpec", "PhysMemory", "Tenant", "TenantSpec", "TenantStatistics",
    "page_keys", "verify_pages", "write_pages", "host_memory", "madvise_populate_write",
    "memory_limit", "MR_TYPES",
    "REASON_MASK_ALL", "MigrateMode", "MigrateReason", "format_reason_mask", "parse_reason_mask",
    "NR_MAX_BATCHED_MIGRATION", "NR_MAX_BATCHED_MIGRATION_LIMIT",
    # compiled helpers for the engine's and the DMA engine's kernels
    "NOT_COPIED_MASK", "UNLOCK_MASK", "alloc_block", "atomic_add", "atomic_cas",
    "atomic_load",
    "atomic_store", "compile_copies", "copy_folio_prefixes", "copy_folios", "copy_piece",
    "cpu_relax", "cpu_threads_busy", "folio_free", "folio_init", "folio_isolate_batch",
    "folio_putback_batch", "folios_copy_mt", "folios_mc_copy", "folios_set_content_copied",
    "free_block", "futex_wait", "futex_wake", "ktime_get_ns", "memcpy", "remove_migration_ptes",
    "thread_cpu_clock_ns", "try_to_migrate", "wake_helpers",
]
