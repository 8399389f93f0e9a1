"""``migd profile list|show|fit``: the command-line face of profiles as data."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ..hw import PROFILES, builtin_names, builtin_text, dump_profile, get_profile, load_profile


def add_parser(sub, parser_class) -> None:
    """``migd profile`` and its three commands, on the CLI's subparsers ``sub``."""
    p = sub.add_parser("profile", help="hardware profiles: list, show, fit to measurements",
                       description="Hardware profiles are TOML files of physical parameters. "
                       "--profile (bench, replay, sweep, the daemon's dma.profile) takes a "
                       "built-in name or such a file.")
    cmds = p.add_subparsers(dest="profile_command", required=True, metavar="COMMAND",
                            parser_class=parser_class)
    c = cmds.add_parser("list", help="name the built-in profiles")
    c.set_defaults(func=_list)
    c = cmds.add_parser("show", help="print a profile's TOML (a built-in name or a file)")
    c.add_argument("name", metavar="NAME|FILE")
    c.set_defaults(func=_show)
    c = cmds.add_parser(
        "fit", help="fit a profile's parameters to measurement tables",
        description="Fit the base profile's physical parameters to tables in the calibration "
        "CSV formats (throughput, batch_sweep, vanilla_first_folio, mtcopy; any subset); "
        "print in-sample, cross-validated (each table left out in turn) and held-out errors "
        "and the parameters the tables did not determine.")
    c.add_argument("tables", nargs="+", metavar="TABLE.csv")
    c.add_argument("--base", default="zen3-ptdma", metavar="NAME|FILE",
                   help="the profile whose mechanism and starting values are fitted "
                   "(default: zen3-ptdma)")
    c.add_argument("--out", required=True, metavar="FILE.toml", help="write the profile there")
    c.add_argument("--json", default=None, metavar="REPORT", help="write the report as JSON")
    c.add_argument("--name", default=None, help="the fitted profile's name (default: the "
                   "--out file's stem)")
    c.add_argument("--test", nargs="+", default=[], metavar="TABLE.csv",
                   help="tables not fitted, only predicted: held-out errors")
    c.set_defaults(func=_fit)


def _list(args) -> int:
    for name in builtin_names():
        print(f"{name:12} {PROFILES[name].description}")
    return 0


def _show(args) -> int:
    try:
        if args.name in PROFILES:
            print(builtin_text(args.name), end="")
        else:
            print(dump_profile(load_profile(args.name)), end="")
    except ValueError as e:
        print(f"migd profile show: {e}", file=sys.stderr)
        return 2
    return 0


def _fit(args) -> int:
    from ._fit import fit
    from ._tables import read_table

    try:
        for path, what in ((args.out, "--out"), (args.json, "--json")):
            if path is not None and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
                raise ValueError(f"{what}: no such directory for {path!r}")
        base = get_profile(args.base)
        cells = [c for t in args.tables for c in read_table(t, base)]
        test = [c for t in args.test for c in read_table(t, base)]
    except ValueError as e:
        print(f"migd profile fit: {e}", file=sys.stderr)
        return 2
    name = args.name or Path(args.out).stem
    result = fit(cells, base, test or None, name)
    tables = " ".join(Path(t).name for t in args.tables)
    Path(args.out).write_text(dump_profile(
        result.profile, f"migd profile fit {tables} --base {args.base}"))
    print(report_text(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result.json(), indent=2) + "\n")
    return 0


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
