"""Fusion of the per-axis results of a six-orientation run into one probability and one mask.

Each axis gives a full-volume probability with NaN where its passes never looked (slices after
an early stop, or outside a cropped window). A voxel's fused probability is the mean over the
axes that covered it, so a voxel covered by one axis keeps that axis' value and a voxel covered
by none is 0. The mask is either that mean above the threshold (``"mean"``, default) or a
majority vote of the covering axes (``"vote"``), a tie (two axes disagreeing) going to the mean.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

FUSION_MODES = ("mean", "vote")
DEFAULT_FUSION = "mean"


def sigmoid(logits: np.ndarray) -> np.ndarray:
    # clipped so exp() cannot overflow float32 (unvisited slices hold -1024); sigmoid(+-80) is 1/0
    out = np.negative(np.clip(logits, -80.0, 80.0), dtype=np.float32)
    np.exp(out, out=out)
    out += 1.0
    return np.reciprocal(out, out=out)


def fuse(probabilities: Sequence[np.ndarray], mode: str = DEFAULT_FUSION,
         threshold: float = 0.5) -> Tuple[np.ndarray, np.ndarray]:
    """(probability float32, mask uint8) from per-axis probabilities (NaN = not covered)."""
    if mode not in FUSION_MODES:
        raise ValueError(f"fusion must be one of {', '.join(FUSION_MODES)}, got {mode!r}")
    if not probabilities:
        raise ValueError("nothing to fuse")
    total = np.zeros(probabilities[0].shape, dtype=np.float32)
    covering = np.zeros(probabilities[0].shape, dtype=np.uint8)
    votes = np.zeros(probabilities[0].shape, dtype=np.uint8)
    for probability in probabilities:
        covered = ~np.isnan(probability)
        total += np.where(covered, probability, 0.0)
        covering += covered
        votes += covered & (probability > threshold)
    mean = np.divide(total, covering, out=np.zeros_like(total), where=covering > 0)
    if mode == "mean":
        mask = mean > threshold
    else:
        twice_votes = 2 * votes.astype(np.int16)
        mask = (twice_votes > covering) | ((twice_votes == covering) & (covering > 0) & (mean > threshold))
    return mean, mask.astype(np.uint8)
