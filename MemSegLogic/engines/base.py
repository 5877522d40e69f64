"""What every engine gives the orchestration: logits for a stack of frames from seed prompts."""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional

import numpy as np

from ..core.prompt import SlicePrompt
from ..errors import NothingFoundError
from ..progress import Monitor

# Logit stored for frames a pass never reached (SAM 2 uses the same value for "no object").
NOT_VISITED_LOGIT = -1024.0
# Logit magnitude of a user-painted seed mask (sigmoid(12) > 0.99999): engines that take masks as
# logits (LiteMedSAM's mask prompt, MemSAM's prompt value) encode the painted mask with it.
MASK_SEED_LOGIT = 12.0
# A pass ends after this many consecutive slices without the object, beyond the outermost seed
# (each engine has its own default: `Engine.absent_slices`).
DEFAULT_ABSENT_SLICES = 3
# Memory policies of memory-based engines: MedSAM-2's self-sorting bank, or stock SAM 2 memory.
MEMORY_POLICIES = ("self-sorting", "sam2")
DEFAULT_MEMORY = "self-sorting"


@dataclasses.dataclass
class PassResult:
    """Mask logits for every frame of a stack (N, H, W) and which frames were actually visited."""

    logits: np.ndarray
    visited: np.ndarray

    @classmethod
    def empty(cls, shape) -> "PassResult":
        return cls(np.full(shape, NOT_VISITED_LOGIT, dtype=np.float32), np.zeros(shape[0], dtype=bool))


class AbsenceCounter:
    """The early-stop rule: a direction ends once the object has been absent on ``limit``
    consecutive slices past the outermost seed (``limit`` 0 never stops: every slice is visited)."""

    def __init__(self, limit: int):
        if limit < 0:
            raise ValueError(f"absent_slices must be >= 0, got {limit}")
        self.limit = limit
        self.absent = 0

    def should_stop(self, present: bool) -> bool:
        self.absent = 0 if present else self.absent + 1
        return self.limit > 0 and self.absent >= self.limit


def directions(seeds: Dict[int, SlicePrompt], count: int):
    """The two directions of a pass over ``count`` frames: (step, first seed, last frame, where
    early stopping may start). Forward runs from the first seed to the end, backward from the
    last seed to frame 0; between seeds a direction never stops."""
    return ((1, min(seeds), count - 1, max(seeds)), (-1, max(seeds), 0, min(seeds)))


class Engine:
    """Interface of a propagation engine. ``frames`` is a uint8 stack (N, H, W), ``seeds`` maps a
    frame index to its prompt; the engine propagates forward from the first seed and backward
    from the last one, and returns logits at the frames' own resolution. ``memory`` is a
    `MemoryBanks` (self-sorting) or None (the engine's own memory); engines without memory
    ignore it."""

    name: str = ""
    image_size: int = 0
    # The prompts the model was trained with; others are translated by the engine (a box-trained
    # model turns clicks into a box) rather than passed in raw.
    trained_prompts = ("points", "box", "mask")
    # Whether frames with non-square pixels (slices along a thick axis) are resampled to square
    # pixels before the model sees them (see `propagation.SquarePixels`).
    square_pixels: bool = True
    # Default of the early stop (`AbsenceCounter`) when the caller gives none.
    absent_slices: int = DEFAULT_ABSENT_SLICES
    # Frames the image encoder has seen since the engine was loaded (the work a run costs).
    slices_encoded: int = 0

    def propagate(self, frames: np.ndarray, seeds: Dict[int, SlicePrompt], monitor: Monitor,
                  absent_slices: Optional[int] = None, memory=None) -> PassResult:
        raise NotImplementedError

    def input_scale(self, frame_shape) -> tuple:
        """(row, column) scale from a frame of ``frame_shape`` to the model's input. SAM 2 resizes
        every frame to image_size x image_size, whatever its aspect."""
        return self.image_size / frame_shape[0], self.image_size / frame_shape[1]

    def absence_counter(self, absent_slices: Optional[int]) -> AbsenceCounter:
        return AbsenceCounter(self.absent_slices if absent_slices is None else absent_slices)


