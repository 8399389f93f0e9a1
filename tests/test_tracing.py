"""kernel/tracing: events as include/trace/events/migrate.h declares them, the
format files as libtraceevent (Debian's libtraceevent1) parses them, and
trace_pipe read from a live daemon.

Expectations come from the kernel: the TP_printk text and TP_STRUCT__entry of
migrate.h are copied here, the line layout is trace_output.c's, and a line's
text must be what libtraceevent prints for a record laid out by the event's
own ``format`` file.  Every blocking read of trace_pipe runs in a subprocess
with a timeout, or with O_NONBLOCK.
"""

import ctypes
import errno
import os
import re
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from migd.migrate import MigrateCall
from migd.mm import HPAGE_PMD_ORDER, MigrateMode, MigrateReason, TenantSpec
from migd.tracing import (
    EVENTS,
    MIGRATE_OFFLOAD_BATCH,
    MIGRATE_OFFLOAD_CLEAR,
    MM_MIGRATE_PAGES,
    MM_MIGRATE_PAGES_START,
    TraceRing,
    Tracing,
    format_line,
    parse_set_event,
)

from .helpers import MiB, config, make_engine, make_machine

# include/trace/events/migrate.h, verbatim.
TP_PRINTK = {
    "mm_migrate_pages": "nr_succeeded=%lu nr_failed=%lu nr_thp_succeeded=%lu "
                        "nr_thp_failed=%lu nr_thp_split=%lu nr_split=%lu mode=%s reason=%s",
    "mm_migrate_pages_start": "mode=%s reason=%s",
}
TP_STRUCT = {
    "mm_migrate_pages": ["succeeded", "failed", "thp_succeeded", "thp_failed", "thp_split",
                         "large_folio_split", "mode", "reason"],
    "mm_migrate_pages_start": ["mode", "reason"],
}
MIGRATE_MODE = ["MIGRATE_ASYNC", "MIGRATE_SYNC_LIGHT", "MIGRATE_SYNC"]
MIGRATE_REASON = ["compaction", "memory_failure", "memory_hotplug", "syscall_or_cpuset",
                  "mempolicy_mbind", "numa_misplaced", "contig_range", "longterm_pin",
                  "demotion", "damon"]

#: events/header_page of an x86_64 kernel since 6.2 (char unsigned, -funsigned-char):
#: ring_buffer_print_page_header() over struct buffer_data_page {u64 time_stamp;
#: local_t commit; unsigned char data[];} with BUF_PAGE_SIZE = 4096 - 16.
HEADER_PAGE = ("\tfield: u64 timestamp;\toffset:0;\tsize:8;\tsigned:0;\n"
               "\tfield: local_t commit;\toffset:8;\tsize:8;\tsigned:1;\n"
               "\tfield: int overwrite;\toffset:8;\tsize:1;\tsigned:1;\n"
               "\tfield: char data;\toffset:16;\tsize:4080;\tsigned:0;\n")
#: events/header_event: ring_buffer_print_entry_header(), enum ring_buffer_type
#: (RINGBUF_TYPE_DATA_TYPE_LEN_MAX = 28, then PADDING, TIME_EXTEND, TIME_STAMP).
HEADER_EVENT = ("# compressed entry header\n\ttype_len    :    5 bits\n"
                "\ttime_delta  :   27 bits\n\tarray       :   32 bits\n\n"
                "\tpadding     : type == 29\n\ttime_extend : type == 30\n"
                "\ttime_stamp : type == 31\n\tdata max type_len  == 28\n")

#: An ftrace text line, as trace-cmd / perf script style parsers read it.
LINE = re.compile(r"^\s*(?P<task>.+)-(?P<pid>\d+)\s+\[(?P<cpu>\d{3})\]\s+(?P<flags>\S{4,5})\s+"
                  r"(?P<ts>\d+\.\d{6}): (?P<event>\w+): (?P<payload>.*)$")


# -- the format file, read as a parser reads it ----------------------------------------------

def split_args(text: str) -> list[str]:
    """Top-level comma-separated arguments of a print fmt."""
    out, depth, quote, cur = [], 0, False, ""
    for ch in text:
        if ch == '"':
            quote = not quote
        elif not quote and ch in "({":
            depth += 1
        elif not quote and ch in ")}":
            depth -= 1
        if ch == "," and depth == 0 and not quote:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return [*out, cur.strip()] if cur.strip() else out


def parse_format(text: str) -> dict:
    name = re.search(r"^name: (\S+)$", text, re.M)[1]
    fields = {m[2]: (m[1], int(m[3]), int(m[4]), int(m[5])) for m in re.finditer(
        r"^\tfield:(.+) (\w+);\toffset:(\d+);\tsize:(\d+);\tsigned:(\d);$", text, re.M)}
    fmt, rest = re.search(r'^print fmt: "((?:[^"\\]|\\.)*)", (.*)$', text, re.M).groups()
    return {"name": name, "id": int(re.search(r"^ID: (\d+)$", text, re.M)[1]),
            "fields": fields, "fmt": fmt, "args": split_args(rest)}


