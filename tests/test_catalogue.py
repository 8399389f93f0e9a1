"""Adding a migrator is its class plus one catalogue entry: ``memcpy-test`` here.

With nothing else edited, the new migrator must appear in the tree (its own
files, the migrator list), the config schema, the metrics' label sets, bench's
``--migrators`` parsing and runs, and the soak's knob flipper.  So must each
parameter and counter it declares (``widgets``, ``verify``, ``batches``): in
the tree, the config, the metrics, the soak's flipper and the README reference.
"""

import numpy as np
import pytest

from migd import bench
from migd.daemon import ConfigError, System, build_tree, load_config, soak_writes
from migd.daemon.reference import render
from migd.offload import CATALOGUE, CopyBatch, CpuMigrator, Migrator, MigratorEntry, Param
from migd.sysfs import Anything, Bool, Int

from .helpers import SMALL_CONFIG as CONFIG
from .helpers import scrape_collector as scrape


class MemcpyTest(Migrator):
    """Copies on this CPU; ``widgets`` and ``verify`` are its parameters,
    ``batches`` its counter, each stored through its own setter."""

    name = "memcpy-test"

    def __init__(self, widgets: int) -> None:
        self.widgets = widgets
        self.verify = False
        self.batches = 0
        self.stores: list[tuple[str, object]] = []

    def set_widgets(self, n: int) -> None:
        self.stores.append(("widgets", n))
        self.widgets = n

    def set_verify(self, on: bool) -> None:
        self.stores.append(("verify", on))
        self.verify = on

    async def migrate_offc(self, batch: CopyBatch) -> int:
        self.batches += 1
        return await CpuMigrator().migrate_offc(batch)


ENTRY = MigratorEntry(
    "memcpy-test", "a test migrator", "kernel/memcpy_test", lambda dma, n: MemcpyTest(n),
    (Param("widgets", "widgets per batch", Int(1, 8), MemcpyTest.set_widgets, default=3),
     Param("verify", "1: compare each copy", Bool(), MemcpyTest.set_verify, default=False),
     Param("batches", "batches copied; any write resets this view to 0", Anything(),
           counter=True)))



@pytest.fixture(autouse=True)
def memcpy_test(monkeypatch):
    monkeypatch.setitem(CATALOGUE, ENTRY.name, ENTRY)


async def test_it_appears_in_the_tree_and_migrates():
    sys = System(load_config(text=CONFIG))
    tree = build_tree(sys)
    assert sorted(tree.listdir("kernel/memcpy_test")) == [
        "auto", "batches", "offloading", "reason_mask", "verify", "widgets"]
    assert tree.read("kernel/memcpy_test/widgets") == b"3\n"
    await tree.write("kernel/memcpy_test/widgets", b"8")
    assert sys.migrators["memcpy-test"].widgets == 8
    with pytest.raises(OSError):
        await tree.write("kernel/memcpy_test/widgets", b"9")
    await tree.write("kernel/mm/migrate_offload/migrator", b"memcpy-test")
    assert tree.read("kernel/mm/migrate_offload/migrator") == \
        b"none mtcopy dcbm [memcpy-test]\n"
    t = sys.tenants[0]
    await sys.engine.move_pages(t, np.arange(t.nr_pages), 1)
    assert sys.migrators["memcpy-test"].batches > 0
    s = scrape(sys)
    labels = (("migrator", "memcpy-test"), ("reason", "syscall_or_cpuset"))
    assert s[("migd_migrated_folios_total", labels)] == 512
    assert "`kernel/memcpy_test/widgets` | rw | 1..8 | `migrator.memcpy-test.widgets = 3`" \
        in render()


def test_it_appears_in_the_config_schema():
    cfg = load_config(text=CONFIG + "[migrator]\nactive = 'memcpy-test'\n"
                      "[migrator.memcpy-test]\nwidgets = 5\nauto = true\n")
    sys = System(cfg)
    assert sys.migrators["memcpy-test"].widgets == 5 and sys.migrators["memcpy-test"].auto
    with pytest.raises(ConfigError, match=r"migrator.memcpy-test.widgets: expected an integer "
                                          r"1..8, got 9"):
        load_config(text="[migrator.memcpy-test]\nwidgets = 9\n")


def test_it_appears_in_the_metrics_before_it_runs():
    s = scrape(System(load_config(text=CONFIG)))
    assert s[("migd_batches_total", (("migrator", "memcpy-test"),))] == 0


