"""Bounds on what a user controls: bench's memory and --total, the config's size and sizes.

Each bound is refused in one line before anything is allocated; the bench rig
reuses one arena across rows, so a run holds one rig's memory whatever its rows.
"""

import resource

import numpy as np
import pytest
import trio

from migd.bench import BenchOptions, MigratorSpec, Rig, parse_total
from migd.cli import main
from migd.hw import mock_clock
from migd.mm import Machine, NodeSpec

MiB = 1 << 20
WALL = ("wall_seconds", "sim_speed")


def _measured(row) -> dict:
    return {k: v for k, v in row.as_json().items() if k not in WALL}


def test_a_rig_on_the_previous_rigs_arena_measures_as_a_fresh_one():
    """Same rows (simulated times included) as a rig built from nothing, on the
    very same arena array: no second ~2 x total allocation."""
    opts = BenchOptions(clock="virtual", total=8 * MiB)
    spec = MigratorSpec("dcbm", 4)

    async def rows(reuse: bool):
        first = Rig(opts, 0)
        arena = first.machine.memory.arena
        await first.migrate(spec, 512)
        second = Rig(opts, 4, reuse=first if reuse else None)
        return await second.migrate(spec, 512), second.machine.memory.arena is arena

    fresh, shared_fresh = trio.run(rows, False, clock=mock_clock())
    reused, shared = trio.run(rows, True, clock=mock_clock())
    assert shared and not shared_fresh
    assert _measured(reused) == _measured(fresh)


def test_a_reused_real_arena_verifies_every_page():
    """Real bytes: the previous rows' content left in the arena is never read as
    the new tenant's (every page the tenant maps is written at fault-in)."""
    opts = BenchOptions(clock="real", total=8 * MiB, verify=True)

    async def main():
        rig = None
        verified = []
        for order in (9, 0, 4):
            rig = Rig(opts, order, reuse=rig)
            verified.append((await rig.migrate(MigratorSpec("none"), 512)).verified)
        return verified

    assert trio.run(main) == [True, True, True]


def test_a_machine_refuses_an_arena_of_another_shape():
    nodes = [NodeSpec(4 * MiB)]
    with pytest.raises(ValueError, match="arena of shape"):
        Machine(nodes, words_per_page=1, arena=np.zeros((4, 1), dtype=np.uint64))


# -- bench --total ------------------------------------------------------------------------


def test_total_is_bounded_by_a_quarter_of_the_machines_memory():
    eight_gib = 8 << 30
    assert parse_total("2G", mem_total=eight_gib) == 2 << 30
    with pytest.raises(ValueError, match=r"--total 2049M: larger than 2048M") as e:
        parse_total("2049M", mem_total=eight_gib)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("experiment", ["throughput", "memcpy", "batch-sweep"])
def test_a_total_past_the_machines_memory_is_one_line_before_allocating(capsys, experiment):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert main(["bench", experiment, "--total", "1T", "--clock", "real"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("migd bench: --total 1T: larger than") and err.count("\n") == 1
    # Nothing near a node of 1T was touched (the peak RSS moved by less than 64 MiB).
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 64 << 10
