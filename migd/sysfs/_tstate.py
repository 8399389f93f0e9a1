"""One Python thread state per libfuse thread, kept across its requests.

fusepy's operations are ctypes callbacks run on libfuse's own threads.  On a
thread Python did not start, each callback creates a thread state and the
end of the callback destroys it (``PyGILState_Ensure``/``Release`` with the
count back at 0): ~9 us with the GIL held per FUSE request (the frame stack
is mapped and unmapped each time), 26% of the GIL samples with 16 readers, and
every ``threading.local`` (the thread's nice value done once) is lost.  One
extra ``PyGILState_Ensure`` at a thread's first request keeps its state; a
callback then costs ~0.3 us.  A libfuse thread that exits (libfuse2 keeps at
most 10 idle) leaves its state behind: :meth:`ThreadStates.hold` frees those
of threads no longer in ``/proc/self/task`` when a new thread comes, and
:meth:`ThreadStates.release_dead` at the end of ``serve()``.  Left to the
interpreter, a kept state is what a daemon thread's is: freed at exit, its
thread ended if it calls back after.  Rejected: a pthread key destructor
calling into Python as the thread exits (a callback during finalisation).
"""

from __future__ import annotations

import ctypes
import itertools
import os
import threading

_api = ctypes.pythonapi
_api.PyGILState_Ensure.restype = ctypes.c_int
_api.PyGILState_GetThisThreadState.restype = ctypes.c_void_p
_api.PyThreadState_Clear.argtypes = [ctypes.c_void_p]
_api.PyThreadState_Delete.argtypes = [ctypes.c_void_p]


class ThreadStates:
    """The thread states kept, by native thread id; every method runs with the GIL."""

    def __init__(self) -> None:
        self._kept: dict[int, tuple[int, int]] = {}  # tid -> (state, serial)
        self._serial = itertools.count()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._kept)

    def hold(self) -> None:
        """Keep the calling (libfuse) thread's state past this callback; once per
        thread.  A thread Python started is left alone: Python deletes its
        state when it ends, and freeing it here too would free it twice."""
        started = threading._active.get(threading.get_ident())  # no _DummyThread made
        if started is not None and not isinstance(started, threading._DummyThread):
            return
        _api.PyGILState_Ensure()
        tid = threading.get_native_id()
        state = _api.PyGILState_GetThisThreadState()
        with self._lock:
            stale = self._kept.pop(tid, None)  # a dead thread's id, reused
            self._kept[tid] = (state, next(self._serial))
        if stale is not None and stale[0] != state:  # never the caller's own
            _free(stale[0])
        self.release_dead()

    def release_dead(self) -> None:
        """Free the states of threads that have exited: of those kept before
        the look-ups (which let other threads run), the ones whose id is gone
        from ``/proc/self/task``.  Each id is looked up: a listing of the
        directory ends early when a thread exits during it
        (``next_tid()`` stops at a dead thread), and a state then freed under
        its live thread crashed the daemon."""
        if not os.path.exists(f"/proc/self/task/{threading.get_native_id()}"):
            return  # no /proc, or another PID namespace's: no thread can be told dead
        with self._lock:
            before = dict(self._kept)
        dead = {t for t in before if not os.path.exists(f"/proc/self/task/{t}")}
        with self._lock:
            states = [self._kept.pop(t)[0] for t in dead if self._kept.get(t) == before[t]]
        for state in states:
            _free(state)


def _free(state: int) -> None:
    """A dead thread's state: no frame, not current (``PyThreadState_Clear``
    wants the GIL, which the caller holds)."""
    _api.PyThreadState_Clear(state)
    _api.PyThreadState_Delete(state)
