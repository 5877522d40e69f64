"""Reading and writing cine loops (`Cine`): Slicer's ``.seq.nrrd`` volume sequences, 3D files
whose third axis is time (and 4D files with a plane chosen), and multi-frame DICOM (pydicom)."""

from __future__ import annotations

import pathlib
import urllib.parse
from typing import Optional, Sequence, Tuple

import numpy as np

from ..cine.cine import Cine, plane_needed, select_plane
from ..core.volume import LPS_TO_RAS, Volume
from ..errors import InvalidVolumeError
from .atomic import replace_atomically
from .volume_io import check_readable, ijk_to_ras_of_image

SEQUENCE_SUFFIX = ".seq.nrrd"
CINE_SUFFIXES = (SEQUENCE_SUFFIX, ".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd", ".dcm")


def read_cine(path, plane: Optional[Tuple[str, int]] = None) -> Cine:
    """Read a 2D+t file; ``plane`` = (axis, index) picks the plane of a 3D+t file."""
    path = pathlib.Path(path)
    check_readable(path)
    if not path.is_file():
        raise InvalidVolumeError(f"{path} is a folder: a cine loop is one file")
    name = path.name.lower()
    if name.endswith(SEQUENCE_SUFFIX):
        return _read_sequence_nrrd(path, plane)
    if name.endswith(".dcm") or _is_dicom(path):
        return _read_dicom_cine(path)
    if name.endswith(CINE_SUFFIXES):
        return _read_time_last(path, plane)
    raise InvalidVolumeError(f"unsupported file type {path.name}: use one of {', '.join(CINE_SUFFIXES)}")


def write_cine(cine: Cine, path) -> None:
    """``.seq.nrrd`` (geometry and index kept) or a 3D file whose third axis is time."""
    path = pathlib.Path(path)
    if path.name.lower().endswith(SEQUENCE_SUFFIX):
        replace_atomically(path, lambda partial: _write_sequence_nrrd(cine, partial))
        return
    if cine.is_color:
        raise InvalidVolumeError("only .seq.nrrd keeps RGB frames; write grey frames (Cine.gray) to other files")
    matrix = cine.ijk_to_ras.copy()
    matrix[:3, 2] /= np.linalg.norm(matrix[:3, 2])  # time steps one unit along the frame normal
    Volume(cine.frames, matrix).write(path)


def _read_sequence_nrrd(path: pathlib.Path, plane) -> Cine:
    import slicerio

    try:
        volume = slicerio.read_volume(str(path))
    except Exception as error:  # pynrrd raises several types for a broken header
        raise InvalidVolumeError(f"cannot read {path}: {error}") from None
    sequence = volume.get("sequence")
    voxels = np.asarray(volume["voxels"])
    colour = "component" in volume
    if sequence is None:  # a plain NRRD: its last spatial axis is time
        return _read_time_last(path, plane)
    if colour:  # (C, I, J, K, T) -> (T, K, J, I, C)
        frames = np.transpose(voxels, (4, 3, 2, 1, 0))
    else:  # (I, J[, K], T) -> (T, K, J, I)
        if voxels.ndim == 3:
            voxels = voxels[:, :, np.newaxis, :]
        frames = np.transpose(voxels, (3, 2, 1, 0))
    ijk_to_ras = LPS_TO_RAS @ np.asarray(volume["ijkToLPS"], dtype=np.float64)
    if frames.shape[1] == 1:
        frames = frames[:, 0]
    elif plane is None:
        raise plane_needed(frames.shape[1:4])
    else:
        frames, ijk_to_ras = select_plane(frames, ijk_to_ras, plane)
    values = sequence.get("indexValues") or ()
    if colour and _SLICER_COLOUR_INDEX_VALUES in volume:  # a colour sequence Slicer wrote (see below)
        values = [urllib.parse.unquote(v) for v in str(volume[_SLICER_COLOUR_INDEX_VALUES]).split(" ") if v]
    return Cine(np.ascontiguousarray(frames), ijk_to_ras, tuple(values),
                sequence.get("indexName") or "frame", sequence.get("indexUnit") or "")


# Slicer numbers the index axis of a colour (5D) sequence without its component axis: its
# vtkMRMLVolumeSequenceStorageNode writes and reads "axis 3 index values" where slicerio uses the
# NRRD axis number, "axis 4". Both keys are written, and Slicer's is read back.
_SLICER_COLOUR_INDEX_VALUES = "axis 3 index values"
_SLICER_COLOUR_INDEX_TYPE = "axis 3 index type"


