"""``migd profile list|show|fit``: the command-line face of profiles as data."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from .._args import Command, Option
from ..hw import PROFILES, builtin_names, builtin_text, dump_profile, get_profile, load_profile


def _table(text: str) -> str:
    return text


COMMANDS: tuple[Command, ...] = (
    Command("list", "name the built-in profiles", "Name the built-in profiles, one a line.",
            lambda o, call: _list()),
    Command("show", "print a profile's TOML (a built-in name or a file)",
            "Print a profile as TOML, each parameter with its unit and meaning.",
            lambda o, call: _show(o["name"]),
            (Option("name", "name", "a built-in profile or a profile file", str,
                    metavar="NAME|FILE"),)),
    Command("fit", "fit a profile's parameters to measurement tables",
            "Fit the base profile's physical parameters to tables in the calibration CSV "
            "formats (throughput, batch_sweep, vanilla_first_folio, mtcopy; any subset); print "
            "in-sample, cross-validated (each table left out in turn) and held-out errors and "
            "the parameters the tables did not determine.",
            lambda o, call: _fit(o), (
                Option("tables", "tables", "measurement tables (CSV)", _table,
                       metavar="TABLE.csv", repeatable=True),
                Option("--base", "base", "the profile whose mechanism and starting values "
                       "are fitted (a built-in name or a file)", str, "zen3-ptdma",
                       "NAME|FILE"),
                Option("--out", "out", "write the fitted profile there (required)", str,
                       metavar="FILE.toml"),
                Option("--name", "name", "the fitted profile's name (default: the --out "
                       "file's stem)", str),
                Option("--test", "test", "a table not fitted, only predicted: held-out "
                       "errors (repeatable)", _table, metavar="TABLE.csv", repeatable=True),
            ), json="write the report as JSON (in_sample, cross_validation, parameters)"),
)


def _list() -> int:
    for name in builtin_names():
        print(f"{name:12} {PROFILES[name].description}")
    return 0


def _show(name: str) -> int:
    text = builtin_text(name) if name in PROFILES else dump_profile(load_profile(name))
    sys.stdout.write(text)
    return 0


@dataclass
class FitReport:
    """The frame's result: the report's text and JSON."""

    result: object

    def table(self) -> str:
        return report_text(self.result)

    def write_json(self, path: str) -> None:
        Path(path).write_text(json.dumps(self.result.json(), indent=2) + "\n")


def _fit(o: dict) -> FitReport:
    from ._fit import fit
    from ._tables import read_table

    out = o["out"]
    if out is None:
        raise ValueError("--out FILE.toml is required")
    if not os.path.isdir(os.path.dirname(os.path.abspath(out))):
        raise ValueError(f"--out: no such directory for {out!r}")
    base = get_profile(o["base"])
    cells = [c for t in o["tables"] for c in read_table(t, base)]
    test = [c for t in o["test"] or () for c in read_table(t, base)]
    result = fit(cells, base, test or None, o["name"] or Path(out).stem)
    tables = " ".join(Path(t).name for t in o["tables"])
    Path(out).write_text(dump_profile(result.profile,
                                      f"migd profile fit {tables} --base {o['base']}"))
    return FitReport(result)


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _block(title: str, e: dict) -> list[str]:
    out = [title]
    rows = [("all", e)] + list(e.get("tables", {}).items())
    for name, b in rows:
        parts = []
        for q, label in (("throughput", "throughput"), ("first_folio", "first-folio")):
            if q in b:
                parts.append(f"{label} median {_pct(b[q])}, worst {b[q + '_worst']:+.1%} "
                             f"({b[q + '_worst_cell']})")
        out.append(f"  {name:24} " + "; ".join(parts))
    return out


def report_text(result) -> str:
    """The fit report a person reads."""
    out = _block("in sample:", result.in_sample)
    cv = result.cross_validation
    out += _block(f"cross-validated ({cv['folds']} folds, each left out and predicted):", cv)
    if result.held_out is not None:
        out += _block("held out (not fitted):", result.held_out)
    out.append("parameters (value, base, sensitivity: RMS log-error change when doubled):")
    for name, p in result.parameters.items():
        flag = "" if p["determined"] else "   <- not determined by these tables"
        out.append(f"  {name:22} {p['value']:10.4g} {p['base']:10.4g} {p['sensitivity']:8.3f}"
                   f"{flag}")
    if result.flat_directions:
        out.append("flat directions (measure more to pin them): "
                   + "; ".join(result.flat_directions))
    out.append(f"fit: {result.seconds:.1f} s")
    return "\n".join(out)
