"""Progress reporting and cancellation shared by every long-running MemSeg call.

``progress(fraction, message)`` is any callable; ``cancel`` is a `threading.Event` (or anything
with ``is_set()``). Engines call `Monitor.report` between slices, so a cancel takes effect within
one slice and raises `SegmentationCancelled` before anything is written. Engines also hand each
frame's logits to `Monitor.frame_done` as soon as they exist: the caller's frame handler (the
volume's streaming preview) turns them into a partial result.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from .errors import SegmentationCancelled

ProgressCallback = Callable[[float, str], None]
# frame_handler(frame index within the engine's stack, logits of that frame at the stack's resolution)
FrameHandler = Callable[[int, np.ndarray], None]


class Monitor:
    """Forwards progress of a sub-task (a slice range of the whole job) and checks for cancel."""

    def __init__(self, progress: Optional[ProgressCallback] = None, cancel=None,
                 start: float = 0.0, end: float = 1.0, frame_handler: Optional[FrameHandler] = None):
        if progress is not None and not callable(progress):
            raise ValueError(f"progress must be a function progress(fraction, message), got {progress!r}")
        if cancel is not None and not callable(getattr(cancel, "is_set", None)):
            raise ValueError(f"cancel must be a threading.Event (anything with is_set()), got {cancel!r}")
        self._progress = progress
        self._cancel = cancel
        self._start, self._end = start, end
        self._frame_handler = frame_handler

    def check_cancel(self) -> None:
        if self._cancel is not None and self._cancel.is_set():
            raise SegmentationCancelled("segmentation cancelled by the user; nothing was written")

    def report(self, fraction: float, message: str) -> None:
        self.check_cancel()
        if self._progress is not None:
            fraction = min(max(fraction, 0.0), 1.0)
            self._progress(self._start + (self._end - self._start) * fraction, message)

    def frame_done(self, index: int, logits: np.ndarray) -> None:
        """An engine has the final logits of frame ``index``: pass them on while the run goes on."""
        if self._frame_handler is not None:
            self._frame_handler(index, logits)

    def sub(self, start: float, end: float) -> "Monitor":
        """A monitor for the part [start, end] of this one's range."""
        span = self._end - self._start
        return Monitor(self._progress, self._cancel, self._start + span * start, self._start + span * end,
                       self._frame_handler)

    def with_frame_handler(self, frame_handler: Optional[FrameHandler]) -> "Monitor":
        """This monitor, with finished frames going to ``frame_handler``."""
        return Monitor(self._progress, self._cancel, self._start, self._end, frame_handler)