def payload_regex(fmt: dict) -> tuple[re.Pattern, list[tuple[str, dict | None]]]:
    """The payload regex a print fmt implies: %lu/%u/%llu digits, %d signed,
    %s of __print_symbolic one of its symbols, %s of __get_str a word.  Also
    returns each conversion's field and symbol table (symbol -> value)."""
    parts = re.split(r"(%(?:ll|l)?[dus])", fmt["fmt"])
    convs = parts[1::2]
    assert len(convs) == len(fmt["args"])
    rx, out = "", []
    for lit, conv, arg in zip(parts[::2], [*convs, None], [*fmt["args"], None], strict=True):
        rx += re.escape(lit)
        if conv is None:
            break
        if arg.startswith("__print_symbolic("):
            table = {s: int(v) for v, s in re.findall(r'\{(\d+), "([^"]+)"\}', arg)}
            rx += "(" + "|".join(map(re.escape, table)) + ")"
            out.append((re.match(r"__print_symbolic\(REC->(\w+)", arg)[1], table))
        elif arg.startswith("__get_str("):
            rx += r"(\S*)"
            out.append((arg[len("__get_str("):-1], None))
        else:
            rx += r"(-?\d+)" if conv.endswith("d") else r"(\d+)"
            out.append((arg.removeprefix("REC->"), None))
    return re.compile(f"^{rx}$"), out


def encode_record(fmt: dict, payload: str) -> bytes:
    """The binary entry the format file describes, from a line's payload."""
    rx, convs = payload_regex(fmt)
    m = rx.match(payload)
    assert m, (fmt["name"], payload)
    fields = fmt["fields"]
    fixed = max(off + size for _, off, size, _ in fields.values())
    data, tail = bytearray(fixed), bytearray()
    struct.pack_into("<H", data, 0, fmt["id"])
    for (name, table), text in zip(convs, m.groups(), strict=True):
        ctype, off, size, signed = fields[name]
        if ctype.startswith("__data_loc"):
            s = text.encode() + b"\0"
            struct.pack_into("<I", data, off, (len(s) << 16) | (fixed + len(tail)))
            tail += s
        else:
            value = table[text] if table else int(text)
            data[off:off + size] = value.to_bytes(size, "little", signed=bool(signed))
    return bytes(data + tail)


# -- libtraceevent, through ctypes ------------------------------------------------------

class TraceSeq(ctypes.Structure):
    _fields_ = [("buffer", ctypes.c_char_p), ("buffer_size", ctypes.c_uint),
                ("len", ctypes.c_uint), ("readpos", ctypes.c_uint), ("state", ctypes.c_int)]


class TepRecord(ctypes.Structure):
    _fields_ = [("ts", ctypes.c_ulonglong), ("offset", ctypes.c_ulonglong),
                ("missed_events", ctypes.c_longlong), ("record_size", ctypes.c_int),
                ("size", ctypes.c_int), ("data", ctypes.c_void_p), ("cpu", ctypes.c_int),
                ("ref_count", ctypes.c_int), ("locked", ctypes.c_int),
                ("priv", ctypes.c_void_p), ("pad", ctypes.c_char * 64)]


class TepField(ctypes.Structure):
    _fields_ = [("next", ctypes.c_void_p), ("event", ctypes.c_void_p),
                ("type", ctypes.c_char_p), ("name", ctypes.c_char_p),
                ("alias", ctypes.c_char_p), ("offset", ctypes.c_int), ("size", ctypes.c_int),
                ("arraylen", ctypes.c_uint), ("elementsize", ctypes.c_uint),
                ("flags", ctypes.c_ulong)]


class Tep:
    """A ``struct tep_handle`` with the given format files parsed in."""

    def __init__(self, formats: dict[str, str], handle: int | None = None) -> None:
        lib = self.lib = ctypes.CDLL("libtraceevent.so.1")
        lib.tep_alloc.restype = ctypes.c_void_p
        lib.tep_find_event_by_name.restype = ctypes.c_void_p
        lib.tep_find_field.restype = ctypes.POINTER(TepField)
        lib.tep_find_event_by_name.argtypes = [ctypes.c_void_p, ctypes.c_char_p,
                                               ctypes.c_char_p]
        lib.tep_find_field.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.tep_parse_event.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_ulong,
                                        ctypes.c_char_p]
        self.tep = lib.tep_alloc() if handle is None else handle
        if handle is None:
            lib.tep_set_long_size(ctypes.c_void_p(self.tep), 8)
        for path, text in formats.items():
            data = text.encode()
            rc = lib.tep_parse_event(self.tep, data, len(data), path.split("/")[0].encode())
            assert rc == 0, (path, rc)

    def field(self, system: str, event: str, name: str) -> tuple[int, int]:
        ev = self.lib.tep_find_event_by_name(self.tep, system.encode(), event.encode())
        assert ev, (system, event)
        f = self.lib.tep_find_field(ev, name.encode())
        assert f, name
        return f.contents.offset, f.contents.size

    def info(self, data: bytes) -> str:
        """What libtraceevent prints for a record (TEP_PRINT_INFO)."""
        buf = ctypes.create_string_buffer(data, len(data))
        rec = TepRecord(size=len(data), record_size=len(data),
                        data=ctypes.cast(buf, ctypes.c_void_p))
        s = TraceSeq()
        self.lib.trace_seq_init(ctypes.byref(s))
        self.lib.tep_print_event(ctypes.c_void_p(self.tep), ctypes.byref(s),
                                 ctypes.byref(rec), b"%s", b"INFO")
        self.lib.trace_seq_terminate(ctypes.byref(s))
        out = ctypes.string_at(s.buffer, s.len).decode()
        self.lib.trace_seq_destroy(ctypes.byref(s))
        return out


