"""A region grown from clicks on one 8-bit slice: what a box-trained model can be prompted with
when the user only clicked.

SimpleITK's confidence-connected filter (at its default multiplier, 2.5) grows from the clicked
pixels over the pixels whose intensity lies within that many standard deviations of the region's
mean, after curvature-flow smoothing (edge-preserving) so that noise does not stop it early.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

# A region covering more of the slice than this has leaked into surrounding tissue of the same
# intensity (a click in an MR brain lesion grows over the whole brain, 45 % of the slice), while
# an organ or lesion a user clicks covers less (a lung on an axial chest CT slice: 8 %).
MAX_REGION_FRACTION = 0.25


def grown_region_box(frame: np.ndarray, points_xy: np.ndarray) -> Optional[np.ndarray]:
    """The (x0, y0, x1, y1) pixel box of the region grown from ``points_xy`` (x, y) on the 2D
    ``frame``, or None where nothing grows or the region leaked (`MAX_REGION_FRACTION`)."""
    import SimpleITK as sitk

    image = sitk.CurvatureFlow(sitk.GetImageFromArray(np.asarray(frame, dtype=np.float32)),
                               timeStep=0.125, numberOfIterations=5)
    height, width = frame.shape
    seeds = sorted({(int(np.clip(round(x), 0, width - 1)), int(np.clip(round(y), 0, height - 1)))
                    for x, y in np.asarray(points_xy, dtype=np.float64)})
    region = sitk.ConfidenceConnected(image, seedList=seeds, numberOfIterations=3, multiplier=2.5,
                                      initialNeighborhoodRadius=2, replaceValue=1)
    # one-pixel threads (a vessel, a gap in a wall) do not stretch the box
    mask = sitk.GetArrayFromImage(sitk.BinaryMorphologicalOpening(region, [1, 1])) > 0
    if not mask.any() or mask.mean() > MAX_REGION_FRACTION:
        return None
    rows, cols = np.nonzero(mask)
    return np.array([cols.min(), rows.min(), cols.max(), rows.max()], dtype=np.float64)
