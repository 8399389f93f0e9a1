"""``migd bench``: JSON rows as the SPEC says, and one-line errors on bad input."""

import json
import subprocess
import sys

import pytest

ROW_KEYS = {"migrator", "param", "order", "folio_bytes", "batch_pages", "total_bytes",
            "seconds", "gbps", "first_folio_us", "inaccessible_us_p50",
            "inaccessible_us_p99", "verified"}


def migd(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "migd", *args], capture_output=True,
                          text=True, timeout=300)


def test_bench_throughput_real_clock_verifies_and_has_memcpy_row(tmp_path):
    out = tmp_path / "t.json"
    p = migd("bench", "throughput", "--clock", "real", "--orders", "0,9", "--total", "32M",
             "--verify", "--json", str(out))
    assert p.returncode == 0, p.stderr
    doc = json.loads(out.read_text())
    assert doc["experiment"] == "throughput" and doc["clock"] == "real"
    assert doc["profile"] == "native"
    migrators = [r["migrator"] for r in doc["rows"]]
    assert migrators == ["memcpy", "cpu", "cpu"]
    for row in doc["rows"]:
        assert row.keys() >= ROW_KEYS
    cpu = doc["rows"][1:]
    assert [r["order"] for r in cpu] == [0, 9]
    assert all(r["verified"] and r["gbps"] > 0 and r["batch_pages"] == 512 for r in cpu)
    assert all(r["total_bytes"] == 32 << 20 for r in cpu)
    assert "memcpy" in p.stdout and "x memcpy" in p.stdout


def test_bench_virtual_clock_is_deterministic(tmp_path):
    rows = []
    for i in range(2):
        out = tmp_path / f"v{i}.json"
        p = migd("bench", "throughput", "--clock", "virtual", "--orders", "0,4,9",
                 "--total", "64M", "--json", str(out))
        assert p.returncode == 0, p.stderr
        doc = json.loads(out.read_text())
        assert doc["clock"] == "virtual" and doc["profile"] == "zen3-ptdma"
        rows.append([(r["order"], r["gbps"], r["first_folio_us"]) for r in doc["rows"]])
    assert rows[0] == rows[1]
    gbps = {o: g for o, g, _ in rows[0]}
    assert gbps[9] > gbps[4] > gbps[0]  # per-folio costs amortise over larger folios


def test_bench_memcpy():
    p = migd("bench", "memcpy", "--total", "64M")
    assert p.returncode == 0, p.stderr
    assert "memcpy" in p.stdout


@pytest.mark.parametrize("args, needle", [
    (["--orders", "0,12"], "folio order"),
    (["--total", "lots"], "bad size"),
    (["--migrators", "gpu"], "unknown migrator"),
    (["--batch-pages", "0"], "batch-pages"),
    (["--profile", "nope"], "unknown hardware profile"),
])
def test_bench_bad_input_is_one_line_and_nonzero(args, needle):
    p = migd("bench", "throughput", "--total", "8M", *args)
    assert p.returncode != 0
    assert needle in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert p.stdout == ""
