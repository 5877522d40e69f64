"""`Volume`: a voxel array in Slicer's KJI order plus its exact 4x4 IJK->RAS matrix.

Slicer keeps arrays as [k, j, i] and maps voxel indices to patient space with an IJK->RAS
matrix; files (through ITK/SimpleITK) store LPS. Everything here converts between the two
without losing spacing, origin, direction, flips or obliquity: a voxel keeps its position in
the patient whatever route it takes.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import time

import numpy as np

from ..errors import InvalidVolumeError
from .geometry import transform_points

# RAS = diag(-1, -1, 1) * LPS (and the reverse): the only difference between Slicer and ITK.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

VOLUME_SUFFIXES = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")


@dataclasses.dataclass(frozen=True, eq=False)
class Volume:
    """A 3D image: ``array[k, j, i]`` and ``ijk_to_ras`` (4x4, voxel centres at integer IJK)."""

    array: np.ndarray
    ijk_to_ras: np.ndarray = dataclasses.field(default_factory=lambda: np.eye(4))

    def __post_init__(self):
        matrix = np.asarray(self.ijk_to_ras, dtype=np.float64)
        if matrix.shape != (4, 4):
            raise InvalidVolumeError(f"ijk_to_ras must be a 4x4 matrix, got shape {matrix.shape}")
        if abs(np.linalg.det(matrix[:3, :3])) < 1e-12:
            raise InvalidVolumeError("ijk_to_ras is singular (zero spacing or degenerate direction)")
        object.__setattr__(self, "ijk_to_ras", matrix)

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

    # -- files ----------------------------------------------------------------------------------
    @classmethod
    def read(cls, path) -> "Volume":
        """Read .nrrd/.nii/.nii.gz/.mha/.mhd or a DICOM series folder (SimpleITK)."""
        import SimpleITK as sitk

        path = pathlib.Path(path)
        if not path.exists():
            raise InvalidVolumeError(f"no such file or folder: {path}")
        try:
            if path.is_dir():
                image = _read_dicom_series(path)
            else:
                image = sitk.ReadImage(str(path))
        except RuntimeError as error:  # SimpleITK reports unreadable files as RuntimeError
            raise InvalidVolumeError(f"cannot read {path}: {str(error).strip().splitlines()[-1]}") from None
        return cls.from_sitk(image)

    def write(self, path) -> None:
        """Write to a file (format from the suffix), or a DICOM series if ``path`` is a folder name
        without a suffix (or an existing folder)."""
        import SimpleITK as sitk

        path = pathlib.Path(path)
        if path.is_dir() or path.suffix == "":
            _write_dicom_series(self, path)
            return
        if not str(path).lower().endswith(VOLUME_SUFFIXES):
            raise InvalidVolumeError(f"unsupported file type {path.name}: use one of {', '.join(VOLUME_SUFFIXES)}")
        path.parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(self.to_sitk(), str(path), useCompression=True)

    @classmethod
    def from_sitk(cls, image) -> "Volume":
        import SimpleITK as sitk

        if image.GetDimension() != 3:
            raise InvalidVolumeError(f"expected a 3D image, the file holds a {image.GetDimension()}D image")
        array = sitk.GetArrayFromImage(image)  # KJI (and a trailing component axis for vectors)
        direction = np.array(image.GetDirection(), dtype=np.float64).reshape(3, 3)
        ijk_to_lps = np.eye(4)
        ijk_to_lps[:3, :3] = direction * np.array(image.GetSpacing(), dtype=np.float64)
        ijk_to_lps[:3, 3] = image.GetOrigin()
        return cls(array, LPS_TO_RAS @ ijk_to_lps)

    def to_sitk(self):
        import SimpleITK as sitk

        is_vector = self.array.ndim == 4
        image = sitk.GetImageFromArray(self.array, isVector=is_vector)
        ijk_to_lps = LPS_TO_RAS @ self.ijk_to_ras
        spacing = np.linalg.norm(ijk_to_lps[:3, :3], axis=0)
        image.SetSpacing(spacing.tolist())
        image.SetOrigin(ijk_to_lps[:3, 3].tolist())
        image.SetDirection((ijk_to_lps[:3, :3] / spacing).ravel().tolist())
        return image


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


def _read_dicom_series(folder: pathlib.Path):
    import SimpleITK as sitk

    series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series_ids:
        raise InvalidVolumeError(f"no DICOM series found in {folder}")
    # Several series in one folder: take the one with the most slices, as a viewer would show first.
    files = max((sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), sid) for sid in series_ids), key=len)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    return reader.Execute()


def _write_dicom_series(volume: Volume, folder: pathlib.Path) -> None:
    """One CT-like DICOM file per K slice, each with its own position, so a reader rebuilds the grid."""
    import SimpleITK as sitk

    array = volume.array
    if array.ndim != 3:
        raise InvalidVolumeError("DICOM series output needs a 3D scalar volume")
    if not np.issubdtype(array.dtype, np.integer) or array.min() < -32768 or array.max() > 32767:
        raise InvalidVolumeError("DICOM series output holds 16-bit integers: write .nrrd or .nii.gz for this volume")
    folder.mkdir(parents=True, exist_ok=True)
    image = volume.with_array(array.astype(np.int16)).to_sitk()
    direction = np.array(image.GetDirection()).reshape(3, 3)
    uid_root = "1.2.826.0.1.3680043.2.1125." + time.strftime("%Y%m%d%H%M%S") + f".{os.getpid()}"
    common = {
        "0008|0016": "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
        "0008|0060": "CT",
        "0020|000d": uid_root + ".1",
        "0020|000e": uid_root + ".2",
        "0008|103e": "MemSeg",
        # row (I) and column (J) direction cosines, LPS
        "0020|0037": "\\".join(f"{v:.10f}" for v in (*direction[:, 0], *direction[:, 1])),
        "0018|0050": f"{image.GetSpacing()[2]:.10f}",
        "0028|1052": "0",
        "0028|1053": "1",
    }
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetDepth()):
        slice_image = image[:, :, k]
        for tag, value in common.items():
            slice_image.SetMetaData(tag, value)
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        slice_image.SetMetaData("0020|0032", "\\".join(f"{v:.10f}" for v in position))
        slice_image.SetMetaData("0020|0013", str(k + 1))
        slice_image.SetMetaData("0008|0018", f"{uid_root}.3.{k + 1}")
        writer.SetFileName(str(folder / f"slice{k:04d}.dcm"))
        writer.Execute(slice_image)
