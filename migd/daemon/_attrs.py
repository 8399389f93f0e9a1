"""The control tree's files, bound to a :class:`System` (SPEC section 5).

The tree is the knob table (``_knobs``: tunables) and the status/trigger
table (``_files``) expanded over the System's shape: one :class:`Attribute` per
file, whose ``show`` reads state (from any thread) and whose ``store`` is the
knob's (parse once, apply, emit; in the trio thread).
"""

from __future__ import annotations

from ..sysfs import Attribute, SysfsTree
from ._files import files
from ._knobs import Knob, knobs
from ._nodefs import add_node_files
from ._system import System
from ._tracefs import add_tracefs


def all_knobs() -> list[Knob]:
    """Every file's declaration: tunables, then status files and triggers."""
    return knobs() + files()


def _attribute(sys: System, knob: Knob, inst) -> Attribute:
    show = None if knob.mode & 0o444 == 0 else (lambda: knob.read(sys, inst))
    store = None if knob.set is None else (lambda text: knob.store(sys, inst, text))
    return Attribute(show, store)


def build_tree(sys: System) -> SysfsTree:
    tree = SysfsTree()
    for knob in all_knobs():
        for path, inst in knob.expand(sys):
            tree.add(path, _attribute(sys, knob, inst))
    # Files whose layout is the kernel's own, not a knob's: the node
    # directories, proc/vmstat and numa_maps (drivers/base/node.c,
    # mm/vmstat.c, fs/proc/task_mmu.c) and tracefs (declared by its events).
    add_node_files(tree.add, sys)
    add_tracefs(tree.add, sys)
    return tree
