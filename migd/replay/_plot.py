"""``migd replay --plot``: migration time and p99 inaccessible time per
configuration and reason, two bar charts side by side (matplotlib, Agg)."""

from __future__ import annotations

from ._report import ALL, ReplayReport


def plot_replay(report: ReplayReport, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = [r for r in report.rows if r["reason"] != ALL]
    configs = list(dict.fromkeys(r["config"] for r in rows))
    reasons = list(dict.fromkeys(r["reason"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.8 / max(1, len(configs))
    x = np.arange(len(reasons))
    for i, cfg in enumerate(configs):
        by = {r["reason"]: r for r in rows if r["config"] == cfg}
        axes[0].bar(x + i * width, [by[r]["seconds"] for r in reasons], width, label=cfg)
        axes[1].bar(x + i * width, [by[r]["inaccessible_us_p99"] or 0 for r in reasons],
                    width, label=cfg)
    for ax, title in zip(axes, ("time in migrate_pages() (s)", "p99 inaccessible (us)"),
                         strict=True):
        ax.set_xticks(x + 0.4 - width / 2, reasons, rotation=20)
        ax.set_title(title)
    axes[1].axhline(report.budget_us, color="k", linestyle="--", linewidth=1)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
