"""Training clips: which frames of a labelled loop MemSAM sees, at what size, and where the click is.

As the reference (``dengxl0520/MemSAM`` ``utils/data_us.py``: ``load_video_and_mask_file``,
``random_click``, ``fixed_click``, ``JointTransform3D``):

* ``length`` frames sampled uniformly from the first labelled frame to the last, at
  ``int(first + step * i)`` with ``step = (last - first) / (length - 1)``; so the clip's first and
  last frames carry labels (ED and ES in CAMUS and EchoNet-Dynamic);
* frames resized to 256 x 256 bilinearly, masks with nearest neighbour; float 0..255, grey
  repeated to 3 channels, no normalisation;
* one positive click on the first clip frame's mask: a uniformly random foreground pixel in
  training, the middle foreground pixel in row-major order for validation; a background click
  (label 0) when that mask is empty;
* optional augmentation, each with probability 0.5: gamma (1.0..2.4), rotation (+-30 degrees),
  zoom (1..1.3, random crop position) and contrast (0.8..2.0, drawn per frame as torchvision's
  ColorJitter does when called frame by frame).
"""

from __future__ import annotations

import dataclasses
import math
from typing import List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .datasets import LabelledCine, TrainingDataError

__all__ = ["Clip", "augment_clip", "clip_frame_indices", "fixed_click", "make_clip", "random_click"]

AUGMENT_PROBABILITY = 0.5
GAMMA_RANGE = (1.0, 2.4)  # the reference draws randint(10, 25) / 10
ROTATION_DEGREES = 30.0
ZOOM_RANGE = (1.0, 1.3)
CONTRAST_RANGE = (0.8, 2.0)


@dataclasses.dataclass
class Clip:
    """frames: T x 3 x S x S float 0..255; masks: T x S x S float {0, 1}; labelled: T bools;
    frame_indices: the loop frames sampled; point_xy, point_label: the click on frame 0."""

    frames: torch.Tensor
    masks: torch.Tensor
    labelled: List[bool]
    frame_indices: List[int]
    point_xy: Tuple[float, float]
    point_label: int
    name: str = ""


def clip_frame_indices(first: int, last: int, length: int) -> List[int]:
    """``length`` frame indices from ``first`` to ``last`` inclusive, as the reference samples them
    (repeats when the loop is shorter than the clip)."""
    if length < 2:
        raise ValueError(f"a clip needs at least 2 frames (first and last labelled); got {length}")
    if last < first:
        raise ValueError(f"last labelled frame {last} before the first {first}")
    step = (last - first) / (length - 1)
    indices = [int(first + step * i) for i in range(length)]
    indices[-1] = last  # float steps can land one short of the labelled last frame
    return indices


def random_click(mask: np.ndarray, rng: np.random.Generator) -> Tuple[Tuple[float, float], int]:
    """A uniformly random foreground pixel as ((x, y), 1); a random background pixel with label 0
    when the mask is empty."""
    rows, cols = np.nonzero(mask)
    label = 1
    if rows.size == 0:
        rows, cols = np.nonzero(~np.asarray(mask, dtype=bool))
        label = 0
    pick = int(rng.integers(rows.size))
    return (float(cols[pick]), float(rows[pick])), label


def fixed_click(mask: np.ndarray) -> Tuple[Tuple[float, float], int]:
    """The middle foreground pixel in row-major order as ((x, y), 1) (background, label 0, if empty)."""
    rows, cols = np.nonzero(mask)
    label = 1
    if rows.size == 0:
        rows, cols = np.nonzero(~np.asarray(mask, dtype=bool))
        label = 0
    pick = rows.size // 2
    return (float(cols[pick]), float(rows[pick])), label


def make_clip(cine: LabelledCine, length: int, image_size: int = 256, rng: Optional[np.random.Generator] = None,
              augment: bool = False) -> Clip:
    """The clip of ``cine`` (see the module docstring). ``rng`` given: training (random click,
    optional augmentation); ``rng`` None: validation (fixed click, no augmentation)."""
    labelled = cine.labelled_frames
    if len(labelled) < 2:
        raise TrainingDataError(
            f"{cine.name}: {len(labelled)} labelled frame(s); a MemSAM clip runs from the first labelled frame to "
            "the last, so at least 2 (e.g. ED and ES) are needed")
    indices = clip_frame_indices(labelled[0], labelled[-1], length)
    frames = torch.from_numpy(cine.frames[indices].astype(np.float32)).unsqueeze(1)
    empty = np.zeros(cine.frames.shape[1:], dtype=bool)
    masks = torch.from_numpy(np.stack([cine.labels.get(t, empty) for t in indices]).astype(np.float32)).unsqueeze(1)
    size = (image_size, image_size)
    frames = F.interpolate(frames, size, mode="bilinear", align_corners=False).clamp_(0, 255)
    masks = F.interpolate(masks, size, mode="nearest-exact")
    if augment:
        if rng is None:
            raise ValueError("augmentation needs a random generator")
        frames, masks = augment_clip(frames, masks, rng)
    first = masks[0, 0].numpy() > 0.5
    point, label = random_click(first, rng) if rng is not None else fixed_click(first)
    return Clip(frames=frames.repeat(1, 3, 1, 1), masks=masks[:, 0], labelled=[t in cine.labels for t in indices],
                frame_indices=indices, point_xy=point, point_label=label, name=cine.name)


def augment_clip(frames: torch.Tensor, masks: torch.Tensor, rng: np.random.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
    """The reference's training augmentation on a resized clip (T x 1 x S x S each): the same
    gamma, rotation and zoom for every frame, contrast drawn per frame. Draws from ``rng`` only."""
    if rng.random() < AUGMENT_PROBABILITY:
        gamma = rng.integers(int(GAMMA_RANGE[0] * 10), int(GAMMA_RANGE[1] * 10) + 1) / 10.0
        frames = 255.0 * (frames / 255.0).pow(1.0 / gamma)
    angle = math.radians(rng.uniform(-ROTATION_DEGREES, ROTATION_DEGREES)) if rng.random() < AUGMENT_PROBABILITY else 0.0
    zoom, shift = 1.0, (0.0, 0.0)
    if rng.random() < AUGMENT_PROBABILITY:
        zoom = rng.uniform(*ZOOM_RANGE)
        # the reference enlarges by `zoom` and crops a random window of the original size: a shift of
        # up to (zoom - 1) of the image, in normalised [-1, 1] coordinates of the output
        limit = (zoom - 1.0) / zoom
        shift = (rng.uniform(-limit, limit), rng.uniform(-limit, limit))
    if angle or zoom != 1.0:
        cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
        theta = torch.tensor([[cos, -sin, shift[0]], [sin, cos, shift[1]]], dtype=frames.dtype)
        grid = F.affine_grid(theta.expand(frames.shape[0], 2, 3), list(frames.shape), align_corners=False)
        frames = F.grid_sample(frames, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        masks = F.grid_sample(masks, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    if rng.random() < AUGMENT_PROBABILITY:
        factors = torch.tensor(rng.uniform(*CONTRAST_RANGE, size=frames.shape[0]), dtype=frames.dtype)
        means = frames.mean(dim=(1, 2, 3), keepdim=True)
        frames = (means + factors.view(-1, 1, 1, 1) * (frames - means)).clamp(0, 255)
    return frames, masks
