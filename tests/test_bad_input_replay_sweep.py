"""migd replay and migd sweep on input a user can get wrong or make huge:
every refusal is one line on stderr and exit 2 before any large allocation,
never a traceback.

The CLI runs in this process (``migd.cli.main`` with capsys), except where
the memory the command takes is the point: that runs in a child whose peak
RSS a fresh parent reads with ``getrusage(RUSAGE_CHILDREN)``.  The trace
lines follow include/trace/events/migrate.h's TP_printk, the counts there
are ``unsigned long`` (%lu), so a count past int64 is a line migd cannot
hold, not a kernel's.
"""

import gzip
import json
import subprocess
import sys

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from migd.cli import main
from migd.replay import load_traces

START = ("  kcompactd0-41      [001] .....   100.000000: mm_migrate_pages_start: "
         "mode=MIGRATE_ASYNC reason=compaction\n")
END = ("  kcompactd0-41      [001] .....   100.000050: mm_migrate_pages: nr_succeeded={ok} "
       "nr_failed={bad} nr_thp_succeeded=0 nr_thp_failed=0 nr_thp_split=0 nr_split=0 "
       "mode=MIGRATE_ASYNC reason=compaction\n")
INT64_MAX = (1 << 63) - 1
FAST = settings(max_examples=25, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def one_line_refusal(capsys, argv, *, contains=""):
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own refusals exit
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert "Traceback" not in err and contains in err, err
    return err


# -- replay ---------------------------------------------------------------------------


@FAST
@given(ok=st.one_of(st.integers(INT64_MAX + 1, 1 << 80), st.integers(-(1 << 70), -1)),
       junk=st.lists(st.text(max_size=200), max_size=4))
def test_a_count_past_int64_or_negative_is_a_malformed_line(tmp_path, capsys, ok, junk):
    """The only call's end is malformed (counted, reported with its number):
    nothing to replay is one line, exit 2 - never a count wrapped negative."""
    p = tmp_path / "t.txt"
    lines = [*("# " + j.replace("\n", " ").replace("\r", " ") + "\n" for j in junk),
             START, END.format(ok=ok, bad=0)]
    p.write_text("".join(lines))
    err = one_line_refusal(capsys, ["replay", str(p)], contains="no migrate")
    assert f"first at {len(lines)}" in err


def test_past_int64_lines_are_counted_with_their_numbers_and_valid_calls_kept(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text(START + END.format(ok=INT64_MAX + 1, bad=0) + START + END.format(ok=3, bad=1)
                 + START + "x" * 100_000)  # a line far past the kernel's page: malformed
    calls = load_traces([str(p)])
    assert len(calls) == 1 and calls["succeeded"].tolist() == [3]
    assert calls.malformed == 2
    assert [n for _, n, _ in calls.malformed_shown] == [2, 6]


def test_big_count_trace_is_refused_in_one_line_with_bounded_memory(tmp_path):
    """The reported case: a 2-line trace whose call moved 2e7 pages took 6.4 GB.
    Refused past --max-memory before the machine is built; the child's peak
    RSS is read by a fresh parent, so no earlier child of pytest counts."""
    p = tmp_path / "big.txt"
    p.write_text(START + END.format(ok=20_000_000, bad=0))
    probe = ("import resource, subprocess, sys\n"
             "r = subprocess.run([sys.executable, '-m', 'migd', 'replay', sys.argv[1], "
             "'--max-memory', '1G'], capture_output=True, text=True)\n"
             "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
             "sys.stderr.write(r.stderr)\n")
    r = subprocess.run([sys.executable, "-c", probe, str(p)], capture_output=True, text=True,
                       timeout=120)
    code, maxrss_kb = map(int, r.stdout.split())
    assert code == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "20000000 pages" in r.stderr and "--max-memory 1.0G" in r.stderr
    assert maxrss_kb < 512 * 1024  # the interpreter and the parse, no machine


def test_a_replay_over_max_memory_is_refused_and_a_bad_size_too(tmp_path, capsys):
    p = tmp_path / "t.txt"
    p.write_text(START + END.format(ok=1 << 22, bad=0))  # 4M order-0 pages: ~1.7G
    one_line_refusal(capsys, ["replay", str(p), "--max-memory", "256M"],
                     contains="over --max-memory 0.2G")
    one_line_refusal(capsys, ["replay", str(p), "--max-memory", "lots"],
                     contains="--max-memory: bad size")
    one_line_refusal(capsys, ["replay", str(p), "--max-memory", "1024T"],
                     contains="more than this machine's RAM")


def test_too_many_calls_for_max_memory_are_refused_while_reading(tmp_path, capsys):
    p = tmp_path / "t.txt"
    p.write_text((START + END.format(ok=1, bad=0)) * 2000)
    one_line_refusal(capsys, ["replay", str(p), "--max-memory", "1M"],
                     contains=f"{p}:")


def test_gzip_truncated_keeps_what_was_read_and_corrupt_is_one_line(tmp_path, capsys):
    body = (START + END.format(ok=1, bad=0)) * 4000
    z = gzip.compress(body.encode())
    cut = tmp_path / "cut.gz"
    cut.write_bytes(z[: len(z) // 2])
    calls = load_traces([str(cut)])
    assert 0 < len(calls) < 4000
    assert len(calls.truncated) == 1 and "truncated" in calls.truncated[0]
    bad = bytearray(z)
    bad[-6] ^= 1  # the CRC of the member
    corrupt = tmp_path / "corrupt.gz"
    corrupt.write_bytes(bytes(bad))
    one_line_refusal(capsys, ["replay", str(corrupt)], contains=f"{corrupt}: corrupt gzip")
    deflate = bytearray(z)
    for i in range(40, 80):
        deflate[i] ^= 0x5A  # the deflate data itself (zlib.error)
    corrupt.write_bytes(bytes(deflate))
    one_line_refusal(capsys, ["replay", str(corrupt)], contains="corrupt gzip")


# -- sweep ----------------------------------------------------------------------------


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items()) + "}"


scalars = st.one_of(st.integers(-(1 << 63), (1 << 63) - 1), st.booleans(),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8)
KEYS = ["profile", "migrator", "batch_pages", "reason_mask", "budget_us", "order", "trace",
        "repeat", "experiment", "total", "colour"]


def bad_grid():
    """A grid that loads nowhere: a wrong-typed table, axis or key, an unknown
    one, or bytes that are not UTF-8 TOML at all."""
    table_wrong = st.tuples(st.sampled_from(["axes", "cell"]), scalars).map(
        lambda t: f"{t[0]} = {toml_value(t[1])}\n")
    axis_wrong = st.tuples(st.sampled_from(KEYS), values).filter(
        lambda t: not isinstance(t[1], list) or not t[1]).map(
        lambda t: f"[axes]\n{t[0]} = {toml_value(t[1])}\n")
    cell_wrong = st.tuples(st.sampled_from(KEYS), values).filter(  # no key takes these
        lambda t: isinstance(t[1], (bool, float, list, dict))).map(
        lambda t: f'[axes]\nrepeat = [0]\n[cell]\n{t[0]} = {toml_value(t[1])}\n')
    unknown = st.text(min_size=1, max_size=8).filter(lambda k: k not in ("axes", "cell")).map(
        lambda k: f"[axes]\nrepeat = [0]\n[{json.dumps(k)}]\nx = 1\n")
    texts = st.one_of(table_wrong, axis_wrong, cell_wrong, unknown).map(str.encode)
    raw = st.binary(max_size=200).map(lambda b: b"\xff" + b)
    return st.one_of(texts, raw)


@FAST
@given(data=bad_grid())
def test_any_malformed_grid_is_one_line_and_exit_2_before_any_work(tmp_path, capsys, data):
    grid, out = tmp_path / "g.toml", tmp_path / "out"
    grid.write_bytes(data)
    one_line_refusal(capsys, ["sweep", str(grid), "--out", str(out), "--workers", "0"])
    assert not out.exists()


def test_a_grid_over_max_cells_is_refused_without_building_it(tmp_path, capsys):
    """The reported 14 KB grid of 1e9 cells took 3.9 GB in 21 s."""
    ints = ", ".join(map(str, range(1, 1001)))
    grid = tmp_path / "g.toml"
    grid.write_text(f"[axes]\nrepeat = [{ints}]\nbudget_us = [{ints}]\nbatch_pages = [{ints}]\n")
    one_line_refusal(capsys, ["sweep", str(grid), "--out", str(tmp_path / "o")],
                     contains="1000 x 1000 x 1000 = 1000000000 cells, over --max-cells 100000")
    grid.write_text("[axes]\nrepeat = [0, 1, 2]\norder = [0, 9]\n")
    one_line_refusal(capsys, ["sweep", str(grid), "--max-cells", "5"],
                     contains="3 x 2 = 6 cells, over --max-cells 5")
    one_line_refusal(capsys, ["sweep", str(grid), "--max-cells", "0"], contains="--max-cells")


def test_grid_files_past_1_mib_and_bad_totals_are_refused(tmp_path, capsys):
    grid = tmp_path / "g.toml"
    grid.write_text("# " + "x" * (1 << 20) + "\n[axes]\nrepeat = [0]\n")
    one_line_refusal(capsys, ["sweep", str(grid)], contains="larger than 1 MiB")
    grid.write_text("[axes]\nrepeat = [0]\n[cell]\ntotal = \"1T\"\n")
    one_line_refusal(capsys, ["sweep", str(grid)], contains="total = '1T': at most 16G")
    grid.write_text("a = " + "[" * 3000 + "]" * 3000 + "\n")
    one_line_refusal(capsys, ["sweep", str(grid)], contains="not TOML")
