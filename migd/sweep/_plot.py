"""``migd sweep --plot``: one metric over two axes - the first axis on x, one
line per value of the second.  Every other axis with several values is
averaged over, and the title says which (a mean the reader is not told of
reads as a measurement).  The metric is the first column the cells'
experiment declares (GB/s for throughput, seconds for replay)."""

from __future__ import annotations

from ._run import SweepResult


def check_plot_axes(axes: str | None, grid_axes) -> list[str] | None:
    """``--plot-axes X,Y``: two of the grid's axes (checked before the sweep runs)."""
    if axes is None:
        return None
    names = [a.strip() for a in axes.split(",")]
    if len(names) != 2 or any(n not in grid_axes for n in names):
        raise ValueError(f"--plot-axes: expected two of the grid's axes "
                         f"({', '.join(grid_axes)}): {axes!r}")
    return names


def averaged_over(result: SweepResult, shown: list[str]) -> str:
    """The title's account of the axes not shown: ``mean over repeat (3 values)``."""
    hidden = [f"{a} ({len(v)} values)" for a, v in result.axes.items()
              if a not in shown and len(v) > 1]
    return f"mean over {', '.join(hidden)}" if hidden else "no axis averaged"


def plot_sweep(result: SweepResult, path: str, axes: str | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = check_plot_axes(axes, result.axes)
    if names is None:
        names = [a for a, v in result.axes.items() if len(v) > 1][:2]
        names += [a for a in result.axes if a not in names][: 2 - len(names)]
    metric = result.columns[0]
    x, line = names[0], names[1] if len(names) > 1 else None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = result.axes[x]
    for lv in (result.axes[line] if line else [None]):
        ys = []
        for xv in xs:
            vals = [r[metric] for r in result.rows
                    if r[x] == xv and (line is None or r[line] == lv) and r.get(metric) is not None]
            ys.append(sum(vals) / len(vals) if vals else float("nan"))
        ax.plot([str(v) for v in xs], ys, marker="o", label=f"{line}={lv}" if line else metric)
    ax.set_xlabel(x)
    ax.set_ylabel(metric)
    ax.set_title(f"{result.experiment} cells: {metric}; {averaged_over(result, names)}",
                 fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
