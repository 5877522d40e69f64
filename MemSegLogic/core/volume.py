"""`Volume`: a voxel array in Slicer's KJI order plus its exact 4x4 IJK->RAS matrix.

Slicer keeps arrays as [k, j, i] and maps voxel indices to patient space with an IJK->RAS
matrix; files (through ITK/SimpleITK) store LPS. Everything here converts between the two
without losing spacing, origin, direction, flips or obliquity: a voxel keeps its position in
the patient whatever route it takes.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

from ..errors import InvalidVolumeError, MemSegWarning
from .geometry import transform_points

# RAS = diag(-1, -1, 1) * LPS (and the reverse): the only difference between Slicer and ITK.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
# Voxel sizes outside this range (mm) are a broken header, not an image: microscopy-scale voxels
# and 1 m slabs are both refused with the spacing named.
MIN_SPACING_MM, MAX_SPACING_MM = 1e-3, 1e3
# A value more than this many times the image's own (0.1-99.9 percentile) range beyond it is absurd.
OUTLIER_SPANS = 1000.0


@dataclasses.dataclass(frozen=True, eq=False)
class Volume:
    """A 3D image: ``array[k, j, i]`` and ``ijk_to_ras`` (4x4, voxel centres at integer IJK)."""

    array: np.ndarray
    ijk_to_ras: np.ndarray = dataclasses.field(default_factory=lambda: np.eye(4))

    def __post_init__(self):
        if not isinstance(self.array, np.ndarray):
            raise InvalidVolumeError(f"a Volume's array must be a numpy array, got {type(self.array).__name__}")
        object.__setattr__(self, "ijk_to_ras", checked_ijk_to_ras(self.ijk_to_ras))

    # -- geometry -------------------------------------------------------------------------------
    @property
    def shape_kji(self) -> tuple:
        return tuple(self.array.shape[:3])

    @property
    def shape_ijk(self) -> tuple:
        return tuple(reversed(self.array.shape[:3]))

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size along I, J, K in mm."""
        return np.linalg.norm(self.ijk_to_ras[:3, :3], axis=0)

    @property
    def origin(self) -> np.ndarray:
        """RAS position of voxel (0, 0, 0)."""
        return self.ijk_to_ras[:3, 3].copy()

    @property
    def directions(self) -> np.ndarray:
        """Unit RAS direction of the I, J, K axes, as columns."""
        return self.ijk_to_ras[:3, :3] / self.spacing

    def ras_to_ijk(self, ras) -> np.ndarray:
        """Continuous IJK coordinates of RAS points, shape (..., 3)."""
        return transform_points(np.linalg.inv(self.ijk_to_ras), ras)

    def ijk_to_ras_points(self, ijk) -> np.ndarray:
        return transform_points(self.ijk_to_ras, ijk)

    def slab(self, first: int, count: int) -> "Volume":
        """Slices K = first .. first + count - 1 (a copy), its IJK->RAS moved so that every voxel
        keeps its RAS position."""
        ijk_to_ras = self.ijk_to_ras.copy()
        ijk_to_ras[:3, 3] = self.ijk_to_ras_points(np.array([[0.0, 0.0, first]]))[0]
        return Volume(self.array[first:first + count].copy(), ijk_to_ras)

    def contains_ijk(self, ijk) -> bool:
        """Whether the voxel nearest to each IJK point lies inside the volume."""
        index = np.rint(np.asarray(ijk, dtype=np.float64))
        upper = np.asarray(self.shape_ijk) - 1
        return bool(np.all((index >= 0) & (index <= upper)))

    def with_array(self, array: np.ndarray) -> "Volume":
        """A volume on the same grid holding other voxels (e.g. a mask or a windowed copy)."""
        if tuple(array.shape[:3]) != self.shape_kji:
            raise InvalidVolumeError(f"array shape {array.shape} does not match the grid {self.shape_kji}")
        return Volume(array, self.ijk_to_ras.copy())

    def same_grid(self, other: "Volume", atol: float = 1e-6) -> bool:
        return self.shape_kji == other.shape_kji and np.allclose(self.ijk_to_ras, other.ijk_to_ras, atol=atol)

    # -- validation -----------------------------------------------------------------------------
    def check_segmentable(self) -> None:
        """Raise a specific `InvalidVolumeError` if this cannot be segmented as a 3D scalar image."""
        array = self.array
        if array.ndim == 4 and array.shape[-1] in (3, 4):
            raise InvalidVolumeError(
                f"RGB/vector image ({array.shape[-1]} components per voxel): convert it to a scalar "
                "(grayscale) volume first, e.g. with Slicer's 'Vector to Scalar Volume' module")
        if array.ndim != 3:
            raise InvalidVolumeError(f"expected a 3D scalar volume (K, J, I), got an array of shape {array.shape}")
        if min(array.shape) < 2:
            raise InvalidVolumeError(
                f"volume of shape (K, J, I) = {array.shape} is 2D: MemSeg propagates through 3D volumes "
                "(use segment_sequence for a 2D+t cine)")
        check_image_values(array, "voxel", "volume contains",
                           "volume is constant (every voxel has the same value): nothing to segment")
        spacing = self.spacing
        if spacing.max() > MAX_SPACING_MM or spacing.min() < MIN_SPACING_MM:
            raise InvalidVolumeError(
                f"voxel spacing {', '.join(f'{s:g}' for s in spacing)} mm (I, J, K) is not plausible for a medical "
                f"image (expected {MIN_SPACING_MM:g} to {MAX_SPACING_MM:g} mm): check the file's spacing field")
        directions = self.directions
        if np.abs(directions.T @ directions - np.eye(3)).max() > 1e-3:
            warnings.warn("the volume's axes are not perpendicular (sheared geometry): MemSeg segments it on its "
                          "voxel grid, but Slicer shows it without the shear", MemSegWarning, stacklevel=2)
        warn_implausible_values(array, "volume", "K slice")

    # -- files (MemSegLogic.io.volume_io) ---------------------------------------------------------
    @classmethod
    def read(cls, path) -> "Volume":
        """Read .nrrd/.nii/.nii.gz/.mha/.mhd or a DICOM series folder."""
        from ..io.volume_io import read_volume

        return read_volume(path)

    def write(self, path) -> None:
        """Write to a file (format from the suffix), or a DICOM series if ``path`` is a folder name
        without a suffix (or an existing folder)."""
        from ..io.volume_io import write_volume

        write_volume(self, path)

    @classmethod
    def from_sitk(cls, image) -> "Volume":
        from ..io.volume_io import volume_from_image

        return volume_from_image(image)

    def to_sitk(self):
        from ..io.volume_io import image_from_volume

        return image_from_volume(self)


