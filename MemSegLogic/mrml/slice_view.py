"""Clicks in a Slicer slice view -> a `Prompt` on the volume's own slices.

A slice view maps its pixel position (x, y) to RAS with the slice node's XYToRAS matrix; its
normal is the third column of SliceToRAS. MemSeg propagates along the volume's I, J or K axis, so
a view must show slices of one of those axes: axial/coronal/sagittal views of an axis-aligned
volume do, and any view of an oblique volume does after "rotate to volume plane". A reformat at
an angle to the voxel grid gets a clear error instead of a silently snapped seed.
Qt-free: the matrices come from `vtkMRMLSliceNode` (see `mrml.promptFromSliceView`).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ..core.geometry import AXIS_NAMES, transform_points
from ..core.prompt import Prompt
from ..errors import InvalidPromptError

# A view counts as showing slices of an axis if its normal is within this angle of that axis.
ALIGNMENT_TOLERANCE_DEGREES = 0.5


def view_axis(slice_to_ras: np.ndarray, ijk_to_ras: np.ndarray,
              tolerance_degrees: float = ALIGNMENT_TOLERANCE_DEGREES) -> int:
    """The IJK axis whose slices the view shows (its normal is parallel to that axis)."""
    normal_ras = np.asarray(slice_to_ras, dtype=np.float64)[:3, 2]
    axes_ras = np.asarray(ijk_to_ras, dtype=np.float64)[:3, :3]
    directions = axes_ras / np.linalg.norm(axes_ras, axis=0)  # unit I, J, K directions in RAS
    cosines = np.abs(directions.T @ (normal_ras / np.linalg.norm(normal_ras)))
    axis = int(np.argmax(cosines))
    angle = float(np.degrees(np.arccos(np.clip(cosines[axis], -1.0, 1.0))))
    if angle > tolerance_degrees:
        raise InvalidPromptError(
            f"this slice view is tilted {angle:.1f} degrees from the volume's {AXIS_NAMES[axis]} slices: "
            "MemSeg propagates along the volume's own axes. Use a view aligned with the volume "
            "(slice view menu: 'Rotate to volume plane') and place the prompt again")
    return axis


def xy_to_ijk(xy: Sequence, xy_to_ras: np.ndarray, ijk_to_ras: np.ndarray) -> np.ndarray:
    """Continuous IJK of view pixels (N, 2) on the displayed slice plane."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    xyz = np.concatenate([xy, np.zeros((len(xy), 1))], axis=1)
    ras = transform_points(np.asarray(xy_to_ras, dtype=np.float64), xyz)
    return transform_points(np.linalg.inv(np.asarray(ijk_to_ras, dtype=np.float64)), ras)


def prompt_from_view(ijk_to_ras: np.ndarray, xy_to_ras: np.ndarray, slice_to_ras: np.ndarray,
                     positive_xy: Sequence = (), negative_xy: Sequence = (),
                     box_xy: Optional[Sequence] = None) -> Prompt:
    """A `Prompt` from view pixels: positive / negative clicks and/or a dragged box (two corners).

    ``ijk_to_ras`` and the view matrices must share a coordinate system (world RAS in Slicer).
    Each click lands on the voxel under the cursor (IJK rounded, as Slicer's own effects do)."""
    axis = view_axis(slice_to_ras, ijk_to_ras)
    to_ijk = lambda xy: xy_to_ijk(xy, xy_to_ras, ijk_to_ras) if len(xy) else np.zeros((0, 3))  # noqa: E731
    positive, negative = to_ijk(positive_xy), to_ijk(negative_xy)
    box = None if box_xy is None else to_ijk(box_xy)
    return Prompt.from_points(positive, negative, axis=axis, box=box)


class ClickedPrompt:
    """The prompt a user builds click by click in slice views: positive and negative points and
    a box, all on slices of one volume axis. Clicks on another slice of that axis make another
    seed (a second conditioning slice: how users correct a propagation); a new box replaces the
    box of its slice."""

    def __init__(self):
        self.clear()

    def clear(self) -> None:
        self.axis: Optional[int] = None
        self._points: list = []  # (ijk, label) in click order
        self._boxes: dict = {}  # slice index -> (2, 3) IJK corners

    @property
    def empty(self) -> bool:
        return not self._points and not self._boxes

    def add(self, prompt: Prompt) -> None:
        """Add the points and box of a one-click prompt (from `prompt_from_view`)."""
        if self.axis is not None and prompt.axis != self.axis and not self.empty:
            raise InvalidPromptError(
                f"this view shows {AXIS_NAMES[prompt.axis]} slices but the prompt so far is on "
                f"{AXIS_NAMES[self.axis]} slices: click in a view of the same orientation, or clear the prompt")
        self.axis = prompt.axis
        self._points += [(np.asarray(point, dtype=np.float64), int(label))
                         for point, label in zip(prompt.points, prompt.labels)]
        if prompt.box is not None:
            self._boxes[prompt.slice_index] = np.asarray(prompt.box, dtype=np.float64)

    def remove_last_point(self) -> bool:
        if not self._points:
            return False
        self._points.pop()
        return True

    def prompts(self) -> list:
        """One `Prompt` per clicked slice, in slice order (what `segment_volume` takes)."""
        if self.empty:
            raise InvalidPromptError("empty prompt: click on the object (Shift+click marks background) or drag a box")
        return Prompt.per_slice(self.axis, [point for point, _ in self._points],
                                [label for _, label in self._points], self._boxes)
