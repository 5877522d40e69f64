"""`Cine`: a 2D+t image (an echo loop): ``frames[t, j, i]`` plus the IJK->RAS matrix of one frame
as a single-slice volume and the sequence's index values (times).

This is how Slicer holds a 2D cine: a sequence of single-slice volumes (the proxy is a (1, H, W)
KJI volume), indexed by "time" in s (DICOM cine with a FrameTime) or by "frame". Every frame
shares one geometry, so one matrix serves all. Reading and writing keep that matrix exactly, as
`Volume` does for 3D images.

Files: Slicer's ``.seq.nrrd`` (4D NRRD, time last), a 3D NRRD / NIfTI / MHA whose third axis is
time (the CAMUS half-sequence layout), and multi-frame DICOM (ultrasound cine) through pydicom.
A 3D+t file holds a volume per time point: `Cine.read` needs ``plane=("K", index)`` (or I, J)
to choose the 2D plane that is propagated through time.
"""

from __future__ import annotations

import dataclasses
import pathlib
import urllib.parse
from typing import Optional, Sequence, Tuple

import numpy as np

from ..errors import InvalidVolumeError
from ..core.geometry import AXIS_NAMES, axis_index
from ..core.volume import LPS_TO_RAS, Volume, check_image_values

SEQUENCE_SUFFIX = ".seq.nrrd"
CINE_SUFFIXES = (SEQUENCE_SUFFIX, ".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd", ".dcm")
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
                "the 2D plane to follow through time, e.g. Cine.read(path, plane=('K', index))")
        if frames.ndim not in (3, 4):
            raise InvalidVolumeError(
                f"a cine is frames (T, H, W) or (T, H, W, 3) for RGB; got an array of shape {frames.shape}")
        matrix = np.asarray(self.ijk_to_ras, dtype=np.float64)
        if matrix.shape != (4, 4) or abs(np.linalg.det(matrix[:3, :3])) < 1e-12:
            raise InvalidVolumeError("ijk_to_ras must be a non-singular 4x4 matrix")
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

    # -- files ----------------------------------------------------------------------------------
    @classmethod
    def read(cls, path, plane: Optional[Tuple[str, int]] = None) -> "Cine":
        """Read a 2D+t file (see the module docstring). ``plane`` = (axis, index) picks the plane of
        a 3D+t file (ignored for 2D+t)."""
        path = pathlib.Path(path)
        if not path.is_file():
            raise InvalidVolumeError(f"no such file: {path}")
        name = path.name.lower()
        if name.endswith(SEQUENCE_SUFFIX):
            return _read_sequence_nrrd(path, plane)
        if name.endswith(".dcm") or _is_dicom(path):
            return _read_dicom_cine(path)
        if name.endswith(CINE_SUFFIXES):
            return _read_time_last(path, plane)
        raise InvalidVolumeError(f"unsupported file type {path.name}: use one of {', '.join(CINE_SUFFIXES)}")

    def write(self, path) -> None:
        """Write a Slicer volume sequence (``.seq.nrrd``, geometry and index kept), or a 3D file
        (.nrrd / .nii.gz / .mha) whose third axis is time (index values are lost there)."""
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.name.lower().endswith(SEQUENCE_SUFFIX):
            _write_sequence_nrrd(self, path)
            return
        if self.is_color:
            raise InvalidVolumeError("only .seq.nrrd keeps RGB frames; write grey frames (Cine.gray) to other files")
        matrix = self.ijk_to_ras.copy()
        matrix[:3, 2] /= np.linalg.norm(matrix[:3, 2])  # time steps one unit along the frame normal
        Volume(self.frames, matrix).write(path)


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


def _need_plane(shape) -> InvalidVolumeError:
    return InvalidVolumeError(
        f"this is a 3D+t sequence (volumes of K, J, I = {tuple(shape)} per time point), not a 2D+t cine: "
        "choose the plane to follow through time with plane=('K', index) (or I, J), e.g. the A4C plane")


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
        raise _need_plane(frames.shape[1:4])
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
    index_type = "numeric" if _numeric(cine.index_values) else "text"
    volume["sequence"] = {"indexName": cine.index_name, "indexUnit": cine.index_unit,
                          "indexType": index_type, "indexValues": list(cine.index_values)}
    # Slicer makes a vector volume of each frame from this, and reads colour index values from
    # its own axis numbering (see _SLICER_COLOUR_INDEX_VALUES)
    volume["DataNodeClassName"] = "vtkMRMLVectorVolumeNode" if cine.is_color else "vtkMRMLScalarVolumeNode"
    if cine.is_color:
        volume[_SLICER_COLOUR_INDEX_TYPE] = index_type
        volume[_SLICER_COLOUR_INDEX_VALUES] = " ".join(urllib.parse.quote(str(v), safe="") for v in cine.index_values)
    slicerio.write_volume(str(path), volume)


def _numeric(values: Sequence[str]) -> bool:
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
    direction = np.array(image.GetDirection(), dtype=np.float64).reshape(dimension, dimension)[:3, :3]
    spacing = np.array(image.GetSpacing(), dtype=np.float64)[:3]
    ijk_to_lps = np.eye(4)
    ijk_to_lps[:3, :3] = direction * spacing
    ijk_to_lps[:3, 3] = image.GetOrigin()[:3]
    ijk_to_ras = LPS_TO_RAS @ ijk_to_lps
    if dimension == 4:
        if plane is None:
            raise _need_plane(array.shape[1:4])
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
