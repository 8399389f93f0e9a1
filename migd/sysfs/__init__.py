"""The control tree: a sysfs-like model of files, and its FUSE binding."""

from ._cread import compiled_ops
from ._fuse import (
    TREE_THREAD_NICE,
    clear_stale_mount,
    is_mounted,
    raise_thread_priority,
    serve,
    unmount,
    wait_mounted,
)
from ._kstrtox import kstrtobool, kstrtoint, kstrtoll, kstrtouint, kstrtoul, kstrtoull
from ._parsers import Anything, Bool, Choice, Int, parse_bool, parse_int
from ._tree import STORE_MAX, Attribute, Directory, Owner, SysfsTree, parse_store_value
from ._tstate import ThreadStates

__all__ = ["STORE_MAX", "TREE_THREAD_NICE", "Anything", "Attribute", "Bool", "Choice", "Directory",
           "Int", "Owner", "SysfsTree", "ThreadStates", "parse_bool", "parse_int",
           "clear_stale_mount", "compiled_ops", "is_mounted", "kstrtobool", "kstrtoint",
           "kstrtoll", "kstrtoul", "kstrtouint", "kstrtoull", "parse_store_value",
           "raise_thread_priority", "serve", "unmount", "wait_mounted"]