def check_lines(lines: list[str], formats: dict[str, str]) -> dict[str, int]:
    """Every line: the generic ftrace regex, its payload the regex of its
    event's print fmt, and its payload what libtraceevent prints for the
    record it encodes.  Returns lines per event."""
    parsed = {p.split("/")[1]: parse_format(t) for p, t in formats.items()}
    tep = Tep(formats)
    seen: dict[str, int] = {}
    for line in lines:
        m = LINE.match(line)
        assert m, line
        fmt = parsed[m["event"]]
        assert payload_regex(fmt)[0].match(m["payload"]), line
        assert tep.info(encode_record(fmt, m["payload"])) == m["payload"], line
        seen[m["event"]] = seen.get(m["event"], 0) + 1
    return seen


# -- the model -----------------------------------------------------------------

def test_migrate_events_are_migrate_h():
    for e in EVENTS:
        fmt = parse_format(e.format_file())
        assert (fmt["name"], fmt["id"]) == (e.name, e.id)
        assert list(fmt["fields"])[:4] == ["common_type", "common_flags",
                                           "common_preempt_count", "common_pid"]
        if e.system == "migrate":
            assert fmt["fmt"] == TP_PRINTK[e.name]
            assert list(fmt["fields"])[4:] == TP_STRUCT[e.name]
            symbols = [payload_regex(fmt)[1][i][1] for i in (-2, -1)]
            assert list(symbols[0]) == MIGRATE_MODE and list(symbols[1]) == MIGRATE_REASON
    tep = Tep({e.path: e.format_file() for e in EVENTS})
    # x86_64: unsigned long is 8 bytes, the enum and int 4; laid out in order.
    assert [tep.field("migrate", "mm_migrate_pages", f) for f in
            TP_STRUCT["mm_migrate_pages"]] == [(8 + 8 * i, 8) for i in range(6)] + [(56, 4),
                                                                                     (60, 4)]


def test_a_line_is_what_libtraceevent_prints_for_its_record():
    lines = [format_line(MM_MIGRATE_PAGES, 12.3456785, (512, 3, 1, 0, 1, 1, 2, 8), 4321)]
    t = Tracing(100.0, pid=4321)
    t.on_call(MigrateCall(False, 100.25, MigrateMode.MIGRATE_SYNC_LIGHT,
                          MigrateReason.MR_COMPACTION))
    lines += t.ring.read_pipe(1 << 16, block=False).decode().splitlines(keepends=True)
    assert lines[0].startswith("            migd-4321    [000] .....    12.345679: "
                               "mm_migrate_pages: nr_succeeded=512 nr_failed=3 ")
    assert lines[0].endswith("mode=MIGRATE_SYNC reason=demotion\n")
    assert lines[1].endswith("0.250000: mm_migrate_pages_start: mode=MIGRATE_SYNC_LIGHT "
                             "reason=compaction\n")
    check_lines([ln.rstrip("\n") for ln in lines], {e.path: e.format_file() for e in EVENTS})


