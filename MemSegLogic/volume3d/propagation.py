"""Six-orientation propagation: how passes along I, J and K are seeded, cropped and mapped back.

No reference code exists for MedSAM-2's six orientations (the paper, v2 §3.3, describes them
in words only). Our orchestration (the measurements behind each choice: README, "How it works"):

1. The seed axis is propagated forward from its first seed and backward from its last one.
2. Its result seeds the two other axes: on each, the plane through the centre of the object on
   the seed slice (the centroid of the first pass' mask there; if that plane misses a
   non-convex object, the plane with the largest cross-section across the object) gives a mask
   prompt, from which that axis is propagated both ways. Both other axes are seeded from the
   first pass only, so their order does not matter.
3. Crop: the later passes visit only the slices of the object's extent found by the first pass
   plus a margin (``margin_fraction`` of the extent, at least ``margin_voxels``). Optionally
   (``crop_frames``) each of their frames is also cropped to the object's box plus the same
   margin, widened to a physically square window. Speed: fewer slices per pass (the model's
   cost is per slice; crop size does not change it). Resolution: a cropped frame is resized to
   the model's input like a whole one, so a small object is seen larger, at the cost of
   context. Off by default: losing the context around the object cost more than the zoom gained.
4. Frames whose pixels are not square (slices along a thick axis, e.g. 0.7 x 0.7 x 5 mm) are
   resampled to square pixels before the model sees them (bilinear, pixel centres kept), and
   the logits are resampled back onto the original pixel centres — for engines that want it
   (`Engine.square_pixels`; LiteMedSAM does better on native frames).

5. An other axis is skipped when the object, as the seed axis found it, would span fewer than
   ``MIN_MODEL_PIXELS`` of the model's input along the seed axis in that axis' frames
   (`object_span_in_model`): a 2D model cannot follow an object a few pixels thick, and such
   passes fail outright and drag the fusion below one axis (small lesions across thick slices).
   The skipped axes and why are kept on the result.

Each axis' result is a probability volume with NaN where it did not look; `fusion` combines them.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, Optional, Tuple

import numpy as np

from ..core.geometry import AXIS_NAMES, frame_spacing, in_plane_axes, slice_stack
from ..core.metrics import sigmoid
from ..core.prompt import SlicePrompt
from ..engines.base import Engine
from ..errors import NOTHING_FOUND_ADVICE, NothingFoundError
from ..progress import Monitor
from .preview import PreviewCallback, SliceUpdate

DEFAULT_MARGIN_FRACTION = 0.2
DEFAULT_MARGIN_VOXELS = 8
# An other axis runs only if the object spans at least this many pixels of the model's input
# along the seed axis in its frames (1/16 of a 256-pixel input).
MIN_MODEL_PIXELS = 16
_CHUNK = 16  # frames resampled at once (bounds the float copy of a large stack)


@dataclasses.dataclass(frozen=True)
class Window:
    """The part of an axis' frame stack a pass sees: slices [first, last] and rows / cols ranges
    [start, stop) of each frame."""

    first: int
    last: int
    rows: Tuple[int, int]
    cols: Tuple[int, int]

    @classmethod
    def whole(cls, stack_shape) -> "Window":
        return cls(0, stack_shape[0] - 1, (0, stack_shape[1]), (0, stack_shape[2]))

    def crop(self, stack: np.ndarray) -> np.ndarray:
        return stack[self.first:self.last + 1, self.rows[0]:self.rows[1], self.cols[0]:self.cols[1]]

    def local_prompt(self, seed: SlicePrompt) -> SlicePrompt:
        """A prompt in whole-frame coordinates moved into this window."""
        offset = np.array([self.cols[0], self.rows[0]], dtype=np.float64)
        return SlicePrompt(
            seed.frame_index - self.first, seed.points_xy - offset, seed.labels,
            None if seed.box_xyxy is None else seed.box_xyxy - np.tile(offset, 2),
            None if seed.mask is None else seed.mask[self.rows[0]:self.rows[1], self.cols[0]:self.cols[1]])


class SquarePixels:
    """Resampling of frames with pixel spacing (row, col) to square pixels, and back.

    The coarser direction is upsampled; the field of view is unchanged, so pixel centres map as
    u = (x + 0.5) * scale - 0.5 both ways (bilinear with align_corners=False)."""

    def __init__(self, shape, spacing_yx, tolerance: float = 1e-3, mode: str = "bilinear"):
        self.mode = mode
        height, width = shape
        row_mm, col_mm = (float(s) for s in spacing_yx)
        if abs(row_mm - col_mm) <= tolerance * max(row_mm, col_mm):
            self.model_shape = (height, width)
        elif row_mm > col_mm:
            self.model_shape = (max(1, round(height * row_mm / col_mm)), width)
        else:
            self.model_shape = (height, max(1, round(width * col_mm / row_mm)))
        self.shape = (height, width)
        self.scale_y = self.model_shape[0] / height
        self.scale_x = self.model_shape[1] / width

    @property
    def identity(self) -> bool:
        return self.model_shape == self.shape

    def frames(self, stack: np.ndarray) -> np.ndarray:
        if self.identity:
            return stack
        out = np.empty((len(stack),) + self.model_shape, dtype=np.uint8)
        for start in range(0, len(stack), _CHUNK):
            resized = _resize(stack[start:start + _CHUNK].astype(np.float32), self.model_shape, self.mode)
            out[start:start + _CHUNK] = np.clip(np.rint(resized), 0, 255)
        return out

    def logits_back(self, logits: np.ndarray) -> np.ndarray:
        if self.identity:
            return logits
        out = np.empty((len(logits),) + self.shape, dtype=np.float32)
        for start in range(0, len(logits), _CHUNK):
            out[start:start + _CHUNK] = _resize(logits[start:start + _CHUNK], self.shape, "bilinear")
        return out

    def prompt(self, seed: SlicePrompt) -> SlicePrompt:
        if self.identity:
            return seed
        scale = np.array([self.scale_x, self.scale_y])
        points = (seed.points_xy + 0.5) * scale - 0.5
        box = None
        if seed.box_xyxy is not None:  # inclusive pixel centres: first and last model pixel inside
            box = np.concatenate([seed.box_xyxy[:2] * scale, (seed.box_xyxy[2:] + 1) * scale - 1])
        mask = None
        if seed.mask is not None:
            mask = _resize(seed.mask[None].astype(np.float32), self.model_shape, "nearest-exact")[0] > 0.5
        return SlicePrompt(seed.frame_index, points, seed.labels, box, mask)


def _resize(stack: np.ndarray, shape, mode: str) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    tensor = torch.from_numpy(np.ascontiguousarray(stack, dtype=np.float32))[:, None]
    options = {} if mode.startswith(("nearest", "area")) else {"align_corners": False}
    return F.interpolate(tensor, size=tuple(shape), mode=mode, **options)[:, 0].numpy()


@dataclasses.dataclass
class AxisPass:
    """What one axis' two directions produced, mapped back to the volume (KJI)."""

    axis: int
    seeds: Tuple[int, ...]  # seed slice indices along the axis
    window: Window
    model_frame_shape: Tuple[int, int]  # frame size after square-pixel resampling (before the model's resize)
    probability: np.ndarray  # KJI float32, NaN where this axis did not look
    slices_visited: int

    @property
    def name(self) -> str:
        return AXIS_NAMES[self.axis]


