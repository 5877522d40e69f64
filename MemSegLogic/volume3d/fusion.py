"""Fusion of the per-axis results of a six-orientation run into one probability and one mask.

Each axis gives a full-volume probability with NaN where its passes never looked (slices after
an early stop, or outside a cropped window). A voxel covered by one axis keeps that axis' value;
a voxel covered by none is 0. Where several axes looked:

- ``"weighted"`` (default): first, an axis other than the seed's is left out altogether when it
  does not reproduce the seed axis' mask on the seed slice(s) (Dice < 0.5 where both looked):
  the seed slice is where the user's prompt applies directly, so the seed axis is right there,
  and an axis that disagrees on it has failed as a whole (a guard, not a full test: an axis can
  match the seed slice and fail elsewhere). Then the mean of the remaining axes, each weighted
  per slice by
  * its resolution, relative to the finest axis (smallest pixel area / its pixel area): axial
    frames of a thick-sliced CT show the anatomy with many more pixels than its reformats;
  * whether the other axes confirm that slice: a slice whose mask agrees poorly (Dice < 0.5,
    where both looked) with the other axes' mean-fused mask keeps only a token weight, the
    same for every axis (so where no axis is confirmed, this is the plain mean).
  Why: a propagation fails by whole slices — it runs past the object's end into a neighbouring
  organ, or fades slice after slice — and a perpendicular axis sees such a slice from across,
  while inside the object the finest axis is the most exact.
  Last, the result is bounded along the seed axis by the slices its passes visited: they end
  where the object ends on native frames, where perpendicular passes may run on past it.
  (Measured on real CT and MR: README, "How it works" and "Accuracy".)
- ``"mean"``: the plain mean probability of the covering axes.
- ``"vote"``: a majority vote of the covering axes, a tie (two axes disagreeing) going to the
  plain mean.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..core.geometry import frame_spacing, slice_stack
from ..core.metrics import dice

FUSION_MODES = ("weighted", "mean", "vote")
DEFAULT_FUSION = "weighted"
# A slice whose mask has a Dice below this with the other axes' mask is not confirmed by them ...
AGREEMENT_MIN = 0.5
# ... and keeps this fraction of its weight: it still decides where no confirmed axis looked.
UNCONFIRMED_WEIGHT = 1e-3
# An axis whose mask on the seed slice has a Dice below this with the seed axis' is left out.
SEED_AGREEMENT_MIN = 0.5



def _mean(probabilities: Sequence[np.ndarray], axes: Optional[Sequence[int]] = None,
          slice_weights: Optional[Sequence[np.ndarray]] = None) -> Tuple[np.ndarray, np.ndarray]:
    """(mean probability over the covering axes, number of covering axes), optionally weighted
    per slice (``slice_weights[n]`` holds one weight per slice of ``axes[n]``)."""
    total = np.zeros(probabilities[0].shape, dtype=np.float32)
    weight = np.zeros(probabilities[0].shape, dtype=np.float32)
    covering = np.zeros(probabilities[0].shape, dtype=np.uint8)
    for n, probability in enumerate(probabilities):
        covered = ~np.isnan(probability)
        value = np.where(covered, probability, np.float32(0.0))
        if slice_weights is None:
            total += value
            weight += covered
        else:
            per_slice = slice_weights[n].astype(np.float32)[:, None, None]
            slice_stack(total, axes[n])[:] += per_slice * slice_stack(value, axes[n])
            slice_stack(weight, axes[n])[:] += per_slice * slice_stack(covered, axes[n])
        covering += covered
    return np.divide(total, weight, out=np.zeros_like(total), where=weight > 0), covering


def agreement(probabilities: Sequence[np.ndarray], axes: Sequence[int], threshold: float = 0.5) -> List[np.ndarray]:
    """Per axis, per slice: the Dice between that slice's mask and the mask of the other axes'
    plain mean, over the voxels both looked at (1 where both are empty there)."""
    scores = []
    for n, axis in enumerate(axes):
        others = [p for i, p in enumerate(probabilities) if i != n]
        if not others:
            scores.append(np.ones(slice_stack(probabilities[n], axis).shape[0]))
            continue
        others_mean, others_covering = _mean(others)
        looked = (others_covering > 0) & ~np.isnan(probabilities[n])
        mine = slice_stack((np.nan_to_num(probabilities[n], nan=0.0) > threshold) & looked, axis)
        theirs = slice_stack((others_mean > threshold) & looked, axis)
        both = np.count_nonzero(mine & theirs, axis=(1, 2))
        sizes = np.count_nonzero(mine, axis=(1, 2)) + np.count_nonzero(theirs, axis=(1, 2))
        scores.append(np.divide(2.0 * both, sizes, out=np.ones(len(sizes)), where=sizes > 0))
    return scores


def seed_agreement(probabilities: Sequence[np.ndarray], axes: Sequence[int], seed_slices: Sequence[int],
                   threshold: float = 0.5) -> List[float]:
    """Per axis: the Dice between its mask and the seed axis' (``axes[0]``) on the seed slices of
    the seed axis, over the voxels both looked at (1.0 for the seed axis itself)."""
    seed_stack = slice_stack(probabilities[0], axes[0])[list(seed_slices)]
    seed_looked = ~np.isnan(seed_stack)
    scores = [1.0]
    for probability in probabilities[1:]:
        mine = slice_stack(probability, axes[0])[list(seed_slices)]
        looked = seed_looked & ~np.isnan(mine)
        scores.append(dice(looked & (np.nan_to_num(mine) > threshold), looked & (np.nan_to_num(seed_stack) > threshold)))
    return scores


def slice_weights(probabilities: Sequence[np.ndarray], axes: Sequence[int], spacing_ijk,
                  threshold: float = 0.5) -> List[np.ndarray]:
    """The per-slice weights of ``"weighted"`` fusion: resolution × confirmation."""
    areas = [float(np.prod(frame_spacing(spacing_ijk, axis))) for axis in axes]
    weights = []
    for area, score in zip(areas, agreement(probabilities, axes, threshold)):
        # Unconfirmed slices all get the same token weight, whatever their resolution: where no
        # axis is confirmed, the fusion falls back to the plain mean, which beats trusting the
        # finest axis when every axis is poor.
        weights.append(np.where(score >= AGREEMENT_MIN, min(areas) / area, UNCONFIRMED_WEIGHT))
    return weights


def fuse(probabilities: Sequence[np.ndarray], mode: str = DEFAULT_FUSION, threshold: float = 0.5,
         axes: Optional[Sequence[int]] = None, spacing_ijk=None,
         seed_slices: Optional[Sequence[int]] = None) -> Tuple[np.ndarray, np.ndarray]:
    """(probability float32, mask uint8) from per-axis probabilities (NaN = not covered).
    ``"weighted"`` needs each probability's IJK axis and the voxel spacing; with ``seed_slices``
    (slice indices of the first axis, the seed axis) it also leaves out the axes that disagree
    with the seed axis there."""
    if mode not in FUSION_MODES:
        raise ValueError(f"fusion must be one of {', '.join(FUSION_MODES)}, got {mode!r}")
    if not probabilities:
        raise ValueError("nothing to fuse")
    if mode == "weighted":
        if axes is None or spacing_ijk is None or len(axes) != len(probabilities):
            raise ValueError("weighted fusion needs the axis of each probability and the voxel spacing")
        if seed_slices is not None and len(probabilities) > 1:
            kept = [n for n, score in enumerate(seed_agreement(probabilities, axes, seed_slices, threshold))
                    if score >= SEED_AGREEMENT_MIN]
            probabilities, axes = [probabilities[n] for n in kept], [axes[n] for n in kept]
        weighted, _ = _mean(probabilities, axes, slice_weights(probabilities, axes, spacing_ijk, threshold))
        if seed_slices is not None:
            # The seed axis' passes end where the object ends on its own, native frames; the
            # other axes see that direction at the through-plane resolution and do not extend it.
            slice_stack(weighted, axes[0])[np.isnan(slice_stack(probabilities[0], axes[0])).all(axis=(1, 2))] = 0.0
        return weighted, (weighted > threshold).astype(np.uint8)
    mean, covering = _mean(probabilities)
    if mode == "mean":
        return mean, (mean > threshold).astype(np.uint8)
    votes = np.zeros(mean.shape, dtype=np.int16)
    for probability in probabilities:
        votes += np.nan_to_num(probability, nan=0.0) > threshold
    twice_votes = 2 * votes
    mask = (twice_votes > covering) | ((twice_votes == covering) & (covering > 0) & (mean > threshold))
    return mean, mask.astype(np.uint8)
