"""``migd run`` until the daemon lands: a live demo of the engine.

Three tenants with mutators on a two-node machine; the callers of
``migrate_pages()`` move, demote, promote and compact their memory, and a status
line is printed every second.  SIGINT/SIGTERM stop it between calls (never in
the middle of a batch), after which every page is verified.
"""

from __future__ import annotations

import signal
import sys

import numpy as np
import trio

from .hw import Clock, get_profile
from .migrate import MigrationEngine
from .mm import Machine, MigrateReason, NodeSpec, TenantSpec

MiB = 1 << 20


async def _main(duration: float) -> int:
    machine = Machine([NodeSpec(256 * MiB, "dram", demotion_target=1),
                       NodeSpec(256 * MiB, "far")])
    tenants = [machine.add_tenant(TenantSpec(f"t{o}", 32 * MiB, order=o, access_rate=5000))
               for o in (0, 4, 9)]
    engine = MigrationEngine(machine, Clock(), get_profile("native"))
    stop = trio.Event()
    rng = np.random.default_rng(0)
    reasons = [MigrateReason.MR_SYSCALL, MigrateReason.MR_DEMOTION,
               MigrateReason.MR_NUMA_MISPLACED, MigrateReason.MR_COMPACTION]

    async def workload() -> None:
        while not stop.is_set():
            t = tenants[rng.integers(len(tenants))]
            folios = machine.tenant_folios(t)
            folios = folios[rng.random(folios.size) < 0.25]
            reason = reasons[rng.integers(len(reasons))]
            target = 1 - int(machine.memory.nid_of[folios[0]]) if folios.size else 0
            folios = folios[machine.memory.nid_of[folios] != target]
            await engine.migrate_pages(folios, target, reason)
            await trio.sleep(0.05)

    async def status() -> None:
        while True:
            await trio.sleep(1)
            v = engine.statistics().vmstat
            stalls = sum(t.statistics().stalls for t in tenants)
            print(f"pgmigrate_success {v['pgmigrate_success']} pgmigrate_fail "
                  f"{v['pgmigrate_fail']} thp_migration_success {v['thp_migration_success']} "
                  f"tenant stalls {stalls}", flush=True)

    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async def on_signal() -> None:
                async for _ in signals:
                    stop.set()
                    return
            nursery.start_soon(on_signal)
            for i, t in enumerate(tenants):
                nursery.start_soon(machine.run_mutator, t, i)
            nursery.start_soon(status)
            if duration:
                nursery.start_soon(lambda: _stop_after(stop, duration))
            await workload()
            nursery.cancel_scope.cancel()
    report = machine.check_integrity()
    print(f"stopped: {report}", flush=True)
    return 0 if report.ok else 1


async def _stop_after(stop: trio.Event, seconds: float) -> None:
    await trio.sleep(seconds)
    stop.set()


def run_demo(duration: float = 0.0) -> int:
    print("migd: live demo of the engine (the daemon and its tree come next); "
          "Ctrl-C to stop", file=sys.stderr, flush=True)
    return trio.run(_main, duration)
