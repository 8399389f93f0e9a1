"""The two policies beyond the RFC, measured against the fixed choices they replace.

``latency-budget``: for each budget ``B``, the adaptive batch bound against
every fixed bound of a sweep; its reference is the best fixed bound whose
median first-folio latency is under ``B``.  ``auto-choice``: for each folio
order and channel (or thread) count, the automatic CPU/offload choice against
the CPU and against always offloading.  The policies learn: their rows run
``passes`` migrations on one engine and time the last (``first_pass_gbps``
keeps the first, learning included).
"""

from __future__ import annotations

from ._options import MigratorSpec
from ._report import BenchReport, BenchRow
from ._rig import BenchOptions, Rig

DEFAULT_BUDGETS_US = [250, 500, 1000, 2000, 5000]
DEFAULT_SWEEP = [64 << i for i in range(12)]  # 64 .. 131072 pages
POLICY_PASSES = 2


async def latency_budget(opts: BenchOptions) -> BenchReport:
    budgets = opts.budgets_us or DEFAULT_BUDGETS_US
    sweep = opts.batch_pages or DEFAULT_SWEEP
    rows: list[BenchRow] = []
    rig = None
    for order in opts.orders:
        rig = Rig(opts, order, reuse=rig)
        for spec in opts.migrators:
            fixed = []
            for bp in sweep:
                opts.progress(f"latency-budget: order {order} {spec} fixed {bp} pages")
                row = await rig.migrate(spec, bp)
                row.extra["policy"] = "fixed"
                fixed.append(row)
            rows += fixed
            for budget in budgets:
                opts.progress(f"latency-budget: order {order} {spec} budget {budget} us")
                row = await rig.migrate(spec, sweep[0], budget_us=budget, passes=POLICY_PASSES)
                row.extra["policy"] = "adaptive"
                under = [r for r in fixed
                         if r.first_folio_us is not None and r.first_folio_us <= budget]
                if under:
                    best = max(under, key=lambda r: r.gbps)
                    row.extra.update(best_fixed_batch_pages=best.batch_pages,
                                     best_fixed_gbps=best.gbps,
                                     vs_best_fixed=row.gbps / best.gbps)
                rows.append(row)
    report = BenchReport("latency-budget", opts.clock, opts.profile_name, rows)
    adaptive = [r for r in rows if "vs_best_fixed" in r.extra]
    if adaptive:
        report.notes.append(
            f"adaptive vs best fixed under the budget: min "
            f"{min(r.extra['vs_best_fixed'] for r in adaptive):.3f}; batches over the "
            f"budget: max {max(r.extra['over_budget_pct'] for r in adaptive):.2f}%")
    return report


async def auto_choice(opts: BenchOptions) -> BenchReport:
    specs = [s for s in opts.migrators if s.name != "none"] or [
        MigratorSpec("dcbm", c) for c in range(1, 17)]
    rows: list[BenchRow] = []
    rig = None
    for order in opts.orders:
        rig = Rig(opts, order, reuse=rig)
        for bp in opts.batch_pages or [512]:
            opts.progress(f"auto-choice: order {order} batch {bp}: none")
            cpu = await rig.migrate(MigratorSpec("none"), bp)
            cpu.extra["policy"] = "none"
            rows.append(cpu)
            for spec in specs:
                opts.progress(f"auto-choice: order {order} batch {bp}: {spec}")
                fixed = await rig.migrate(spec, bp)
                fixed.extra["policy"] = "offload"
                auto = await rig.migrate(spec, bp, auto=True, passes=POLICY_PASSES)
                better = max(cpu.gbps, fixed.gbps)
                auto.extra.update(policy="auto", better_gbps=better,
                                  vs_better=auto.gbps / better,
                                  first_pass_vs_better=auto.extra["first_pass_gbps"] / better)
                rows += [fixed, auto]
    report = BenchReport("auto-choice", opts.clock, opts.profile_name, rows)
    autos = [r for r in rows if r.extra.get("policy") == "auto"]
    if autos:
        worst = min(autos, key=lambda r: r.extra["vs_better"])
        report.notes.append(
            f"auto vs the better of none and offload: min {worst.extra['vs_better']:.3f} "
            f"(order {worst.order}, {worst.migrator}:{worst.param}); first pass, learning "
            f"included: min {min(r.extra['first_pass_vs_better'] for r in autos):.3f}")
    return report