async def test_one_start_and_one_end_per_call_with_the_calls_stats(autojump_clock):
    """mm_migrate_pages carries what migrate_pages() adds to vmstat
    (mm/migrate.c passes the same stats to both), THPs counted as THPs."""
    m = make_machine(True)
    t = m.add_tenant(TenantSpec("t", 8 * MiB, order=HPAGE_PMD_ORDER))
    e = make_engine(m, True)
    tracing = Tracing(0.0)
    tracing.attach(e)
    calls: list[MigrateCall] = []
    e.subscribe_calls(calls.append)
    before = e.statistics().vmstat
    await e.move_pages(t, np.arange(0, t.nr_pages, 512), 1)  # one address per THP: one call
    await e.migrate_pages(m.tenant_folios(t), 0, MigrateReason.MR_DEMOTION)
    after = e.statistics().vmstat
    assert [(c.end, c.mode, c.reason) for c in calls] == [
        (False, MigrateMode.MIGRATE_SYNC, MigrateReason.MR_SYSCALL),
        (True, MigrateMode.MIGRATE_SYNC, MigrateReason.MR_SYSCALL),
        (False, MigrateMode.MIGRATE_ASYNC, MigrateReason.MR_DEMOTION),
        (True, MigrateMode.MIGRATE_ASYNC, MigrateReason.MR_DEMOTION)]
    ends = [c for c in calls if c.end]
    for item, attr in (("pgmigrate_success", "nr_succeeded"), ("pgmigrate_fail", "nr_failed"),
                       ("thp_migration_success", "nr_thp_succeeded"),
                       ("thp_migration_fail", "nr_thp_failed"),
                       ("thp_migration_split", "nr_thp_split")):
        assert after[item] - before[item] == sum(getattr(c, attr) for c in ends), item
    assert ends[0].nr_succeeded == t.nr_pages and ends[0].nr_thp_succeeded == t.nr_pages // 512
    text = tracing.ring.snapshot(2)
    lines = [ln for ln in text.splitlines() if not ln.startswith("#")]
    seen = check_lines(lines, {ev.path: ev.format_file() for ev in EVENTS})
    assert seen["mm_migrate_pages_start"] == seen["mm_migrate_pages"] == 2
    assert seen["migrate_offload_batch"] >= 2
    assert f"# entries-in-buffer/entries-written: {len(lines)}/{len(lines)}   #P:2\n" in text


def test_ring_pipe_nonblock_overrun_clear_and_close():
    ring = TraceRing(entries=3, pid=1)
    with pytest.raises(OSError) as e:
        ring.read_pipe(4096, block=False)
    assert e.value.errno == errno.EAGAIN
    for i in range(5):
        ring.append(MM_MIGRATE_PAGES, float(i), (i, 0, 0, 0, 0, 0, 0, 0))
    assert len(ring) == 3 and ring.overrun == 2
    assert "entries-in-buffer/entries-written: 3/5 " in ring.snapshot(1)
    first = ring.read_pipe(4096).decode()
    assert [ln.split("nr_succeeded=")[1].split()[0] for ln in first.splitlines()] == \
        ["2", "3", "4"]
    ring.append(MM_MIGRATE_PAGES, 9.0, (9, 0, 0, 0, 0, 0, 0, 0))
    ring.clear()
    assert len(ring) == 0 and "entries-written: 0/0 " in ring.snapshot(1)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(ring.read_pipe(4096)), daemon=True)
    reader.start()
    time.sleep(0.1)
    assert reader.is_alive()  # blocked: nothing to read
    ring.close()
    reader.join(5)
    assert not reader.is_alive() and got == [b""]  # EOF at unmount


def test_an_open_trace_reads_the_entries_of_its_open_from_any_offset():
    """seq_read() of trace: an open file reads the ring as tracing_open() found
    it (entries recorded later are not in it, a later open has them), and a
    read at any offset returns that file's bytes there (a read away from the
    file position walks again from the start, as traverse() does)."""
    ring = TraceRing(entries=64, pid=7)
    for i in range(40):
        ring.append(MM_MIGRATE_PAGES, i / 3, (i, 0, 0, 0, 0, 0, 0, 0))
    whole = ring.snapshot(2).encode()
    view = ring.view(2)
    batch = ("mtcopy", 1, 8, 1, 512, 1, 0, 0, 0, "none", 0, 0)
    for i in range(40, 100):  # 36 overwritten, 60 new
        ring.append(MIGRATE_OFFLOAD_BATCH, i / 3, batch)
    rng = np.random.default_rng(5)
    for offset, size in zip(rng.integers(0, len(whole) + 50, 200), rng.integers(1, 3000, 200),
                            strict=True):
        assert view[offset:offset + size] == whole[offset:offset + size]
    assert view == whole
    later = ring.snapshot(2)
    assert b"entries-in-buffer/entries-written: 40/40 " in whole and b"nr_succeeded=0 " in whole
    assert "entries-in-buffer/entries-written: 64/100 " in later and "nr_succeeded=0 " not in later


def test_set_event_words_match_as_ftrace_set_clr_event():
    """The forms trace_events.c's ftrace_set_clr_event() documents: system:event,
    *:event and :event (any system), system:* and system: (the whole system), a
    bare word (a system or an event); ``!`` disables; no match is EINVAL."""
    start, end = MM_MIGRATE_PAGES_START, MM_MIGRATE_PAGES
    batch, clear = MIGRATE_OFFLOAD_BATCH, MIGRATE_OFFLOAD_CLEAR

    def one(word):
        [(on, events)] = parse_set_event(word)
        return on, set(events)
    assert one("migrate:mm_migrate_pages") == (True, {end})
    assert one("*:mm_migrate_pages") == one(":mm_migrate_pages") == (True, {end})
    assert one("migrate:*") == one("migrate:") == one("migrate") == (True, {start, end})
    assert one("*:*") == one(":") == (True, {start, end, batch, clear})
    assert one("mm_migrate_pages_start") == (True, {start})
    assert one("!migrate_offload") == (False, {batch, clear})
    assert parse_set_event("  \n") == []  # echo > set_event: nothing but the O_TRUNC
    assert [on for on, _ in parse_set_event("migrate\n!migrate:mm_migrate_pages\n")] == \
        [True, False]
    for bad in ("*", "bogus", "migrate:bogus", "sched:mm_migrate_pages", "!", "x" * 200):
        with pytest.raises(ValueError):
            parse_set_event(bad)


