"""/metrics against real tools: promtool, a real Prometheus server, the dashboard."""

import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .helpers import free_port

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "etc" / "grafana" / "dashboards" / "migd.json"


def test_only_the_metrics_path_answers(daemon):
    """A wrong scrape path is 404, not the metrics (prometheus-client's server
    answered 200 on any path); a query string still reaches /metrics."""
    base = daemon.metrics_url.rsplit("/", 1)[0]
    for path in ("/", "/metric", "/metrics/x", "/favicon.ico"):
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(base + path, timeout=10)
        assert e.value.code == 404, path
    with urllib.request.urlopen(base + "/metrics?x=1", timeout=10) as r:
        assert r.status == 200 and b"migd_" in r.read()


def counters(text: str) -> dict[tuple, float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        if fam.type in ("counter", "histogram"):
            for s in fam.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_promtool_check_metrics_on_a_live_scrape_is_clean(daemon):
    text = daemon.scrape()
    p = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == "" and p.stderr.strip() == "", p
    names = {f.name for f in text_string_to_metric_families(text)}
    for want in ("migd_migrated_bytes", "migd_failed_folios", "migd_batches",
                 "migd_offload_fallback_folios", "migd_dma_channel_busy_seconds",
                 "migd_copy_cpu_seconds", "migd_first_folio_latency_seconds",
                 "migd_inaccessible_seconds", "migd_batch_pages", "migd_node_used_bytes",
                 "migd_tenant_stall_seconds", "migd_migrator_info"):
        assert want in names, want


def test_counters_never_go_backwards_across_switches_and_tree_resets(daemon):
    before = counters(daemon.scrape())
    for name in ("dcbm", "mtcopy", "none", "dcbm", "none"):
        daemon.write("kernel/mm/migrate_offload/migrator", name)
        time.sleep(0.2)
    assert int(daemon.read("module/dcbm/parameters/folios_migrated")) > 0
    daemon.write("module/dcbm/parameters/folios_migrated", "0")  # the tree's view only
    assert daemon.read("module/dcbm/parameters/folios_migrated") == "0\n"
    after = counters(daemon.scrape())
    went_back = {k: (v, after.get(k)) for k, v in before.items() if after.get(k, v) < v}
    assert went_back == {}
    assert after[("migd_batches_total", (("migrator", "dcbm"),))] > 0


def gauges(text: str) -> dict[str, float]:
    return {s.name: s.value for f in text_string_to_metric_families(text)
            if f.type == "gauge" for s in f.samples if not s.labels}


def test_the_latency_budget_is_exported_with_its_batches(daemon):
    daemon.write("kernel/mm/migrate_offload/max_inaccessible_us", "2000")
    try:
        deadline = time.monotonic() + 20
        while True:
            text = daemon.scrape()
            n = counters(text)[("migd_budget_batches_total", ())]
            if n > 10 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert n > 10
        assert gauges(text)["migd_max_inaccessible_seconds"] == 0.002
        assert counters(text)[("migd_budget_exceeded_batches_total", ())] <= n
    finally:
        daemon.write("kernel/mm/migrate_offload/max_inaccessible_us", "0")
    assert gauges(daemon.scrape())["migd_max_inaccessible_seconds"] == 0


def test_dashboard_is_provisionable():
    d = json.loads(DASHBOARD.read_text())
    assert d["id"] is None and d["uid"] == "migd-overview" and "__inputs" not in d
    prov = (ROOT / "etc/grafana/provisioning/datasources/migd.yaml").read_text()
    for panel in d["panels"]:
        assert panel["datasource"]["uid"] == "migd-prometheus"
        assert panel["targets"]
    assert "uid: migd-prometheus" in prov


def prom_query(port: int, expr: str) -> list:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as r:
        doc = json.loads(r.read())
    assert doc["status"] == "success", doc
    return doc["data"]["result"]


@pytest.mark.slow
def test_every_dashboard_panel_returns_data_from_a_real_prometheus(daemon, tmp_path):
    target = urllib.parse.urlparse(daemon.metrics_url).netloc
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(f"""
global:
  scrape_interval: 500ms
scrape_configs:
  - job_name: migd
    static_configs:
      - targets: ["{target}"]
""")
    port = free_port()
    prom = subprocess.Popen(
        ["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        daemon.write("module/dcbm/parameters/offloading", "1")  # exercise DMA panels too
        deadline = time.monotonic() + 60
        while True:  # until Prometheus is up and has scraped a few times
            try:
                up = prom_query(port, 'count_over_time(up{job="migd"}[1m])')
                if up and float(up[0]["value"][1]) >= 4:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "Prometheus never scraped migd"
            time.sleep(0.5)
        exprs = [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"]
                 for t in p["targets"]]
        empty = [e for e in exprs if not prom_query(port, e)]
        assert empty == [], empty
        assert len(exprs) >= 14
    finally:
        daemon.write("module/dcbm/parameters/offloading", "0")
        prom.terminate()
        prom.wait(10)
