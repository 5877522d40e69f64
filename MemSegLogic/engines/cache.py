"""The loaded engines kept between runs, so repeated clicks in Slicer do not reload weights.

One least-recently-used cache serves every engine (3D and cine). A key names everything that
makes an engine different: checkpoint, weights file (with its size and time for files that may be
rewritten), device and options; a changed file therefore loads afresh."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Hashable

CACHE_SIZE = 2  # two engines: e.g. a 3D model and MemSAM, or two 3D models compared side by side


class EngineCache:
    def __init__(self, size: int = CACHE_SIZE):
        self._size = size
        self._engines: "OrderedDict[Hashable, object]" = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, build: Callable[[], object]):
        """The engine under ``key``, built by ``build()`` (under the lock: one load at a time) if absent."""
        with self._lock:
            if key in self._engines:
                self._engines.move_to_end(key)
                return self._engines[key]
            engine = build()
            self._engines[key] = engine
            while len(self._engines) > self._size:
                self._engines.popitem(last=False)
            return engine

    def clear(self) -> None:
        with self._lock:
            self._engines.clear()


engine_cache = EngineCache()


def clear_engine_cache() -> None:
    """Forget loaded engines (3D and MemSAM): the next run loads its weights afresh."""
    engine_cache.clear()
