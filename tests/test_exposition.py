"""/metrics' text is prometheus-client's, byte for byte.

The endpoint formats values into text cut from the library's own encoder
(``migd/metrics/_exposition.py``).  Here each answer of the real server is
compared with what prometheus-client's ``generate_latest`` (text 0.0.4, and
OpenMetrics' when negotiated) makes of the same collector through a registry,
on a System that has migrated with every migrator (counters non-zero,
histograms filled, dcbm active, injected faults counted): the ``Accept``
headers Prometheus and others send, gzip, the ``name[]`` filter; then families
of random names, labels and values (escapes, infinities, label sets that
change between scrapes), a family the templates cannot split and an encoder
they do not know.
"""

import gzip
import http.client
from functools import partial

import numpy as np
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, Metric
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.utils import floatToGoString

from migd._version import migd_version
from migd.daemon import System, load_config
from migd.metrics import MigdCollector, serve_metrics
from migd.metrics._exposition import Exposition, go_strings
from migd.metrics._family import Counter, Family, Gauge, Histogram, Info

from .helpers import SMALL_CONFIG, move_with_each_migrator

#: What clients send: none (text 0.0.4), Prometheus 3's default (OpenMetrics,
#: UTF-8 names allowed), OpenMetrics without a version, the text format with
#: each escaping choose_encoder knows (dots rewrites every name).
ACCEPTS = (
    None,
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,"
    "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1",
    "application/openmetrics-text",
    "application/openmetrics-text; version=1.0.0",
    "text/plain; version=1.0.0; escaping=underscores",
    "text/plain; version=1.0.0; escaping=dots",
    "text/plain; version=1.0.0; escaping=values",
)


async def migrate_with_each_migrator(sys: System) -> None:
    """Every migrator moves the tenant once, dcbm last (it stays active), DMA
    descriptors failing now and then (fallbacks, injected faults)."""
    sys.faults["fail_dma_desc"].set(probability=100, interval=7, times=-1)
    await move_with_each_migrator(sys)


@pytest.fixture(scope="module")
def migrated():
    """A System before and after migration, served; its registry as the reference."""
    sys = System(load_config(text=SMALL_CONFIG))
    registry = CollectorRegistry(auto_describe=False, support_collectors_without_names=True)
    registry.register(MigdCollector(sys, migd_version()))
    server, port = serve_metrics(sys, "127.0.0.1:0")
    try:
        before = {accept: get(port, accept)[1] for accept in ACCEPTS}  # templates made here
        trio.run(migrate_with_each_migrator, sys)
        yield sys, registry, port, before
    finally:
        server.shutdown()


def get(port: int, accept: str | None, path: str = "/metrics", **headers):
    if accept is not None:
        headers["Accept"] = accept
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        c.request("GET", path, headers=headers)
        r = c.getresponse()
        assert r.status == 200
        return r.getheader("Content-Type"), r.read(), r.getheader("Content-Encoding")
    finally:
        c.close()


def test_the_migrated_system_fills_what_is_compared(migrated):
    sys, registry, _, _ = migrated
    text = generate_latest(registry).decode()
    assert sys.active_migrator() == "dcbm"
    assert 'migd_batches_total{migrator="dcbm"} 0.0' not in text
    assert 'migd_offload_fallback_folios_total{cause="EIO"} 0.0' not in text
    assert 'migd_inaccessible_seconds_count 0.0' not in text
    assert "e+0" in text  # values Go prints with an exponent (node bytes)


@pytest.mark.parametrize("accept", ACCEPTS)
def test_every_negotiated_format_is_the_librarys_text(migrated, accept):
    sys, registry, port, before = migrated
    encoder, ctype = choose_encoder(accept)
    served_type, body, _ = get(port, accept)
    assert served_type == ctype
    assert body == encoder(registry)
    assert before[accept] != body  # the values moved: not a text kept from the first scrape


def test_gzip_is_the_librarys_text_compressed(migrated):
    _, registry, port, _ = migrated
    _, body, encoding = get(port, None, **{"Accept-Encoding": "gzip"})
    assert encoding == "gzip" and gzip.decompress(body) == generate_latest(registry)


@pytest.mark.parametrize("accept", [None, "application/openmetrics-text; version=1.0.0"])
def test_the_name_filter_is_the_librarys_text(migrated, accept):
    _, registry, port, _ = migrated
    names = ["migd_batches_total", "migd_inaccessible_seconds_bucket",
             "migd_inaccessible_seconds_sum", "migd_migrator_info", "migd_node_used_bytes",
             "migd_migrator_param_variant_info", "no_such_series"]
    query = "&".join(f"name[]={n}" for n in names)
    encoder, _ = choose_encoder(accept)
    _, body, _ = get(port, accept, f"/metrics?{query}")
    assert body == encoder(registry.restricted_registry(names))
    assert b"migd_batches_total" in body and b"migd_failed_bytes" not in body