class CarriedMaskEngine(Engine):
    """An engine without memory: each slice is prompted from the previous slice's result.

    Subclasses segment one slice: `segment_seed(frame, seed)` and `segment_next(frame, carried)`,
    each returning (logits at frame resolution, what the next slice is prompted with, the
    model's own confidence in that mask or None). The carried prompt is always the last slice
    where the object was present.

    A pass stops at the first empty slice by default: a box prompt nearly always finds
    *something*, so slices visited past a gap pick up neighbouring tissue. For the same reason a
    direction also ends, past the outermost seed, at the first slice whose confidence falls more
    than ``confidence_drop`` (or ``drop_per_doubt`` x (1 - best), if larger) below the best one
    of that direction so far (seed included); that
    slice is left unvisited (NaN: unknown, not empty). It also ends, unvisited, at a slice whose
    mask overlaps the last present one by a Dice below ``min_overlap``: the carried box has
    jumped to other tissue (below brain1's lesion such slices are rated 0.74-0.85, as the lesion is).
    This is the carried-mask counterpart of SAM 2's object score: LiteMedSAM's IoU head is high
    on the object and drops where the carried box picks up vessels or other tissue past its end
    (README, "How it works", early stop)."""

    absent_slices = 1
    confidence_drop: Optional[float] = 0.15  # None: never stop on confidence
    # The drop allowed grows where the model is less sure of the object itself: at least this
    # times (1 - the best estimate). MR lesions are rated 0.84-0.89 and a slice 0.19 below can
    # still be the lesion (brain2); lungs are rated 0.97 and 0.19 below is the abdomen (README,
    # "Accuracy", where passes end).
    drop_per_doubt: float = 1.5
    min_overlap: Optional[float] = 0.4  # None: never stop on a jump

    def segment_seed(self, frame: np.ndarray, seed: SlicePrompt):
        raise NotImplementedError

    def segment_next(self, frame: np.ndarray, carried):
        raise NotImplementedError

    def propagate(self, frames: np.ndarray, seeds: Dict[int, SlicePrompt], monitor: Monitor,
                  absent_slices: Optional[int] = None, memory=None) -> PassResult:
        result = PassResult.empty(frames.shape)
        carried, confidence = {}, {}
        for index, seed in sorted(seeds.items()):
            monitor.report(result.visited.mean(), f"seed slice {index}")
            result.logits[index], carried[index], confidence[index] = self.segment_seed(frames[index], seed)
            result.visited[index] = True
            if not (result.logits[index] > 0).any():  # nothing to carry to the next slice
                raise NothingFoundError(index)
            monitor.frame_done(index, result.logits[index])
        for step, start, end, stop_from in directions(seeds, len(frames)):
            carry: Optional[object] = carried[start]
            best, last_present = confidence[start], result.logits[start] > 0
            counter = self.absence_counter(absent_slices)
            for index in range(start + step, end + step, step):
                if index in seeds:  # a later seed takes over from the carried prompt
                    carry, best = carried[index], _best(best, confidence[index])
                    last_present = result.logits[index] > 0
                    continue
                logits, new_carry, score = self.segment_next(frames[index], carry)
                monitor.report(result.visited.mean(), f"slice {index} ({'forward' if step > 0 else 'backward'})")
                beyond_seeds = (index - stop_from) * step > 0
                mask = logits > 0
                if beyond_seeds and (self._unsure(score, best) or self._jumped(mask, last_present)):
                    break
                best = _best(best, score)
                result.logits[index] = logits
                result.visited[index] = True
                monitor.frame_done(index, logits)
                present = bool(mask.any())
                if present:
                    carry, last_present = new_carry, mask
                if beyond_seeds and counter.should_stop(present):
                    break
        return result

    def _unsure(self, score: Optional[float], best: Optional[float]) -> bool:
        return (self.confidence_drop is not None and score is not None and best is not None
                and score < best - max(self.confidence_drop, self.drop_per_doubt * (1.0 - best)))

    def _jumped(self, mask: np.ndarray, last_present: np.ndarray) -> bool:
        """Whether this slice's mask (if any) overlaps the last present one too little to be the same object."""
        if self.min_overlap is None or not mask.any():
            return False
        overlap = 2.0 * np.logical_and(mask, last_present).sum() / (mask.sum() + last_present.sum())
        return overlap < self.min_overlap


def _best(best: Optional[float], score: Optional[float]) -> Optional[float]:
    return score if best is None else best if score is None else max(best, score)
