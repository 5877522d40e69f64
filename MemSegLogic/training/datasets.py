"""Labelled echo cine loops for MemSAM training: one neutral record and the readers of three layouts.

`LabelledCine` is what every reader produces: grey frames (T, H, W) uint8 in MemSAM's 0..255 input
range, a boolean target mask for each labelled frame, the pixel spacing and the patient it belongs
to. Readers return `CineSource` objects that hold what a split and the clip sampler need (name,
patient, labelled frame indices) and read the pixels only when ``load()`` is called, so a dataset of
thousands of loops never sits in memory at once.

Layouts (facts from the reference's preprocessing, ``dengxl0520/MemSAM`` ``utils/preprocess_*.py``):

* **camus**: ``patientXXXX/patientXXXX_{2CH,4CH}_half_sequence.nii.gz`` and ``..._half_sequence_gt.nii.gz``
  (ED -> ES, every frame labelled). The target is label 1 (LV cavity); myocardium and atrium are
  discarded. When ``Info_{2CH,4CH}.cfg`` says ED > ES the loop is reversed so that ED comes first.
* **echonet** (EchoNet-Dynamic): ``FileList.csv`` (FileName, ..., Split), ``VolumeTracings.csv``
  (FileName, X1, Y1, X2, Y2, Frame; 21 rows per traced frame: the long axis, then 20 chords) and
  ``Videos/*.avi``. Two traced frames (ED and ES) per video; the official TRAIN/VAL/TEST split.
* **slicer**: pairs ``NAME.seq.nrrd`` (Slicer volume sequence, or a 3D NRRD/NIfTI with time last)
  and ``NAME.labels.seq.nrrd`` (a label map per frame, same frame count); frames whose label map is
  all zero are unlabelled, any non-zero label is the target unless ``label_value`` says which.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import pathlib
import re
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..cine.cine import Cine, memsam_range, to_gray
from ..errors import InvalidVolumeError, MemSegError

__all__ = [
    "LAYOUTS",
    "CineSource",
    "LabelledCine",
    "TrainingDataError",
    "detect_layout",
    "echonet_trace_to_mask",
    "polygon_mask",
    "read_camus",
    "read_dataset",
    "read_echonet",
    "read_slicer",
    "to_model_range",
]

log = logging.getLogger(__name__)

LAYOUTS = ("auto", "camus", "echonet", "slicer")
CAMUS_LV_LABEL = 1
ECHONET_ROWS_PER_TRACE = 21  # the long axis + 20 chords; the reference drops videos with other counts
ECHONET_SPLITS = {"TRAIN": "train", "VAL": "val", "TEST": "test"}
SLICER_IMAGE_SUFFIXES = (".seq.nrrd", ".nrrd", ".nii.gz", ".nii")
LABELS_TAG = ".labels"
_CAMUS_IMAGE = re.compile(r"^(?P<name>.+_(?:2CH|4CH))_half_sequence\.nii(?:\.gz)?$", re.IGNORECASE)


class TrainingDataError(MemSegError, ValueError):
    """Training data that cannot be used as given (missing, empty, inconsistent, wrong dimensionality)."""


# --- the neutral record ------------------------------------------------------------------------------
@dataclasses.dataclass(eq=False)
class LabelledCine:
    """A 2D+t loop with target masks on some frames.

    frames: (T, H, W) uint8 grey, MemSAM's 0..255 input range; labels: frame index -> (H, W) bool
    target; spacing: (row, column) pixel size in mm; group: the patient (kept on one side of a
    train/validation split); split: "train"/"val"/"test" when the dataset defines one.
    """

    name: str
    frames: np.ndarray
    labels: Dict[int, np.ndarray]
    spacing: Tuple[float, float] = (1.0, 1.0)
    group: str = ""
    split: Optional[str] = None

    def __post_init__(self) -> None:
        frames = np.asarray(self.frames)
        if frames.ndim != 3:
            raise TrainingDataError(f"{self.name}: frames must be (T, H, W) grey; got shape {frames.shape}")
        if frames.dtype != np.uint8:
            raise TrainingDataError(f"{self.name}: frames must be uint8 0..255 (see to_model_range); got {frames.dtype}")
        if frames.shape[0] < 2:
            raise TrainingDataError(
                f"{self.name}: the sequence has {frames.shape[0]} frame; MemSAM trains on loops of at least 2 frames")
        labels: Dict[int, np.ndarray] = {}
        for index, mask in self.labels.items():
            index, mask = int(index), np.asarray(mask)
            if not 0 <= index < frames.shape[0]:
                raise TrainingDataError(
                    f"{self.name}: mismatched label frames: label on frame {index}, but the loop has frames "
                    f"0..{frames.shape[0] - 1}")
            if mask.shape != frames.shape[1:]:
                raise TrainingDataError(
                    f"{self.name}: mismatched label frames: the label of frame {index} is {mask.shape[0]} x "
                    f"{mask.shape[1]} pixels, the frames are {frames.shape[1]} x {frames.shape[2]}")
            labels[index] = mask.astype(bool)
        self.frames = frames
        self.labels = dict(sorted(labels.items()))
        self.group = self.group or self.name
        self.spacing = (float(self.spacing[0]), float(self.spacing[1]))

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def labelled_frames(self) -> Tuple[int, ...]:
        return tuple(self.labels)

    def load(self) -> "LabelledCine":
        """A loaded cine is its own source (so lists of cines and of sources are used alike)."""
        return self

    def keep_labels(self, frames: Sequence[int]) -> "LabelledCine":
        """The same loop with only the labels of ``frames`` (e.g. first and last: ED/ES only)."""
        keep = set(int(f) for f in frames)
        return dataclasses.replace(self, labels={t: m for t, m in self.labels.items() if t in keep})


@dataclasses.dataclass(frozen=True, eq=False)
class CineSource:
    """A `LabelledCine` not read yet: what splitting and clip sampling need, and how to read it."""

    name: str
    labelled_frames: Tuple[int, ...]
    reader: Callable[[], LabelledCine]
    group: str = ""
    split: Optional[str] = None
    num_frames: Optional[int] = None

    def load(self) -> LabelledCine:
        cine = self.reader()
        if cine.labelled_frames != self.labelled_frames:
            raise TrainingDataError(
                f"{self.name}: labelled frames {cine.labelled_frames} differ from {self.labelled_frames} found "
                "when the dataset was listed (did the file change?)")
        return cine


# --- pixels -------------------------------------------------------------------------------------------
def to_model_range(frames: np.ndarray) -> np.ndarray:
    """Frames (T, H, W) or colour (T, H, W, 3|4) -> grey uint8 (T, H, W), as MemSAM sees them.

    Colour becomes ITU-R BT.601 luma (`MemSegLogic.cine.to_gray`). Grey already within 0..255 is
    kept (rounded), any other range stretched: `MemSegLogic.cine.memsam_range`, the rule the
    inference side applies to a cine, so a model sees the same intensities in training and in use.
    """
    try:
        return np.rint(memsam_range(to_gray(frames))).astype(np.uint8)
    except InvalidVolumeError as error:  # constant frames
        raise TrainingDataError(f"frames cannot be scaled to 0..255: {error}") from None


def polygon_mask(rows: np.ndarray, cols: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
    """Pixels whose centre lies inside the polygon (rows, cols) or on its boundary, as a bool mask.

    The rule of scikit-image's ``draw.polygon`` (the reference's rasteriser): even-odd crossing test,
    with vertices and edges counted as inside. Vectorised over the polygon's bounding box.
    """
    rows, cols = np.asarray(rows, dtype=np.float64), np.asarray(cols, dtype=np.float64)
    mask = np.zeros(shape, dtype=bool)
    if rows.size < 3:
        return mask
    r0, r1 = max(0, int(np.floor(rows.min()))), min(shape[0] - 1, int(np.ceil(rows.max())))
    c0, c1 = max(0, int(np.floor(cols.min()))), min(shape[1] - 1, int(np.ceil(cols.max())))
    if r0 > r1 or c0 > c1:
        return mask
    rr, cc = np.mgrid[r0:r1 + 1, c0:c1 + 1].astype(np.float64)
    inside = np.zeros(rr.shape, dtype=bool)
    on_edge = np.zeros(rr.shape, dtype=bool)
    for i in range(rows.size):
        ra, ca, rb, cb = rows[i - 1], cols[i - 1], rows[i], cols[i]
        straddles = (ra > rr) != (rb > rr)  # the edge crosses this pixel row (half-open)
        with np.errstate(divide="ignore", invalid="ignore"):
            crossing = ca + (rr - ra) * (cb - ca) / (rb - ra)
        inside ^= straddles & (cc < crossing)
        cross = (cb - ca) * (rr - ra) - (rb - ra) * (cc - ca)
        within = ((cc >= min(ca, cb)) & (cc <= max(ca, cb)) & (rr >= min(ra, rb)) & (rr <= max(ra, rb)))
        on_edge |= (np.abs(cross) < 1e-9) & within
    mask[r0:r1 + 1, c0:c1 + 1] = inside | on_edge
    return mask


def echonet_trace_to_mask(trace: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
    """EchoNet-Dynamic tracing rows (X1, Y1, X2, Y2) -> LV mask, as the reference's preprocessing:
    drop the first row (the long axis), walk the chords' (X1, Y1) ends down and their (X2, Y2) ends
    back up, round the vertices to whole pixels and fill the polygon."""
    trace = np.asarray(trace, dtype=np.float64)
    if trace.ndim != 2 or trace.shape[1] != 4 or trace.shape[0] < 3:
        raise TrainingDataError(f"an EchoNet tracing is rows of X1, Y1, X2, Y2 (>= 3 rows); got shape {trace.shape}")
    chords = trace[1:]
    xs = np.concatenate([chords[:, 0], chords[::-1, 2]])
    ys = np.concatenate([chords[:, 1], chords[::-1, 3]])
    return polygon_mask(np.rint(ys), np.rint(xs), shape)


# --- layouts ------------------------------------------------------------------------------------------
def detect_layout(folder: Union[str, pathlib.Path]) -> str:
    """"camus", "echonet" or "slicer" from the files in ``folder``."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise TrainingDataError(f"training data folder not found: {folder}")
    if (folder / "FileList.csv").is_file() and (folder / "VolumeTracings.csv").is_file():
        return "echonet"
    if any(_CAMUS_IMAGE.match(p.name) for p in folder.rglob("*_half_sequence.nii*")):
        return "camus"
    if _slicer_images(folder):
        return "slicer"
    raise TrainingDataError(
        f"{folder} holds no training data in a known layout: expected CAMUS "
        "(patientXXXX/patientXXXX_4CH_half_sequence[_gt].nii.gz), EchoNet-Dynamic (FileList.csv, "
        "VolumeTracings.csv, Videos/*.avi) or Slicer pairs (NAME.seq.nrrd + NAME.labels.seq.nrrd)")


