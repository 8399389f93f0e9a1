"""``migd replay``: rebuild migrate_pages() calls from a real kernel's ftrace
text and replay them on the virtual clock through each configuration."""

from ._clusters import Clusters, cluster_labels, overlap_clusters
from ._config import OPTIONS, configs, parse_mask
from ._parse import SHOWN_MALFORMED, TraceCalls, parse_text, read_traces
from ._plot import plot_replay
from ._replay import Config, replay_calls, replay_shapes
from ._report import ReplayReport
from ._run import ReplayError, load_traces, replay
from ._shapes import ORDER_ASSUMPTION, call_shapes
from ._synth import synthetic_trace

__all__ = ["OPTIONS", "ORDER_ASSUMPTION", "SHOWN_MALFORMED", "Clusters", "Config", "ReplayError",
           "ReplayReport", "TraceCalls", "call_shapes", "cluster_labels", "configs",
           "load_traces", "overlap_clusters", "parse_mask", "parse_text",
           "plot_replay", "read_traces", "replay", "replay_calls", "replay_shapes",
           "synthetic_trace"]
