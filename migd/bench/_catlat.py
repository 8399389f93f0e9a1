"""``bench cat-latency``: reading the control tree while migrating at full speed.

The daemon's System and its tree are mounted for real; a tenant is migrated
back and forth as fast as the engine goes; ``--readers`` separate processes
each open, read and close every attribute in turn (what ``cat`` does) and time
each; with ``--scrape-hz`` another process GETs ``/metrics`` from the
daemon's endpoint at that rate (as Prometheus would, but 20 times a second)
and times each scrape.  Readers and scraper are processes, never threads of
the serving process: their own GIL work would be charged to the daemon.
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

from .._args import in_range
from ..daemon import System, build_tree, compile_read_paths, load_config
from ..metrics import serve_metrics
from ..offload import CATALOGUE
from ..sysfs import clear_stale_mount, serve, unmount, wait_mounted
from ._options import MigratorSpec
from ._report import BenchReport, BenchRow

#: The reader walks the mount itself: no thread of the process serving the
#: tree touches it (see migd.soak's children: a killed server with a thread
#: waiting on its own mount can never exit).
#: Each read's time, and that time less the reader's own wait for a CPU
#: (run_delay, field 2 of /proc/thread-self/schedstat): with 16 readers on 2
#: CPUs a reader preempted inside its read counts its turn in the run queue.
_READER = r"""
import json, os, sys, time
mount, duration, out = sys.argv[1], float(sys.argv[2]), sys.argv[3]
paths = []
for d, _, names in os.walk(mount):
    paths += sorted(os.path.join(d, n) for n in names if n != "trace_pipe"
                    and os.stat(os.path.join(d, n)).st_mode & 0o444)
sched = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
def waited():
    return int(os.pread(sched, 128, 0).split()[1]) * 1e-9
lat, served, end = [], [], time.monotonic() + duration
while time.monotonic() < end:
    for p in paths:
        w = waited()
        t = time.perf_counter()
        with open(p, "rb") as f:
            f.read()
        lat.append(time.perf_counter() - t)
        served.append(lat[-1] - (waited() - w))
with open(out, "w") as f:
    json.dump({"lat": lat, "served": served, "files": len(paths)}, f)
"""

#: A scrape every 1/hz seconds on a fixed schedule (a slow scrape is not made
#: up for by a burst), each timed from connecting to the body's last byte (the
#: server closes), and that time less the scraper's own wait for a CPU, as the
#: readers'.  A raw socket, not urllib: urllib's request and header parsing
#: cost the starved scraper process more than the daemon's answer.
_SCRAPER = r"""
import json, os, socket, sys, time
port, hz, duration, out = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
request = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
sched = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
def waited():
    return int(os.pread(sched, 128, 0).split()[1]) * 1e-9
lat, served, start = [], [], time.monotonic()
k = 0
while time.monotonic() - start < duration:
    w = waited()
    t = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        head = s.recv(65536)
        while s.recv(65536):
            pass
    lat.append(time.perf_counter() - t)
    served.append(lat[-1] - (waited() - w))
    if not head.startswith(b"HTTP/1.0 200") and not head.startswith(b"HTTP/1.1 200"):
        sys.exit(f"scrape failed: {head[:80]!r}")
    k += 1
    time.sleep(max(0.0, start + k / hz - time.monotonic()))
with open(out, "w") as f:
    json.dump({"lat": lat, "served": served}, f)
"""

#: ``--readers``: reader processes at most (each is a Python interpreter, ~10 MB).
MAX_READERS = 64
#: ``--scrape-hz``: scrapes a second at most.
MAX_SCRAPE_HZ = 100.0


parse_readers = in_range("--readers", 1, MAX_READERS)
parse_scrape_hz = in_range("--scrape-hz", 0, MAX_SCRAPE_HZ, float, "a rate, e.g. 20; 0: no scraper")


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
    readers = f" ({opts.readers} readers)" if opts.readers > 1 else ""
    report.notes.append(f"cat p99 over every attribute while migrating{readers}: "
                        f"worst {worst:.2f} ms")
    if opts.readers > 1:
        own = max(r.extra["cat_p99_ms_less_own_wait"] for r in rows)
        report.notes.append(f"less the readers' own waits for a CPU: worst {own:.2f} ms")
    if opts.scrape_hz:
        worst = max(r.extra["scrape_p99_ms"] for r in rows)
        own = max(r.extra["scrape_p99_ms_less_own_wait"] for r in rows)
        report.notes.append(f"/metrics p99 at {opts.scrape_hz:g} scrapes/s: "
                            f"worst {worst:.2f} ms ({own:.2f} ms less the scraper's own "
                            f"waits for a CPU)")
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
    compile_read_paths()
    token = trio.lowlevel.current_trio_token()
    moved = 0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sys_.dma.run)
        nursery.start_soon(lambda: trio.to_thread.run_sync(
            serve, tree, mount, token, abandon_on_cancel=True))
        await wait_mounted(mount)
        outs = [Path(f"{mount}.{k}.json") for k in range(opts.readers)]
        procs = [subprocess.Popen([sys.executable, "-c", _READER, mount, str(seconds),
                                   str(out)]) for out in outs]
        server = None
        if opts.scrape_hz:
            server, port = serve_metrics(sys_, "127.0.0.1:0")
            scraped = Path(f"{mount}.scrape.json")
            procs.append(subprocess.Popen([
                sys.executable, "-c", _SCRAPER, str(port),
                str(opts.scrape_hz), str(seconds), str(scraped)]))
        t0 = time.monotonic()
        node = 1
        per_folio = np.arange(0, tenant.nr_pages, 1 << tenant.spec.order)
        try:
            while any(p.poll() is None for p in procs):
                r = await sys_.engine.move_pages(tenant, per_folio, node)
                moved += r.stats.nr_succeeded
                node = 1 - node
            elapsed = time.monotonic() - t0
            results = [json.loads(out.read_text()) for out in outs]
            if server is not None:
                scraped_json = json.loads(scraped.read_text())
                scrape = np.array(scraped_json["lat"]) * 1e3
                scrape_served = np.array(scraped_json["served"]) * 1e3
        finally:
            for out in outs + ([scraped] if server is not None else []):
                out.unlink(missing_ok=True)
            if server is not None:
                server.shutdown()
            unmount(mount)
        nursery.cancel_scope.cancel()
    lat = np.concatenate([np.array(r["lat"]) for r in results]) * 1e3
    served = np.concatenate([np.array(r["served"]) for r in results]) * 1e3
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
               "cat_p99_ms_less_own_wait": float(np.percentile(served, 99)),
               "files": results[0]["files"], "readers": opts.readers,
               **({"scrapes": int(scrape.size),
                   "scrape_p50_ms": float(np.percentile(scrape, 50)),
                   "scrape_p99_ms": float(np.percentile(scrape, 99)),
                   "scrape_p99_ms_less_own_wait": float(np.percentile(scrape_served, 99)),
                   "scrape_max_ms": float(scrape.max())} if server is not None else {})})
