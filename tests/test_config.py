"""``etc/migd.toml`` loading, in process: defaults, ranges and messages that name the key.

The ``[migrator]`` tables are generated from the knob table, so their ranges are
checked here against SPEC's (the tree's); test_daemon keeps one bad config that
goes through ``migd run`` (exit 2, one line).
"""

import tomllib
from pathlib import Path

import pytest

from migd.daemon import ConfigError, System, load_config
from migd.mm import REASON_MASK_ALL, MigrateReason

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("text, message", [
    ("[daemon]\nmetrics = 3\n", "daemon.metrics: expected a string, got 3"),
    ("[daemon]\nmount = 3\n", "daemon.mount: expected a path, not empty, without NUL"),
    ("[[tenants]]\nname='a'\norder = 12\n",
     "tenants[0].order: expected an integer 0..9, got 12"),
    ("[migrator]\nactive = 'gpu'\n", "migrator.active: expected one of none, mtcopy, dcbm"),
    ("[migrator.dcbm]\nnr_dma_chan = 17\n",
     "migrator.dcbm.nr_dma_chan: expected an integer 1..16, got 17"),
    ("[migrator.dcbm]\nnr_dma_chan = 0\n", "migrator.dcbm.nr_dma_chan: expected an integer 1..16"),
    ("[migrator.mtcopy]\nthreads = 65\n", "migrator.mtcopy.threads: expected an integer 1..64"),
    ("[migrator]\nnr_max_batched_migration = 262145\n",
     "migrator.nr_max_batched_migration: expected an integer 1..262144"),
    ("[migrator.dcbm]\nreason_mask = 'demotion,bogus'\n", "migrator.dcbm.reason_mask: expected"),
    ("[migrator.dcbm]\nauto = 1\n", "migrator.dcbm.auto: expected true or false, got 1"),
    ("[migrator.gpu]\nx = 1\n", "migrator.gpu: unknown key"),
    ("[migrator.dcbm]\nthreads = 2\n", "migrator.dcbm.threads: unknown key"),
    ("[dma]\nprofile = 'x'\n", "dma.profile: expected one of"),
    ("[workloads.move]\nspeed = 1\n", "workloads.move.speed: unknown key"),
    ("[workloads.moving]\n", "workloads.moving: unknown workload"),
    ("[[nodes]]\ncapacity = '3M'\n", "nodes[0].capacity: expected a size"),
    ("[[nodes]]\ndemotion_target = 0\n", "nodes[0].demotion_target: expected another node"),
    ("[[tenants]]\nhome_node = 2\n", "tenants[0].home_node: expected a node index 0..1"),
    ("bogus = 1\n", "bogus: unknown key"),
    ("migrator = 3\n", "migrator: expected a table"),
    ("[daemon\n", "not valid TOML"),
])
def test_bad_config_is_refused_with_the_key_and_what_was_expected(text, message):
    with pytest.raises(ConfigError) as e:
        load_config(text=text)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_defaults_are_spec_s():
    cfg = load_config(text="")
    assert cfg.migrator == {"active": "none", "nr_max_batched_migration": 512,
                            "max_inaccessible_us": 0, "batch_copy": "gated",
                            "decline_latency_sensitive": False}
    assert cfg.migrators["dcbm"]["reason_mask"] == REASON_MASK_ALL
    assert len(cfg.nodes) == 2 and cfg.tenants == []


def test_both_ends_of_every_spec_range_load():
    for v in (1, 16):
        assert load_config(text=f"[migrator.dcbm]\nnr_dma_chan = {v}\n") \
            .migrators["dcbm"]["nr_dma_chan"] == v
    for v in (1, 262144):
        assert load_config(text=f"[migrator]\nnr_max_batched_migration = {v}\n") \
            .migrator["nr_max_batched_migration"] == v


def test_a_reason_mask_is_parsed_once_into_the_system():
    cfg = load_config(text="[migrator.mtcopy]\nreason_mask = 'demotion,numa_misplaced'\n")
    want = (1 << MigrateReason.MR_DEMOTION) | (1 << MigrateReason.MR_NUMA_MISPLACED)
    assert cfg.migrators["mtcopy"]["reason_mask"] == want
    assert System(cfg).reason_masks["mtcopy"] == want


def test_the_shipped_config_loads():
    """Its tenants, and the README's "migrations of every kind start at once":
    the four callers of migrate_pages() and the faults (clearing, the prezero
    pool) on, DAMON (off by default) off."""
    path = ROOT / "etc" / "migd.toml"
    cfg = load_config(path)
    shipped = tomllib.loads(path.read_text())
    assert [t["name"] for t in cfg.tenants] == [t["name"] for t in shipped["tenants"]]
    assert {w for w, c in cfg.workloads.items() if c["enabled"]} == {
        "move", "demotion", "promotion", "compaction", "fault"}


def test_a_missing_file_names_the_file():
    with pytest.raises(ConfigError) as e:
        load_config("/nonexistent/migd.toml")
    assert "/nonexistent/migd.toml" in str(e.value)
