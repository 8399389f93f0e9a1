"""The migration engine: ``migrate_pages()`` with batch copy and offload dispatch.

The ledger: every batch, whichever way it ran, is reported as a
:class:`BatchRecords` (numpy columns per batch, and per folio its
unmap-to-remap time and owning tenant, ``folio_tenant``), from which the
engine's books, histograms, trace events and metrics are all derived
(``EngineBooks.post``).  Per-tenant or per-caller accounting reads the same
records: ``MigrationEngine.subscribe(listener)``.
"""

from ._budget import BudgetStatistics
from ._engine import (
    MAX_INACCESSIBLE_US_LIMIT,
    NR_MAX_BATCHED_MIGRATION,
    NR_MAX_BATCHED_MIGRATION_LIMIT,
    MigrationEngine,
)
from ._migrate_batch import (
    NR_MAX_MIGRATE_ASYNC_RETRY,
    NR_MAX_MIGRATE_PAGES_RETRY,
    NR_MAX_MIGRATE_SYNC_RETRY,
)
from ._stats import (
    MIGRATOR_ERROR,
    VMSTAT_ITEMS,
    BatchRecord,
    BatchRecords,
    EngineStatistics,
    HistogramSnapshot,
    MigrateCall,
    MigrateResult,
    MigrateStats,
    MigratorError,
)
from ._warmup import compile_cache, warm_up, warm_up_virtual_clock
from ._way import ALL_PATHS, BATCH_COPY_MODES, LATENCY_TOLERANT, Copier, Path, Way

__all__ = [
    "MAX_INACCESSIBLE_US_LIMIT", "BudgetStatistics",
    "NR_MAX_BATCHED_MIGRATION", "NR_MAX_BATCHED_MIGRATION_LIMIT", "NR_MAX_MIGRATE_ASYNC_RETRY",
    "NR_MAX_MIGRATE_PAGES_RETRY", "NR_MAX_MIGRATE_SYNC_RETRY", "VMSTAT_ITEMS", "BatchRecord",
    "BatchRecords", "compile_cache", "warm_up", "warm_up_virtual_clock", "ALL_PATHS",
    "BATCH_COPY_MODES", "LATENCY_TOLERANT", "Copier", "Path", "Way",
    "EngineStatistics", "HistogramSnapshot", "MigrateCall", "MigrateResult", "MigrateStats",
    "MigrationEngine", "MigratorError", "MIGRATOR_ERROR",
]
