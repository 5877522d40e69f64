"""Slices of a KJI volume along one IJK axis, and where IJK coordinates land on them.

A pass along axis ``a`` (0=I, 1=J, 2=K) sees the volume as a stack of 2D frames (N, H, W).
In each frame the lower-numbered remaining IJK axis runs along x (columns) and the higher one
along y (rows): K slices are (rows=J, cols=I) exactly as Slicer's arrays, J slices (K, I),
I slices (K, J). The stack is a view, so mapping results back is the same transpose reversed.
"""

from __future__ import annotations

import numpy as np

AXIS_NAMES = ("I", "J", "K")


def axis_index(axis) -> int:
    """Accept 0/1/2 or "I"/"J"/"K" (any case)."""
    if isinstance(axis, str) and axis.upper() in AXIS_NAMES:
        return AXIS_NAMES.index(axis.upper())
    if isinstance(axis, (int, np.integer)) and 0 <= int(axis) <= 2:
        return int(axis)
    raise ValueError(f"axis must be one of I, J, K (or 0, 1, 2), got {axis!r}")


def in_plane_axes(axis: int) -> tuple:
    """IJK indices of the (x, y) axes of a frame of ``axis``."""
    x_axis, y_axis = (a for a in range(3) if a != axis)
    return x_axis, y_axis


def frame_spacing(spacing_ijk, axis: int) -> tuple:
    """Pixel spacing (row, col) in mm of the frames of ``axis``."""
    x_axis, y_axis = in_plane_axes(axis)
    return float(spacing_ijk[y_axis]), float(spacing_ijk[x_axis])


def slice_stack(array_kji: np.ndarray, axis: int) -> np.ndarray:
    """View of a KJI array as frames (N, H, W) along IJK ``axis``."""
    # Array dimension of IJK axis a is 2 - a; the two remaining dims keep their order, which is
    # (y, x) as defined above because a higher IJK axis is a lower array dimension.
    return np.moveaxis(array_kji, 2 - axis, 0)


def unstack(frames: np.ndarray, axis: int) -> np.ndarray:
    """Inverse of `slice_stack`: frames (N, H, W) back to a KJI array (a view)."""
    return np.moveaxis(frames, 0, 2 - axis)


def frame_xy(ijk, axis: int) -> np.ndarray:
    """In-frame (x, y) pixel coordinates of IJK points, shape (..., 2)."""
    ijk = np.asarray(ijk, dtype=np.float64)
    x_axis, y_axis = in_plane_axes(axis)
    return np.stack([ijk[..., x_axis], ijk[..., y_axis]], axis=-1)


def transform_points(matrix: np.ndarray, points) -> np.ndarray:
    """Apply a 4x4 homogeneous matrix to points of shape (..., 3)."""
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:3, :3].T + matrix[:3, 3]
