"""The GIL handed over (migd._gil): asked for by the tree's open and the
metrics server's threads, handed over by the main thread, every ask counted
done.  Which thread gets the GIL is the mechanism under test, not a time."""

import os
import socket
import subprocess
import sys

from migd import _gil
from migd.daemon import System, load_config
from migd.metrics import serve_metrics

from .helpers import SMALL_CONFIG
from .test_metrics_http import get

_BUSY_MAIN_THREAD = r"""
import subprocess, sys, threading, time
import numba
import numpy as np
from migd import _gil
from migd.sysfs import Attribute, SysfsTree, is_mounted, serve, unmount

mnt = sys.argv[1]
tree = SysfsTree()
tree.add("value", Attribute(lambda: "42\n"))
threading.Thread(target=serve, args=(tree, mnt, None), daemon=True).start()
deadline = time.monotonic() + 60
while not is_mounted(mnt):
    assert time.monotonic() < deadline
    time.sleep(0.01)

@numba.njit(nogil=True)
def short(a):  # a short GIL-free call, as the engine's thread makes them back to back
    s = 0.0
    for x in a:
        s += x
    return s

a = np.ones(512)
short(a)
before = _gil.statistics()
reader = subprocess.Popen([sys.executable, "-c", "import os, sys\n"
                           "for _ in range(300):\n"
                           "    assert os.listdir(sys.argv[1]) == ['value']\n"
                           "    assert open(sys.argv[1] + '/value').read() == '42\\n'",
                           mnt])
while reader.poll() is None and time.monotonic() < deadline + 60:
    for _ in range(200):
        short(a)
reader.wait(30)
after = _gil.statistics()
unmount(mnt)
print(reader.returncode, after[0] - before[0], _gil.outstanding())
"""


def test_a_cat_is_handed_the_gil_by_a_busy_main_thread(tmp_path):
    """CPython 3.11's take_gil(): a libfuse thread waiting for the GIL while
    the main thread makes short GIL-free calls back to back is woken at each
    release, loses the race and waits again; the open and the readdir (``ls``)
    ask first and the main thread hands it over (c_handoff counts it), and
    every ask is done."""
    (tmp_path / "m").mkdir()
    p = subprocess.run([sys.executable, "-c", _BUSY_MAIN_THREAD, str(tmp_path / "m")],
                       capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stderr
    code, handoffs, outstanding = map(int, p.stdout.split())
    assert code == 0  # every read was the value
    assert handoffs > 0
    assert outstanding == 0


def test_every_ask_of_the_metrics_server_is_counted_done():
    """Scrapes, a 404, a 431 and a dropped connection: once the server is
    shut down nothing it asked for is outstanding (a leaked ask would make
    the main thread nap at every pending call)."""
    server, port = serve_metrics(System(load_config(text=SMALL_CONFIG)), "127.0.0.1:0")
    try:
        for _ in range(5):
            assert get(port)[0] == 200
        assert get(port, "/nope")[0] == 404
        assert get(port, "/metrics", **{"X-Big": "x" * 20000})[0] == 431
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"GET /metrics HTTP/1.0\r\n")  # no end of head: dropped at shutdown
    finally:
        server.shutdown()
    assert _gil.outstanding() == 0


def test_the_main_thread_never_asks():
    """The main thread runs the hand-over: an ask of its own would nap against
    itself (a start's compile_server() runs there)."""
    r, w = os.pipe()
    try:
        os.write(w, b"x")
        before = _gil.statistics()
        assert _gil.wait_readable(r, 0)
        assert _gil.outstanding() == 0
        _gil.done()
        assert _gil.outstanding() == 0 and _gil.statistics() == before
    finally:
        os.close(r)
        os.close(w)