def run_pass(engine: Engine, image: np.ndarray, spacing_ijk, axis: int, seeds: Dict[int, SlicePrompt],
             window: Optional[Window], monitor: Monitor, absent_slices: Optional[int] = None,
             memory=None, square_pixels: bool = True, preview: Optional[PreviewCallback] = None,
             pass_number: int = 0, step: int = 1) -> AxisPass:
    """Propagate ``seeds`` (whole-frame coordinates) along ``axis`` of the uint8 KJI ``image``;
    each slice's mask goes to ``preview`` as soon as the engine has it. ``step`` k > 1: the
    engine sees only every k-th slice counted from the (single) seed, the others stay NaN."""
    stack = slice_stack(image, axis)
    window = window or Window.whole(stack.shape)
    frames = window.crop(stack)
    # Window-local index of each frame the engine sees (all of them, or every step-th from the seed).
    seen = np.arange(len(frames))
    if step > 1:
        if len(seeds) != 1:
            raise ValueError("a pass over every k-th slice starts from one seed slice")
        seen = seen[(seen - (min(seeds) - window.first)) % step == 0]
    grid = SquarePixels(frames.shape[1:], frame_spacing(spacing_ijk, axis) if square_pixels else (1.0, 1.0))
    position = {int(index): n for n, index in enumerate(seen)}
    local = {position[index - window.first]: dataclasses.replace(grid.prompt(window.local_prompt(seed)),
                                                                  frame_index=position[index - window.first])
             for index, seed in seeds.items()}
    if preview is not None:
        monitor = monitor.with_frame_handler(
            _slice_updates(preview, pass_number, axis, window, grid, stack.shape[1:], seen))
    try:
        result = engine.propagate(grid.frames(frames if step == 1 else frames[seen]), local, monitor,
                                  absent_slices=absent_slices, memory=memory)
    except NothingFoundError as error:  # named in the volume's terms
        raise _nothing_found(axis, window.first + int(seen[error.frame_index])) from None
    visited = seen[result.visited]
    probability = np.full(image.shape, np.nan, dtype=np.float32)
    target = slice_stack(probability, axis)
    logits = grid.logits_back(result.logits[result.visited])
    target[window.first + visited, window.rows[0]:window.rows[1], window.cols[0]:window.cols[1]] = sigmoid(logits)
    return AxisPass(axis, tuple(sorted(seeds)), window, grid.model_shape, probability, int(len(visited)))