def test_stats_count_entries_bytes_overruns_and_reads():
    """per_cpu/cpu0/stats as tracing_stats_read() prints it.  Bytes per entry
    by rb_calculate_event_length() on x86_64: the entry (sizeof the
    trace_event_raw struct, plus each __string's text and NUL) + a 4-byte
    header, 4-aligned: mm_migrate_pages 64 + 4 = 68, migrate_offload_batch
    with "mtcopy" and "none" 72 + 7 + 5 + 4 = 88; the other CPUs are empty."""
    ring = TraceRing(entries=3, pid=1)
    for i in range(3):
        ring.append(MM_MIGRATE_PAGES, 1.0 + i, (i, 0, 0, 0, 0, 0, 0, 0))
    ring.append(MIGRATE_OFFLOAD_BATCH, 4.5, ("mtcopy", 1, 8, 1, 512, 1, 0, 0, 0, "none", 0, 0))
    assert ring.stats(5.25, 0) == ("entries: 3\noverrun: 1\ncommit overrun: 0\n"
                                   f"bytes: {68 * 2 + 88}\noldest event ts:     2.000000\n"
                                   "now ts:     5.250000\ndropped events: 0\nread events: 0\n")
    line = format_line(MM_MIGRATE_PAGES, 2.0, (1, 0, 0, 0, 0, 0, 0, 0), 1).encode()
    assert ring.read_pipe(len(line)) == line
    assert "bytes: 156\n" in ring.stats(6.0, 0) and "read events: 1\n" in ring.stats(6.0, 0)
    assert ring.stats(6.0, 1).startswith("entries: 0\noverrun: 0\ncommit overrun: 0\n"
                                         "bytes: 0\n")
    assert ring.snapshot(2, lines=False).endswith("|         |\n")  # a CPU with no entry
    with pytest.raises(OSError) as e:
        ring.read_idle(4096, block=False)
    assert e.value.errno == errno.EAGAIN
    ring.close()
    assert ring.read_idle(4096) == b""  # EOF at unmount, as trace_pipe


# -- a live daemon ----------------------------------------------------------------

CONFIG = config(migrator={"active": "mtcopy"})