def read_dataset(folder: Union[str, pathlib.Path], layout: str = "auto", *, camus_ed_es_only: bool = False,
                 label_value: Optional[int] = None) -> List[CineSource]:
    """The loops in ``folder`` as `CineSource` objects (pixels are read on ``load()``)."""
    if layout not in LAYOUTS:
        raise TrainingDataError(f"unknown layout {layout!r}: choose one of {', '.join(LAYOUTS)}")
    folder = pathlib.Path(folder)
    if layout == "auto":
        layout = detect_layout(folder)
    if layout == "camus":
        sources = read_camus(folder, ed_es_only=camus_ed_es_only)
    elif layout == "echonet":
        sources = read_echonet(folder)
    else:
        sources = read_slicer(folder, label_value=label_value)
    if not sources:
        raise TrainingDataError(f"{folder} holds no usable {layout} loops")
    return sources


# CAMUS ------------------------------------------------------------------------------------------------
def read_camus(folder: Union[str, pathlib.Path], ed_es_only: bool = False) -> List[CineSource]:
    """CAMUS half sequences under ``folder`` (searched recursively). ``ed_es_only`` keeps only the
    first and last frame's labels (ED and ES): the paper's CAMUS-Semi setting."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise TrainingDataError(f"CAMUS folder not found: {folder}")
    sources = []
    for image in sorted(folder.rglob("*_half_sequence.nii*")):
        match = _CAMUS_IMAGE.match(image.name)
        if not match:
            continue  # the _gt files, and anything else
        name = match.group("name")
        suffix = image.name[len(name) + len("_half_sequence"):]
        truth = image.with_name(f"{name}_half_sequence_gt{suffix}")
        if not truth.is_file():
            raise TrainingDataError(f"{image.name} has no ground truth {truth.name} beside it")
        frames = _nifti_frame_count(image, truth)
        labelled = (0, frames - 1) if ed_es_only else tuple(range(frames))
        view = name.rsplit("_", 1)[-1]
        reverse = _camus_ed_after_es(image.parent / f"Info_{view}.cfg")

        def reader(image=image, truth=truth, name=name, reverse=reverse) -> LabelledCine:
            return _load_camus(image, truth, name, reverse, ed_es_only)

        sources.append(CineSource(name=name, labelled_frames=labelled, reader=reader, group=image.parent.name,
                                  num_frames=frames))
    return sources


def _nifti_frame_count(image: pathlib.Path, truth: pathlib.Path) -> int:
    """Frame count from the headers, checking that the loop is 2D+t and the labels match it."""
    import SimpleITK as sitk

    sizes = []
    for path in (image, truth):
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        try:
            reader.ReadImageInformation()
        except RuntimeError as error:
            raise TrainingDataError(f"cannot read {path}: {str(error).strip().splitlines()[-1]}") from None
        size = tuple(reader.GetSize())
        if len(size) == 4 and size[2] > 1:
            raise TrainingDataError(f"{path.name} is a 3D+t sequence {size}; MemSAM trains on 2D+t loops")
        size = tuple(s for i, s in enumerate(size) if not (len(size) == 4 and i == 2))
        if len(size) != 3:
            raise TrainingDataError(f"{path.name} is {len(size)}D; a loop file is 2D+t (x, y, time)")
        sizes.append(size)
    if sizes[0] != sizes[1]:
        raise TrainingDataError(
            f"mismatched label frames: {image.name} is {sizes[0][0]} x {sizes[0][1]} pixels x {sizes[0][2]} frames, "
            f"{truth.name} is {sizes[1][0]} x {sizes[1][1]} x {sizes[1][2]}")
    if sizes[0][2] < 2:
        raise TrainingDataError(f"{image.name} has {sizes[0][2]} frame; MemSAM trains on loops of at least 2 frames")
    return int(sizes[0][2])


def _camus_ed_after_es(info: pathlib.Path) -> bool:
    """True when Info_{view}.cfg puts ED after ES (the reference then reverses the loop)."""
    if not info.is_file():
        return False
    values = {}
    for line in info.read_text(errors="replace").splitlines():
        key, _, value = line.partition(":")
        values[key.strip()] = value.strip()
    try:
        return int(values["ED"]) > int(values["ES"])
    except (KeyError, ValueError):
        return False


def _load_camus(image: pathlib.Path, truth: pathlib.Path, name: str, reverse: bool, ed_es_only: bool) -> LabelledCine:
    cine, labels = _read_cine(image), _read_cine(truth)
    frames, truth_frames = to_model_range(cine.frames), np.asarray(labels.frames)
    _check_pair(name, frames, truth_frames)
    if reverse:
        frames, truth_frames = frames[::-1].copy(), truth_frames[::-1].copy()
    masks = {t: truth_frames[t] == CAMUS_LV_LABEL for t in range(frames.shape[0])}
    record = LabelledCine(name, frames, masks, cine.spacing, group=image.parent.name)
    return record.keep_labels((0, frames.shape[0] - 1)) if ed_es_only else record


# EchoNet-Dynamic -------------------------------------------------------------------------------------
def read_echonet(folder: Union[str, pathlib.Path]) -> List[CineSource]:
    """EchoNet-Dynamic videos with exactly two valid tracings (ED and ES), with the official split.

    Videos the reference's preprocessing drops are skipped with a warning: missing AVI, a traced
    frame without 21 rows, not exactly two traced frames, a traced frame outside the video.
    """
    folder = pathlib.Path(folder)
    file_list, tracings = folder / "FileList.csv", folder / "VolumeTracings.csv"
    for path in (file_list, tracings):
        if not path.is_file():
            raise TrainingDataError(f"EchoNet-Dynamic layout needs {path.name} in {folder}")
    traces: Dict[str, Dict[int, List[Tuple[float, float, float, float]]]] = {}
    for row in _csv_rows(tracings, ("FileName", "X1", "Y1", "X2", "Y2", "Frame")):
        try:
            frame, point = int(float(row["Frame"])), tuple(float(row[k]) for k in ("X1", "Y1", "X2", "Y2"))
        except ValueError:
            raise TrainingDataError(f"{tracings.name}: unreadable row {row}") from None
        traces.setdefault(_video_stem(row["FileName"]), {}).setdefault(frame, []).append(point)
    sources = []
    for row in _csv_rows(file_list, ("FileName",)):
        stem = _video_stem(row["FileName"])
        video = folder / "Videos" / f"{stem}.avi"
        split = ECHONET_SPLITS.get((row.get("Split") or "").strip().upper())
        height, width = (_int_or(row.get("FrameHeight"), 112), _int_or(row.get("FrameWidth"), 112))
        frame_count = _int_or(row.get("NumberOfFrames"), None)
        traced = traces.get(stem, {})
        problem = None
        if not video.is_file():
            problem = f"no video {video}"
        elif len(traced) != 2:
            problem = f"{len(traced)} traced frames (need ED and ES)"
        elif any(len(rows) != ECHONET_ROWS_PER_TRACE for rows in traced.values()):
            problem = f"a tracing without {ECHONET_ROWS_PER_TRACE} rows"
        elif frame_count is not None and max(traced) >= frame_count:
            problem = f"traced frame {max(traced)} beyond its {frame_count} frames"
        if problem:
            log.warning("EchoNet-Dynamic: skipping %s: %s", stem, problem)
            continue
        masks = {f: echonet_trace_to_mask(np.array(traced[f]), (height, width)) for f in sorted(traced)}

        def reader(video=video, stem=stem, masks=masks, split=split) -> LabelledCine:
            frames = read_avi(video)
            if max(masks) >= frames.shape[0]:
                raise TrainingDataError(f"{stem}: traced frame {max(masks)} beyond the video's {frames.shape[0]} frames")
            return LabelledCine(stem, frames, masks, (1.0, 1.0), group=stem, split=split)

        sources.append(CineSource(name=stem, labelled_frames=tuple(sorted(masks)), reader=reader, group=stem,
                                  split=split, num_frames=frame_count))
    return sources


def read_avi(path: Union[str, pathlib.Path]) -> np.ndarray:
    """Every frame of a video file as grey uint8 (T, H, W), decoded with PyAV (an optional dependency)."""
    try:
        import av
    except ImportError:
        raise TrainingDataError(
            "reading EchoNet-Dynamic AVI videos needs PyAV, which is not installed: pip install av") from None
    try:
        with av.open(str(path)) as container:
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    except (av.error.FFmpegError, OSError) as error:
        raise TrainingDataError(f"cannot decode {path}: {error}") from None
    if not frames:
        raise TrainingDataError(f"{path} has no video frames")
    return to_model_range(np.stack(frames))


def _video_stem(name: str) -> str:
    name = name.strip()
    return name[:-4] if name.lower().endswith(".avi") else name


def _int_or(value, default):
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return default


def _csv_rows(path: pathlib.Path, required: Sequence[str]) -> List[Mapping[str, str]]:
    with open(path, newline="", encoding="utf-8-sig") as stream:
        reader = csv.DictReader(stream)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise TrainingDataError(f"{path.name} lacks the column(s) {', '.join(missing)}")
        return list(reader)


# Slicer pairs ----------------------------------------------------------------------------------------
def read_slicer(folder: Union[str, pathlib.Path], label_value: Optional[int] = None) -> List[CineSource]:
    """Pairs NAME.seq.nrrd + NAME.labels.seq.nrrd (or .nrrd / .nii.gz / .nii, time last) in ``folder``.

    Every pair is read once here to check it (frame counts, sizes, labelled frames), and again
    on ``load()``. ``label_value``: the label that is the target (default: any non-zero label).
    """
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise TrainingDataError(f"training data folder not found: {folder}")
    sources = []
    for image, labels in _slicer_images(folder):
        name = _strip_suffix(image.name)

        def reader(image=image, labels=labels, name=name) -> LabelledCine:
            return _load_slicer_pair(image, labels, name, label_value)

        cine = reader()
        sources.append(CineSource(name=name, labelled_frames=cine.labelled_frames, reader=reader,
                                  group=name, num_frames=cine.num_frames))
    return sources


def _strip_suffix(filename: str) -> str:
    lower = filename.lower()
    for suffix in SLICER_IMAGE_SUFFIXES:
        if lower.endswith(suffix):
            return filename[: -len(suffix)]
    return filename


def _slicer_images(folder: pathlib.Path) -> List[Tuple[pathlib.Path, pathlib.Path]]:
    """(image, labels) pairs; an image without a label file is an error (it was meant for training)."""
    pairs = []
    files = sorted(p for p in folder.iterdir() if p.is_file())
    for path in files:
        stem = _strip_suffix(path.name)
        if stem == path.name or stem.lower().endswith(LABELS_TAG) or path.name.lower().endswith(".seg.nrrd"):
            continue
        candidates = [folder / f"{stem}{LABELS_TAG}{suffix}" for suffix in SLICER_IMAGE_SUFFIXES]
        found = [c for c in candidates if c.is_file()]
        if not found:
            raise TrainingDataError(
                f"{path.name} has no label file beside it (expected {stem}{LABELS_TAG}.seq.nrrd: a label map per frame)")
        pairs.append((path, found[0]))
    return pairs


def _read_cine(path: pathlib.Path) -> Cine:
    try:
        return Cine.read(path)
    except InvalidVolumeError as error:
        if "3D+t" in str(error):
            raise TrainingDataError(
                f"{path.name} is a 3D+t sequence (a volume per time point); MemSAM trains on 2D+t loops: "
                "extract the 2D view (e.g. the apical 4-chamber plane) of every time point first") from None
        raise TrainingDataError(f"{path.name}: {error}") from None


def _check_pair(name: str, frames: np.ndarray, labels: np.ndarray) -> None:
    if labels.ndim != 3:
        raise TrainingDataError(f"{name}: the label file must hold one grey label map per frame; got shape {labels.shape}")
    if labels.shape[0] != frames.shape[0]:
        raise TrainingDataError(
            f"{name}: mismatched label frames: the loop has {frames.shape[0]} frames, its labels {labels.shape[0]}")
    if labels.shape[1:] != frames.shape[1:]:
        raise TrainingDataError(
            f"{name}: mismatched label frames: frames are {frames.shape[1]} x {frames.shape[2]} pixels, "
            f"label maps {labels.shape[1]} x {labels.shape[2]}")
    if frames.shape[0] < 2:
        raise TrainingDataError(f"{name}: the sequence has {frames.shape[0]} frame; MemSAM trains on loops of at least 2 frames")


def _load_slicer_pair(image: pathlib.Path, labels: pathlib.Path, name: str, label_value: Optional[int]) -> LabelledCine:
    cine, label_cine = _read_cine(image), _read_cine(labels)
    if label_cine.is_color:
        raise TrainingDataError(f"{labels.name}: a label map must be scalar, not colour")
    frames, maps = to_model_range(cine.frames), np.asarray(label_cine.frames)
    _check_pair(name, frames, maps)
    masks = {}
    for t in range(frames.shape[0]):
        if maps[t].any():  # an all-zero label map means "not labelled", not "empty target"
            masks[t] = maps[t] != 0 if label_value is None else maps[t] == label_value
    return LabelledCine(name, frames, masks, cine.spacing, group=name)
