"""The control tree: a sysfs-like model of files, and its FUSE binding."""

from ._fuse import clear_stale_mount, serve, unmount
from ._tree import Attribute, Directory, SysfsTree, parse_store_value

__all__ = ["Attribute", "Directory", "SysfsTree", "clear_stale_mount", "parse_store_value",
           "serve", "unmount"]
