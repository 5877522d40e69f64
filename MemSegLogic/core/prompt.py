"""Seed prompts: positive/negative points, a box, or a 2D mask on one slice of one IJK axis.

A `Prompt` holds IJK coordinates (voxel centres at integers, like Slicer). It can be built from
RAS points (what a click in a slice view or a markup gives) through the volume's geometry, and
`check` rejects, with a specific message, anything that would make the model guess: an empty
prompt, points off the slice or outside the volume, a box without area, a mask of the wrong size.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np

from ..errors import InvalidPromptError
from .geometry import AXIS_NAMES, axis_index, frame_xy, in_plane_axes, slice_stack
from .volume import Volume


@dataclasses.dataclass(frozen=True)
class SlicePrompt:
    """A prompt in the pixel frame of one slice (see `geometry`): what an engine consumes."""

    frame_index: int
    points_xy: np.ndarray  # (n, 2) float, x = column, y = row
    labels: np.ndarray  # (n,) int, 1 positive / 0 negative
    box_xyxy: Optional[np.ndarray] = None  # (4,) x0, y0, x1, y1 inclusive pixel centres
    mask: Optional[np.ndarray] = None  # (H, W) bool

    @property
    def has_positive_region(self) -> bool:
        return bool(np.any(self.labels == 1)) or self.box_xyxy is not None or (
            self.mask is not None and bool(self.mask.any()))


@dataclasses.dataclass(frozen=True)
class Prompt:
    """Points (IJK, with labels 1/0), an optional box (two IJK corners) and/or a 2D mask, all on
    slice ``slice_index`` of IJK axis ``axis``."""

    axis: int
    slice_index: int
    points: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 3)))
    labels: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0,), dtype=np.int64))
    box: Optional[np.ndarray] = None  # (2, 3) IJK corners
    mask: Optional[np.ndarray] = None  # (H, W) in the slice frame

    # -- constructors ---------------------------------------------------------------------------
    @classmethod
    def from_points(cls, positive: Sequence = (), negative: Sequence = (), axis="K",
                    box: Optional[Sequence] = None) -> "Prompt":
        """Points (and optionally a box) given in IJK. The slice is the one the points lie on."""
        axis = axis_index(axis)
        positive = _as_points(positive, "positive point")
        negative = _as_points(negative, "negative point")
        points = np.concatenate([positive, negative])
        labels = np.concatenate([np.ones(len(positive), np.int64), np.zeros(len(negative), np.int64)])
        box_corners = None if box is None else _as_points(box, "box corner")
        if box_corners is not None and len(box_corners) != 2:
            raise InvalidPromptError(f"a box needs exactly two opposite corners, got {len(box_corners)}")
        on_slice = points if box_corners is None else np.concatenate([points, box_corners])
        if len(on_slice) == 0:
            raise InvalidPromptError("empty prompt: give at least one positive point, a box or a mask")
        slice_indices = sorted({int(v) for v in np.rint(on_slice[:, axis])})
        if len(slice_indices) != 1:
            raise InvalidPromptError(
                f"the prompt's points lie on different {AXIS_NAMES[axis]} slices {slice_indices}: "
                "a prompt sits on one slice")
        return cls(axis, slice_indices[0], points, labels, box_corners)

    @classmethod
    def from_box(cls, corner_a: Sequence, corner_b: Sequence, axis=None) -> "Prompt":
        """A box from two opposite IJK corners. Without ``axis``, the slice axis is the one along
        which both corners lie on the same slice."""
        corners = _as_points([corner_a, corner_b], "box corner")
        if axis is None:
            same = [a for a in range(3) if np.rint(corners[0, a]) == np.rint(corners[1, a])]
            if len(same) == 3:
                raise InvalidPromptError("the box has zero size: both corners are on the same voxel; "
                                         "drag a box that covers the object")
            if len(same) == 2:
                raise InvalidPromptError("the box is a line (its corners differ along one axis only): "
                                         "drag a box that covers the object on one slice")
            if len(same) != 1:
                raise InvalidPromptError(
                    "box corners must lie on one slice: they differ along all of I, J and K; put both "
                    "corners on the slice you mean (or give the axis)")
            axis = same[0]
        return cls.from_points(axis=axis, box=corners)

    @classmethod
    def from_mask(cls, mask: np.ndarray, axis, slice_index: int) -> "Prompt":
        """A 2D mask on a slice, in the slice frame (rows, cols) of `geometry.slice_stack`."""
        mask = np.asarray(mask)
        if mask.ndim != 2:
            raise InvalidPromptError(f"a mask prompt must be 2D, got shape {mask.shape}")
        return cls(axis_index(axis), int(slice_index), mask=mask.astype(bool))

    @classmethod
    def from_ras(cls, volume: Volume, positive: Sequence = (), negative: Sequence = (),
                 box: Optional[Sequence] = None, axis=None) -> "Prompt":
        """Points and/or a box (two corners) in RAS mm, mapped through the volume's geometry.

        Without ``axis``: a box decides it (the axis its corners share); points alone use the
        volume's K axis."""
        to_ijk = lambda pts, what: volume.ras_to_ijk(_as_points(pts, what)) if len(pts) else np.zeros((0, 3))
        box_ijk = None if box is None else to_ijk(box, "box corner")
        if axis is None and box_ijk is not None:
            axis = cls.from_box(*box_ijk).axis if len(box_ijk) == 2 else "K"
        return cls.from_points(to_ijk(positive, "positive point"), to_ijk(negative, "negative point"),
                               axis=axis if axis is not None else "K", box=box_ijk)

    @classmethod
    def several_from_ras(cls, volume: Volume, positive: Sequence = (), negative: Sequence = (),
                         box: Optional[Sequence] = None, axis=None) -> list:
        """Like `from_ras`, but points on different slices of the axis become one prompt per
        slice (several seeds) instead of an error. The box decides the axis as in `from_ras`."""
        if axis is None:
            axis = cls.from_ras(volume, box=box).axis if box is not None else "K"
        axis = axis_index(axis)
        to_ijk = lambda pts, what: volume.ras_to_ijk(_as_points(pts, what)) if len(pts) else np.zeros((0, 3))  # noqa: E731
        positive, negative = to_ijk(positive, "point"), to_ijk(negative, "point")
        boxes = {}
        if box is not None:
            box_ijk = to_ijk(box, "box corner")
            boxes[int(np.rint(box_ijk[0, axis]))] = box_ijk
        labels = np.concatenate([np.ones(len(positive), np.int64), np.zeros(len(negative), np.int64)])
        return cls.per_slice(axis, np.concatenate([positive, negative]), labels, boxes)

    @classmethod
    def per_slice(cls, axis, points: Sequence = (), labels: Sequence = (), boxes: Optional[dict] = None) -> list:
        """One prompt per slice of ``axis``, in slice order, from IJK points (labels 1 positive,
        0 negative) and boxes (slice index -> two IJK corners): the seeds of one segmentation."""
        axis = axis_index(axis)
        points = _as_points(points, "point")
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        boxes = boxes or {}
        on_slice = np.rint(points[:, axis]).astype(int)
        slices = sorted(set(on_slice.tolist()) | set(boxes))
        if not slices:
            raise InvalidPromptError("empty prompt: give at least one positive point, a box or a mask")
        return [cls.from_points(points[(on_slice == index) & (labels == 1)], points[(on_slice == index) & (labels == 0)],
                                axis=axis, box=boxes.get(index)) for index in slices]

    # -- checks and conversion ------------------------------------------------------------------
    def frame_shape(self, volume: Volume) -> tuple:
        return slice_stack(np.empty(volume.shape_kji, dtype=np.uint8), self.axis).shape[1:]

    def check(self, volume: Volume, slice_word: str = "slice") -> None:
        """Raise `InvalidPromptError` unless this prompt is usable on ``volume``. ``slice_word``
        names the prompt's slice in messages ("frame" for a cine, whose frames are K slices)."""
        name = AXIS_NAMES[self.axis]
        n_slices = volume.shape_ijk[self.axis]
        if not 0 <= self.slice_index < n_slices:
            where = f"{slice_word} {self.slice_index}" if slice_word != "slice" else f"slice {name}={self.slice_index}"
            raise InvalidPromptError(f"prompt {where} is outside the {'sequence' if slice_word != 'slice' else 'volume'} "
                                     f"(0..{n_slices - 1})")
        for point in self.points:
            if not volume.contains_ijk(point):
                raise InvalidPromptError(
                    f"point at IJK {np.round(point, 2).tolist()} is outside the volume of size "
                    f"IJK {list(volume.shape_ijk)}")
        if self.box is not None:
            for corner in self.box:
                if not volume.contains_ijk(corner):
                    raise InvalidPromptError(
                        f"box corner at IJK {np.round(corner, 2).tolist()} is outside the volume of size "
                        f"IJK {list(volume.shape_ijk)}")
            x_axis, y_axis = in_plane_axes(self.axis)
            extent = np.abs(np.rint(self.box[1]) - np.rint(self.box[0]))
            if extent[x_axis] == 0 or extent[y_axis] == 0:
                raise InvalidPromptError(
                    f"box has zero size on the {name} slice (extent {extent[x_axis]:.0f} x "
                    f"{extent[y_axis]:.0f} voxels): drag a box that covers the object")
        if self.mask is not None:
            expected = self.frame_shape(volume)
            if self.mask.shape != expected:
                raise InvalidPromptError(
                    f"mask prompt has shape {self.mask.shape} but a {name} slice of this volume is {expected}")
        if not self.to_slice_prompt().has_positive_region:
            if len(self.points):
                raise InvalidPromptError("only negative points were given: add a positive point, a box or a mask")
            raise InvalidPromptError("empty prompt: give at least one positive point, a box or a mask")

    def to_slice_prompt(self) -> SlicePrompt:
        box = None
        if self.box is not None:
            xy = np.rint(frame_xy(self.box, self.axis))
            box = np.concatenate([xy.min(axis=0), xy.max(axis=0)])
        return SlicePrompt(self.slice_index, frame_xy(self.points, self.axis).reshape(-1, 2),
                           self.labels.copy(), box, self.mask)


def _as_points(points, what: str) -> np.ndarray:
    array = np.asarray(points, dtype=np.float64)
    if array.size == 0:
        return np.zeros((0, 3))
    array = array.reshape(-1, array.shape[-1]) if array.ndim > 1 else array.reshape(1, -1)
    if array.shape[-1] != 3:
        raise InvalidPromptError(f"each {what} needs 3 coordinates, got {array.shape[-1]}")
    if not np.all(np.isfinite(array)):
        raise InvalidPromptError(f"a {what} has a NaN or infinite coordinate")
    return array
