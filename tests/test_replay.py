"""migd replay: traces in the kernel's own text (include/trace/events/migrate.h's
TP_printk, trace_output.c's line layout, trace-cmd report's preamble) rebuilt
call by call, replayed per configuration, bad input reported, and the round
trip of a trace written by ``migd run``'s tracefs through the FUSE mount.

The expected counts come from the lines the tests write, never from migd's
own trace formatter: the payloads below are migrate.h's print fmts verbatim.
"""

import gzip
import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import trio

from migd.cli import main
from migd.hw import VirtualClock, get_profile, mock_clock
from migd.migrate import MigrationEngine
from migd.mm import Machine, MigrateMode, MigrateReason, NodeSpec, TenantSpec
from migd.replay import (
    ORDER_ASSUMPTION,
    Config,
    ReplayError,
    call_shapes,
    cluster_labels,
    load_traces,
    overlap_clusters,
    parse_text,
    replay,
    replay_calls,
    replay_shapes,
)
from migd.tracing import Tracing

from .helpers import Daemon, config

# include/trace/events/migrate.h, verbatim.
END_FMT = ("nr_succeeded=%lu nr_failed=%lu nr_thp_succeeded=%lu nr_thp_failed=%lu "
           "nr_thp_split=%lu nr_split=%lu mode=%s reason=%s")
START_FMT = "mode=%s reason=%s"
PTE_FMT = "addr=%lx, pte=%lx order=%d"
FORMAT_FILE = Path("/sys/kernel/tracing/events/migrate/mm_migrate_pages/format")

REASONS = ["compaction", "memory_failure", "memory_hotplug", "syscall_or_cpuset",
           "mempolicy_mbind", "numa_misplaced", "contig_range", "longterm_pin", "demotion"]
MODES = ["MIGRATE_ASYNC", "MIGRATE_SYNC_LIGHT", "MIGRATE_SYNC"]


def c_printf(fmt: str, *args) -> str:
    """The C conversions of the print fmts, as printf does them."""
    py = fmt.replace("%lu", "%d").replace("%lx", "%x")
    return py % args


def end_fmt() -> str:
    """The machine's own print fmt where tracefs exposes it, else migrate.h's."""
    if FORMAT_FILE.exists():
        text = FORMAT_FILE.read_text()
        return text.split('print fmt: "', 1)[1].split('"', 1)[0]
    return END_FMT


#: (pid, reason, mode, succeeded, failed, thp_ok, thp_failed): interleaved tasks.
CALLS = [
    (41, "numa_misplaced", "MIGRATE_ASYNC", 1, 0, 0, 0),
    (42, "demotion", "MIGRATE_ASYNC", 512, 0, 1, 0),
    (41, "numa_misplaced", "MIGRATE_ASYNC", 512, 0, 1, 0),
    (43, "compaction", "MIGRATE_SYNC_LIGHT", 30, 2, 0, 0),
    (44, "syscall_or_cpuset", "MIGRATE_SYNC", 1024, 512, 2, 1),
    (42, "demotion", "MIGRATE_ASYNC", 17, 0, 0, 0),
]


def line(comm: str, pid: int, ts: float, event: str, payload: str, flags: str = "....."):
    # trace_print_context: "%16s-%-7d ", "[%03d] ", flags, " %5lu.%06lu: "
    return f"{comm:>16}-{pid:<7} [001] {flags} {ts:12.6f}: {event}: {payload}\n"


def kernel_lines(fmt: str, with_ptes: bool = False) -> list[str]:
    """Starts of calls i and i+1 before the end of i: tasks on several CPUs."""
    out, t = [], 100.0
    for i, (pid, reason, mode, ok, bad, tok, tbad) in enumerate(CALLS):
        comm = "kworker/u8:2" if i % 2 else "kcompactd0"
        out.append(line(comm, pid, t, "mm_migrate_pages_start",
                        c_printf(START_FMT, mode, reason)))
        if with_ptes and i == 0:
            out.append(line(comm, pid, t + 1e-6, "remove_migration_pte",
                            c_printf(PTE_FMT, 0x7f00, 0x8000, 4)))
        out.append(line("bash", 7, t + 2e-6, "sched_switch", "prev_comm=bash prev_pid=7"))
        out.append((comm, pid, t + 50e-6, "mm_migrate_pages",
                    c_printf(fmt, ok, bad, tok, tbad, 0, 0, mode, reason)))
        t += 0.001
    # Move each end after the next call's start.
    lines, pending = [], None
    for item in out:
        if isinstance(item, tuple):
            if pending is not None:
                lines.append(line(*pending))
            pending = item
        else:
            lines.append(item)
    lines.append(line(*pending))
    return lines


