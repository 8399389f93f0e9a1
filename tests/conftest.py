import os

import numpy as np
import pytest
import trio

from migd.hw import Clock, VirtualClock, get_profile
from migd.migrate import MigrationEngine
from migd.mm import Machine, NodeSpec, TenantSpec

MiB = 1 << 20


def make_machine(virtual: bool, node_mib: int = 32, words_per_page: int | None = None) -> Machine:
    wpp = words_per_page if words_per_page is not None else (8 if virtual else None)
    return Machine([NodeSpec(node_mib * MiB, "dram", demotion_target=1),
                    NodeSpec(node_mib * MiB, "far")], words_per_page=wpp)


def make_engine(machine: Machine, virtual: bool) -> MigrationEngine:
    return MigrationEngine(machine, VirtualClock() if virtual else Clock(),
                           get_profile("zen3-ptdma"))


@pytest.fixture
def autojump_clock():
    return trio.testing.MockClock(autojump_threshold=0)


__all__ = ["MiB", "TenantSpec", "make_engine", "make_machine", "np"]


def thread_nice(pid: int) -> dict[int, int]:
    """Each thread's nice value, from /proc (field 19 of stat)."""
    nice = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            nice[int(tid)] = int(f.read().rsplit(")", 1)[1].split()[16])
    return nice
