"""The migration engine: ``migrate_pages()`` with batch copy and offload dispatch."""

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
from ._warmup import compile_cache, warm_up
from ._way import ALL_PATHS, BATCH_COPY_MODES, LATENCY_TOLERANT, Copier, Path, Way

__all__ = [
    "MAX_INACCESSIBLE_US_LIMIT", "BudgetStatistics",
    "NR_MAX_BATCHED_MIGRATION", "NR_MAX_BATCHED_MIGRATION_LIMIT", "NR_MAX_MIGRATE_ASYNC_RETRY",
    "NR_MAX_MIGRATE_PAGES_RETRY", "NR_MAX_MIGRATE_SYNC_RETRY", "VMSTAT_ITEMS", "BatchRecord",
    "BatchRecords", "compile_cache", "warm_up", "ALL_PATHS", "BATCH_COPY_MODES", "LATENCY_TOLERANT",
    "Copier", "Path", "Way",
    "EngineStatistics", "HistogramSnapshot", "MigrateCall", "MigrateResult", "MigrateStats",
    "MigrationEngine", "MigratorError", "MIGRATOR_ERROR",
]
