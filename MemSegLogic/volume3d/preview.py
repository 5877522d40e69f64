"""Results while they are computed: each slice's mask as soon as its pass has it.

`segment_volume(..., preview=callback)` calls ``callback(SliceUpdate)`` for every slice a pass
segments, in the order the passes reach them (the seed slice first, then forward, then
backward; the seed axis' pass before the other axes'). The final, fused mask is the result the
call returns; a cancel raises `SegmentationCancelled` at the next slice, so a preview is all a
cancelled run leaves behind.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Callable, Optional, Tuple

import numpy as np

from ..core.geometry import slice_stack


@dataclasses.dataclass(frozen=True)
class SliceUpdate:
    """One slice a pass has just segmented. ``pass_number`` 0 is the seed axis' pass; ``axis``
    is 0 (I), 1 (J) or 2 (K) and ``index`` the slice along it; ``mask`` is that slice's frame as
    `MemSegLogic.core.geometry.slice_stack` cuts it from the KJI volume (bool)."""

    pass_number: int
    axis: int
    index: int
    mask: np.ndarray


PreviewCallback = Callable[[SliceUpdate], None]


class PreviewMask:
    """A KJI mask filled in from `SliceUpdate`s, for a viewer to show while the run goes on.

    It keeps the seed axis' pass: that is the whole result with one axis, and the bulk of it with
    three (the other axes refine it through fusion at the end; their slices cut across the first
    pass', so showing them one by one would only flicker). Thread-safe: the worker thread writes,
    the viewer's thread takes `snapshot`s."""

    def __init__(self, shape_kji):
        self._mask = np.zeros(tuple(shape_kji), dtype=np.uint8)
        self._lock = threading.Lock()
        self._version = 0
        self._seen = 0
        self.updates = 0  # slices received (all passes)

    def __call__(self, update: SliceUpdate) -> None:
        with self._lock:
            self.updates += 1
            if update.pass_number == 0:
                slice_stack(self._mask, update.axis)[update.index] = update.mask
                self._version += 1

    @property
    def version(self) -> int:
        """How many slices have changed the mask so far (0: nothing to show yet)."""
        return self._version

    def snapshot(self) -> Optional[Tuple[int, np.ndarray]]:
        """(version, a copy of the mask) if it changed since the last snapshot, else None."""
        with self._lock:
            if self._version == self._seen:
                return None
            self._seen = self._version
            return self._version, self._mask.copy()