def _slice_updates(preview: PreviewCallback, pass_number: int, axis: int, window: Window, grid: SquarePixels,
                   frame_shape, seen: np.ndarray):
    """A frame handler turning an engine's frame (index among the ``seen`` window-local slices,
    logits on the model grid) into the `SliceUpdate` of that slice of the volume (logit > 0:
    the 0.5 probability threshold)."""
    def handle(index: int, logits: np.ndarray) -> None:
        mask = np.zeros(frame_shape, dtype=bool)
        mask[window.rows[0]:window.rows[1], window.cols[0]:window.cols[1]] = grid.logits_back(logits[None])[0] > 0
        preview(SliceUpdate(pass_number, axis, window.first + int(seen[index]), mask))
    return handle


def _nothing_found(axis: int, index: int, consequence: str = "") -> NothingFoundError:
    return NothingFoundError(index, f"the model found no object on the seed slice {AXIS_NAMES[axis]}={index}, "
                                    f"{consequence}{NOTHING_FOUND_ADVICE}")


def seed_plane(first_mask: np.ndarray, seed_axis: int, seed_slice: int, axis: int) -> Optional[int]:
    """Index along ``axis`` of the plane through the object's centre on the seed slice; None if
    the first pass found nothing there."""
    on_seed = slice_stack(first_mask, seed_axis)[seed_slice]  # frame of the seed axis
    x_axis, _ = in_plane_axes(seed_axis)
    rows, cols = np.nonzero(on_seed)
    if len(rows) == 0:
        return None
    coordinates = cols if axis == x_axis else rows
    plane = int(round(float(coordinates.mean())))
    if slice_stack(first_mask, axis)[plane].any():
        return plane
    # A non-convex object can miss its centroid: take the largest cross-section across it.
    candidates = np.arange(coordinates.min(), coordinates.max() + 1)
    areas = [np.count_nonzero(slice_stack(first_mask, axis)[c]) for c in candidates]
    return int(candidates[int(np.argmax(areas))])


def object_window(mask: np.ndarray, axis: int, spacing_ijk, margin_fraction: float = DEFAULT_MARGIN_FRACTION,
                  margin_voxels: int = DEFAULT_MARGIN_VOXELS, crop_frames: bool = True) -> Window:
    """The slices and in-frame box of ``axis`` frames that hold ``mask`` (KJI), plus margins,
    with the in-frame box widened to a physically square window where the frame allows.
    ``crop_frames`` False keeps whole frames (only the slice range is cropped)."""
    shape_ijk = mask.shape[::-1]
    nonzero_kji = [np.flatnonzero(mask.any(axis=tuple(d for d in range(3) if d != dim))) for dim in range(3)]
    low = [int(nonzero_kji[2 - a].min()) for a in range(3)]
    high = [int(nonzero_kji[2 - a].max()) for a in range(3)]
    margins = [max(margin_voxels, math.ceil(margin_fraction * (high[a] - low[a] + 1))) for a in range(3)]
    start = [max(low[a] - margins[a], 0) for a in range(3)]
    stop = [min(high[a] + margins[a] + 1, shape_ijk[a]) for a in range(3)]
    x_axis, y_axis = in_plane_axes(axis)
    if not crop_frames:
        return Window(start[axis], stop[axis] - 1, (0, shape_ijk[y_axis]), (0, shape_ijk[x_axis]))
    for short, other in ((x_axis, y_axis), (y_axis, x_axis)):
        want_mm = (stop[other] - start[other]) * spacing_ijk[other]
        have_mm = (stop[short] - start[short]) * spacing_ijk[short]
        if want_mm > have_mm:
            grow = math.ceil((want_mm - have_mm) / spacing_ijk[short] / 2)
            start[short] = max(start[short] - grow, 0)
            stop[short] = min(stop[short] + grow, shape_ijk[short])
    return Window(start[axis], stop[axis] - 1, (start[y_axis], stop[y_axis]), (start[x_axis], stop[x_axis]))


