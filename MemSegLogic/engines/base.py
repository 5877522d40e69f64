"""What every engine gives the orchestration: logits for a stack of frames from seed prompts."""

from __future__ import annotations

import dataclasses
from typing import Dict

import numpy as np

from ..progress import Monitor
from ..prompt import SlicePrompt

# Logit stored for frames a pass never reached (SAM 2 uses the same value for "no object").
NOT_VISITED_LOGIT = -1024.0


@dataclasses.dataclass
class PassResult:
    """Mask logits for every frame of a stack (N, H, W) and which frames were actually visited."""

    logits: np.ndarray
    visited: np.ndarray

    @classmethod
    def empty(cls, shape) -> "PassResult":
        return cls(np.full(shape, NOT_VISITED_LOGIT, dtype=np.float32), np.zeros(shape[0], dtype=bool))


class Engine:
    """Interface of a propagation engine. ``frames`` is a uint8 stack (N, H, W), ``seeds`` maps a
    frame index to its prompt; the engine propagates forward from the first seed and backward
    from the last one, and returns logits at the frames' own resolution."""

    name: str = ""
    image_size: int = 0

    def propagate(self, frames: np.ndarray, seeds: Dict[int, SlicePrompt], monitor: Monitor) -> PassResult:
        raise NotImplementedError
