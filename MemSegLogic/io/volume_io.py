"""Reading and writing `Volume` files: NRRD, NIfTI, MetaImage and DICOM series (SimpleITK).

Files store LPS; Slicer and MemSeg use RAS: RAS = diag(-1, -1, 1) * LPS and back, nothing else
changes, so spacing, origin, direction, flips and obliquity survive every round trip.
"""

from __future__ import annotations

import os
import pathlib
import time

import numpy as np

from ..core.volume import LPS_TO_RAS, Volume
from ..errors import InvalidVolumeError
from .atomic import replace_atomically

VOLUME_SUFFIXES = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")  # read
# written: single-file formats only (a header + data pair cannot be replaced in one step)
WRITTEN_VOLUME_SUFFIXES = (".nrrd", ".nii", ".nii.gz", ".mha")


def read_volume(path) -> Volume:
    """Read .nrrd/.nii/.nii.gz/.mha/.mhd or a DICOM series folder."""
    import SimpleITK as sitk

    path = pathlib.Path(path)
    check_readable(path)
    try:
        if path.is_dir():
            image = _read_dicom_series(path)
        else:
            image = sitk.ReadImage(str(path))
    except RuntimeError as error:  # SimpleITK reports unreadable files as RuntimeError
        raise InvalidVolumeError(f"cannot read {path}: {str(error).strip().splitlines()[-1]}") from None
    return volume_from_image(image)


def write_volume(volume: Volume, path) -> None:
    """Write to a file (format from the suffix), or a DICOM series if ``path`` is a folder name
    without a suffix (or an existing folder)."""
    import SimpleITK as sitk

    path = pathlib.Path(path)
    if path.suffix == "":
        replace_atomically(path, lambda partial: _write_dicom_series(volume, partial))
        return
    if not str(path).lower().endswith(WRITTEN_VOLUME_SUFFIXES):
        raise InvalidVolumeError(f"cannot write {path.name}: use one of {', '.join(WRITTEN_VOLUME_SUFFIXES)}, "
                                 "or a folder name without a suffix for a DICOM series")
    if path.is_dir():
        raise InvalidVolumeError(f"{path} is a folder: name a file to write")
    image = image_from_volume(volume)
    replace_atomically(path, lambda partial: sitk.WriteImage(image, str(partial), useCompression=True))


def check_readable(path: pathlib.Path) -> None:
    """The errors every reader gives before its format's own: missing, or an empty file."""
    if not path.exists():
        raise InvalidVolumeError(f"no such file or folder: {path}")
    if path.is_file() and path.stat().st_size == 0:
        raise InvalidVolumeError(f"{path} is an empty file (0 bytes): it holds no image")


def ijk_to_ras_of_image(image) -> np.ndarray:
    """The 4x4 IJK->RAS of a SimpleITK image's first three axes (a 4D image's fourth is time)."""
    dimension = image.GetDimension()
    direction = np.array(image.GetDirection(), dtype=np.float64).reshape(dimension, dimension)[:3, :3]
    ijk_to_lps = np.eye(4)
    ijk_to_lps[:3, :3] = direction * np.array(image.GetSpacing(), dtype=np.float64)[:3]
    ijk_to_lps[:3, 3] = image.GetOrigin()[:3]
    return LPS_TO_RAS @ ijk_to_lps


def volume_from_image(image) -> Volume:
    """A `Volume` from a 3D SimpleITK image (a trailing component axis for vector images)."""
    import SimpleITK as sitk

    if image.GetDimension() != 3:
        raise InvalidVolumeError(f"expected a 3D image, the file holds a {image.GetDimension()}D image")
    return Volume(sitk.GetArrayFromImage(image), ijk_to_ras_of_image(image))


def image_from_volume(volume: Volume):
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(volume.array, isVector=volume.array.ndim == 4)
    ijk_to_lps = LPS_TO_RAS @ volume.ijk_to_ras
    spacing = np.linalg.norm(ijk_to_lps[:3, :3], axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetOrigin(ijk_to_lps[:3, 3].tolist())
    image.SetDirection((ijk_to_lps[:3, :3] / spacing).ravel().tolist())
    return image


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
    image = image_from_volume(volume.with_array(array.astype(np.int16)))
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