def _write_sequence_nrrd(cine: Cine, path: pathlib.Path) -> None:
    import slicerio

    frames = cine.frames
    if cine.is_color:  # (T, H, W, C) -> (C, I, J, 1, T)
        voxels = np.transpose(frames, (3, 2, 1, 0))[:, :, :, np.newaxis, :]
    else:  # (T, H, W) -> (I, J, 1, T)
        voxels = np.transpose(frames, (2, 1, 0))[:, :, np.newaxis, :]
    volume = {"voxels": np.ascontiguousarray(voxels), "ijkToLPS": LPS_TO_RAS @ cine.ijk_to_ras, "spaceDimension": 3}
    if cine.is_color:
        volume["component"] = {"kind": "RGB-color" if frames.shape[-1] == 3 else "RGBA-color",
                               "label": None, "unit": None}
    index_type = "numeric" if is_numeric_index(cine.index_values) else "text"
    volume["sequence"] = {"indexName": cine.index_name, "indexUnit": cine.index_unit,
                          "indexType": index_type, "indexValues": list(cine.index_values)}
    # Slicer makes a vector volume of each frame from this, and reads colour index values from
    # its own axis numbering (see _SLICER_COLOUR_INDEX_VALUES)
    volume["DataNodeClassName"] = "vtkMRMLVectorVolumeNode" if cine.is_color else "vtkMRMLScalarVolumeNode"
    if cine.is_color:
        volume[_SLICER_COLOUR_INDEX_TYPE] = index_type
        volume[_SLICER_COLOUR_INDEX_VALUES] = " ".join(urllib.parse.quote(str(v), safe="") for v in cine.index_values)
    slicerio.write_volume(str(path), volume)


def is_numeric_index(values: Sequence[str]) -> bool:
    """Whether every index value is a number (Slicer then sorts and plays the sequence by value)."""
    try:
        [float(v) for v in values]
    except ValueError:
        return False
    return True


def _read_time_last(path: pathlib.Path, plane) -> Cine:
    """A 3D file (x, y, t) or a 4D one (x, y, z, t) read with SimpleITK."""
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise InvalidVolumeError(f"cannot read {path}: {str(error).strip().splitlines()[-1]}") from None
    dimension = image.GetDimension()
    if dimension not in (3, 4):
        raise InvalidVolumeError(f"{path.name} holds a {dimension}D image; a cine file is 2D+t (3D) or 3D+t (4D)")
    array = sitk.GetArrayFromImage(image)  # (T, H, W) or (T, K, J, I)[, C]
    ijk_to_ras = ijk_to_ras_of_image(image)
    if dimension == 4:
        if plane is None:
            raise plane_needed(array.shape[1:4])
        array, ijk_to_ras = select_plane(array, ijk_to_ras, plane)
    elif image.GetNumberOfComponentsPerPixel() in (3, 4) and array.ndim == 4:
        pass  # (T, H, W, C) colour frames
    return Cine(array, ijk_to_ras)


def _is_dicom(path: pathlib.Path) -> bool:
    with open(path, "rb") as stream:
        header = stream.read(132)
    return len(header) == 132 and header[128:] == b"DICM"


def _read_dicom_cine(path: pathlib.Path) -> Cine:
    """A multi-frame DICOM (ultrasound cine, XA, multi-frame secondary capture), laid out as
    Slicer's DICOMImageSequencePlugin loads it: IJK->RAS diag(-sx, -sy, 1), spacing from a
    single 2D tissue ultrasound region (else PixelSpacing, else 1 mm), index "time" in s from
    FrameTime (else "frame")."""
    import pydicom

    try:
        dataset = pydicom.dcmread(str(path))
        pixels = dataset.pixel_array  # colour frames come back as RGB
    except Exception as error:  # pydicom raises many types for unreadable / undecodable files
        raise InvalidVolumeError(f"cannot read DICOM {path}: {error}") from None
    samples = int(dataset.get("SamplesPerPixel", 1))
    if dataset.get("PhotometricInterpretation") == "PALETTE COLOR":
        # The pixels are indices into a colour table, not intensities: show the colours (as
        # Slicer's DICOM readers do), 16-bit table entries reduced to 8 bits.
        from pydicom.pixels import apply_color_lut

        pixels = apply_color_lut(pixels, dataset)
        if pixels.dtype == np.uint16:
            pixels = (pixels >> 8).astype(np.uint8)
        samples = 3
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if frames == 1:
        pixels = pixels[np.newaxis]
    if pixels.ndim != (4 if samples > 1 else 3):
        raise InvalidVolumeError(f"unexpected DICOM pixel data of shape {pixels.shape} in {path.name}")
    row_mm, column_mm = _dicom_pixel_spacing(dataset)
    ijk_to_ras = np.diag([-column_mm, -row_mm, 1.0, 1.0])
    frame_time = dataset.get("FrameTime")
    if frame_time:
        values = tuple(f"{t * float(frame_time) / 1000.0:.6g}" for t in range(pixels.shape[0]))
        return Cine(pixels, ijk_to_ras, values, "time", "s")
    return Cine(pixels, ijk_to_ras)


def _dicom_pixel_spacing(dataset) -> Tuple[float, float]:
    # Slicer's rule: an ultrasound image with a single region, 2D, of tissue or colour flow data
    regions = (dataset.get("SequenceOfUltrasoundRegions") or []) if dataset.get("Modality") == "US" else []
    tissue = [r for r in regions if r.get("RegionSpatialFormat") == 1 and r.get("RegionDataType") in (1, 2)]
    if len(regions) == 1 and len(tissue) == 1:
        region = tissue[0]
        if region.get("PhysicalUnitsXDirection") == 3 and region.get("PhysicalUnitsYDirection") == 3:  # cm
            return float(region.PhysicalDeltaY) * 10.0, float(region.PhysicalDeltaX) * 10.0
    spacing = dataset.get("PixelSpacing") or dataset.get("ImagerPixelSpacing")
    if spacing:
        return float(spacing[0]), float(spacing[1])
    return 1.0, 1.0
