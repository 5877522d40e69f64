"""Segmentation files: Slicer segmentations (.seg.nrrd) read and written, plain labelmaps
(.nii.gz, .nrrd...) written.

`.seg.nrrd` goes through slicerio (Slicer's own segmentation file layout, kept up to date by the
Slicer team) so segment names, colours and the image grid read back in Slicer exactly."""

from __future__ import annotations

import pathlib

import numpy as np

from ..core.volume import LPS_TO_RAS, Volume
from .atomic import replace_atomically
from .outputs import OutputError, clean_text
from .volume_io import WRITTEN_VOLUME_SUFFIXES

DEFAULT_COLOR = (0.95, 0.55, 0.15)
SEGMENTATION_SUFFIX = ".seg.nrrd"
MASK_SUFFIXES = (SEGMENTATION_SUFFIX,) + WRITTEN_VOLUME_SUFFIXES  # what write_mask writes


def write_mask(path, mask: np.ndarray, ijk_to_ras: np.ndarray, segment_name: str = "MemSeg",
               color=DEFAULT_COLOR) -> pathlib.Path:
    """Write a KJI 0/1 mask: ``.seg.nrrd`` as a one-segment Slicer segmentation, any other volume
    suffix (``.nii.gz``, ``.nii``, ``.nrrd``, ``.mha``) as a labelmap with label 1."""
    path = pathlib.Path(path)
    if path.name.lower().endswith(SEGMENTATION_SUFFIX):
        import slicerio

        segment_name = clean_text(segment_name, "segment name")
        segmentation = slicerio.create_segmentation(mask.shape[::-1], LPS_TO_RAS @ ijk_to_ras)
        slicerio.add_segment(segmentation, np.asarray(mask).transpose(2, 1, 0) > 0,
                             {"id": segment_name, "name": segment_name, "color": list(color)})
        replace_atomically(path, lambda partial: slicerio.write_segmentation(str(partial), segmentation))
    elif path.name.lower().endswith(WRITTEN_VOLUME_SUFFIXES):
        Volume(np.asarray(mask, dtype=np.uint8), ijk_to_ras).write(path)
    else:
        raise OutputError(f"unsupported output {path.name}: use one of {', '.join(MASK_SUFFIXES)}")
    return path


def read_segmentation_file(path) -> tuple:
    """(segments, ijk_to_ras): ``segments`` maps each segment name to its KJI uint8 mask."""
    import slicerio

    segmentation = slicerio.read_segmentation(str(path))
    ijk_to_ras = LPS_TO_RAS @ np.asarray(segmentation["ijkToLPS"], dtype=np.float64)
    # slicerio's masks are indexed [i, j, k]; MemSeg's arrays are [k, j, i].
    segments = {segment["name"]: np.ascontiguousarray(slicerio.segment_mask(segmentation, segment).transpose(2, 1, 0),
                                                      dtype=np.uint8)
                for segment in segmentation["segments"]}
    return segments, ijk_to_ras
