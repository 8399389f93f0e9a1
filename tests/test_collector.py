"""The Prometheus collector, in process, through a ``CollectorRegistry``.

test_metrics checks the live endpoint with promtool and a real Prometheus;
here the translation itself: label sets complete from the first scrape,
counters that agree with the kernel's vmstat, and tree resets that move only
the tree's view.
"""

import numpy as np
import trio

from migd.daemon import System, build_tree, load_config
from migd.mm import PAGE_SIZE, MigrateReason

from .helpers import SMALL_CONFIG as CONFIG
from .helpers import move_with_each_migrator
from .helpers import scrape_collector as scrape


def total(samples: dict, name: str, **labels) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def test_every_migrator_and_reason_is_exported_at_zero_before_any_migration():
    s = scrape(System(load_config(text=CONFIG)))
    for m in ("none", "mtcopy", "dcbm"):
        assert s[("migd_batches_total", (("migrator", m),))] == 0
        for r in MigrateReason:
            key = ("migd_migrated_folios_total", (("migrator", m), ("reason", r.label)))
            assert s[key] == 0
    assert s[("migd_migrator_info", (("migrator", "none"), ("profile", "native")))] == 1


async def test_bytes_by_migrator_add_up_to_the_kernels_pgmigrate_success():
    sys = System(load_config(text=CONFIG))
    await move_with_each_migrator(sys)
    s = scrape(sys)
    for m in ("none", "mtcopy", "dcbm"):  # 512 base pages each time
        assert total(s, "migd_migrated_folios_total", migrator=m) == 512, m
    pgmigrate = total(s, "migd_pgmigrate_success_pages_total")
    assert pgmigrate == 3 * 512
    assert total(s, "migd_migrated_bytes_total") == pgmigrate * PAGE_SIZE
    assert total(s, "migd_dma_channel_transferred_bytes_total") == 512 * PAGE_SIZE
    assert s[("migd_migrator_info", (("migrator", "dcbm"), ("profile", "native")))] == 1


async def test_a_tree_reset_moves_the_view_not_the_counter():
    sys = System(load_config(text=CONFIG))
    tree = build_tree(sys)
    await move_with_each_migrator(sys)
    before = scrape(sys)
    assert tree.read("module/dcbm/parameters/folios_migrated") == b"512\n"
    await tree.write("module/dcbm/parameters/folios_migrated", b"0")
    assert tree.read("module/dcbm/parameters/folios_migrated") == b"0\n"
    after = scrape(sys)
    assert {k: v for k, v in after.items() if k[0].endswith("_total")} == \
        {k: v for k, v in before.items() if k[0].endswith("_total")}


async def test_an_injected_dma_error_is_counted_by_point_and_cause():
    sys = System(load_config(text=CONFIG + "[migrator]\nactive = 'dcbm'\n"))
    await sys.set_migrator("dcbm")
    sys.faults["fail_dma_desc"].set(probability=100, interval=1, times=-1)
    t = sys.tenants[0]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sys.dma.run)
        await sys.engine.move_pages(t, np.arange(t.nr_pages), 1)
        nursery.cancel_scope.cancel()
    s = scrape(sys)
    assert s[("migd_faults_injected_total", (("point", "fail_dma_desc"),))] > 0
    assert s[("migd_offload_fallback_folios_total", (("cause", "EIO"),))] > 0
    assert total(s, "migd_migrated_folios_total") == 512  # the CPU copied them: none lost
