"""A metric family as the collector builds it: label values and values, no Samples.

prometheus-client's families (``CounterMetricFamily.add_metric``) build a
``Sample`` and a label dict per series, ~0.45 us each, which a text scrape
then takes apart again; ``/metrics`` has ~390 series.  A ``Family`` keeps the
series' label values (``keys``) and values side by side, which the scrape's
encoder (``_exposition``) formats against cached text, and becomes the
prometheus-client family only when asked (``metric()``: ``collect()``, the
``name[]`` filter, a shape the encoder refuses), through that family's own
``add_metric``, so the Samples are the library's, not a copy of its rules.
Rejected: caching the text by each Sample's name and labels (building the
Samples and their label dicts is itself a third of the scrape).
"""

from __future__ import annotations

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.metrics_core import Metric


class Family:
    """A counter or gauge: ``keys[i]`` (a tuple of label values, one per
    ``labels``) has the value ``values[i]``."""

    __slots__ = ("name", "doc", "labels", "keys", "values")
    kind: type[Metric] = GaugeMetricFamily

    def __init__(self, name: str, doc: str, labels: tuple[str, ...] = (),
                 keys: list | None = None, values: list | None = None) -> None:
        self.name, self.doc, self.labels = name, doc, labels
        self.keys = [] if keys is None else keys
        self.values = [] if values is None else values

    def add(self, key: tuple, value) -> None:
        self.keys.append(key)
        self.values.append(value)

    def shape(self) -> tuple:
        """Everything the text depends on but the values (the encoder's cache key)."""
        return (type(self), self.name, self.doc, self.labels, tuple(self.keys))

    def lines(self) -> list:
        """The value of each line the text format prints, in its order."""
        return self.values

    def metric(self) -> Metric:
        m = self.kind(self.name, self.doc, labels=self.labels)
        for key, value in zip(self.keys, self.values, strict=True):
            m.add_metric(key, value)
        return m


class Gauge(Family):
    __slots__ = ()


class Counter(Family):
    __slots__ = ()
    kind = CounterMetricFamily


class Info(Family):
    """``name_info{labels} 1``: ``labels`` name the info's fields, a key holds their values."""

    __slots__ = ()

    def lines(self) -> list:
        return [1] * len(self.keys)

    def metric(self) -> Metric:
        m = InfoMetricFamily(self.name, self.doc)
        for key in self.keys:
            m.add_metric([], dict(zip(self.labels, key, strict=True)))
        return m


class Histogram(Family):
    """Cumulative counts (``values``) by upper bound (``keys``: ``le`` as printed,
    ``+Inf`` last) and the sum: the lines are the buckets, ``_count``, ``_sum``."""

    __slots__ = ("sum",)

    def __init__(self, name: str, doc: str, keys: list, values: list, sum_value: float) -> None:
        super().__init__(name, doc, (), keys, values)
        self.sum = sum_value

    def lines(self) -> list:
        return [*self.values, self.values[-1], self.sum]

    def metric(self) -> Metric:
        return HistogramMetricFamily(self.name, self.doc, sum_value=self.sum,
                                     buckets=list(zip(self.keys, self.values, strict=True)))
