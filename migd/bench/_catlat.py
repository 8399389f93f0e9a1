"""``bench cat-latency``: reading the control tree while migrating at full speed.

The daemon's System and its tree are mounted for real; a tenant is migrated
back and forth as fast as the engine goes; a separate reader process opens,
reads and closes every attribute in turn (what ``cat`` does) and times each.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import trio

from ..daemon import System, build_tree, load_config
from ..offload import CATALOGUE
from ..sysfs import clear_stale_mount, serve, unmount, wait_mounted
from ._options import MigratorSpec
from ._report import BenchReport, BenchRow

#: The reader walks the mount itself: no thread of the process serving the
#: tree touches it (see migd.soak's children: a killed server with a thread
#: waiting on its own mount can never exit).
_READER = r"""
import json, os, sys, time
mount, duration, out = sys.argv[1], float(sys.argv[2]), sys.argv[3]
paths = []
for d, _, names in os.walk(mount):
    paths += sorted(os.path.join(d, n) for n in names if n != "trace_pipe"
                    and os.stat(os.path.join(d, n)).st_mode & 0o444)
lat, end = [], time.monotonic() + duration
while time.monotonic() < end:
    for p in paths:
        t = time.perf_counter()
        with open(p, "rb") as f:
            f.read()
        lat.append(time.perf_counter() - t)
with open(out, "w") as f:
    json.dump({"lat": lat, "files": len(paths)}, f)
"""


def _config(order: int, total: int) -> str:
    cap = max(64, (total >> 20) + 16)
    return f"""
[[nodes]]
name = "dram"
capacity = "{cap}M"
demotion_target = 1
[[nodes]]
name = "far"
capacity = "{cap}M"
[[tenants]]
name = "bench"
size = "{total >> 20}M"
order = {order}
access_rate = 1000
[workloads.move]
enabled = false
[workloads.demotion]
enabled = false
[workloads.promotion]
enabled = false
[workloads.compaction]
enabled = false
"""


async def cat_latency(opts) -> BenchReport:
    """``opts.duration`` is the whole run's reading time, shared by the rows: a
    per-row duration made ``--duration 10s`` read for 60 s over six orders."""
    rows = []
    seconds = opts.duration / (len(opts.orders) * len(opts.migrators))
    for order in opts.orders:
        for spec in opts.migrators:
            opts.progress(f"cat-latency: order {order}, {spec}")
            rows.append(await _one(opts, order, spec, seconds))
    report = BenchReport("cat-latency", "real", opts.profile_name, rows)
    worst = max(r.extra["cat_p99_ms"] for r in rows)
    report.notes.append(f"cat p99 over every attribute while migrating: worst {worst:.2f} ms")
    return report


async def _one(opts, order: int, spec: MigratorSpec, seconds: float) -> BenchRow:
    cfg = load_config(text=_config(order, opts.total))
    cfg.dma["profile"] = opts.profile_name
    sys_ = System(cfg)
    entry = CATALOGUE[spec.name]
    if entry.offload:
        setattr(sys_.migrators[entry.name], entry.param, spec.param)
        await sys_.set_migrator(entry.name)
    tenant = sys_.tenants[0]
    mount = tempfile.mkdtemp(prefix="migd-cat-")
    clear_stale_mount(mount)
    tree = build_tree(sys_)
    token = trio.lowlevel.current_trio_token()
    moved = 0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sys_.dma.run)
        nursery.start_soon(lambda: trio.to_thread.run_sync(
            serve, tree, mount, token, abandon_on_cancel=True))
        await wait_mounted(mount)
        out = Path(mount).with_suffix(".json")
        reader = subprocess.Popen([sys.executable, "-c", _READER, mount, str(seconds),
                                   str(out)])
        t0 = time.monotonic()
        node = 1
        per_folio = np.arange(0, tenant.nr_pages, 1 << tenant.spec.order)
        while reader.poll() is None:
            r = await sys_.engine.move_pages(tenant, per_folio, node)
            moved += r.stats.nr_succeeded
            node = 1 - node
        elapsed = time.monotonic() - t0
        result = json.loads(out.read_text())
        lat = np.array(result["lat"]) * 1e3
        out.unlink()
        unmount(mount)
        nursery.cancel_scope.cancel()
    ok = sys_.machine.check_integrity().ok
    if not ok:
        raise RuntimeError("pages were lost or corrupted during cat-latency")
    nbytes = moved * 4096
    return BenchRow(
        migrator=spec.name, param=spec.param, order=order, folio_bytes=4096 << order,
        batch_pages=sys_.engine.nr_max_batched_migration, total_bytes=nbytes,
        seconds=elapsed, gbps=nbytes / elapsed / 1e9, first_folio_us=None,
        inaccessible_us_p50=None, inaccessible_us_p99=None, verified=ok,
        extra={"cat_reads": int(lat.size), "cat_p50_ms": float(np.percentile(lat, 50)),
               "cat_p99_ms": float(np.percentile(lat, 99)), "cat_max_ms": float(lat.max()),
               "files": result["files"]})
