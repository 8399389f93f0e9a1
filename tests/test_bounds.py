"""Bounds on what a user controls: bench's memory and --total, the config's size and sizes.

Each bound is refused in one line before anything is allocated; the bench rig
reuses one arena across rows, so a run holds one rig's memory whatever its rows.
"""

import copy
import json
import resource
import tomllib
from pathlib import Path

import numpy as np
import pytest
import trio
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import migd.daemon
from migd.bench import BenchOptions, MigratorSpec, Rig, max_total, parse_total
from migd.cli import main
from migd.daemon import MAX_CONFIG_BYTES, ConfigError, load_config
from migd.hw import mock_clock
from migd.mm import MAX_NUMNODES, Machine, NodeSpec, memory_limit

ROOT = Path(__file__).resolve().parent.parent
MiB = 1 << 20
WALL = ("wall_seconds", "sim_speed")


def _measured(row) -> dict:
    return {k: v for k, v in row.as_json().items() if k not in WALL}


@pytest.mark.slow
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


@pytest.mark.slow
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
    """Less the rig's slack: both nodes stay within mm.memory_limit."""
    eight_gib = 8 << 30
    assert parse_total("2032M", mem_total=eight_gib) == 2032 << 20
    with pytest.raises(ValueError, match=r"--total 2033M: larger than 2032M") as e:
        parse_total("2033M", mem_total=eight_gib)
    assert "\n" not in str(e.value)
    for mem_total in (eight_gib, 24683792 << 10, 3 << 40):
        total = max_total(mem_total) & ~((2 << 20) - 1)
        node = -(-(total + (8 << 20)) // (2 << 20)) * (2 << 20)  # the rig's
        assert 2 * node <= memory_limit(mem_total)
        assert 2 * (total + (16 << 20)) <= memory_limit(mem_total)  # cat-latency's


@pytest.mark.parametrize("experiment", ["throughput", "memcpy", "batch-sweep"])
def test_a_total_past_the_machines_memory_is_one_line_before_allocating(capsys, experiment):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert main(["bench", experiment, "--total", "1T", "--clock", "real"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("migd bench: --total 1T: larger than") and err.count("\n") == 1
    # Nothing near a node of 1T was touched (the peak RSS moved by less than 64 MiB).
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 64 << 10


# -- the config: one line and exit 2, or a config that fits ------------------------------


def run_config(capsys, monkeypatch, path) -> tuple[int, str, object]:
    """``migd run --config PATH`` in process, the daemon replaced by a recorder:
    (exit status, stderr, the Config the daemon would have run or None)."""
    started = []
    monkeypatch.setattr(migd.daemon, "run_daemon", lambda cfg, *a: started.append(cfg) or 0)
    try:
        rc = main(["run", "--config", str(path)])
    except SystemExit as e:  # argparse; not expected, but it must be one line too
        rc = e.code
    return rc, capsys.readouterr().err, started[0] if started else None


def assert_refused(rc: int, err: str) -> str:
    assert rc == 2, err
    assert err.startswith("migd run: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err[len("migd run: "):-1]


@pytest.mark.parametrize("content, message", [
    (b'[daemon]\nmount = "/run/m"\n\n# caf\xe9\n',
     "line 4: not UTF-8 (byte 0xe9 at offset 32)"),
    (b'[[nodes]]\nname = "dram"\ncapacity = "16M"\n[[nodes]]\n'
     b'[[tenants]]\nsize = "8M"\n[[tenants]]\nsize = "64M"\n',
     "tenants[1].size: 64M is larger than its node0 (dram, 16M)"),
    (b'[[nodes]]\ncapacity = "16M"\n[[tenants]]\nsize = "10M"\n[[tenants]]\nsize = "8M"\n',
     "tenants[1].size: 8M does not fit in its node0 (node, 16M): 6M left by the tenants "
     "before it"),
    (b'[[nodes]]\ncapacity = "2M"\n' * 65, "nodes: expected 1..64 nodes (MAX_NUMNODES), got 65"),
    (b'[[nodes]]\ncapacity = "2M"\n' * 128, "nodes: expected 1..64 nodes (MAX_NUMNODES), got 128"),
    (b'[daemon]\nmount = "/run/a\\u0000b"\n',
     "daemon.mount: expected a path, not empty, without NUL, under 4096 bytes (PATH_MAX), "
     "got '/run/a\\x00b'"),
    (b'[[tenants]]\nname = "a\\u0000"\n', "tenants[0].name: expected a string without NUL"),
    (b'"x\\ny" = 1\n', "'x\\ny': unknown key"),
    (b"a = " + b"[" * 100_000, "not valid TOML: arrays or tables nested too deeply"),
    (b"[daemon]\nseed = " + b"9" * 5000 + b"\n", "not valid TOML: a number with too many digits"),
])
def test_each_reported_bad_config_is_one_line_naming_file_and_key(
        tmp_path, capsys, monkeypatch, content, message):
    path = tmp_path / "x.toml"
    path.write_bytes(content)
    rc, err, cfg = run_config(capsys, monkeypatch, path)
    assert assert_refused(rc, err).startswith(f"{path}: {message}") and cfg is None


def test_a_missing_config_names_its_path_once(tmp_path, capsys, monkeypatch):
    rc, err, _ = run_config(capsys, monkeypatch, tmp_path / "no.toml")
    assert assert_refused(rc, err) == f"{tmp_path / 'no.toml'}: No such file or directory"


def test_nodes_past_the_machines_memory_are_refused_naming_the_node():
    """64G on a 24 GiB machine: more than half its memory (mm.memory_limit)."""
    text = '[[nodes]]\ncapacity = "8G"\n[[nodes]]\ncapacity = "64G"\n'
    with pytest.raises(ConfigError, match=r"^nodes\[1\]\.capacity: 64G brings the nodes to 72G, "
                       r"more than migd emulates on this machine \(12\.0G, half its memory\)$"):
        load_config(text=text, mem_total=24 << 30)
    assert load_config(text=text, mem_total=144 << 30).nodes[1]["capacity"] == 64 << 30
    with pytest.raises(ConfigError, match=r"^nodes\[0\]\.capacity: 64G is more than"):
        load_config(text='[[nodes]]\ncapacity = "64G"\n', mem_total=24 << 30)


def test_a_config_is_read_up_to_one_mib(tmp_path, capsys, monkeypatch):
    """1 MiB loads (it is all comment here); one byte more is refused, and so is
    an endless file, after reading 1 MiB + 1 byte of it (RSS does not grow)."""
    path = tmp_path / "big.toml"
    path.write_bytes(b"#" + b" " * (MAX_CONFIG_BYTES - 2) + b"\n")
    assert load_config(path).tenants == []
    path.write_bytes(b"#" + b" " * (MAX_CONFIG_BYTES - 1) + b"\n")
    rc, err, _ = run_config(capsys, monkeypatch, path)
    assert assert_refused(rc, err) == (f"{path}: larger than 1 MiB, the most a config may be "
                                       "(a real one is a few KiB)")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rc, err, _ = run_config(capsys, monkeypatch, "/dev/zero")
    assert assert_refused(rc, err).startswith("/dev/zero: larger than 1 MiB")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 64 << 10


# A valid config (the shipped one) mutated: values of every wrong kind, huge
# sizes, many nodes and tenants, unknown keys, then raw bytes (bad UTF-8, NULs,
# a cut) in its text.  Written as TOML with inline tables, one key per line.

SHIPPED = tomllib.loads((ROOT / "etc" / "migd.toml").read_text())


def _toml(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)  # inf and nan are TOML's spelling too
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {_toml(x)}" for k, x in v.items()) + "}"


SIZES = st.sampled_from(["64G", "1T", "12G", "4G", "2M", "3M", "0M", "-2M", "1e3M",
                         "99999999999999G", " 16 MiB ", "", "G"])
VALUES = st.one_of(
    SIZES, st.integers(-2**70, 2**70), st.integers(-2, 200),
    st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
    st.text(max_size=12), st.text(alphabet="\0\n\t\x7fa/ ", max_size=6),
    st.lists(st.integers(0, 9), max_size=3), st.dictionaries(st.text(max_size=4),
                                                            st.integers(), max_size=2))


def _paths(doc, prefix=()):
    """Every (path) to a value in ``doc``, containers included."""
    items = doc.items() if isinstance(doc, dict) else enumerate(doc)
    for k, v in items:
        yield (*prefix, k)
        if isinstance(v, dict | list):
            yield from _paths(v, (*prefix, k))


@st.composite
def mutated_configs(draw) -> bytes:
    doc = copy.deepcopy(SHIPPED)
    for _ in range(draw(st.integers(0, 3), label="mutations")):
        kind = draw(st.sampled_from(["value", "key", "nodes", "tenants", "drop"]))
        paths = list(_paths(doc))
        if kind == "nodes":
            doc["nodes"] = [{"capacity": draw(SIZES)}] * draw(st.integers(0, 200))
        elif kind == "tenants":
            doc["tenants"] = [{"size": draw(SIZES)}] * draw(st.integers(0, 300))
        elif not paths:
            continue
        else:
            path = draw(st.sampled_from(paths))
            parent = doc
            for k in path[:-1]:
                parent = parent[k]
            if kind == "value":
                parent[path[-1]] = draw(VALUES)
            elif kind == "drop" and isinstance(parent, dict):
                del parent[path[-1]]
            elif isinstance(parent, dict):
                parent[draw(st.text(max_size=6))] = draw(VALUES)
    text = "".join(f"{json.dumps(k)} = {_toml(v)}\n" for k, v in doc.items()).encode()
    raw = draw(st.sampled_from(["none", "insert", "cut"]), label="bytes")
    at = draw(st.integers(0, len(text)))
    if raw == "insert":
        text = text[:at] + draw(st.binary(min_size=1, max_size=4)) + text[at:]
    elif raw == "cut":
        text = text[:at]
    return text


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(mutated_configs())
def test_any_config_is_one_line_and_exit_2_or_a_config_that_fits(
        tmp_path, capsys, monkeypatch, content):
    path = tmp_path / "m.toml"
    path.write_bytes(content)
    rc, err, cfg = run_config(capsys, monkeypatch, path)
    if cfg is None:
        event("refused: " + assert_refused(rc, err).split(": ")[1].split("[")[0])
        return
    event("valid")
    assert rc == 0 and err == ""
    assert 0 < len(cfg.nodes) <= MAX_NUMNODES
    assert sum(n["capacity"] for n in cfg.nodes) <= memory_limit()
    used = [0] * len(cfg.nodes)
    for t in cfg.tenants:
        used[t["home_node"]] += t["size"]
    assert all(u <= n["capacity"] for u, n in zip(used, cfg.nodes, strict=True))
    assert "\0" not in cfg.daemon["mount"] and "\0" not in cfg.daemon["metrics"]


@pytest.mark.parametrize("mount", ["", "x" * 4096])
def test_a_bad_mount_on_the_command_line_is_refused_as_in_the_config(capsys, monkeypatch, mount):
    """``--mount`` is checked by the config's own ``daemon.mount`` rule (PATH_MAX)."""
    started = []
    monkeypatch.setattr(migd.daemon, "run_daemon", lambda cfg, *a: started.append(cfg) or 0)
    rc = main(["run", "--mount", mount])
    msg = assert_refused(rc, capsys.readouterr().err)
    assert msg.startswith("--mount ") and "PATH_MAX" in msg and started == []
