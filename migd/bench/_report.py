"""Bench results: the JSON rows of the SPEC and the human table.

Each experiment declares its table's :class:`Layout` with the experiment
(``Experiment.table``); the report draws the layout it is given rather than
guessing one from whichever keys its rows hold (a ``cat_p99_ms`` meant the
cat-latency table, a ``published_gbps`` seed's), which broke as soon as a
row gained a key another experiment's table keyed on.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

#: Virtual-clock rows' columns: wall time of the timed run and simulated
#: seconds per wall second (``Rig.migrate``).
SPEED_COLUMNS = ("wall_seconds", "sim_speed")


@dataclass(frozen=True)
class Layout:
    """An experiment's table: ``kind`` is ``migration`` (GB/s, latencies and
    ``columns``, more fields of the rows' ``extra``), ``published`` (beside the
    published values, seed), ``cat`` (cat-latency's read times) or ``notes``
    (the notes alone); ``speed``: the simulator's wall time and speed columns
    on the virtual clock."""

    kind: str = "migration"
    columns: tuple[str, ...] = ()
    speed: bool = True


MIGRATION = Layout()


@dataclass
class BenchRow:
    migrator: str  # none | mtcopy | dcbm | memcpy
    param: int  # threads or channels; 0 for none and memcpy
    order: int | None  # folio order; None for memcpy
    folio_bytes: int
    batch_pages: int
    total_bytes: int
    seconds: float
    gbps: float
    first_folio_us: float | None
    inaccessible_us_p50: float | None
    inaccessible_us_p99: float | None
    verified: bool
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(d.pop("extra"))
        return d


@dataclass
class BenchReport:
    experiment: str
    clock: str
    profile: str
    rows: list[BenchRow]
    notes: list[str] = field(default_factory=list)
    #: The table's layout: the experiment's declaration (``bench.run`` sets it).
    layout: Layout = MIGRATION

    def as_json(self) -> dict[str, Any]:
        return {"experiment": self.experiment, "clock": self.clock, "profile": self.profile,
                "rows": [r.as_json() for r in self.rows], "notes": self.notes}

    def write_json(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump(self.as_json(), f, indent=1)
            f.write("\n")

    def _cat_table(self) -> str:
        head, lines = _cat_table_rows(self.rows)
        widths = [max(len(x) for x in col) for col in zip(head, *lines, strict=True)]
        out = [f"# {self.experiment}, {self.clock} clock, profile {self.profile}"]
        out += ["  ".join(x.rjust(w) for x, w in zip(row, widths, strict=True))
                for row in [head, *lines]]
        return "\n".join(out + ["# " + n for n in self.notes])

    def memcpy_gbps(self) -> float | None:
        for r in self.rows:
            if r.migrator == "memcpy":
                return r.gbps
        return None

    def table(self) -> str:
        ref = self.memcpy_gbps()
        layout = self.layout
        published = layout.kind == "published"
        if layout.kind == "cat":
            return self._cat_table()
        if layout.kind == "notes":
            return "\n".join([f"# {self.experiment}, {self.clock} clock"]
                             + ["# " + n for n in self.notes])
        head = ["migrator", "order", "folio", "batch", "GB/s", "x memcpy", "first-folio us",
                "inacc p50 us", "inacc p99 us", "verified"]
        columns = list(layout.columns)
        speed = [c for c in SPEED_COLUMNS if c not in columns] if (
            layout.speed and self.clock == "virtual") else []
        if published:
            head = ["migrator", "order", "folio", "batch", "n", "GB/s", "published", "error",
                    "first-folio us", "published", "error"]
        else:
            head += [c.replace("_", " ") for c in columns]
        head += [c.replace("_", " ") for c in speed]
        lines = []
        for r in self.rows:
            name = r.migrator if not r.param else f"{r.migrator}:{r.param}"
            common = [name, "-" if r.order is None else str(r.order), _size(r.folio_bytes),
                      str(r.batch_pages or "-")]
            if published:
                e = r.extra
                lines.append(common + [
                    str(e.get("n_folios") or "all"), f"{r.gbps:.2f}", _num(e["published_gbps"], 2),
                    _pct(e["gbps_error"]), _num(r.first_folio_us),
                    _num(e["published_first_folio_us"]), _pct(e["first_folio_error"])]
                    + [_cell(e.get(c)) for c in speed])
                continue
            lines.append(common + [
                f"{r.gbps:.2f}", f"{r.gbps / ref:.2f}" if ref else "-",
                _num(r.first_folio_us), _num(r.inaccessible_us_p50),
                _num(r.inaccessible_us_p99), "yes" if r.verified else "no"]
                + [_cell(r.extra.get(c)) for c in columns]
                + [_cell(r.extra.get(c)) for c in speed])
        widths = [max(len(x) for x in col) for col in zip(head, *lines, strict=True)]
        out = [f"# {self.experiment}, {self.clock} clock, profile {self.profile}"]
        for row in [head, *lines]:
            out.append("  ".join(x.rjust(w) for x, w in zip(row, widths, strict=True)))
        out += ["# " + n for n in self.notes]
        if speed:
            out.append("# " + self.speed_note())
        return "\n".join(out)

    def speed_note(self) -> str:
        """The simulator's speed over every virtual-clock row."""
        rows = [r for r in self.rows if "wall_seconds" in r.extra]
        sim = sum(r.seconds for r in rows)
        wall = sum(r.extra["wall_seconds"] for r in rows)
        if not wall:
            return f"simulator: no timed row among {len(self.rows)} rows"
        return (f"simulator: {sim:.3f} s simulated in {wall:.3f} s of wall time "
                f"(sim_speed {sim / wall:.2f}) over {len(rows)} rows")


def _cat_table_rows(rows):
    head = ["migrator", "order", "migrating GB/s", "reads", "files", "cat p50 ms", "cat p99 ms",
            "cat max ms"]
    lines = [[r.migrator if not r.param else f"{r.migrator}:{r.param}", str(r.order),
              f"{r.gbps:.2f}", str(r.extra["cat_reads"]), str(r.extra["files"]),
              f"{r.extra['cat_p50_ms']:.2f}", f"{r.extra['cat_p99_ms']:.2f}",
              f"{r.extra['cat_max_ms']:.2f}"] for r in rows]
    if any(r.extra.get("readers", 1) > 1 for r in rows):
        head.insert(3, "readers")
        for r, line in zip(rows, lines, strict=True):
            line.insert(3, str(r.extra["readers"]))
    if any("scrape_p99_ms" in r.extra for r in rows):
        head += ["scrapes", "scrape p50 ms", "scrape p99 ms"]
        for r, line in zip(rows, lines, strict=True):
            line += [str(r.extra["scrapes"]), f"{r.extra['scrape_p50_ms']:.2f}",
                     f"{r.extra['scrape_p99_ms']:.2f}"]
    return head, lines


def _num(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:+.0%}"


def _size(n: int) -> str:
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return str(n)


def _cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}" if v < 10 else f"{v:.1f}"
    return str(v)
