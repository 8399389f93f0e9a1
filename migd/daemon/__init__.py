"""``migd run``: the daemon (config, the emulated kernel, its control tree)."""

from ._attrs import build_tree, compile_read_paths
from ._callers import CALLERS
from ._config import MAX_CONFIG_BYTES, Config, ConfigError, check_daemon_option, load_config
from ._knobs import soak_fault_settings, soak_writes
from ._run import run_daemon, system_running
from ._system import System
from ._workloads import (
    compact_node,
    damon_migrate,
    demote_node,
    direct_compact,
    move_tenant,
    promote_node,
)

__all__ = ["CALLERS", "compact_node", "damon_migrate", "demote_node", "direct_compact",
           "move_tenant", "promote_node", "MAX_CONFIG_BYTES", "Config", "ConfigError", "System",
           "build_tree", "compile_read_paths",
           "check_daemon_option", "load_config", "run_daemon", "soak_fault_settings",
           "soak_writes", "system_running"]
