"""``--plot FILE.png``: one figure per experiment, from its report alone.

Whatever the table says, drawn: throughput by folio size and migrator;
throughput and first-folio latency against the batch bound on log axes; for
``seed`` the published points over migd's; the two policies against the fixed
choices they replace.  matplotlib is imported here only (it costs ~0.3 s) and
draws off-screen (Agg).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

from ._report import BenchReport, BenchRow


def _label(r: BenchRow) -> str:
    return r.migrator if not r.param else f"{r.migrator}:{r.param}"


def _size(nbytes: int) -> str:
    return f"{nbytes >> 20}M" if nbytes >= 1 << 20 else f"{nbytes >> 10}K"


def _by(rows: list[BenchRow], key: Callable[[BenchRow], object]) -> dict:
    out: dict = defaultdict(list)
    for r in rows:
        out[key(r)].append(r)
    return out


def _throughput(fig, report: BenchReport) -> None:
    ax = fig.add_subplot(1, 1, 1)
    rows = [r for r in report.rows if r.order is not None]
    sizes = sorted({r.folio_bytes for r in rows})
    series = _by(rows, lambda r: (_label(r), r.batch_pages))
    width = 0.8 / max(len(series), 1)
    for k, ((name, bp), rs) in enumerate(sorted(series.items())):
        gbps = {r.folio_bytes: r.gbps for r in rs}
        xs = [i + k * width for i, s in enumerate(sizes) if s in gbps]
        label = name if len({b for _, b in series}) == 1 else f"{name}, batch {bp}"
        ax.bar(xs, [gbps[s] for s in sizes if s in gbps], width, label=label)
    memcpy = report.memcpy_gbps()
    if memcpy:
        ax.axhline(memcpy, color="k", ls="--", lw=1, label="memcpy")
    ax.set_xticks([i + width * (len(series) - 1) / 2 for i in range(len(sizes))],
                  [_size(s) for s in sizes])
    ax.set_xlabel("folio size")
    ax.set_ylabel("GB/s")
    ax.legend(fontsize="small")


def _sweep(fig, report: BenchReport) -> None:
    adaptive = [r for r in report.rows if r.extra.get("policy") == "adaptive"]
    ncols = 3 if adaptive else 2
    tput, lat = fig.add_subplot(1, ncols, 1), fig.add_subplot(1, ncols, 2)
    rows = [r for r in report.rows if r.order is not None and r not in adaptive]
    colors = {}
    for (name, size), rs in sorted(_by(rows, lambda r: (_label(r), r.folio_bytes)).items()):
        rs = sorted(rs, key=lambda r: r.batch_pages)
        xs = [r.batch_pages for r in rs]
        line, = tput.plot(xs, [r.gbps for r in rs], "o-", label=f"{name}, {_size(size)}")
        lat.plot(xs, [r.first_folio_us for r in rs], "o-", color=line.get_color())
        colors[name, size] = line.get_color()
    for ax, what in ((tput, "GB/s"), (lat, "first-folio latency (us)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch bound (base pages)")
        ax.set_ylabel(what)
    lat.set_yscale("log")
    tput.legend(fontsize="x-small")
    if adaptive:  # latency-budget: the adaptive bound against the best fixed one
        ax = fig.add_subplot(1, ncols, 3)
        for key, rs in sorted(_by(adaptive, lambda r: (_label(r), r.folio_bytes)).items()):
            rs = sorted(rs, key=lambda r: r.extra["budget_us"])
            xs = [r.extra["budget_us"] for r in rs]
            ax.plot(xs, [r.gbps for r in rs], "s-", color=colors.get(key))
            ax.plot(xs, [r.extra.get("best_fixed_gbps") for r in rs], ":",
                    color=colors.get(key))
        ax.plot([], [], "ks-", label="adaptive")
        ax.plot([], [], "k:", label="best fixed bound under the budget")
        ax.set_xscale("log")
        ax.set_xlabel("budget: max inaccessible time (us)")
        ax.set_ylabel("GB/s")
        ax.legend(fontsize="x-small")


def _seed(fig, report: BenchReport) -> None:
    for k, (mine, pub, what) in enumerate((
            ("gbps", "published_gbps", "throughput (GB/s)"),
            ("first_folio_us", "published_first_folio_us", "first-folio latency (us)"))):
        ax = fig.add_subplot(1, 2, k + 1)
        rows = [r for r in report.rows if r.extra.get(pub) is not None]
        for source, rs in sorted(_by(rows, lambda r: r.extra.get("source", "")).items()):
            ax.scatter([r.extra[pub] for r in rs], [getattr(r, mine) for r in rs], s=14,
                       label=source)
        if rows:
            lo = min(min(r.extra[pub], getattr(r, mine)) for r in rows)
            hi = max(max(r.extra[pub], getattr(r, mine)) for r in rows)
            ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="migd = published")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"published {what}")
        ax.set_ylabel(f"migd {what}")
        ax.legend(fontsize="x-small")


def _auto(fig, report: BenchReport) -> None:
    orders = sorted({r.order for r in report.rows})
    for k, order in enumerate(orders):
        ax = fig.add_subplot(1, len(orders), k + 1)
        rows = [r for r in report.rows if r.order == order]
        for r in rows:
            if r.extra.get("policy") == "none":
                ax.axhline(r.gbps, color="k", ls="--", lw=1, label="none")
        for policy, marker in (("offload", "o-"), ("auto", "s-")):
            for name, rs in _by([r for r in rows if r.extra.get("policy") == policy],
                                lambda r: r.migrator).items():
                rs = sorted(rs, key=lambda r: r.param)
                ax.plot([r.param for r in rs], [r.gbps for r in rs], marker,
                        label=f"{name} {policy}")
        ax.set_xlabel("channels / threads")
        ax.set_title(f"{_size(rows[0].folio_bytes)} folios")
        if k == 0:
            ax.set_ylabel("GB/s")
            ax.legend(fontsize="x-small")


def _latency(fig, report: BenchReport) -> None:
    ax = fig.add_subplot(1, 1, 1)
    rows = report.rows
    key = "cat_p99_ms" if any("cat_p99_ms" in r.extra for r in rows) else "scrape_p99_ms"
    labels = [f"{_label(r)}, {_size(r.folio_bytes)}" if r.order is not None else _label(r)
              for r in rows]
    ax.bar(range(len(rows)), [r.extra.get(key, 0) for r in rows])
    ax.set_xticks(range(len(rows)), labels, rotation=30, ha="right", fontsize="small")
    ax.set_ylabel(key.replace("_", " "))


def _iommu(fig, report: BenchReport) -> None:
    ax = fig.add_subplot(1, 1, 1)
    rows = report.rows
    labels = [f"{_size(r.folio_bytes)}, {r.extra['layout']}" for r in rows]
    ax.bar(range(len(rows)), [r.extra["einval_pct"] for r in rows])
    ax.set_xticks(range(len(rows)), labels, rotation=30, ha="right", fontsize="small")
    ax.set_ylabel("batches falling back with EINVAL (%)")


def _callers(fig, report: BenchReport) -> None:
    """Per caller: throughput against the list bound, one line per migrator."""
    rows = [r for r in report.rows if r.extra.get("batch_copy", "gated") == "gated"]
    names = list(dict.fromkeys(r.extra["caller"] for r in rows))
    for k, caller in enumerate(names):
        ax = fig.add_subplot(1, len(names), k + 1)
        mine = [r for r in rows if r.extra["caller"] == caller]
        for name, rs in sorted(_by(mine, _label).items()):
            rs = sorted(rs, key=lambda r: max(r.extra["list_pages"], 1))
            ax.plot([max(r.extra["list_pages"], 1) for r in rs], [r.gbps for r in rs], "o-",
                    label=name)
        ax.set_xscale("log", base=2)
        ax.set_title(caller, fontsize="small")
        ax.set_xlabel("list bound (pages)")
        if k == 0:
            ax.set_ylabel("GB/s")
            ax.legend(fontsize="x-small")


_PLOTS = {"callers": _callers, "throughput": _throughput, "memcpy": _throughput,
          "batch-sweep": _sweep,
          "latency-budget": _sweep, "seed": _seed, "auto-choice": _auto,
          "cat-latency": _latency, "scrape": _latency, "iommu-merge": _iommu,
          "shared-channels": _throughput}


def plot_report(report: BenchReport, path: str) -> None:
    """Draw ``report`` into ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    draw = _PLOTS[report.experiment]
    wide = draw in (_sweep, _seed, _auto)
    width = 20 if draw is _callers else 13 if wide else 8
    fig = Figure(figsize=(width, 5), layout="constrained")
    draw(fig, report)
    fig.suptitle(f"migd bench {report.experiment} ({report.clock} clock, "
                 f"profile {report.profile})")
    fig.savefig(path, dpi=100)
