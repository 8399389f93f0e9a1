"""``migd soak``: long random runs with faults and knob flips, checked throughout."""

from ._soak import SoakOptions, SoakSummary, run_soak, summary_json

__all__ = ["SoakOptions", "SoakSummary", "run_soak", "summary_json"]
