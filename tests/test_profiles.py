"""Profiles as data and ``migd profile fit``: real CLI runs, published tables.

The fit's expectations come from the published calibration set (the RFC's
tables) or from tables a known profile generated on the virtual clock;
the closed-form cells the fit uses are held to the emulator (``bench seed``).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from migd.cli import main
from migd.hw import (
    PROFILES,
    builtin_text,
    dump_profile,
    get_profile,
    load_profile,
    parse_profile,
)
from migd.profile import TableError, errors, predict, read_table
from migd.profile._fit import fit_params

CALIBRATION = Path(__file__).resolve().parent.parent / "migd" / "bench" / "calibration"
TABLES = sorted(str(p) for p in CALIBRATION.glob("*.csv"))


def migd(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "migd", *args], capture_output=True,
                          text=True, timeout=300)


def test_profile_list_and_show_print_every_builtin_as_toml():
    out = migd("profile", "list")
    assert out.returncode == 0
    names = [line.split()[0] for line in out.stdout.splitlines()]
    assert names == sorted(PROFILES) and "zen3-ptdma" in names
    assert migd("profile", "show", "sdxi").stdout == builtin_text("sdxi")
    for name in names:
        shown = subprocess.CompletedProcess([], 0, builtin_text(name))
        doc = tomllib.loads(shown.stdout)
        assert doc["name"] == name and {"cpu", "dma"} <= doc.keys()
        assert parse_profile(shown.stdout, name) == dataclasses.replace(
            PROFILES[name], extra={"source": doc["source"]})
        # every parameter carries its unit and meaning beside it
        params = [ln for ln in shown.stdout.splitlines() if "=" in ln and not ln.startswith(
            ("name", "description", "source"))]
        assert params and all("# " in ln for ln in params)


def test_a_profile_file_round_trips_and_is_taken_by_bench(tmp_path):
    fast = dataclasses.replace(PROFILES["zen3-ptdma"], name="fastcopy", cpu=dataclasses.replace(
        PROFILES["zen3-ptdma"].cpu, copy_gbps=2 * PROFILES["zen3-ptdma"].cpu.copy_gbps))
    path = tmp_path / "fastcopy.toml"
    path.write_text(dump_profile(fast, "test"))
    assert load_profile(path).cpu == fast.cpu and get_profile(str(path)).dma == fast.dma
    rows = {}
    for prof in ("zen3-ptdma", str(path)):
        out = tmp_path / "r.json"
        r = migd("bench", "throughput", "--clock", "virtual", "--profile", prof, "--orders", "9",
                 "--migrators", "none", "--total", "64M", "--json", str(out))
        assert r.returncode == 0, r.stderr
        doc = json.loads(out.read_text())
        assert doc["profile"] == prof
        rows[prof] = doc["rows"][0]["gbps"]
    assert rows[str(path)] > 1.3 * rows["zen3-ptdma"]  # a copy at twice the speed


@pytest.mark.parametrize("text, where", [
    ("name = 'x'\n[cpu]\ncall_us = 1\n[dma]\n", "lacks"),
    ("[cpu]\nwarp = 1\n", "p.toml:2: unknown parameter [cpu] 'warp'"),
    ("color = 1\n", "unknown key 'color'"),
])
def test_a_bad_profile_file_is_one_line_exit_2(tmp_path, capsys, text, where):
    """In process (refused before any work): ``migd profile show`` and ``bench``."""
    p = tmp_path / "p.toml"
    p.write_text(text)
    for argv in (["profile", "show", str(p)], ["bench", "seed", "--profile", str(p)]):
        assert main(argv) == 2, argv
        out, err = capsys.readouterr()
        assert out == "" and len(err.splitlines()) == 1 and where in err, (argv, err)


def test_shipped_zen3_ptdma_meets_the_issues_targets_on_the_published_cells():
    """The published cells (shared/calibration), predicted by the shipped,
    fitted profile: issue 22's in-sample targets, median 3% (throughput) /
    5% (first folio) - the hand-set profile it replaced was at 3.5% / 5.5% -
    and no cell worse than 20%, so the shape the hand-set one missed (dcbm
    16K..1M, the first folio of calls of 64..512 4K folios, calls of 16 2M
    folios) is held too."""
    base = PROFILES["zen3-ptdma"]
    cells = [c for t in TABLES for c in read_table(t, base)]
    e = errors(base, cells)
    assert e["throughput_cells"] == 76 and e["first_folio_cells"] == 49
    assert e["throughput"] <= 0.03 and e["first_folio"] <= 0.05
    for c, (g, ff) in zip(cells, (predict(base, c) for c in cells), strict=True):
        assert abs(g / c.gbps - 1) <= 0.2, c.label
        if c.first_folio_us:
            assert abs(ff / c.first_folio_us - 1) <= 0.2, c.label


def test_closed_form_cells_equal_the_emulator(tmp_path):
    """``predict`` (what the fit evaluates) against ``bench seed`` (the
    emulator on the virtual clock) with every mechanism of the model on."""
    z = PROFILES["zen3-ptdma"]
    prof = dataclasses.replace(z, name="t", cpu=dataclasses.replace(z.cpu, cold_folio_us=0.4,
                                                                    call_mib_us=20.0),
                               dma=dataclasses.replace(z.dma, iommu_walk_us=0.2,
                                                       iommu_tail_us=0.1, chan_gbps=9.0))
    pfile = tmp_path / "t.toml"
    pfile.write_text(dump_profile(prof))
    cal = tmp_path / "cal"
    cal.mkdir()
    (cal / "throughput.csv").write_text("path,channels,16K,1M\ncpu,0,1,1\ndcbm,4,1,1\n")
    (cal / "vanilla_first_folio.csv").write_text(
        "order,n_folios,gbps,first_folio_us\n0,64,1,1\n0,2048,1,1\n")
    (cal / "batch_sweep.csv").write_text(
        "order,batch_pages,channels,gbps,first_folio_us\n2,4096,16,1,1\n9,2048,3,1,1\n")
    (cal / "mtcopy.csv").write_text("order,threads,gbps\n9,4,1\n")
    out = tmp_path / "seed.json"
    r = migd("bench", "seed", "--clock", "virtual", "--profile", str(pfile), "--calibration",
             str(cal), "--json", str(out))
    assert r.returncode == 0, r.stderr
    rows = json.loads(out.read_text())["rows"]
    cells = [c for t in sorted(cal.glob("*.csv")) for c in read_table(t, prof)]
    assert len(rows) == len(cells) == 9
    key = lambda m, p, o, b, n: (m, p, o, b, n)  # noqa: E731
    emulated = {key(r["migrator"], r["param"], r["order"], r["batch_pages"], r["n_folios"]): r
                for r in rows}
    for c in cells:
        row = emulated[key(c.migrator, c.param, c.order, c.batch_pages, c.n_folios)]
        gbps, ff = predict(prof, c)
        assert gbps == pytest.approx(row["gbps"], rel=1e-9), c.label
        assert ff == pytest.approx(row["first_folio_us"], rel=1e-9), c.label


def _tables_of(prof, tmp_path: Path, channels, threads) -> list[Path]:
    """Tables in the calibration formats, measured on ``prof`` (virtual clock)."""
    from migd.profile import Cell

    def g(c):
        return predict(prof, c)

    d = tmp_path / f"gen{'-'.join(map(str, channels))}"
    d.mkdir()
    sizes = {"4K": 0, "16K": 2, "64K": 4, "256K": 6, "1M": 8, "2M": 9}
    lines = ["path,channels," + ",".join(sizes)]
    for path, ch in [("cpu", 0)] + [("dcbm", c) for c in channels]:
        mig, bound = ("none", 512) if path == "cpu" else ("dcbm", 262144)
        vals = [g(Cell("", 0, mig, ch, o, bound, 0, None, None))[0] for o in sizes.values()]
        lines.append(f"{path},{ch}," + ",".join(f"{v:.6g}" for v in vals))
    (d / "throughput.csv").write_text("\n".join(lines) + "\n")
    lines = ["order,batch_pages,channels,gbps,first_folio_us"]
    for o, b, ch in [(0, 512, c) for c in channels] + [(0, 16384, channels[-1]),
                                                       (9, 512, channels[0]),
                                                       (9, 4096, channels[-1])]:
        gb, ff = g(Cell("", 0, "dcbm", ch, o, b, 0, None, None))
        lines.append(f"{o},{b},{ch},{gb:.6g},{ff:.6g}")
    (d / "batch_sweep.csv").write_text("\n".join(lines) + "\n")
    lines = ["order,n_folios,gbps,first_folio_us"]
    for o, n in [(0, 1), (0, 64), (0, 512), (0, 4096), (9, 1), (9, 16)]:
        gb, ff = g(Cell("", 0, "none", 0, o, 512, n, None, None))
        lines.append(f"{o},{n},{gb:.6g},{ff:.6g}")
    (d / "vanilla_first_folio.csv").write_text("\n".join(lines) + "\n")
    lines = ["order,threads,gbps"] + [
        f"9,{t},{g(Cell('', 0, 'mtcopy', t, 9, 512, 0, None, None))[0]:.6g}" for t in threads]
    (d / "mtcopy.csv").write_text("\n".join(lines) + "\n")
    return sorted(d.glob("*.csv"))


def test_a_known_profile_is_recovered_and_predicts_left_out_channels_and_threads(tmp_path):
    """Tables generated by a known machine (not zen3-ptdma: slower copy,
    other engine and IOMMU costs), fitted from zen3-ptdma with channel counts
    1 and 16 and thread counts 1 and 16 only, predict 4 channels and 4
    threads within 3% (throughput) / 5% (first folio)."""
    z = PROFILES["zen3-ptdma"]
    known = dataclasses.replace(
        z, cpu=dataclasses.replace(z.cpu, copy_gbps=9.5, pte_us=0.3, flush_us=30.0,
                                   cold_folio_us=0.15, mt_dispatch_us=3.0),
        dma=dataclasses.replace(z.dma, engine_gbps=20.0, chan_gbps=11.0, iommu_page_us=0.4,
                                iommu_tail_us=0.2, iommu_walk_us=0.05, membus_gbps=80.0))
    train = [c for t in _tables_of(known, tmp_path, (1, 16), (1, 16)) for c in read_table(t, z)]
    held = [c for t in _tables_of(known, tmp_path, (4,), (4,)) for c in read_table(t, z)]
    held = [c for c in held if c.param == 4]
    assert {c.migrator for c in held} == {"dcbm", "mtcopy"}
    fitted, _, _ = fit_params(z, train)
    e = errors(fitted, held)
    assert e["throughput"] <= 0.03 and e["first_folio"] <= 0.05, e
    assert abs(fitted.cpu.copy_gbps / 9.5 - 1) < 0.05  # the copy speed is recovered


def test_a_bad_table_is_one_line_naming_file_and_line_exit_2(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("order,threads,gbps,colour\n9,1,10,red\n")
    r = migd("profile", "fit", str(p), "--out", str(tmp_path / "o.toml"))
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stdout == ""
    assert r.stderr.splitlines() == [f"migd profile: {p}:1: unknown column 'colour'; "
                                     "expected one of: path,channels,4K,...,2M; order,"
                                     "batch_pages,channels,gbps,first_folio_us; order,n_folios,"
                                     "gbps,first_folio_us; order,threads,gbps"]
    assert not (tmp_path / "o.toml").exists()


@pytest.mark.parametrize("name, text, message", [
    ("b.csv", "order,threads,gbps\n9,1,10\n9,4,-3\n", "b.csv:3: gbps must be a positive"),
    ("c.csv", "order,threads,gbps\n9,1,fast\n", "c.csv:2: gbps must be a positive number"),
    ("d.csv", "", "d.csv:1: empty table"),
    ("e.csv", "order,batch_pages,channels,gbps,first_folio_us\n9,512,32,10,100\n",
     "e.csv:2: 32 channels, base profile 'zen3-ptdma' has 16"),
    ("f.csv", "path,channels,4K,3M\ncpu,0,1,1\n", "f.csv:1: unknown column '3M'"),
    ("g.csv", "order,threads,gbps\n9,1.5,10\n", "g.csv:2: threads must be a positive whole"),
    ("h.csv", "order,n_folios,gbps,first_folio_us\n0,1,1\n", "h.csv:2: 3 values, the header"),
])
def test_bad_tables_name_file_and_line(tmp_path, name, text, message):
    p = tmp_path / name
    p.write_text(text)
    with pytest.raises(TableError) as e:
        read_table(p, PROFILES["zen3-ptdma"])
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_table_the_base_cannot_express_names_it(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("path,channels,2M\ndcbm,4,20\n")
    r = migd("profile", "fit", str(p), "--base", "native", "--out", str(tmp_path / "o.toml"))
    assert r.returncode == 2 and "t.csv:2: base profile 'native' has no DMA timing" in r.stderr


def test_fit_writes_a_profile_and_the_report(tmp_path):
    out, rep = tmp_path / "mine.toml", tmp_path / "rep.json"
    tables = [str(CALIBRATION / "throughput.csv"), str(CALIBRATION / "mtcopy.csv")]
    r = migd("profile", "fit", *tables, "--out", str(out), "--json", str(rep))
    assert r.returncode == 0, r.stderr
    doc = json.loads(rep.read_text())
    for part in ("in_sample", "cross_validation"):
        assert 0 <= doc[part]["throughput"] < 1
    assert doc["cross_validation"]["folds"] == 2
    assert "first_folio" not in doc["in_sample"]  # neither table measures it
    # no first-folio table: the cold surcharge is not determined, and is said so
    assert doc["parameters"]["cpu.cold_folio_us"]["determined"] is False
    assert "cpu.cold_folio_us" in doc["flat_directions"]
    assert "not determined" in r.stdout
    prof = load_profile(out)
    assert prof.name == "mine"
    # counts are fitted as reals but written, and reported, as whole numbers
    for count in ("cold_folios", "call_cap_mib"):
        assert type(getattr(prof.cpu, count)) is int and f"cpu.{count}" in doc["parameters"]
    cells = [c for t in tables for c in read_table(t, prof)]
    assert errors(prof, cells)["throughput"] == pytest.approx(doc["in_sample"]["throughput"],
                                                              abs=1e-4)
    # the written profile is taken by bench
    js = tmp_path / "b.json"
    r = migd("bench", "throughput", "--clock", "virtual", "--profile", str(out), "--orders", "9",
             "--migrators", "dcbm:4", "--total", "64M", "--json", str(js))
    assert r.returncode == 0, r.stderr
    assert np.isfinite(json.loads(js.read_text())["rows"][0]["gbps"])


def test_the_daemon_config_takes_a_profile_file_and_refuses_a_bad_one(tmp_path):
    from migd.daemon import ConfigError, load_config

    good = tmp_path / "mine.toml"
    good.write_text(builtin_text("sdxi"))
    assert load_config(text=f"[dma]\nprofile = '{good}'\n").dma["profile"] == str(good)
    bad = tmp_path / "bad.toml"
    bad.write_text("[cpu]\ncall_us = -1\n")
    with pytest.raises(ConfigError) as e:
        load_config(text=f"[dma]\nprofile = '{bad}'\n")
    assert "dma.profile" in str(e.value) and "bad.toml:2: [cpu] call_us must be a number >= 0" \
        in str(e.value)