TRACE_HEADER = ("# tracer: nop\n#\n# entries-in-buffer/entries-written: 12/12   #P:2\n#\n"
                "#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION\n"
                "#              | |         |   |||||     |         |\n")
TRACE_CMD_PREAMBLE = "version = 6\nCPU 0 is empty\ncpus=2\n"


def check_calls(calls) -> None:
    assert len(calls) == len(CALLS)
    got = sorted(zip(calls["pid"].tolist(), calls["start"].tolist(),
                     calls["reason"].tolist(), calls["mode"].tolist(),
                     calls["succeeded"].tolist(), calls["failed"].tolist(),
                     calls["thp_succeeded"].tolist(), calls["thp_failed"].tolist(),
                     strict=True), key=lambda r: r[1])
    for g, (pid, reason, mode, ok, bad, tok, tbad) in zip(got, CALLS, strict=True):
        assert g[0] == pid
        assert MigrateReason(g[2]).label == reason
        assert list(MigrateMode)[g[3]].label == mode
        assert g[4:] == (ok, bad, tok, tbad)
    assert np.allclose(calls["end"] - calls["start"], 50e-6, atol=2e-6)


@pytest.mark.parametrize("layout", ["trace_pipe", "trace", "trace-cmd", "system:event", "gzip"])
def test_every_call_rebuilt_from_kernel_format_text(tmp_path, layout):
    body = "".join(kernel_lines(end_fmt()))
    if layout == "trace":
        body = TRACE_HEADER + body
    elif layout == "trace-cmd":
        # trace-cmd report: its preamble, no lat flags, the event name padded to a
        # column (mm_migrate_pages_start is longer than the column).
        body = TRACE_CMD_PREAMBLE + body.replace(" ..... ", " ").replace(
            "mm_migrate_pages: ", f"{'mm_migrate_pages:':<21} ")
    elif layout == "system:event":  # event names with their system, as some tools print
        body = body.replace(": mm_migrate_pages", ": migrate:mm_migrate_pages")
    path = tmp_path / "trace.txt"
    if layout == "gzip":
        path = tmp_path / "trace.gz"
        path.write_bytes(gzip.compress(body.encode()))
    else:
        path.write_text(body)
    calls = load_traces([str(path)])
    check_calls(calls)
    assert calls.malformed == 0 and calls.unpaired == 0
    assert calls.other_events == len(CALLS)  # the sched_switch lines
    assert not calls.has_folio_orders


def test_folio_orders_from_remove_migration_pte_else_the_assumption():
    calls = parse_text("".join(kernel_lines(END_FMT, with_ptes=True)))
    assert calls.orders[0] == {4: 1}
    shapes = call_shapes(calls)
    assert shapes.shapes[shapes.index[0]][2] == ((4, 1, 0),)
    # Without them: 2 THPs (order 9, one pinned) and 0 order-0 folios for the
    # move_pages call of 1024 + 512 pages.
    plain = parse_text("".join(kernel_lines(END_FMT)))
    i = int(np.flatnonzero(plain["thp_failed"] == 1)[0])
    sh = call_shapes(plain)
    assert sh.shapes[sh.index[i]][2] == ((9, 3, 1),)