def test_after_the_first_scrape_no_library_family_is_built(migrated, monkeypatch):
    """The templates hold every family of the real collector: a scrape then
    formats values only (a refused family would send the whole scrape back
    through prometheus-client's families)."""
    sys, registry, _, _ = migrated
    collector, ex = MigdCollector(sys, migd_version()), Exposition()
    init, built = Metric.__init__, []

    def counted(m, *args, **kwargs):
        built.append(m)
        init(m, *args, **kwargs)

    for encoder in (generate_latest, choose_encoder("application/openmetrics-text")[0]):
        ex.encode(collector.families(), encoder)  # the templates are made here
        built.clear()
        with monkeypatch.context() as patch:
            patch.setattr(Metric, "__init__", counted)
            body = ex.encode(collector.families(), encoder)
            assert built == []
            assert body == encoder(registry) and built != []  # the library's own builds them


# -- the templates against the library, families of every kind --------------------------


def test_go_strings_are_float_to_go_string():
    values = [0, -0.0, 0.0, 1, True, False, 7, 999999, 1000000, 1234567, -1234567, 12345.678,
              123456.7, 1234567.8, 0.1, 1e-7, 1e16, 1.5e300, -1e22, float("inf"),
              float("-inf"), float("nan"), np.int64(10 ** 9), np.float64(2.5e-3),
              np.uint64(2 ** 63)]
    assert go_strings(values) == [floatToGoString(v) for v in values]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.floats(), st.integers(-(2 ** 80), 2 ** 80), st.booleans())))
def test_go_strings_of_any_number(values):
    assert go_strings(values) == [floatToGoString(v) for v in values]


NAMES = ("a", "migd_b", "c_total", "d:e", "f.g")
LABELS = ("x", "le_not", "ä", "y")
TEXT = st.text(st.sampled_from('ab"\\\n{}=, é'), max_size=5)
VALUES = st.one_of(st.integers(-(10 ** 12), 10 ** 12), st.floats(), st.booleans())


@st.composite
def family(draw):
    kind = draw(st.sampled_from((Counter, Gauge, Info, Histogram)))
    name = draw(st.sampled_from(NAMES))
    doc = draw(st.sampled_from(("", "Plain.", 'A "quoted"\\ doc\non two lines.')))
    if kind is Histogram:
        bounds = sorted(draw(st.sets(st.floats(0, 1e9), max_size=4)))
        counts = draw(st.lists(st.integers(0, 10 ** 7), min_size=len(bounds) + 1,
                               max_size=len(bounds) + 1))
        keys = [*(repr(b) for b in bounds), "+Inf"]
        return Histogram(name, doc, keys, [sum(counts[:k + 1]) for k in range(len(counts))],
                         draw(st.floats(0, 1e12)))
    labels = tuple(draw(st.lists(st.sampled_from(LABELS), unique=True, max_size=2,
                                 min_size=1 if kind is Info else 0)))
    keys = draw(st.lists(st.tuples(*(TEXT for _ in labels)), max_size=4))
    return kind(name, doc, labels, keys, [draw(VALUES) for _ in keys])


ENCODERS = (generate_latest, partial(generate_latest, escaping="allow-utf-8"),
            partial(generate_latest, escaping="dots"),
            partial(openmetrics_latest, escaping="underscores", version="1.0.0"),
            partial(openmetrics_latest, escaping="allow-utf-8", version="1.0.0"),
            partial(openmetrics_latest, escaping="values", version="1.0.0"))
SHARED = Exposition()  # across examples: shapes met again, and label sets that change


class Families:
    def __init__(self, families: list[Family]) -> None:
        self.families = families

    def collect(self):
        return [f.metric() for f in self.families]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(family(), max_size=4), st.sampled_from(ENCODERS))
def test_any_families_are_the_librarys_text(families, encoder):
    assert SHARED.encode(families, encoder) == encoder(Families(families))
    assert SHARED.encode(families, encoder) == encoder(Families(families))  # from the cache


class Created(Counter):
    """A counter with ``_created``: the text format moves those lines to a
    gauge after the family, which a template cut at values cannot follow."""

    __slots__ = ()

    def metric(self) -> Metric:
        m = CounterMetricFamily(self.name, self.doc, labels=self.labels)
        for key, value in zip(self.keys, self.values, strict=True):
            m.add_metric(key, value, created=1.5e9)
        return m


@pytest.mark.parametrize("encoder", ENCODERS[:1] + ENCODERS[3:4])
def test_a_family_without_a_template_sends_the_scrape_to_the_library(encoder):
    fams = [Gauge("g", "G.", ("x",), [("1",)], [2]),
            Created("c", "C.", ("x",), [("1",), ("2",)], [3, 4])]
    ex = Exposition()
    assert ex.encode(fams, encoder) == encoder(Families(fams))
    fams[1].values[:] = [5, 6]
    assert ex.encode(fams, encoder) == encoder(Families(fams))
    assert b"c_created" in ex.encode(fams, encoder)


def test_an_encoder_it_does_not_know_is_used_as_is():
    fams = [Gauge("g", "G.", ("x",), [("1",)], [2])]
    assert Exposition().encode(fams, lambda r: b"other\n") == b"other\n"
    shifted = partial(generate_latest)  # a partial of the library's, no arguments: known
    assert Exposition().encode(fams, shifted) == generate_latest(Families(fams))


def test_an_empty_scrape_and_families_without_lines():
    ex = Exposition()
    for encoder in ENCODERS:
        assert ex.encode([], encoder) == encoder(Families([]))
        fams = [Counter("c", "C.", ("x",)), Gauge("g", "G.", (), [()], [1]),
                Gauge("h", "H.", ("y",))]
        assert ex.encode(fams, encoder) == encoder(Families(fams))
