"""Fixtures only; the helpers the modules share are in helpers.py, imported by name."""

import pytest
import trio

from .helpers import Daemon


@pytest.fixture
def autojump_clock():
    return trio.testing.MockClock(autojump_threshold=0)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    """``migd run`` on DAEMON_CONFIG, one per test module, killed and unmounted after."""
    d = Daemon(tmp_path_factory.mktemp("migd"))
    try:
        d.wait_ready()
        yield d
    finally:
        d.close()
