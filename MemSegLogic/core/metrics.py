"""Small numeric rules shared by the 3D and cine paths: probabilities from logits, the threshold
that turns them into masks, and the Dice overlap and volume that score masks against each other."""

from __future__ import annotations

import numbers

import numpy as np


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """float32 probabilities. Logits are clipped to ±80 first so exp() cannot overflow float32
    (unvisited slices hold a large negative logit); sigmoid(±80) is 1/0 in float32 anyway."""
    out = np.negative(np.clip(logits, -80.0, 80.0), dtype=np.float32)
    np.exp(out, out=out)
    out += 1.0
    return np.reciprocal(out, out=out)


def check_threshold(threshold: float) -> float:
    """The probability threshold as a float, or ValueError: 0 and 1 would select everything or nothing."""
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise ValueError(f"threshold must be a number strictly between 0 and 1, got {threshold!r}")
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must lie strictly between 0 and 1, got {threshold}")
    return float(threshold)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two binary masks of any dimension (1.0 when both are empty)."""
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def volume_ml(mask: np.ndarray, spacing) -> float:
    """Volume of a binary mask in millilitres, from the voxel spacing in mm."""
    return int(np.count_nonzero(mask)) * float(np.prod(spacing)) / 1000.0
