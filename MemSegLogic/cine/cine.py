"""`Cine`: a 2D+t image (an echo loop): ``frames[t, j, i]`` plus the IJK->RAS matrix of one frame
as a single-slice volume and the sequence's index values (times).

This is how Slicer holds a 2D cine: a sequence of single-slice volumes (the proxy is a (1, H, W)
KJI volume), indexed by "time" in s (DICOM cine with a FrameTime) or by "frame". Every frame
shares one geometry, so one matrix serves all. Reading and writing keep that matrix exactly, as
`Volume` does for 3D images.

Files (`MemSegLogic.io.cine_io`): Slicer's ``.seq.nrrd`` (4D NRRD, time last), a 3D NRRD / NIfTI / MHA whose third axis is
time (the CAMUS half-sequence layout), and multi-frame DICOM (ultrasound cine) through pydicom.
A 3D+t file holds a volume per time point: `Cine.read` needs ``plane=("K", index)`` (or I, J)
to choose the 2D plane that is propagated through time.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

import numpy as np

from ..core.geometry import AXIS_NAMES, axis_index
from ..core.volume import Volume, check_image_values, checked_ijk_to_ras, warn_implausible_values
from ..errors import InvalidVolumeError

PLANE_HINT = "memseg echo --plane K,INDEX (or I, J), or in Python Cine.read(path, plane=('K', INDEX))"
# ITU-R BT.601 luma, what a grey ultrasound display shows for a colour-encoded frame.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclasses.dataclass(frozen=True, eq=False)
class Cine:
    """``frames`` (T, H, W) scalar or (T, H, W, 3|4) RGB(A); ``ijk_to_ras`` of one frame as a
    (1, H, W) volume; one index value (a string, as Slicer stores them) per frame."""

    frames: np.ndarray
    ijk_to_ras: np.ndarray = dataclasses.field(default_factory=lambda: np.eye(4))
    index_values: Tuple[str, ...] = ()
    index_name: str = "frame"
    index_unit: str = ""

    def __post_init__(self):
        frames = np.asarray(self.frames)
        if frames.ndim == 4 and frames.shape[-1] not in (3, 4):
            raise InvalidVolumeError(
                f"frames of shape {frames.shape} look like a 3D+t sequence (a volume per time point): choose "
                "the 2D plane to follow through time: " + PLANE_HINT)
        if frames.ndim not in (3, 4):
            raise InvalidVolumeError(
                f"a cine is frames (T, H, W) or (T, H, W, 3) for RGB; got an array of shape {frames.shape}")
        matrix = checked_ijk_to_ras(self.ijk_to_ras)
        values = tuple(str(v) for v in self.index_values) or tuple(str(t) for t in range(frames.shape[0]))
        if len(values) != frames.shape[0]:
            raise InvalidVolumeError(f"{len(values)} index values for {frames.shape[0]} frames")
        object.__setattr__(self, "frames", frames)
        object.__setattr__(self, "ijk_to_ras", matrix)
        object.__setattr__(self, "index_values", values)

    # -- shape and geometry ---------------------------------------------------------------------
    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def frame_shape(self) -> Tuple[int, int]:
        """(rows, columns) = (H, W) of a frame."""
        return int(self.frames.shape[1]), int(self.frames.shape[2])

    @property
    def is_color(self) -> bool:
        return self.frames.ndim == 4

    @property
    def spacing(self) -> Tuple[float, float]:
        """Pixel size (row, column) in mm, i.e. along J and I."""
        norms = np.linalg.norm(self.ijk_to_ras[:3, :3], axis=0)
        return float(norms[1]), float(norms[0])

    def times(self) -> np.ndarray:
        """The index values as numbers (frame numbers where they are not numeric)."""
        try:
            return np.array([float(v) for v in self.index_values])
        except ValueError:
            return np.arange(self.n_frames, dtype=np.float64)

    def frame_volume(self, t: int) -> Volume:
        """Frame ``t`` as the single-slice volume Slicer shows as the sequence's proxy."""
        return Volume(self.frames[t][np.newaxis], self.ijk_to_ras.copy())

    def time_volume(self) -> Volume:
        """The grey frames as a volume whose K axis is time (frame index): the grid that prompts
        (`Prompt` on axis K, slice = frame) are checked and converted on. In-plane geometry is the
        frame's; K steps one unit along the frame normal."""
        matrix = self.ijk_to_ras.copy()
        normal = matrix[:3, 2]
        matrix[:3, 2] = normal / np.linalg.norm(normal)
        return Volume(self.gray(), matrix)

    def with_frames(self, frames: np.ndarray) -> "Cine":
        """A cine with other frames (e.g. masks) on the same geometry and time index."""
        frames = np.asarray(frames)
        if frames.shape[:3] != self.frames.shape[:3]:
            raise InvalidVolumeError(f"frames of shape {frames.shape} do not match the cine's {self.frames.shape[:3]}")
        return Cine(frames, self.ijk_to_ras.copy(), self.index_values, self.index_name, self.index_unit)

    # -- content --------------------------------------------------------------------------------
    def gray(self) -> np.ndarray:
        """Grey frames (T, H, W) float32: a copy, RGB(A) converted to luma (alpha dropped)."""
        return to_gray(self.frames)

    def check_segmentable(self) -> None:
        """Raise a specific `InvalidVolumeError` unless the frames can be propagated through."""
        if self.n_frames == 0:
            raise InvalidVolumeError("the sequence is empty (no frames)")
        if self.n_frames == 1:
            raise InvalidVolumeError(
                "the sequence has one frame: there is nothing to propagate to (segment a single image with a "
                "2D tool, or load the whole cine loop)")
        if min(self.frame_shape) < 8:
            raise InvalidVolumeError(f"frames of {self.frame_shape[0]} x {self.frame_shape[1]} pixels are too small")
        check_image_values(self.frames, "pixel", "the sequence has",
                           "every pixel of every frame has the same value: nothing to segment")
        warn_implausible_values(self.frames, "sequence", "frame")

    # -- files ----------------------------------------------------------------------------------
    @classmethod
    def read(cls, path, plane: Optional[Tuple[str, int]] = None) -> "Cine":
        """Read a 2D+t file (see the module docstring). ``plane`` = (axis, index) picks the plane of
        a 3D+t file (ignored for 2D+t)."""
        from ..io.cine_io import read_cine

        return read_cine(path, plane)

    def write(self, path) -> None:
        """Write a Slicer volume sequence (``.seq.nrrd``, geometry and index kept), or a 3D file
        (.nrrd / .nii.gz / .mha) whose third axis is time (index values are lost there)."""
        from ..io.cine_io import write_cine

        write_cine(self, path)


