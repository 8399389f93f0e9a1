"""The offload registry: RFC register/unregister semantics, SRCU-like wait."""

import errno

import pytest
import trio

from migd.mm import MigrateReason, TenantSpec
from migd.offload import CpuMigrator, Migrator, OffloadRegistry

from .helpers import Gate, MiB, make_engine, make_machine


class Other(Gate):
    name = "other"


def test_second_register_is_ebusy():
    reg = OffloadRegistry()
    reg.register(Gate())
    with pytest.raises(OSError) as e:
        reg.register(Other())
    assert e.value.errno == errno.EBUSY


@pytest.mark.parametrize("bad", [object(), None, CpuMigrator(), type("N", (Migrator,), {})()])
def test_register_rejects_bad_migrators_with_einval(bad):
    reg = OffloadRegistry()
    with pytest.raises(OSError) as e:
        reg.register(bad)
    assert e.value.errno == errno.EINVAL
    assert reg.active.is_default


def test_register_rejects_bad_reason_mask():
    reg = OffloadRegistry()
    with pytest.raises(OSError) as e:
        reg.register(Gate(), reason_mask=1 << 10)
    assert e.value.errno == errno.EINVAL


async def test_unregister_of_inactive_migrator_is_einval():
    reg = OffloadRegistry()
    with pytest.raises(OSError) as e:
        await reg.unregister(Gate())
    assert e.value.errno == errno.EINVAL


async def test_unregister_waits_for_in_flight_batch_then_cpu_is_default():
    m = make_machine(False)
    t = m.add_tenant(TenantSpec("t", 1 * MiB, order=0))
    e = make_engine(m, False)
    gate = Gate()
    e.registry.register(gate)
    unregistered = trio.Event()

    async def unregister():
        await e.registry.unregister(gate)
        unregistered.set()

    async with trio.open_nursery() as n:
        n.start_soon(e.migrate_pages, m.tenant_folios(t), 1, MigrateReason.MR_DEMOTION)
        await gate.entered.wait()
        n.start_soon(unregister)
        await trio.sleep(0.05)
        # the batch is still inside the migrator: unregister must not have returned
        assert not unregistered.is_set()
        assert e.registry.in_flight(gate) == 1
        assert e.registry.active.is_default  # new batches already go to the CPU
        gate.release.set()
        await unregistered.wait()
    assert e.registry.in_flight(gate) == 0
    assert m.check_integrity().ok
    assert (m.memory.nid_of[m.tenant_folios(t)] == 1).all()