def test_bad_lines_are_counted_and_the_first_reported_with_line_numbers(tmp_path):
    lines = kernel_lines(END_FMT)
    lines.insert(3, "garbage that is no trace line\n")
    lines[5] = lines[5][: len(lines[5]) // 2] + "\n"  # truncated in its payload
    lines.append(lines[0][:30])  # a last line cut short, no newline
    p = tmp_path / "t.txt"
    p.write_text("".join(lines))
    calls = load_traces([str(p)])
    assert calls.malformed == 3
    assert [n for _, n, _ in calls.malformed_shown] == [4, 6, len(lines)]
    assert len(calls) >= len(CALLS) - 1  # only the truncated line's call is lost


def test_no_migrate_events_is_an_error(tmp_path):
    p = tmp_path / "other.txt"
    p.write_text(line("bash", 7, 1.0, "sched_switch", "prev_comm=bash prev_pid=7"))
    with pytest.raises(ReplayError, match="no migrate"):
        load_traces([str(p)])


def test_one_shape_replays_as_each_of_its_calls():
    """Running each shape once is sound: the calls of one shape, replayed one
    after the other on the same machine, take the time of the first."""
    text = "".join(kernel_lines(END_FMT) * 3)
    calls = parse_text(text)
    shapes = call_shapes(calls)
    assert len(shapes.shapes) == len(CALLS)
    cfg = Config(_spec("dcbm", 4))
    once = replay_shapes(shapes, cfg)
    every = type(shapes)([shapes.shapes[k] for k in shapes.index], np.arange(len(calls)),
                         shapes.max_folios)
    each = replay_shapes(every, cfg)
    for col in ("seconds", "inaccessible", "succeeded", "failed", "cpu_seconds"):
        assert np.allclose(once[col][shapes.index], each[col], rtol=1e-9, equal_nan=True), col


def _spec(name, param=0):
    from migd.bench import MigratorSpec

    return MigratorSpec(name, param)


def test_report_totals_recommendation_and_cli(tmp_path, capsys):
    p = tmp_path / "t.txt"
    p.write_text("".join(kernel_lines(END_FMT)))
    rep = replay(load_traces([str(p)]), [Config(_spec("none")), Config(_spec("dcbm", 4))],
                 budget_us=1e9)
    total = next(t for t in rep.totals if t["reason"] == "all")
    assert total["calls"] == len(CALLS)
    assert total["pages"] == sum(c[3] + c[4] for c in CALLS)
    assert total["thps"] == sum(c[5] + c[6] for c in CALLS)
    none = {r["reason"]: r for r in rep.rows if r["config"] == "none"}
    # With `none` every failed page of the trace fails again (pinned), the rest migrate.
    assert none["all"]["succeeded"] == sum(c[3] for c in CALLS)
    assert none["all"]["failed"] == sum(c[4] for c in CALLS)
    assert none["all"]["slower_than_none"] == 0 and none["all"]["offloaded_pct"] == 0
    dcbm = {r["reason"]: r for r in rep.rows if r["config"] == "dcbm:4"}
    assert dcbm["all"]["offloaded_pct"] > 50 and dcbm["all"]["cpu_saved_seconds"] > 0
    # Budget infinite: each reason's pick is its fastest configuration.
    for reason, cfg in rep.recommendation["by_reason"].items():
        rows = [r for r in rep.rows if r["reason"] == reason]
        assert cfg == min(rows, key=lambda r: (r["seconds"], r["config"]))["config"]
    assert ORDER_ASSUMPTION in rep.notes
    assert rep.profile_check["calls"] == len(CALLS)
    out = tmp_path / "r.json"
    png = tmp_path / "r.png"
    assert main(["replay", str(p), "--migrators", "none,dcbm:2", "--json", str(out),
                 "--plot", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    doc = json.loads(out.read_text())
    assert doc["experiment"] == "replay" and {r["config"] for r in doc["rows"]} == {
        "none", "dcbm:2"}
    assert "recommendation" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["/nonexistent/trace"], "cannot read the trace"),
    (["{other}"], "no migrate"),
    (["{trace}", "--migrators", "warp:3"], "unknown migrator"),
    (["{trace}", "--profile", "cray"], "unknown hardware profile"),
    (["{trace}", "--reason-mask", "gravity"], "--reason-mask"),
    (["{trace}", "--batch-pages", "0"], "--batch-pages"),
    (["{trace}", "--budget-us", "-3"], "--budget-us"),
])
def test_replay_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, message):
    trace, other = tmp_path / "t.txt", tmp_path / "o.txt"
    trace.write_text("".join(kernel_lines(END_FMT)))
    other.write_text("# tracer: nop\n")
    argv = ["replay", *(a.format(trace=trace, other=other) for a in args)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


# -- the round trip through migd run's tracefs ----------------------------------------

ROUND_TRIP_CONFIG = config(
    "32M", [{"name": "small", "size": "4M", "order": 0},
            {"name": "huge", "size": "8M", "order": 9}],
    workloads={"move": {"interval": 0.05, "fraction": 0.25}, "demotion": {"interval": 0.05},
               "promotion": {"interval": 0.05}, "compaction": {"interval": 0.2}})


@pytest.mark.slow
def test_round_trip_of_migd_runs_own_trace(tmp_path):
    """``kernel/tracing/trace`` read through the FUSE mount replays with
    ``none`` to the same calls, pages and counters."""
    d = Daemon(tmp_path, ROUND_TRIP_CONFIG)
    try:
        d.wait_ready()
        time.sleep(1.5)
        d.write("kernel/tracing/tracing_on", "0")  # a stable snapshot
        text = subprocess.run(["cat", str(d.p("kernel/tracing/trace"))], capture_output=True,
                              text=True, timeout=20, check=True).stdout
    finally:
        d.close()
    path = tmp_path / "trace"
    path.write_text(text)
    calls = load_traces([str(path)])
    assert len(calls) >= 20 and calls.malformed == 0
    assert len(set(calls["reason"].tolist())) >= 3  # several callers
    rep = replay(calls, [Config(_spec("none"), profile="native")], budget_us=1e9)
    row = next(r for r in rep.rows if r["config"] == "none" and r["reason"] == "all")
    assert row["calls"] == len(calls)
    for col in ("succeeded", "failed", "thp_succeeded", "thp_failed"):
        assert row[col] == int(calls[col].sum()), col
    per_call = call_shapes(calls)
    emu = replay_shapes(per_call, Config(_spec("none"), profile="native"))
    for col in ("succeeded", "failed", "thp_succeeded", "thp_failed"):
        assert np.array_equal(emu[col][per_call.index], calls[col]), col


def test_a_trace_migd_recorded_on_the_virtual_clock_replays_within_5_percent():
    """The issue's target: the trace's own durations against the emulated
    ``none`` durations, median error <= 5%, for a trace migd recorded (here
    on the virtual clock with zen3-ptdma, as the replay runs; timestamps are
    whole microseconds, as trace_output.c prints them)."""
    text = trio.run(_record_on_the_virtual_clock, clock=mock_clock())
    calls = parse_text(text)
    assert len(calls) == 60
    rep = replay(calls, [Config(_spec("none"))], budget_us=1e9)
    assert rep.profile_check["calls"] == 60
    assert rep.profile_check["median_error_pct"] <= 5.0


async def _record_on_the_virtual_clock() -> str:
    m = Machine([NodeSpec(32 << 20, "dram", demotion_target=1), NodeSpec(32 << 20, "far")],
                words_per_page=1)
    small = m.add_tenant(TenantSpec("small", 4 << 20, order=0))
    huge = m.add_tenant(TenantSpec("huge", 8 << 20, order=9))
    engine = MigrationEngine(m, VirtualClock(), get_profile("zen3-ptdma"))
    tracing = Tracing(trio.current_time(), entries=10_000, pid=1)
    tracing.attach(engine)
    mem = m.memory
    for i in range(60):
        if i % 3 == 0:  # promotion: one folio, async
            t = huge if i % 2 else small
            head = mem.page_folio(t.pte_pfn[[(i * 7 % 4) << t.spec.order]])
            await engine.migrate_pages(head, 1 - int(mem.nid_of[head[0]]),
                                       MigrateReason.MR_NUMA_MISPLACED)
        elif i % 3 == 1:  # kcompactd: a cluster of 32 pages, sync-light
            heads = mem.page_folio(small.pte_pfn[(i % 16) * 32:(i % 16 + 1) * 32])
            await engine.migrate_pages(heads, 1 - int(mem.nid_of[heads[0]]),
                                       MigrateReason.MR_COMPACTION,
                                       MigrateMode.MIGRATE_SYNC_LIGHT)
        else:  # move_pages of 2 THPs, sync
            v = np.arange(2) * 512 + (i % 2) * 1024
            await engine.move_pages(huge, v, 1 - int(mem.nid_of[huge.pte_pfn[v[0]]]))
        await trio.sleep(0.001)
    return tracing.ring.snapshot(2)


def test_a_call_that_counted_no_page_replays_as_nothing():
    text = (line("kswapd0", 9, 5.0, "mm_migrate_pages_start", c_printf(START_FMT, MODES[0],
                                                                      REASONS[8]))
            + line("kswapd0", 9, 5.00001, "mm_migrate_pages",
                   c_printf(END_FMT, 0, 0, 0, 0, 0, 0, MODES[0], REASONS[8])))
    calls = parse_text(text + "".join(kernel_lines(END_FMT)))
    rep = replay(calls, [Config(_spec("none"))], budget_us=1e9)
    demotion = next(r for r in rep.rows if r["reason"] == "demotion")
    assert demotion["calls"] == 3 and demotion["succeeded"] == 512 + 17


def test_overlapping_intervals_cluster_as_connected_components():
    """Hand-written table: (start, end) -> component; a call starting as
    another ends does not overlap it, and overlap chains through a middle call."""
    table = [  # start, end, component (numbered by first start)
        (5.0, 6.0, 1), (0.0, 2.0, 0), (1.0, 3.0, 0), (10.0, 11.0, 3), (2.5, 4.0, 0),
        (20.0, 22.0, 4), (21.0, 21.5, 4), (6.0, 7.0, 2),
    ]
    start, end, want = (np.array(c) for c in zip(*table, strict=True))
    assert cluster_labels(start, end).tolist() == want.tolist()
    cl = overlap_clusters(start, end)
    assert len(cl) == 2 and cl.sizes().tolist() == [3, 2]
    groups = [(calls.tolist(), offs.tolist()) for calls, offs in cl]
    assert groups == [([1, 2, 4], [0.0, 1.0, 2.5]), ([5, 6], [0.0, 1.0])]
    assert len(overlap_clusters(np.array([]), np.array([]))) == 0


def _demotions(times) -> str:
    """One THP demoted per call (migrate.h's print fmts), (start, end) each."""
    out = []
    for pid, (t0, t1) in enumerate(times, start=300):
        out.append((t0, line("kswapd0", pid, t0, "mm_migrate_pages_start",
                             c_printf(START_FMT, "MIGRATE_ASYNC", "demotion"))))
        out.append((t1, line("kswapd0", pid, t1, "mm_migrate_pages",
                             c_printf(END_FMT, 512, 0, 1, 0, 0, 0, "MIGRATE_ASYNC",
                                      "demotion"))))
    return "".join(text for _, text in sorted(out))


def test_overlapping_calls_contend_for_the_dma_engine():
    """Two THP demotions whose traced intervals overlap, with dcbm:1 on
    zen3-ptdma: each batch claims one channel, and the profile's channels
    share an engine two by two (channels_per_engine = 2), so the second
    call's 2 MiB copy waits on the engine behind the first's.  The same calls
    replayed 50 s apart are each alone: the pair together must take longer,
    the second call ending after the first; the isolated call is its shape's."""
    near = [(100.0, 100.0003), (100.00005, 100.0004), (200.0, 200.0003)]
    far = [(100.0, 100.0003), (150.00005, 150.0004), (200.0, 200.0003)]
    cfg = Config(_spec("dcbm", 1))
    got = {}
    for name, times in (("near", near), ("far", far)):
        calls = parse_text(_demotions(times))
        clusters = overlap_clusters(calls["start"], calls["end"])
        assert clusters.calls.size == (2 if name == "near" else 0)
        got[name] = replay_calls(call_shapes(calls), clusters, cfg)
        assert got[name]["succeeded"].tolist() == [512] * 3
    alone = replay_shapes(call_shapes(parse_text(_demotions(near[2:]))), cfg)["seconds"][0]
    n, f = got["near"]["seconds"], got["far"]["seconds"]
    assert np.allclose(f, alone, rtol=1e-9)  # far apart: every call sees an idle machine
    assert n[2] == pytest.approx(alone, rel=1e-9)  # the isolated call: its shape result
    assert max(n[0] - f[0], n[1] - f[1]) > 0.1 * alone  # contention costs time
    copy_2mib = (2 << 20) / (get_profile("zen3-ptdma").dma.engine_gbps * 1e9)
    assert 50e-6 + n[1] >= n[0] + 0.5 * copy_2mib  # the second waits behind the first


def test_report_counts_the_concurrent_calls(tmp_path):
    calls = parse_text(_demotions([(100.0, 100.0003), (100.00005, 100.0004),
                                   (100.0001, 100.0002), (200.0, 200.0003)]))
    rep = replay(calls, [Config(_spec("dcbm", 1))], budget_us=1000.0)
    assert rep.as_json()["concurrent"] == {"calls": 3, "clusters": 1, "largest": 3}
    assert any("3 calls overlapped" in n and "1 clusters" in n for n in rep.notes)