def to_gray(frames: np.ndarray) -> np.ndarray:
    """Frames (T, H, W) or colour frames (T, H, W, 3|4) -> float32 grey (T, H, W), always a copy.
    RGB(A) becomes BT.601 luma (alpha dropped)."""
    frames = np.asarray(frames)
    if frames.ndim == 4 and frames.shape[-1] in (3, 4):
        return frames[..., :3].astype(np.float32) @ _LUMA
    return frames.astype(np.float32, copy=True)


def memsam_range(gray: np.ndarray) -> np.ndarray:
    """Grey frames in MemSAM's 0..255 input range (float32), one rule for training and inference:
    frames already within 0..255 (8-bit echo, and its luma) are kept as they are, as the
    reference's frames were; any other range (16-bit, 0..1 floats, negative values) is stretched
    from the 0.5th to the 99.5th percentile."""
    low, high = float(gray.min()), float(gray.max())
    if low >= 0.0 and 1.0 < high <= 255.0:
        return gray.astype(np.float32, copy=False)
    from ..core.intensity import to_uint8

    return to_uint8(gray).astype(np.float32)


def select_plane(frames_tkji: np.ndarray, ijk_to_ras: np.ndarray, plane: Tuple[str, int]):
    """The 2D plane ``plane`` = (axis, index) of every volume of a 3D+t array (T, K, J, I[, C]):
    frames (T, rows, cols[, C]) and the IJK->RAS of one such frame as a single-slice volume."""
    axis, index = axis_index(plane[0]), int(plane[1])
    size = frames_tkji.shape[3 - axis]
    if not 0 <= index < size:
        raise InvalidVolumeError(f"plane {AXIS_NAMES[axis]}={index} is outside the volumes (0..{size - 1})")
    x_axis, y_axis = (a for a in range(3) if a != axis)  # frame columns, rows (as `geometry`)
    frames = np.take(frames_tkji, index, axis=3 - axis)
    matrix = np.eye(4)
    matrix[:3, 0], matrix[:3, 1], matrix[:3, 2] = ijk_to_ras[:3, x_axis], ijk_to_ras[:3, y_axis], ijk_to_ras[:3, axis]
    matrix[:3, 3] = ijk_to_ras[:3, 3] + index * ijk_to_ras[:3, axis]
    return frames, matrix


def plane_needed(shape) -> InvalidVolumeError:
    return InvalidVolumeError(
        f"this is a 3D+t sequence (volumes of K, J, I = {tuple(shape)} per time point), not a 2D+t cine: "
        "choose the plane to follow through time (e.g. the A4C plane): " + PLANE_HINT)
