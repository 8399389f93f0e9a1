"""The replay's report: the trace's totals, per configuration and reason what
the emulated machine did, the profile checked against the trace's own
durations, and the recommendation.

Percentiles are over calls (each call's first-folio latency and its longest
inaccessible time), as a user reads a latency SLO; per-folio percentiles
would let one 512-folio compaction call outweigh 500 promotions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..mm import MigrateReason, format_reason_mask
from ._parse import TraceCalls
from ._replay import Config

ALL = "all"


def _pct(x: np.ndarray, q: float) -> float | None:
    x = x[x == x]
    return float(np.percentile(x, q)) * 1e6 if x.size else None


@dataclass
class ReplayReport:
    totals: list[dict[str, Any]]  # by reason, then "all"
    rows: list[dict[str, Any]]  # per configuration and reason (and "all")
    profile: str
    budget_us: float
    notes: list[str] = field(default_factory=list)
    malformed: list[str] = field(default_factory=list)
    profile_check: dict[str, Any] = field(default_factory=dict)
    recommendation: dict[str, Any] = field(default_factory=dict)
    #: Calls that overlapped on the traced host: {"calls", "clusters", "largest"}.
    concurrent: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"experiment": "replay", "clock": "virtual", "profile": self.profile,
                "budget_us": self.budget_us, "totals": self.totals, "rows": self.rows,
                "profile_check": self.profile_check, "recommendation": self.recommendation,
                "concurrent": self.concurrent, "notes": self.notes, "malformed": self.malformed}

    def write_json(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump(self.as_json(), f, indent=2)
            f.write("\n")

    def table(self) -> str:
        out = ["trace: calls, pages and THPs by reason",
               f"  {'reason':<18}{'calls':>9}{'pages':>12}{'failed':>9}{'THPs':>8}"]
        for t in self.totals:
            out.append(f"  {t['reason']:<18}{t['calls']:>9}{t['pages']:>12}"
                       f"{t['failed_pages']:>9}{t['thps']:>8}")
        out += ["", "emulated, per configuration and reason (latencies per call, us)",
                f"  {'config':<22}{'reason':<18}{'time s':>10}{'cpu s':>9}{'saved s':>9}"
                f"{'offl %':>7}{'ff p50':>9}{'ff p99':>9}{'inacc p50':>10}{'inacc p99':>10}"
                f"{'slower':>7}"]
        for r in self.rows:
            out.append(
                f"  {r['config']:<22}{r['reason']:<18}{r['seconds']:>10.4f}"
                f"{r['cpu_seconds']:>9.4f}{r['cpu_saved_seconds']:>9.4f}"
                f"{r['offloaded_pct']:>7.1f}{_n(r['first_folio_us_p50'])}"
                f"{_n(r['first_folio_us_p99'])}{_n(r['inaccessible_us_p50'], 10)}"
                f"{_n(r['inaccessible_us_p99'], 10)}{r['slower_than_none']:>7}")
        pc = self.profile_check
        if pc:
            out += ["", f"the trace's own call durations vs emulated none ({self.profile}): "
                    f"median {pc['trace_median_us']:.1f} us vs {pc['none_median_us']:.1f} us, "
                    f"median error {pc['median_error_pct']:.1f}% over {pc['calls']} calls"]
        rec = self.recommendation
        out += ["", f"recommendation (least migration time with p99 inaccessible <= "
                f"{self.budget_us:g} us):"]
        for reason, cfg in rec.get("by_reason", {}).items():
            out.append(f"  {reason:<18}{cfg}")
        for m, mask in rec.get("reason_mask", {}).items():
            out.append(f"  => {m}: reason_mask={mask}")
        out += [f"note: {n}" for n in self.notes]
        out += [f"malformed: {m}" for m in self.malformed]
        return "\n".join(out)


def _n(v: float | None, w: int = 9) -> str:
    return f"{'-':>{w}}" if v is None else f"{v:>{w}.1f}"


def _reason_sets(calls: TraceCalls) -> list[tuple[str, np.ndarray]]:
    reasons = calls["reason"]
    out = [(MigrateReason(int(r)).label, reasons == r) for r in np.unique(reasons)]
    return out + [(ALL, np.ones(reasons.size, dtype=bool))]


def trace_totals(calls: TraceCalls) -> list[dict[str, Any]]:
    out = []
    for label, sel in _reason_sets(calls):
        out.append({"reason": label, "calls": int(sel.sum()),
                    "pages": int((calls["succeeded"][sel] + calls["failed"][sel]).sum()),
                    "failed_pages": int(calls["failed"][sel].sum()),
                    "thps": int((calls["thp_succeeded"][sel] + calls["thp_failed"][sel]).sum()),
                    "trace_seconds": float((calls["end"][sel] - calls["start"][sel]).sum())})
    return out


def build_report(calls: TraceCalls, results: dict[Config, dict[str, np.ndarray]],
                 baseline: Config, budget_us: float, profile: str,
                 notes: list[str], concurrent: dict[str, int] | None = None
                 ) -> ReplayReport:
    """``results``: per configuration, per-call columns (expanded from shapes)."""
    base = results[baseline]
    rows = []
    for cfg, res in results.items():
        for label, sel in _reason_sets(calls):
            cpu = float(res["cpu_seconds"][sel].sum())
            pages = float(res["pages"][sel].sum())
            rows.append({
                "config": cfg.name, "migrator": cfg.migrator.name, "param": cfg.migrator.param,
                "batch_pages": cfg.batch_pages,
                "reason_mask": format_reason_mask(cfg.reason_mask), "reason": label,
                "calls": int(sel.sum()), "seconds": float(res["seconds"][sel].sum()),
                "cpu_seconds": cpu,
                "cpu_saved_seconds": float(base["cpu_seconds"][sel].sum()) - cpu,
                "offloaded_pct": 100.0 * float(res["pages_offloaded"][sel].sum()) / pages
                if pages else 0.0,
                "first_folio_us_p50": _pct(res["first_folio"][sel], 50),
                "first_folio_us_p99": _pct(res["first_folio"][sel], 99),
                "inaccessible_us_p50": _pct(res["inaccessible"][sel], 50),
                "inaccessible_us_p99": _pct(res["inaccessible"][sel], 99),
                "slower_than_none": int((res["seconds"][sel]
                                         > base["seconds"][sel] * (1 + 1e-9)).sum()),
                **{c: int(res[c][sel].sum()) for c in
                   ("succeeded", "failed", "thp_succeeded", "thp_failed")},
            })
    trace_s = calls["end"] - calls["start"]
    ok = trace_s > 0
    check = {}
    if ok.any():
        err = np.abs(base["seconds"][ok] - trace_s[ok]) / trace_s[ok]
        check = {"calls": int(ok.sum()), "trace_median_us": float(np.median(trace_s[ok])) * 1e6,
                 "none_median_us": float(np.median(base["seconds"][ok])) * 1e6,
                 "median_error_pct": 100.0 * float(np.median(err))}
    return ReplayReport(trace_totals(calls), rows, profile, budget_us, notes,
                        [f"{s}:{n}: {t}" for s, n, t in calls.malformed_shown], check,
                        recommend(rows, budget_us), dict(concurrent or {}))


def recommend(rows: list[dict[str, Any]], budget_us: float) -> dict[str, Any]:
    """Per reason, the configuration with the least total migration time whose
    p99 inaccessible time is within the budget; per offload migrator chosen,
    the reason mask that selects exactly the reasons it won."""
    by_reason: dict[str, str] = {}
    masks: dict[str, list[str]] = {}
    for reason in dict.fromkeys(r["reason"] for r in rows):
        if reason == ALL:
            continue
        fit = [r for r in rows if r["reason"] == reason
               and (r["inaccessible_us_p99"] or 0.0) <= budget_us]
        if not fit:
            by_reason[reason] = "none of the configurations meets the budget"
            continue
        best = min(fit, key=lambda r: (r["seconds"], r["config"]))
        by_reason[reason] = best["config"]
        if best["migrator"] != "none":
            masks.setdefault(best["config"], []).append(reason)
    return {"by_reason": by_reason, "reason_mask": {k: ",".join(v) for k, v in masks.items()}}