@pytest.fixture(scope="module")
def migd_run(tmp_path_factory):
    """``migd run`` on a tmp mount, one for this module (the test that
    SIGTERMs it runs last); killed and unmounted whatever happens."""
    tmp_path = tmp_path_factory.mktemp("migd")
    (tmp_path / "migd.toml").write_text(CONFIG)
    mount = tmp_path / "sys"
    log = open(tmp_path / "migd.log", "w+")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen([sys.executable, "-m", "migd", "run", "--config",
                             str(tmp_path / "migd.toml"), "--mount", str(mount),
                             "--metrics", "127.0.0.1:0"], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not (mount / "kernel/tracing/trace").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "migd did not start"
            time.sleep(0.05)
        yield proc, mount / "kernel/tracing"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
        subprocess.run(["fusermount", "-uz", str(mount)], capture_output=True, timeout=30)
        log.close()


def read_pipe_for(path: Path, seconds: float) -> list[str]:
    """Lines of trace_pipe over ``seconds``, read by ``cat`` in a subprocess."""
    p = subprocess.run(["timeout", str(seconds), "cat", str(path)], capture_output=True,
                       text=True, timeout=seconds + 20)
    lines = p.stdout.split("\n")
    return lines[:-1]  # cat was killed: a last line cut short is not the daemon's


@pytest.mark.slow
def test_every_trace_pipe_line_parses_with_its_format_file(migd_run):
    _, tracing = migd_run
    events = (tracing / "available_events").read_text().split()
    formats = {e.replace(":", "/"): (tracing / "events" / e.replace(":", "/") / "format")
               .read_text() for e in events}
    for path, text in formats.items():
        assert (tracing / "events" / path / "id").read_text() == f"{parse_format(text)['id']}\n"
    lines = read_pipe_for(tracing / "trace_pipe", 4)
    seen = check_lines(lines, formats)
    assert set(seen) == {e.split(":")[1] for e in events}, seen
    assert seen["mm_migrate_pages_start"] >= seen["mm_migrate_pages"] - 1 > 10
    stamps = [float(LINE.match(ln)["ts"]) for ln in lines]
    assert 0 < stamps[0] < 60 and stamps[-1] - stamps[0] > 2  # the boot clock, in seconds
    assert stamps == sorted(stamps)  # as the kernel merges its per-CPU buffers: in time order


# -- the tree as tools open it -----------------------------------------------------

class Tracefs:
    """libtracefs (Debian's libtracefs1) through ctypes."""

    def __init__(self) -> None:
        lib = self.lib = ctypes.CDLL("libtracefs.so.1")
        lib.tracefs_local_events.restype = ctypes.c_void_p
        lib.tracefs_local_events.argtypes = [ctypes.c_char_p]
        lib.tracefs_fill_local_events.argtypes = [ctypes.c_char_p, ctypes.c_void_p,
                                                  ctypes.POINTER(ctypes.c_int)]


def test_libtracefs_opens_the_tree_and_parses_every_event_and_line(migd_run):
    """tracefs_local_events(<mount>/kernel/tracing) loads the tree (it needs
    events/header_page), with no event failing to parse; the handle knows every
    event by name and id, the page layout of header_page, the daemon's comm
    from saved_cmdlines, and prints each line per_cpu/cpu0/trace_pipe gives."""
    proc, tracing = migd_run
    (tracing / "set_event").write_text("*:*")  # every event, whatever ran before
    events = (tracing / "available_events").read_text().split()
    tfs, path = Tracefs(), str(tracing).encode()
    handle = tfs.lib.tracefs_local_events(path)
    assert handle
    tep = Tep({}, handle)
    lib = tep.lib
    lib.tep_find_event.restype = ctypes.c_void_p
    lib.tep_find_event.argtypes = [ctypes.c_void_p, ctypes.c_int]
    for argtypes in (lib.tep_get_events_count, lib.tep_get_header_page_size,
                     lib.tep_get_sub_buffer_size, lib.tep_free):
        argtypes.argtypes = [ctypes.c_void_p]
    lib.tep_data_comm_from_pid.restype = ctypes.c_char_p
    lib.tep_data_comm_from_pid.argtypes = [ctypes.c_void_p, ctypes.c_int]
    failures = ctypes.c_int(-1)
    other = lib.tep_alloc()
    assert tfs.lib.tracefs_fill_local_events(path, other, ctypes.byref(failures)) == 0
    assert failures.value == 0
    lib.tep_free(other)
    assert lib.tep_get_events_count(handle) == len(events)
    for e in events:
        system, name = e.split(":")
        ev = lib.tep_find_event_by_name(handle, system.encode(), name.encode())
        assert ev, e
        assert lib.tep_find_event(handle, int((tracing / "events" / system / name / "id")
                                              .read_text())) == ev
    # struct buffer_data_page: an 8-byte commit (local_t), PAGE_SIZE a page
    assert lib.tep_get_header_page_size(handle) == 8
    assert lib.tep_get_sub_buffer_size(handle) == 4096
    assert lib.tep_data_comm_from_pid(handle, proc.pid) == b"migd"
    lines = read_pipe_for(tracing / "per_cpu/cpu0/trace_pipe", 3)
    seen = set()
    parsed = {e.split(":")[1]: parse_format((tracing / "events" / e.replace(":", "/") /
                                             "format").read_text()) for e in events}
    for line in lines:
        m = LINE.match(line)
        assert m and int(m["pid"]) == proc.pid, line
        assert tep.info(encode_record(parsed[m["event"]], m["payload"])) == m["payload"], line
        seen.add(m["event"])
    assert seen == set(parsed)
    lib.tep_free(handle)


def test_perf_lists_the_trees_tracepoints(migd_run):
    """perf reads tracefs where TRACEFS_PATH says (tools/lib/api/fs/fs.c,
    ``fs__env_override``) and lists the events whose directories readdir
    types as DT_DIR."""
    _, tracing = migd_run
    p = subprocess.run(["perf", "list", "tracepoint"], capture_output=True, text=True,
                       timeout=60, env=dict(os.environ, TRACEFS_PATH=str(tracing)))
    listed = {ln.split()[0] for ln in p.stdout.splitlines() if "[Tracepoint event]" in ln}
    assert listed == set((tracing / "available_events").read_text().split()), p.stdout


def test_trace_read_through_the_mount_is_its_open_at_any_offset(migd_run):
    """An open ``trace`` keeps reading the entries of its open while the
    daemon records more (its header's count is its number of lines), and
    pread at any offset is the same bytes as reading it in order."""
    _, tracing = migd_run
    fd = os.open(tracing / "trace", os.O_RDONLY)
    try:
        written = int(re.search(rb"entries-written: \d+/(\d+)", os.pread(fd, 4096, 0))[1])
        deadline = time.monotonic() + 60
        while int(re.search(r"entries-written: \d+/(\d+)",
                            (tracing / "trace").read_text())[1]) == written:
            assert time.monotonic() < deadline, "no event recorded in 60 s"
            time.sleep(0.1)
        parts = [os.read(fd, 65536)]
        while parts[-1]:
            parts.append(os.read(fd, 65536))
        whole = b"".join(parts)
        n = int(re.search(rb"entries-in-buffer/entries-written: (\d+)/", whole)[1])
        assert len([ln for ln in whole.splitlines() if not ln.startswith(b"#")]) == n
        rng = np.random.default_rng(3)
        for offset in rng.integers(0, len(whole) + 100, 20):
            assert os.pread(fd, 5000, int(offset)) == whole[offset:offset + 5000]
    finally:
        os.close(fd)


def test_tracefs_files_tools_read_are_the_kernels(migd_run):
    """header_page/header_event as the kernel prints them, set_event's
    read/write rules (trace_events.c), the nop tracer, saved_cmdlines' "%d %s"
    and per_cpu/cpuN for every CPU the trace header counts."""
    proc, tracing = migd_run
    assert (tracing / "events/header_page").read_text() == HEADER_PAGE
    assert (tracing / "events/header_event").read_text() == HEADER_EVENT
    assert (tracing / "saved_cmdlines").read_text() == f"{proc.pid} migd\n"
    assert (tracing / "available_tracers").read_text() == "nop\n"
    assert (tracing / "current_tracer").read_text() == "nop\n"
    (tracing / "current_tracer").write_text("nop\n")
    for bad in ("function", "\n", "nope"):
        with pytest.raises(OSError) as e:
            (tracing / "current_tracer").write_text(bad)
        assert e.value.errno == errno.EINVAL
    set_event = tracing / "set_event"
    set_event.write_text("migrate:mm_migrate_pages\n")  # > : the others disabled first
    assert set_event.read_text() == "migrate:mm_migrate_pages\n"
    assert (tracing / "events/migrate/enable").read_text() == "X\n"
    assert (tracing / "events/migrate_offload/migrate_offload_batch/enable").read_text() == "0\n"
    with open(set_event, "a") as f:  # >> : added to what is enabled
        f.write("migrate_offload")
    offload = ["migrate_offload:migrate_offload_batch", "migrate_offload:migrate_offload_clear"]
    assert set_event.read_text().split() == ["migrate:mm_migrate_pages", *offload]
    for bad in ("bogus", "migrate:bogus", "*"):
        with pytest.raises(OSError) as e, open(set_event, "a") as f:
            f.write(bad)
        assert e.value.errno == errno.EINVAL
        assert len(set_event.read_text().split()) == 3  # nothing changed
    with open(set_event, "a") as f:
        f.write("!migrate:mm_migrate_pages migrate:mm_migrate_pages_start")
    assert set_event.read_text().split() == ["migrate:mm_migrate_pages_start", *offload]
    set_event.write_text("\n")  # echo > set_event: every event off
    assert (tracing / "events/enable").read_text() == "0\n"
    set_event.write_text("*:*")
    assert (tracing / "events/enable").read_text() == "1\n"
    nr_cpus = int(re.search(r"#P:(\d+)", (tracing / "trace").read_text())[1])
    assert sorted(os.listdir(tracing / "per_cpu")) == sorted(f"cpu{c}" for c in range(nr_cpus))
    stats = (tracing / "per_cpu/cpu0/stats").read_text()
    assert [ln.split(":")[0] for ln in stats.splitlines()] == [
        "entries", "overrun", "commit overrun", "bytes", "oldest event ts", "now ts",
        "dropped events", "read events"]
    last = tracing / f"per_cpu/cpu{nr_cpus - 1}"
    if nr_cpus > 1:  # every event is on CPU 0: the others are empty
        assert (last / "stats").read_text().startswith("entries: 0\n")
        assert not [ln for ln in (last / "trace").read_text().splitlines()
                    if not ln.startswith("#")]
        fd = os.open(last / "trace_pipe", os.O_RDONLY | os.O_NONBLOCK)
        try:
            with pytest.raises(BlockingIOError):
                os.read(fd, 4096)
        finally:
            os.close(fd)


@pytest.mark.slow
def test_tracefs_files_and_sigterm_with_a_reader_blocked(migd_run):
    proc, tracing = migd_run
    (tracing / "events/migrate/mm_migrate_pages/enable").write_text("0")
    assert (tracing / "events/migrate/enable").read_text() == "X\n"
    assert (tracing / "events/enable").read_text() == "X\n"
    with pytest.raises(OSError) as e:
        (tracing / "events/migrate/enable").write_text("2")
    assert e.value.errno == errno.EINVAL
    (tracing / "tracing_on").write_text("0")
    assert (tracing / "tracing_on").read_text() == "0\n"
    (tracing / "trace").write_text("")  # O_TRUNC: the ring is cleared
    assert "entries-in-buffer/entries-written: 0/0 " in (tracing / "trace").read_text()
    fd = os.open(tracing / "trace_pipe", os.O_RDONLY | os.O_NONBLOCK)
    try:
        with pytest.raises(BlockingIOError):
            os.read(fd, 4096)
    finally:
        os.close(fd)
    reader = subprocess.Popen(["cat", str(tracing / "trace_pipe")], stdout=subprocess.PIPE)
    try:
        time.sleep(0.5)
        assert reader.poll() is None  # blocked on an empty ring
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        assert reader.wait(20) == 0 and reader.stdout.read() == b""
    finally:
        if reader.poll() is None:
            reader.kill()
        reader.wait(10)
        reader.stdout.close()


async def test_a_fault_that_got_a_zeroed_folio_is_traced_as_its_format_says():
    """migrate_offload_clear: one line per zeroed folio a fault mapped, its
    fields where its format file puts them (libtraceevent parses it)."""
    from migd.daemon import System, load_config

    sys_ = System(load_config(text=config("16M", [{"name": "huge", "size": "4M", "order": 9}])))
    t = sys_.tenants[0]
    assert await sys_.fault(t, 0) == "cpu"  # no migrator: the CPU clears it
    text = sys_.tracing.ring.snapshot(1)
    lines = [ln for ln in text.splitlines() if "migrate_offload_clear:" in ln]
    assert len(lines) == 1
    seen = check_lines(lines, {ev.path: ev.format_file() for ev in EVENTS})
    assert seen == {"migrate_offload_clear": 1}
    nid = int(sys_.machine.memory.nid_of[t.pte_pfn[0]])
    assert f"provider=none nid={nid} order=9 nr_pages=512 how=cpu ns=" in lines[0]


_ARG = {"int": st.integers(-2**63 + 1, 2**63 - 1),
        "str": st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=90)}


