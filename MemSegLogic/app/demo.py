"""The main job, end to end on real data: segment the right lung of a real chest CT from one box.

Data: slicerio's CTChest4 (real CT, 128x128x34) and its reference segmentation. The seed is the
reference lung's bounding box on its middle axial slice — what a user would drag. Writes the
result as ``right-lung.seg.nrrd``, a PNG of the three orthogonal slices through the seed
(orange: MemSeg, green: reference outline, yellow: seed box) and prints the 3D Dice.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Optional

import numpy as np

from ..core.intensity import to_uint8
from ..core.metrics import dice
from ..core.prompt import Prompt
from ..io.atomic import replace_atomically
from ..io.overlay import PREDICTION_RGB, REFERENCE_RGB, orthogonal_views
from ..io.segmentation_io import write_mask
from ..runtime.checkpoints import get_checkpoint, is_available
from ..volume3d.segment import segment_volume
from .samples import load_chest_ct

DEMO_SEGMENT = "right lung"
DEMO_PRESET = "ct-chest"


@dataclasses.dataclass
class DemoReport:
    model: str
    device: str
    dice: float
    seconds: float
    slices_visited: int
    segmentation_path: pathlib.Path
    overlay_path: pathlib.Path

    def summary(self) -> str:
        return (f"right lung of CTChest4 with {self.model} on {self.device}: 3D Dice {self.dice:.4f} "
                f"({self.slices_visited} slices, {self.seconds:.1f} s)\n"
                f"  segmentation: {self.segmentation_path}\n  overlay:      {self.overlay_path}")


def default_demo_model() -> str:
    """MedSAM-2 if its weights are already here, else the offline LiteMedSAM."""
    return "medsam2-pretrain" if is_available(get_checkpoint("medsam2-pretrain")) else "medsam-lite"


def middle_slice(reference: np.ndarray) -> int:
    """The middle axial (K) slice of the reference's extent: where the seeds below are placed."""
    slices = np.nonzero(reference.any(axis=(1, 2)))[0]
    return int((slices.min() + slices.max()) // 2)


def seed_box(reference: np.ndarray) -> tuple:
    """(Prompt, slice) for the reference's bounding box on its middle axial (K) slice."""
    k = middle_slice(reference)
    rows, cols = np.nonzero(reference[k])
    return Prompt.from_box((cols.min(), rows.min(), k), (cols.max(), rows.max(), k)), k


def deepest_point(mask2d: np.ndarray) -> tuple:
    """(column, row) of the pixel farthest from the mask's edge: where a user clicks."""
    import SimpleITK as sitk

    distance = sitk.SignedMaurerDistanceMap(sitk.GetImageFromArray(mask2d.astype(np.uint8)), insideIsPositive=True,
                                            squaredDistance=False, useImageSpacing=False)
    row, column = np.unravel_index(np.argmax(sitk.GetArrayFromImage(distance)), mask2d.shape)
    return int(column), int(row)


def seed_clicks(reference: np.ndarray, negatives: int = 0, gap: int = 5) -> tuple:
    """(Prompt, slice): one positive click at the reference's deepest point on its middle axial
    slice, plus up to two negative clicks ``gap`` pixels beside the object on that point's row
    (left, then right; the column instead where a side leaves the frame) — a user marking what
    is not the object."""
    k = middle_slice(reference)
    frame = reference[k] > 0
    column, row = deepest_point(frame)
    outside = []
    for line, at, to_point in ((frame[row], column, lambda c: (c, row)), (frame[:, column], row, lambda r: (column, r))):
        inside = np.flatnonzero(line)
        before, after = inside[inside <= at].min() - gap, inside[inside >= at].max() + gap
        outside += [to_point(i) for i in (before, after) if 0 <= i < len(line) and not line[i]]
    return Prompt.from_points([(column, row, k)], [(x, y, k) for x, y in outside[:negatives]], axis="K"), k


def run_demo(output_dir, model: Optional[str] = None, device: str = "auto", progress=None) -> DemoReport:
    output_dir = pathlib.Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    volume, segments = load_chest_ct()
    reference = segments[DEMO_SEGMENT]
    prompt, k = seed_box(reference)
    result = segment_volume(volume, prompt, model=model or default_demo_model(), device=device,
                            preset=DEMO_PRESET, progress=progress)
    segmentation_path = write_mask(output_dir / "right-lung.seg.nrrd", result.mask, result.ijk_to_ras,
                                   segment_name=DEMO_SEGMENT)
    box_centre = prompt.box.mean(axis=0)
    picture = orthogonal_views(to_uint8(volume.array, DEMO_PRESET),
                               [(result.mask, PREDICTION_RGB, True), (reference, REFERENCE_RGB, False)],
                               volume.ijk_to_ras, box_centre, box_ijk=prompt.box)
    overlay_path = output_dir / "right-lung-overlay.png"
    replace_atomically(overlay_path, lambda partial: picture.save(partial, format="PNG"))
    return DemoReport(result.model, result.device, dice(result.mask, reference), result.seconds,
                      result.slices_visited, segmentation_path, overlay_path)