def test_bench_parses_builds_and_runs_it():
    specs = bench.parse_migrators("none,memcpy-test:7")
    assert [str(s) for s in specs] == ["none", "memcpy-test:7"]
    with pytest.raises(ValueError, match="1..8"):
        bench.parse_migrators("memcpy-test:9")
    report = bench.run("throughput", bench.BenchOptions(
        clock="virtual", orders=[0], migrators=specs[1:], total=4 << 20))
    assert [(r.migrator, r.param) for r in report.rows] == [("memcpy-test", 7)]
    assert report.rows[0].gbps > 0


def test_the_soak_flips_it():
    writes = dict(soak_writes(System(load_config(text=CONFIG)), faults=False))
    assert "memcpy-test" in writes["kernel/mm/migrate_offload/migrator"]
    assert {"1", "8"} <= set(writes["kernel/memcpy_test/widgets"])
    assert "kernel/memcpy_test/reason_mask" in writes


def test_without_the_entry_it_is_nowhere(monkeypatch):
    monkeypatch.delitem(CATALOGUE, ENTRY.name)
    sys = System(load_config(text=CONFIG))
    assert "memcpy_test" not in build_tree(sys).listdir("kernel")
    assert "memcpy-test" not in dict(soak_writes(sys, faults=False))[
        "kernel/mm/migrate_offload/migrator"]


async def test_its_own_parameters_are_files_stored_through_its_setters():
    sys = System(load_config(text=CONFIG))
    tree = build_tree(sys)
    mig = sys.migrators["memcpy-test"]
    mig.stores.clear()  # the config's defaults were stored at start
    assert tree.read("kernel/memcpy_test/verify") == b"0\n"
    await tree.write("kernel/memcpy_test/verify", b"y")
    assert tree.read("kernel/memcpy_test/verify") == b"1\n"
    await tree.write("kernel/memcpy_test/widgets", b"0x2")
    assert mig.stores == [("verify", True), ("widgets", 2)]
    with pytest.raises(OSError):
        await tree.write("kernel/memcpy_test/verify", b"2")  # kstrtobool
    assert mig.stores == [("verify", True), ("widgets", 2)]  # nothing stored
    await tree.write("kernel/mm/migrate_offload/migrator", b"memcpy-test")
    t = sys.tenants[0]
    await sys.engine.move_pages(t, np.arange(t.nr_pages), 1)
    assert tree.read("kernel/memcpy_test/batches") == f"{mig.batches}\n".encode()
    await tree.write("kernel/memcpy_test/batches", b"0")
    assert tree.read("kernel/memcpy_test/batches") == b"0\n"
    s = scrape(sys)  # the metric keeps counting: only the tree's view was reset
    assert s[("migd_migrator_param_batches_total", (("migrator", "memcpy-test"),))] \
        == mig.batches > 0
    assert s[("migd_migrator_param_verify", (("migrator", "memcpy-test"),))] == 1
    assert s[("migd_migrator_param_widgets", (("migrator", "memcpy-test"),))] == 2


def test_its_own_parameters_are_config_keys_soak_values_and_reference_rows():
    cfg = load_config(text=CONFIG + "[migrator.memcpy-test]\nverify = true\n")
    sys = System(cfg)
    assert sys.migrators["memcpy-test"].stores == [("widgets", 3), ("verify", True)]
    with pytest.raises(ConfigError, match="migrator.memcpy-test.verify: expected true or false"):
        load_config(text="[migrator.memcpy-test]\nverify = 1\n")
    with pytest.raises(ConfigError, match="migrator.memcpy-test.batches: unknown key"):
        load_config(text="[migrator.memcpy-test]\nbatches = 1\n")  # a counter has none
    writes = dict(soak_writes(sys, faults=False))
    assert set(writes["kernel/memcpy_test/verify"]) == {"0", "1"}
    assert writes["kernel/memcpy_test/batches"] == ("0",)
    table = render()
    assert "| `kernel/memcpy_test/verify` | rw | 1/y/on or 0/n/off | " \
           "`migrator.memcpy-test.verify = false` | yes | 1: compare each copy |" in table
    assert "| `kernel/memcpy_test/batches` | rw | any (resets) |  | yes | batches copied" in table
    exported = {name.removeprefix("migd_migrator_param_"): v
                for (name, labels), v in scrape(sys).items()
                if name.startswith("migd_migrator_param_")
                and labels == (("migrator", "memcpy-test"),)}
    assert exported == {"widgets": 3, "verify": 1, "batches_total": 0}