@st.composite
def _entries(draw):
    """Random entries of every event: values of each argument's kind, symbol
    arguments in and out of their tables."""
    out = []
    for _ in range(draw(st.integers(1, 12))):
        e = draw(st.sampled_from(EVENTS))
        symbols = dict(e.symbols)
        strings = set(e._strings)
        values = tuple(draw(st.one_of(st.sampled_from(sorted(symbols[i])), st.integers(-5, 99)))
                       if i in symbols else draw(_ARG["str" if i in strings else "int"])
                       for i in range(len(e.args)))
        out.append((e, draw(st.floats(0, 1e6, allow_nan=False)), values))
    return out


@settings(max_examples=60, deadline=None)
@given(_entries(), st.integers(1, 4_000_000))
def test_the_compiled_lines_are_format_lines(entries, pid):
    """The ring's compiled formatter writes, byte for byte, what
    ``format_line`` (the print fmt applied by ``%``) writes for every event,
    number, string and symbol (a value without a symbol as its number, as
    ``symbols.get(v, str(v))``), at any time."""
    ring = TraceRing(entries=len(entries), pid=pid)
    for e, seconds, values in entries:
        ring.append(e, seconds, values)
    body = ring.snapshot(2).split("#              | |         |   |||||     |         |\n", 1)[1]
    assert body == "".join(format_line(e, s, v, pid) for e, s, v in entries)


