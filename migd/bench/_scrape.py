"""``bench scrape``: how long a full /metrics scrape takes, over real HTTP."""

from __future__ import annotations

import time
import urllib.request

import numpy as np
import trio

from ..daemon import System, load_config
from ..metrics import serve_metrics
from ..offload import migrator_names
from ._catlat import _config
from ._report import BenchReport, BenchRow


async def scrape(opts) -> BenchReport:
    """Every series present (each migrator has run, faults fired), then timed scrapes."""
    cfg = load_config(text=_config(0, 32 << 20))
    sys_ = System(cfg)
    tenant = sys_.tenants[0]
    sys_.faults["fail_dma_desc"].set(probability=100, interval=50, times=-1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sys_.dma.run)
        for k, name in enumerate(migrator_names()):
            await sys_.set_migrator(name)
            per_folio = np.arange(0, tenant.nr_pages, 1 << tenant.spec.order)
            await sys_.engine.move_pages(tenant, per_folio, (k + 1) % 2)
        await sys_.set_migrator("none")
        nursery.cancel_scope.cancel()
    server, port = serve_metrics(sys_, "127.0.0.1:0")
    url = f"http://127.0.0.1:{port}/metrics"
    times, size = [], 0
    try:
        for _ in range(opts.repeat * 50):
            t = time.perf_counter()
            with urllib.request.urlopen(url, timeout=10) as r:
                body = r.read()
            times.append(time.perf_counter() - t)
            size = len(body)
    finally:
        server.shutdown()
    lat = np.array(times) * 1e3
    series = sum(1 for line in body.decode().splitlines() if line and line[0] != "#")
    row = BenchRow("scrape", 0, None, size, 0, size, float(lat.sum() / 1e3),
                   0.0, None, None, None, True,
                   extra={"scrapes": len(times), "series": series,
                          "scrape_p50_ms": float(np.percentile(lat, 50)),
                          "scrape_p99_ms": float(np.percentile(lat, 99)),
                          "scrape_max_ms": float(lat.max())})
    report = BenchReport("scrape", "real", opts.profile_name, [row])
    report.notes.append(f"{len(times)} scrapes of {series} series ({size} bytes): "
                        f"p50 {row.extra['scrape_p50_ms']:.2f} ms, "
                        f"p99 {row.extra['scrape_p99_ms']:.2f} ms, "
                        f"max {row.extra['scrape_max_ms']:.2f} ms")
    return report
