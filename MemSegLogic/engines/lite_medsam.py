"""LiteMedSAM (`medsam-lite`): a box-prompted 2D model carried slice to slice.

LiteMedSAM has no memory. A pass segments the seed slice from its prompt, then on each next
slice prompts the model with the previous slice's mask: its bounding box plus a margin, and
(optionally) its low-resolution logits as SAM's dense mask prompt. The pass ends where the
mask vanishes, so it never wanders into unrelated anatomy beyond the object's end.
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..checkpoints import Checkpoint
from ..progress import Monitor
from ..prompt import SlicePrompt
from .base import Engine, PassResult

# Logit magnitude given to a user-painted seed mask (sigmoid(12) > 0.99999).
MASK_SEED_LOGIT = 12.0


class LiteMedSAMEngine(Engine):
    def __init__(self, checkpoint: Checkpoint, weights_path, device, box_margin: float = 3.0,
                 mask_prompt: bool = False):
        from ..models.lite_medsam import load_lite_medsam

        self.name = checkpoint.name
        self.image_size = checkpoint.image_size
        self.device = device
        self.box_margin = box_margin  # model pixels added around the previous slice's mask box
        self.mask_prompt = mask_prompt
        self.model = load_lite_medsam(weights_path, device=device)

    @torch.inference_mode()
    def propagate(self, frames: np.ndarray, seeds: Dict[int, SlicePrompt], monitor: Monitor) -> PassResult:
        result = PassResult.empty(frames.shape)
        carried = {}  # frame index -> low-res logits, the memory a neighbour is prompted with
        for index, seed in sorted(seeds.items()):
            monitor.report(result.visited.mean(), f"seed slice {index}")
            result.logits[index], carried[index] = self._segment_seed(frames[index], seed)
            result.visited[index] = True
        last = len(frames) - 1
        for step, start, end in ((1, min(seeds), last), (-1, max(seeds), 0)):
            previous = start
            for index in range(start + step, end + step, step):
                if index in seeds:  # a later seed takes over from the carried mask
                    previous = index
                    continue
                mask = result.logits[previous] > 0
                if not mask.any():
                    break  # the object ended on the previous slice
                result.logits[index], carried[index] = self._segment_from_neighbour(
                    frames[index], mask, carried[previous])
                result.visited[index] = True
                previous = index
                monitor.report(result.visited.mean(), f"slice {index} ({'forward' if step > 0 else 'backward'})")
        return result

    # -- one slice ------------------------------------------------------------------------------
    def _prepare(self, frame: np.ndarray):
        from ..models.lite_medsam import preprocess_slice

        image, scale, new_size = preprocess_slice(frame)
        return self.model.encode(image.to(self.device)), scale, new_size

    def _decode(self, frame_shape, embedding, new_size, box=None, points=None, mask_logits=None):
        from ..models.lite_medsam import postprocess_logits

        low_res, _ = self.model.decode(embedding, box_256=box, points=points, mask_logits_256=mask_logits)
        return postprocess_logits(low_res, new_size, frame_shape), low_res

    def _segment_seed(self, frame: np.ndarray, seed: SlicePrompt):
        if seed.mask is not None:
            # A painted mask is the answer on its own slice (as SAM 2 does with mask inputs): no
            # need to encode the image, only the model frame's size for the carried logits.
            from ..models.lite_medsam import model_frame

            _, new_size = model_frame(frame.shape)
            logits = np.where(seed.mask, MASK_SEED_LOGIT, -MASK_SEED_LOGIT).astype(np.float32)
            return logits, self._mask_to_low_res(seed.mask, new_size)
        embedding, scale, new_size = self._prepare(frame)
        box = None if seed.box_xyxy is None else self._box_256(seed.box_xyxy, scale, new_size, margin=0.0)
        points = None
        if len(seed.labels):
            points = (torch.as_tensor(seed.points_xy * scale, dtype=torch.float32)[None],
                      torch.as_tensor(seed.labels, dtype=torch.float32)[None])
        return self._decode(frame.shape, embedding, new_size, box=box, points=points)

    def _segment_from_neighbour(self, frame: np.ndarray, neighbour_mask: np.ndarray, neighbour_low_res):
        embedding, scale, new_size = self._prepare(frame)
        rows, cols = np.nonzero(neighbour_mask)
        box = self._box_256(np.array([cols.min(), rows.min(), cols.max(), rows.max()], dtype=np.float64),
                            scale, new_size, margin=self.box_margin)
        mask_logits = neighbour_low_res if self.mask_prompt else None
        return self._decode(frame.shape, embedding, new_size, box=box, mask_logits=mask_logits)

    @staticmethod
    def _box_256(box_xyxy: np.ndarray, scale: float, new_size, margin: float) -> torch.Tensor:
        new_h, new_w = new_size
        box = np.asarray(box_xyxy, dtype=np.float64) * scale + np.array([-margin, -margin, margin, margin])
        box = np.clip(box, 0, [new_w - 1, new_h - 1, new_w - 1, new_h - 1])
        return torch.as_tensor(box, dtype=torch.float32)[None]

    def _mask_to_low_res(self, mask: np.ndarray, new_size) -> torch.Tensor:
        """A binary mask as (1, 1, 256, 256) logits in the padded model frame."""
        new_h, new_w = new_size
        resized = F.interpolate(torch.from_numpy(mask.astype(np.float32))[None, None], size=(new_h, new_w),
                                mode="bilinear", align_corners=False)
        logits = (resized * 2.0 - 1.0) * MASK_SEED_LOGIT
        logits = F.pad(logits, (0, self.image_size - new_w, 0, self.image_size - new_h), value=-MASK_SEED_LOGIT)
        return logits.to(self.device)