def checked_ijk_to_ras(value) -> np.ndarray:
    """``value`` as a float64 4x4 IJK->RAS matrix, or `InvalidVolumeError` saying why it cannot
    place voxels in the patient (not numbers, not 4x4, NaN/infinite, singular)."""
    try:
        matrix = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidVolumeError("ijk_to_ras must be a 4x4 matrix of numbers") from None
    if matrix.shape != (4, 4):
        raise InvalidVolumeError(f"ijk_to_ras must be a 4x4 matrix, got shape {matrix.shape}")
    if not np.all(np.isfinite(matrix)):
        raise InvalidVolumeError("ijk_to_ras holds NaN or infinite values: the volume has no usable geometry")
    if abs(np.linalg.det(matrix[:3, :3])) < 1e-12:
        raise InvalidVolumeError("ijk_to_ras is singular (zero spacing or degenerate direction)")
    return matrix


def warn_implausible_values(array: np.ndarray, what: str, slice_name: str) -> None:
    """Warn (not refuse: real data can be odd) when isolated values lie absurdly far outside the
    image's own range — what a corrupted compressed payload looks like — naming the slices
    (first axis of ``array``) that hold them."""
    sample = array.ravel()[:: max(1, array.size // 1_000_000)]
    low, high = np.percentile(sample, [0.1, 99.9]).astype(np.float64)
    span = max(high - low, 1.0)
    lower, upper = low - OUTLIER_SPANS * span, high + OUTLIER_SPANS * span
    outside = (array < lower) | (array > upper)
    if not outside.any():
        return
    slices = np.flatnonzero(outside.reshape(outside.shape[0], -1).any(axis=1))
    listed = ", ".join(str(int(s)) for s in slices[:10]) + (" ..." if len(slices) > 10 else "")
    warnings.warn(
        f"the {what} holds {int(outside.sum())} values far outside its own range ({low:g} to {high:g}), on "
        f"{slice_name} {listed}: the file may be corrupt; check those slices", MemSegWarning, stacklevel=3)


def check_image_values(array: np.ndarray, element: str, holder: str, constant: str) -> None:
    """The value checks every image MemSeg segments must pass (a volume, a cine): a numeric type,
    no NaN or infinity, not constant. ``element`` ("voxel", "pixel") and ``holder`` ("volume
    contains") word the messages; ``constant`` is the message for a constant image."""
    if array.dtype == bool or not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise InvalidVolumeError(f"unsupported {element} type {array.dtype}")
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise InvalidVolumeError(f"{holder} {bad} NaN or infinite {element}s: fill them before segmenting")
    if array.min() == array.max():
        raise InvalidVolumeError(constant)
