"""migd sweep: grids checked before any work, identical rows on every executor
(a real dask.distributed LocalCluster included), a worker lost mid-sweep,
an interrupted sweep resumed.

Every Dask cluster here is in-process (``processes=False``: workers are
threads of this process, no spawn cost), closed in ``finally`` with a
timeout; each test stays far below pytest-timeout.
"""

import json
import os
import re

import pytest

from migd.cli import main
from migd.sweep import (
    WALL_FIELDS,
    DaskExecutor,
    InProcess,
    LocalProcesses,
    SweepResult,
    averaged_over,
    load_grid,
    run_sweep,
)

GRID = """
[axes]
migrator = ["none", "dcbm:4", "mtcopy:2"]
order = [0, 9]
batch_pages = [64, 512]

[cell]
total = "4M"
"""


def write_grid(tmp_path, text=GRID, name="grid.toml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def strip(rows):
    return [{k: v for k, v in r.items() if k not in WALL_FIELDS} for r in rows]


class Counting:
    """Wraps an executor: which keys it ran, and optionally an interruption
    (KeyboardInterrupt, as Ctrl-C) or a callback after the n-th result."""

    def __init__(self, inner, stop_after=None, after=None):
        self.inner, self.stop_after, self.after = inner, stop_after, after
        self.name, self.workers = inner.name, inner.workers
        self.keys = []

    def map(self, items):
        for key, row in self.inner.map(items):
            self.keys.append(key)
            yield key, row
            if self.after is not None:
                self.after(len(self.keys))
            if self.stop_after is not None and len(self.keys) >= self.stop_after:
                raise KeyboardInterrupt

    def close(self):
        self.inner.close()


def local_cluster(workers=2):
    return DaskExecutor("local", workers, processes=False)


def test_same_rows_in_process_on_local_processes_and_on_a_dask_local_cluster(tmp_path):
    grid = load_grid(write_grid(tmp_path))
    a = run_sweep(grid, InProcess(), str(tmp_path / "a"))
    local = LocalProcesses(2)
    try:
        c = run_sweep(grid, local, str(tmp_path / "c"))
    finally:
        local.close()
    assert c.ran == 12 and strip(a.rows) == strip(c.rows)
    ex = local_cluster()
    try:
        assert ex.workers == 2
        b = run_sweep(grid, ex, str(tmp_path / "b"))
    finally:
        ex.close()
    assert len(a.rows) == 12 and a.ran == 12 and b.ran == 12
    assert strip(a.rows) == strip(b.rows)
    # Axis values win over the row's own fields (migrator "dcbm:4", not "dcbm").
    assert [r["migrator"] for r in a.rows[:4]] == ["none"] * 4
    assert {r["migrator"] for r in a.rows} == {"none", "dcbm:4", "mtcopy:2"}
    assert all(r["gbps"] > 0 for r in a.rows)


def test_a_worker_lost_mid_sweep_and_every_cell_recorded_once(tmp_path):
    grid = load_grid(write_grid(tmp_path))
    ex = local_cluster()
    lost = []

    def kill_one(n):
        """After the first result, close the worker with the most cells in
        flight: the scheduler must run them again elsewhere."""
        if lost:
            return
        state = ex.cluster.scheduler.workers
        worker = max(ex.cluster.workers.values(),
                     key=lambda w: len(state[w.address].processing))
        lost.append(len(state[worker.address].processing))
        ex.cluster.sync(worker.close, timeout=10)

    counting = Counting(ex, after=kill_one)
    try:
        res = run_sweep(grid, counting, str(tmp_path / "out"))
    finally:
        counting.close()
    assert lost[0] > 0  # cells were in flight on the lost worker
    assert sorted(counting.keys) == sorted(set(counting.keys)) and len(counting.keys) == 12
    assert len([f for f in os.listdir(tmp_path / "out") if f.endswith(".json")]) == 12
    assert len(res.rows) == 12


def test_an_interrupted_sweep_resumes_with_only_the_missing_cells(tmp_path):
    grid = load_grid(write_grid(tmp_path))
    out = str(tmp_path / "out")
    first = Counting(InProcess(), stop_after=5)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(grid, first, out)
    second = Counting(InProcess())
    res = run_sweep(grid, second, out)
    assert len(second.keys) == 7 and not set(first.keys) & set(second.keys)
    assert res.ran == 7 and len(res.rows) == 12
    # A new axis value: only its cells run.
    grid2 = load_grid(write_grid(tmp_path, GRID.replace("[64, 512]", "[64, 512, 128]"),
                                 "grid2.toml"))
    third = Counting(InProcess())
    assert run_sweep(grid2, third, out).ran == 6 and len(third.keys) == 6


def test_sweep_cli_json_plot_and_replay_cells(tmp_path, capsys):
    from migd.replay import synthetic_trace

    (tmp_path / "t.txt").write_text(synthetic_trace(200))
    grid = write_grid(tmp_path, """
[axes]
migrator = ["none", "dcbm:8"]
trace = ["t.txt"]
budget_us = [200, 2000]
[cell]
experiment = "replay"
""")
    js, png = tmp_path / "s.json", tmp_path / "s.png"
    assert main(["sweep", grid, "--workers", "0", "--out", str(tmp_path / "o"), "--json",
                 str(js), "--plot", str(png)]) == 0
    doc = json.loads(js.read_text())
    assert doc["experiment"] == "sweep" and len(doc["rows"]) == 4
    assert all(r["calls"] == 200 and r["seconds"] > 0 for r in doc["rows"])
    assert png.stat().st_size > 0
    out = capsys.readouterr().out
    assert "4 cells" in out
    head = out.splitlines()[0].split()
    assert head[:3] == ["migrator", "trace", "budget_us"]  # the axes, then replay's fields
    assert {"seconds", "cpu_saved_seconds", "inaccessible_us_p99", "median_error_pct"} <= set(head)


def column_ends(line: str) -> list[int]:
    return [m.end() for m in re.finditer(r"\S+", line)]


@pytest.mark.parametrize("experiment", ["throughput", "replay"])
def test_the_table_aligns_every_column_of_each_cell_kind(experiment):
    """Issue 24: headers longer than their values (``inaccessible_us_p99``) and
    values longer than their headers (a trace path) - every column's cells end
    where its header ends, and no header runs into the next."""
    axes = {"migrator": ["none", "dcbm:16"], "trace": ["/a/rather/long/path/to/trace.txt.gz"]}
    result = SweepResult(axes, [], 0, "in-process", 1, 0.0, experiment)
    fields = result.columns
    for i, migrator in enumerate(axes["migrator"]):
        row = {f: 10.0 ** (k - i * 3) * 1.234567 for k, f in enumerate(fields)}
        row[fields[-1]] = None  # shown as "-"
        result.rows.append({**row, "migrator": migrator, "trace": axes["trace"][0]})
    lines = result.table().splitlines()[:3]
    assert lines[0].split() == [*axes, *fields]
    assert all(column_ends(ln) == column_ends(lines[0]) for ln in lines[1:]), lines
    assert all("  " in ln for ln in lines) and lines[1].split()[-1] == "-"


def test_the_plot_title_names_the_axes_it_averages_over():
    axes = {"migrator": ["none", "dcbm:4"], "order": [0, 9], "batch_pages": [64, 512],
            "repeat": [0, 1, 2], "profile": ["zen3-ptdma"]}
    result = SweepResult(axes, [], 0, "in-process", 1, 0.0, "throughput")
    assert averaged_over(result, ["migrator", "order"]) == \
        "mean over batch_pages (2 values), repeat (3 values)"
    assert averaged_over(result, ["batch_pages", "repeat"]) == \
        "mean over migrator (2 values), order (2 values)"
    small = SweepResult({"order": [0, 9], "profile": ["zen3-ptdma"]}, [], 0, "x", 1, 0.0,
                        "throughput")
    assert averaged_over(small, ["order", "profile"]) == "no axis averaged"


@pytest.mark.parametrize("text, extra, message", [
    (None, [], "cannot read the grid"),
    ("[axes\n", [], "not TOML"),
    ('[axes]\ncolour = ["red"]\n', [], "unknown axis 'colour'"),
    ('[axes]\nmigrator = ["warp:3"]\n', [], "migrator = 'warp:3'"),
    ('[axes]\norder = [12]\n', [], "order = 12"),
    ('[axes]\nprofile = ["cray"]\n', [], "profile = 'cray'"),
    ('[axes]\norder = [0]\n[cell]\nspeed = 3\n', [], "unknown [cell] key 'speed'"),
    ('[axes]\norder = [0]\n[cell]\nexperiment = "replay"\n', [], "needs a trace"),
    ('[axes]\norder = [0]\n', ["--scheduler", "tcp://127.0.0.1:9"], "cannot reach"),
    ('[axes]\norder = [0]\n', ["--scheduler", "carrier-pigeon"], "--scheduler"),
    ('[axes]\norder = [0]\n', ["--plot", "x.png", "--plot-axes", "order,colour"],
     "--plot-axes"),
])
def test_sweep_bad_input_is_one_line_and_exit_2_before_any_work(tmp_path, capsys, monkeypatch,
                                                                  text, extra, message):
    import migd.sweep._executors as executors

    monkeypatch.setattr(executors, "CONNECT_TIMEOUT", 1.0)  # nothing listens there anyway
    grid = str(tmp_path / "missing.toml") if text is None else write_grid(tmp_path, text)
    out = tmp_path / "out"
    assert main(["sweep", grid, "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()  # no work done


def test_a_local_worker_process_killed_is_reported_and_the_rerun_completes(tmp_path):
    """A ProcessPoolExecutor cannot rerun a dead worker's cell: the sweep
    stops with LostWorker, and the rerun runs only what is missing."""
    import signal

    from migd.sweep import LocalProcesses, LostWorker

    grid = load_grid(write_grid(tmp_path))  # 12 cells: some still to submit after the kill
    out = str(tmp_path / "out")
    local = LocalProcesses(2)

    def kill(n):
        if n == 1:
            os.kill(next(iter(local.pool._processes)), signal.SIGKILL)

    counting = Counting(local, after=kill)
    try:
        with pytest.raises(LostWorker):
            run_sweep(grid, counting, out)
    finally:
        local.close()
    again = Counting(InProcess())
    res = run_sweep(grid, again, out)
    assert len(res.rows) == 12
    assert len(again.keys) == 12 - len(set(counting.keys))