def object_span_in_model(mask: np.ndarray, seed_axis: int, axis: int, window: Window, spacing_ijk,
                         engine: Engine, square_pixels: bool) -> float:
    """How many pixels of the model's input the object (``mask``, KJI) spans along the seed axis
    in ``axis``' frames cropped to ``window``: its extent in seed-axis slices, through the
    square-pixel resampling and the engine's own resize."""
    slices = np.flatnonzero(slice_stack(mask, seed_axis).any(axis=(1, 2)))
    extent = int(slices.max() - slices.min() + 1)
    frame_shape = (window.rows[1] - window.rows[0], window.cols[1] - window.cols[0])
    grid = SquarePixels(frame_shape, frame_spacing(spacing_ijk, axis) if square_pixels else (1.0, 1.0))
    dim = 0 if in_plane_axes(axis)[1] == seed_axis else 1  # the seed axis runs along rows or columns
    return extent * grid.model_shape[dim] / frame_shape[dim] * engine.input_scale(grid.model_shape)[dim]


class Passes(list):
    """The `AxisPass` list of one segmentation, seed axis first; ``skipped`` maps the name of an
    axis that was not run to the reason."""

    def __init__(self, passes=(), skipped: Optional[Dict[str, str]] = None):
        super().__init__(passes)
        self.skipped = dict(skipped or {})


def check_step(step) -> int:
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise ValueError(f"other_axes_step must be a whole number of at least 1, got {step!r}")
    return step


def check_axes(axes: int) -> None:
    if axes not in (1, 3):
        raise ValueError(f"axes must be 1 (the prompt's axis, 2 directions) or 3 (6 directions), got {axes!r}")


def propagate_volume(engine: Engine, image: np.ndarray, spacing_ijk, seed_axis: int,
                     seeds: Dict[int, SlicePrompt], axes: int = 3, monitor: Optional[Monitor] = None,
                     absent_slices: Optional[int] = None, crop: bool = True, crop_frames: bool = False,
                     margin_fraction: float = DEFAULT_MARGIN_FRACTION, margin_voxels: int = DEFAULT_MARGIN_VOXELS,
                     threshold: float = 0.5, memory=None, square_pixels: Optional[bool] = None,
                     preview: Optional[PreviewCallback] = None, other_axes_step: int = 1) -> Passes:
    """All passes of one segmentation, seed axis first. ``image`` is the uint8 KJI volume.
    ``square_pixels`` None: the engine's preference (`Engine.square_pixels`); ``preview`` gets
    every slice as its pass reaches it (`MemSegLogic.volume3d.preview`); ``other_axes_step`` k:
    the other axes visit every k-th slice from their seed plane (the fusion fills the rest)."""
    square = engine.square_pixels if square_pixels is None else square_pixels
    check_axes(axes)
    check_step(other_axes_step)
    monitor = monitor or Monitor()
    passes = Passes([run_pass(engine, image, spacing_ijk, seed_axis, seeds, None, monitor.sub(0.0, 1.0 / axes),
                              absent_slices, memory, square, preview)])
    if axes == 1:
        return passes
    first_mask = np.nan_to_num(passes[0].probability, nan=0.0) > threshold
    seed_slice = min(seeds)
    if not slice_stack(first_mask, seed_axis)[seed_slice].any():
        raise _nothing_found(seed_axis, seed_slice, "so the other axes cannot be seeded: ")
    for n, axis in enumerate(a for a in range(3) if a != seed_axis):
        plane = seed_plane(first_mask, seed_axis, seed_slice, axis)
        cross_section = slice_stack(first_mask, axis)[plane]
        seed = SlicePrompt(plane, np.zeros((0, 2)), np.zeros((0,), dtype=np.int64), None, cross_section.copy())
        window = (object_window(first_mask, axis, spacing_ijk, margin_fraction, margin_voxels, crop_frames)
                  if crop else None)
        span = object_span_in_model(first_mask, seed_axis, axis, window or Window.whole(slice_stack(image, axis).shape),
                                    spacing_ijk, engine, square)
        sub = monitor.sub((n + 1) / 3, (n + 2) / 3)
        if span < MIN_MODEL_PIXELS:
            passes.skipped[AXIS_NAMES[axis]] = (
                f"the object spans {span:.1f} pixels of the model's input along {AXIS_NAMES[seed_axis]} in "
                f"{AXIS_NAMES[axis]} frames (< {MIN_MODEL_PIXELS}): too thin for the model to follow")
            sub.report(1.0, f"{AXIS_NAMES[axis]} axis skipped: {passes.skipped[AXIS_NAMES[axis]]}")
            continue
        sub.report(0.0, f"{AXIS_NAMES[axis]} axis from its plane {plane} through the seed")
        passes.append(run_pass(engine, image, spacing_ijk, axis, {plane: seed}, window, sub, absent_slices, memory,
                               square, preview, pass_number=len(passes), step=other_axes_step))
    return passes
