"""What a worker does with one case: read the image, build the prompt, segment, score.

It writes nothing: the mask goes back to the driver, which owns the output folder, so a worker
stopped in the middle of a case (Ctrl-C, a lost node) can never leave a partial output behind.
Inputs are read by path: on a cluster they must lie on storage every worker sees."""

from __future__ import annotations

import dataclasses
import time
from typing import List, Optional

import numpy as np

from ..core.geometry import AXIS_NAMES, axis_index, slice_stack
from ..core.metrics import dice, volume_ml
from ..core.prompt import Prompt
from ..core.volume import Volume
from ..errors import InvalidPromptError, InvalidVolumeError
from ..io.segmentation_io import SEGMENTATION_SUFFIX, read_segmentation_file
from ..volume3d.segment import segment_volume
from .manifest import Case


@dataclasses.dataclass
class CaseOutcome:
    """A finished case: the mask (bit-packed: an eighth of the bytes to send back) and its figures."""

    packed_mask: np.ndarray
    shape_kji: tuple
    ijk_to_ras: np.ndarray
    seconds: float
    voxels: int
    volume_ml: float
    model: str
    device: str
    dice: Optional[float] = None
    reference_ml: Optional[float] = None

    def mask(self) -> np.ndarray:
        count = int(np.prod(self.shape_kji))
        return np.unpackbits(self.packed_mask, count=count).reshape(self.shape_kji)

    @property
    def volume_difference_ml(self) -> Optional[float]:
        return None if self.reference_ml is None else self.volume_ml - self.reference_ml


def case_prompts(case: Case, volume: Volume) -> List[Prompt]:
    """The case's prompt on ``volume``: RAS points and box through the volume's IJK->RAS exactly
    as `memseg segment` takes them, or the seed labelmap's slice as a mask prompt."""
    if case.seed_labelmap is not None:
        return [seed_prompt(read_mask_file(case.seed_labelmap, case.seed_segment, volume, "seed_labelmap"), case.axis)]
    return Prompt.several_from_ras(volume, positive=list(case.point), negative=list(case.negative),
                                   box=list(case.box) if case.box is not None else None, axis=case.axis)


def seed_prompt(mask: np.ndarray, axis: Optional[str]) -> Prompt:
    """A mask prompt from a labelmap that marks the object on one slice (of ``axis``, or of the
    one axis on which all its voxels share a slice)."""
    if not mask.any():
        raise InvalidPromptError("the seed labelmap is empty: paint the object on one slice")
    occupied = {a: np.flatnonzero(slice_stack(mask, a).any(axis=(1, 2))) for a in range(3)}
    if axis is None:
        single = [a for a in range(3) if len(occupied[a]) == 1]
        if len(single) != 1:
            spans = ", ".join(f"{AXIS_NAMES[a]} {occupied[a].min()}-{occupied[a].max()}" for a in range(3))
            raise InvalidPromptError(
                "the seed labelmap must mark one slice of one axis" + (" (give the axis)" if single else "")
                + f"; its voxels span slices {spans}")
        axis_number = single[0]
    else:
        axis_number = axis_index(axis)
        if len(occupied[axis_number]) != 1:
            raise InvalidPromptError(f"the seed labelmap must mark one {axis} slice; its voxels lie on {axis} slices "
                                     f"{occupied[axis_number].min()}-{occupied[axis_number].max()}")
    index = int(occupied[axis_number][0])
    return Prompt.from_mask(slice_stack(mask, axis_number)[index] > 0, axis_number, index)


def read_mask_file(path, segment: Optional[str], volume: Volume, what: str) -> np.ndarray:
    """A 0/1 KJI mask on ``volume``'s grid from a labelmap (any label > 0) or a .seg.nrrd segment."""
    if str(path).lower().endswith(SEGMENTATION_SUFFIX):
        segments, ijk_to_ras = read_segmentation_file(path)
        if segment is None and len(segments) != 1:
            raise InvalidVolumeError(f"the {what} {path.name} holds {len(segments)} segments "
                                     f"({', '.join(segments)}): name one in the {what.split('_')[0]}_segment column")
        if segment is not None and segment not in segments:
            raise InvalidVolumeError(f"the {what} {path.name} has no segment {segment!r}; it has {', '.join(segments)}")
        mask = Volume(segments[segment] if segment is not None else next(iter(segments.values())), ijk_to_ras)
    else:
        labels = Volume.read(path)
        mask = labels.with_array((labels.array > 0).astype(np.uint8))
    if not mask.same_grid(volume, atol=1e-4):
        raise InvalidVolumeError(f"the {what} {path.name} is not on the image's grid (size IJK {list(mask.shape_ijk)} "
                                 f"vs {list(volume.shape_ijk)}, or another position/orientation): MemSeg does not "
                                 "resample it")
    return mask.array


def run_case(case: Case, device: str = "auto", cancel=None) -> CaseOutcome:
    started = time.perf_counter()
    volume = Volume.read(case.image)
    prompts = case_prompts(case, volume)
    result = segment_volume(volume, prompts, device=device, cancel=cancel, **case.segment_volume_options())
    outcome = CaseOutcome(packed_mask=np.packbits(result.mask.ravel() > 0), shape_kji=result.mask.shape,
                          ijk_to_ras=result.ijk_to_ras, seconds=0.0, voxels=int(np.count_nonzero(result.mask)),
                          volume_ml=volume_ml(result.mask, volume.spacing), model=result.model, device=result.device)
    if case.reference is not None:
        reference = read_mask_file(case.reference, case.reference_segment, volume, "reference")
        outcome.dice = dice(result.mask, reference)
        outcome.reference_ml = volume_ml(reference, volume.spacing)
    outcome.seconds = time.perf_counter() - started
    return outcome