def test_lines_formatted_while_new_strings_are_interned():
    """The writer interns strings (a new migrator or errno name) while readers
    format: the string table is published whole, so a reader never meets an
    id its table lacks (which read past the table: garbage in the line)."""
    ring = TraceRing(entries=256, pid=1)
    stop = threading.Event()

    def write():
        for i in range(1000):
            ring.append(MIGRATE_OFFLOAD_CLEAR, i, (f"p{i}", 0, 0, 1, "cpu", 1, 1))
        stop.set()

    bad: list[str] = []
    writer = threading.Thread(target=write)
    writer.start()
    while not stop.is_set():
        for line in ring.snapshot(1).splitlines():
            if not line.startswith("#") and not re.search(r" provider=(p\d+|\?) nid=0 ", line):
                bad.append(line)
    writer.join()
    assert not bad, bad[:3]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["append", "pipe", "view", "clear"]),
                          st.integers(1, 40)), max_size=30))
def test_an_open_formats_only_what_is_new_and_reads_as_a_full_format(ops):
    """Each open of ``trace`` reuses the last open's text for the entries
    still in the ring (formatting only those recorded since), across
    overruns, trace_pipe reads (whole lines and split ones) and clears: what
    it reads is what formatting the whole ring gives."""
    ring = TraceRing(entries=32, pid=3)
    t = 0.0
    for op, k in ops:
        if op == "append":
            for _ in range(k):
                t += 0.25
                ring.append(MM_MIGRATE_PAGES, t, (int(t), 0, 0, 0, 0, 0, 0, 0))
        elif op == "pipe" and len(ring):
            ring.read_pipe(k * 7, block=False)
        elif op == "clear":
            ring.clear()
        seen = ring.snapshot(1)
        last, ring._last = ring._last, None
        assert seen == ring.snapshot(1)  # formatted whole
        ring._last = last
