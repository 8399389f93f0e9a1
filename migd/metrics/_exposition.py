"""The scrape's text: prometheus-client's encoder, run once per family shape.

A scrape is ~390 series whose names and labels hardly ever change; only the
values move.  prometheus-client's encoders (``generate_latest``, text 0.0.4
and OpenMetrics) rebuild every line from its Sample each time (label sorting,
name checks, escaping): most of a scrape's 1.8 ms of Python with the GIL
(3.3 ms in OpenMetrics), stretched several times over when tree readers and
the engine want the GIL too.  Here the encoder ``choose_encoder`` negotiated
renders a family once per shape (``Family.shape()``: name, help, labels,
label values); its text, cut before each value, is kept (a template), and the
scrape's template is its families' one after the other, then the encoder's
trailer (OpenMetrics' ``# EOF``), as the library writes them.  A scrape then
formats the values only, as ``floatToGoString`` does (``repr(float(v))``, and
the function itself where Go's form differs), and joins.  A template is kept
only if it rebuilds the library's text of the family exactly; a family it
cannot cut, or an encoder other than the library's two, gives the library's
text for the whole scrape.  No byte differs; the tests compare the two.

Rejected: an encoder of our own (the formats' rules, escaping, OpenMetrics'
``_created`` and ``# EOF`` written again, to keep in step with each release),
and keeping whole lines by value (counters move at every scrape).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from itertools import chain

from prometheus_client import exposition
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.utils import floatToGoString

from ._family import Family

#: Family shapes kept per encoder (a scrape has ~70 families): label sets that
#: keep changing start afresh past this.
MAX_SHAPES = 256
#: Whole scrapes kept per encoder (their families' shapes, one after the other).
MAX_SCRAPES = 16
#: Encoders kept (the text format, OpenMetrics; a client's ``escaping`` and
#: ``version`` make others): past this the cache starts afresh.
MAX_ENCODERS = 8

Encoder = Callable[[object], bytes]
#: The encoders ``choose_encoder`` picks from: text 0.0.4 and OpenMetrics.
_LIBRARY = (exposition.generate_latest, openmetrics.generate_latest)
_UNTRIED = object()


class _Metrics:
    """A registry of given families, for an encoder (it calls ``collect()``)."""

    def __init__(self, metrics: Iterable[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self.metrics


class _Template:
    """A family's text: ``pieces[i]`` comes before value ``i``, ``tail`` after the last."""

    __slots__ = ("pieces", "tail")

    def __init__(self, pieces: tuple[str, ...], tail: str) -> None:
        self.pieces, self.tail = pieces, tail

    def render(self, strs: list[str]) -> str:
        return "".join(chain.from_iterable(zip(self.pieces, strs, strict=True))) + self.tail


def go_strings(values: list) -> list[str]:
    """``floatToGoString`` of each value: ``repr(float(v))`` is its answer but
    for infinities, NaN and 9 or more characters (Go's exponent form), which
    the library's function formats."""
    strs = [*map(repr, map(float, values))]
    return [s if len(s) < 9 and s[-1] <= "9" else floatToGoString(v)
            for s, v in zip(strs, values, strict=True)]


def _encoder_key(encoder: Encoder):
    """What the encoder's text depends on, if it is one of the library's two
    (``choose_encoder`` gives the function or a ``partial`` of it); else None."""
    func, args, kw = encoder, (), {}
    if isinstance(encoder, partial):
        func, args, kw = encoder.func, encoder.args, encoder.keywords
    if func not in _LIBRARY or args or not all(isinstance(v, str) for v in kw.values()):
        return None
    return func, tuple(sorted(kw.items()))


def _template(encoder: Encoder, fam: Family, trailer: str) -> _Template | None:
    """The family's text by the library, cut before each value; None unless
    it is a header, then one line ``<prefix> <value>`` per ``fam.lines()``."""
    text = encoder(_Metrics([fam.metric()])).decode()
    if not text.endswith(trailer):
        return None
    text = text[:len(text) - len(trailer)]
    strs = go_strings(fam.lines())
    rows = text.split("\n")
    n = len(strs)
    if rows[-1] != "" or len(rows) - 1 < n:
        return None
    head, lines = rows[:len(rows) - 1 - n], rows[len(rows) - 1 - n:-1]
    prefixes = []
    for line, s in zip(lines, strs, strict=True):
        if not line.endswith(" " + s):
            return None
        prefixes.append(line[:len(line) - len(s)])
    header = "".join(h + "\n" for h in head)
    if n == 0:
        t = _Template((), header)
    else:
        t = _Template((header + prefixes[0], *("\n" + p for p in prefixes[1:])), "\n")
    return t if t.render(strs) == text else None


def _merge(temps: list[_Template], trailer: str) -> _Template:
    """The families' templates one after the other, then the trailer: one scrape's."""
    pieces, carry = [], ""
    for t in temps:
        if t.pieces:
            pieces += (carry + t.pieces[0], *t.pieces[1:])
            carry = t.tail
        else:  # a family without a line: its header joins the next piece
            carry += t.tail
    return _Template(tuple(pieces), carry + trailer)


class Exposition:
    """Templates by encoder, per family shape and per scrape (the tuple of its
    families' shapes); shared by the server's threads (a race computes a
    template twice, both the same)."""

    def __init__(self) -> None:
        self._cache: dict = {}

    def encode(self, families: Iterable[Family], encoder: Encoder) -> bytes:
        """What ``encoder`` makes of the families' ``metric()``s, byte for byte."""
        fams = list(families)
        key = _encoder_key(encoder)
        if key is None:
            return encoder(_Metrics([f.metric() for f in fams]))
        entry = self._cache.get(key)
        if entry is None:
            if len(self._cache) >= MAX_ENCODERS:
                self._cache.clear()
            entry = self._cache[key] = (encoder(_Metrics([])).decode(), {}, {})
        trailer, by_family, by_scrape = entry
        shapes = tuple(f.shape() for f in fams)
        whole = by_scrape.get(shapes)
        if whole is None:
            temps = [self._family(encoder, trailer, by_family, f, shape)
                     for f, shape in zip(fams, shapes, strict=True)]
            if None in temps:  # the library's text for the whole scrape
                return encoder(_Metrics([f.metric() for f in fams]))
            if len(by_scrape) >= MAX_SCRAPES:
                by_scrape.clear()
            whole = by_scrape[shapes] = _merge(temps, trailer)
        return whole.render(go_strings([*chain.from_iterable(f.lines() for f in fams)])).encode()

    @staticmethod
    def _family(encoder: Encoder, trailer: str, cache: dict, fam: Family,
                shape: tuple) -> _Template | None:
        t = cache.get(shape, _UNTRIED)  # None: refused
        if t is _UNTRIED:
            if len(cache) >= MAX_SHAPES:
                cache.clear()
            t = cache[shape] = _template(encoder, fam, trailer)
        return t
