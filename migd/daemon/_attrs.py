"""The control tree's files, bound to a :class:`System` (SPEC section 5).

The tree is the knob table (``_knobs``: tunables) and the status/trigger
table (``_files``) expanded over the System's shape: one :class:`Attribute` per
file, whose ``show`` reads state (from any thread) and whose ``parse`` is the
knob's (on the writer's thread) and ``store`` applies and emits (in the trio
thread).
"""

from __future__ import annotations

from ..metrics import compile_server
from ..sysfs import Attribute, Directory, Owner, SysfsTree, compiled_ops
from ..tracing import TraceRing
from ._files import files
from ._knobs import Knob, knobs
from ._nodefs import add_node_files
from ._system import System
from ._tracefs import TRACEFS, tracefs_knobs


def all_knobs() -> list[Knob]:
    """Every file's declaration: tunables, then status files and triggers, then tracefs."""
    return knobs() + files() + tracefs_knobs()


def _attribute(sys: System, knob: Knob, inst) -> Attribute:
    if knob.stream is not None:
        return Attribute(stream=knob.stream(sys, inst))
    show = None if knob.mode & 0o444 == 0 else (lambda: knob.read(sys, inst))
    truncate = None if knob.truncate is None else (lambda: knob.truncate(sys, inst))
    view = None if knob.view is None else (lambda: knob.view(sys, inst))
    if knob.set is None:
        return Attribute(show, view=view)
    return Attribute(show, lambda value: knob.apply(sys, inst, value), truncate=truncate,
                     parse=lambda text: knob.parse_text(sys, inst, text), view=view)


def build_tree(sys: System) -> SysfsTree:
    tree = SysfsTree()
    # tracefs is root's and 0700, as it is mounted (TRACEFS_DEFAULT_MODE):
    # reading ``trace_pipe`` consumes, so no other user may take root's events
    tree.add(TRACEFS, Directory(owner=Owner(perm=0o700)))
    for knob in all_knobs():
        for path, inst in knob.expand(sys):
            tree.add(path, _attribute(sys, knob, inst))
    # Files whose layout is the kernel's own, not a knob's: the node
    # directories, proc/vmstat and numa_maps (drivers/base/node.c,
    # mm/vmstat.c, fs/proc/task_mmu.c).
    add_node_files(tree.add, sys)
    return tree


def compile_read_paths() -> None:
    """Load (or compile) the tree's compiled answers, the trace ring's
    compiled lines and the metrics server's compiled calls now, not on a
    first reader's thread."""
    compile_server()  # first: a start serves /metrics before it compiles the rest
    compiled_ops()
    TraceRing(1).view(1)


#: A child running :func:`compile_read_paths` into numba's cache, then the
#: warm-up's last stage (``warm_up_virtual_clock``, which the daemon reaches
#: ~8 s later and then loads), on the other CPU while the daemon compiles its
#: engine (a first start on a cold cache: ~4.5 s of the ~13 s it took in one
#: process; the last stage another ~1.3 s).
COMPILE_READ_PATHS = ("from migd.daemon import compile_read_paths; compile_read_paths(); "
                      "from migd.migrate import warm_up_virtual_clock; warm_up_virtual_clock()")
