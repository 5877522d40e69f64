"""Long work off Slicer's UI thread, without Qt: one persistent worker thread, polled.

The Qt side starts a `BackgroundTask` and polls it from a QTimer on the main thread
(`task.poll()` -> the latest progress, `task.done`, `task.result()`); it never touches Qt from
the worker (Qt widgets are not thread-safe: a pip dialog opened off the main thread is a known
crash of Slicer on macOS). The worker thread is the same for every task
of a process (CUDA/cuDNN caches are per thread: a fresh thread per click pays the warm-up
again). Cancel sets the `threading.Event` the segmentation polls between slices.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
import traceback
from typing import Callable, Optional, Tuple

_worker: Optional[concurrent.futures.ThreadPoolExecutor] = None
_worker_lock = threading.Lock()


def _shared_worker() -> concurrent.futures.ThreadPoolExecutor:
    global _worker
    with _worker_lock:
        if _worker is None:
            _worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="MemSeg")
        return _worker


class BackgroundTask:
    """``function(*args, progress=..., cancel=..., **kwargs)`` on the shared worker thread.

    ``poll()`` returns the latest (fraction, message) reported; ``done`` tells whether it ended;
    ``result()`` returns its value or re-raises its exception (``traceback_text`` keeps the
    worker's full trace for the log)."""

    def __init__(self, function: Callable, *args, **kwargs):
        self.started = time.monotonic()
        self.cancel_event = threading.Event()
        self._progress: Tuple[float, str] = (0.0, "waiting for the worker")
        self._lock = threading.Lock()
        self.traceback_text = ""
        self._future = _shared_worker().submit(self._run, function, args, kwargs)

    def _report(self, fraction: float, message: str = "") -> None:
        with self._lock:
            self._progress = (float(fraction), message)

    def _run(self, function, args, kwargs):
        try:
            return function(*args, progress=self._report, cancel=self.cancel_event, **kwargs)
        except BaseException:
            self.traceback_text = traceback.format_exc()
            raise

    def poll(self) -> Tuple[float, str]:
        with self._lock:
            return self._progress

    def status(self) -> Tuple[int, str]:
        """What a progress bar and a status line show: (percent, "latest message (elapsed s)")."""
        fraction, message = self.poll()
        return int(round(100 * fraction)), f"{message} ({time.monotonic() - self.started:.0f} s)"

    @property
    def done(self) -> bool:
        return self._future.done()

    def cancel(self) -> None:
        """Ask the task to stop; it ends at its next progress check (nothing is written)."""
        self.cancel_event.set()

    def result(self, timeout: Optional[float] = None):
        return self._future.result(timeout)

    def wait(self, timeout: Optional[float] = None) -> bool:
        concurrent.futures.wait([self._future], timeout)
        return self.done
