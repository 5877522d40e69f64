"""LiteMedSAM (`medsam-lite`): a box-prompted 2D model carried slice to slice.

LiteMedSAM has no memory. A pass segments the seed slice from its prompt, then on each next
slice prompts the model with the previous slice's mask: its bounding box plus a margin, and
(optionally) its low-resolution logits as SAM's dense mask prompt. The direction loop and the
early stop are `CarriedMaskEngine`'s: the prompt carried over is always the last slice where
the object was present.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..core.prompt import SlicePrompt
from ..runtime.checkpoints import Checkpoint
from .base import MASK_SEED_LOGIT, CarriedMaskEngine


class LiteMedSAMEngine(CarriedMaskEngine):
    # On frames resampled to square pixels LiteMedSAM often picks the tissue beside the object
    # inside the same box (README, "How it works", anisotropy); native frames are resized by
    # LiteMedSAM's own longest-side preprocessing.
    square_pixels = False
    trained_prompts = ("box",)
    # Clicks without a box: candidate boxes this many model pixels (256 frame) around the clicks,
    # plus the box of the region grown from the clicks (`core.region`), each decoded; the one the
    # model is surest of (its IoU head) that covers every positive click and no negative one is
    # the seed. LiteMedSAM given the click itself as a point prompt finds next to nothing, and no
    # square fits an elongated organ clicked off its centre (README, "How it works"). Doubling
    # sizes: each decode is time before the first result, and the sizes between (12, 24, 48, 96)
    # won on none of the seven benchmark cases but brain1, whose 16 gives the same seed slice.
    CLICK_BOX_HALF_SIZES = (4, 8, 16, 32, 64)
    # IoU estimates closer than this to the best one are a tie, won by the smallest box: a larger
    # box admits more of the surrounding tissue (on a small tumour the IoU head rated a 96-px box
    # 0.892, a 64-px box 0.878 and the 4-px box 0.880; their masks' Dice: 0.01, 0.03 and 0.85).
    CLICK_IOU_TIE = 0.02

    def __init__(self, checkpoint: Checkpoint, weights_path, device, box_margin: float = 3.0,
                 mask_prompt: bool = False, backend: str = "torch", precision: str = "fp32",
                 threads: Optional[int] = None, progress=None):
        from ..models.lite_medsam import EMBED_DIM, EMBEDDING_SIZE, BoxDecoder, load_lite_medsam

        self.name = checkpoint.name
        self.image_size = checkpoint.image_size
        self.device = device
        self.box_margin = box_margin  # model pixels added around the previous slice's mask box
        self.mask_prompt = mask_prompt
        self.model = load_lite_medsam(weights_path, device=device)
        self.backend = backend  # "torch" or "openvino" (resolved by `load_engine`)
        self.encode = self.model.encode
        self.decode_box = BoxDecoder(self.model)
        if backend == "openvino":
            from .backends import openvino_model

            note = None if progress is None else (lambda message: progress(0.0, message))
            options = dict(precision=precision, threads=threads, note=note)
            self.encode = openvino_model(
                self.model.image_encoder, torch.zeros(1, 3, self.image_size, self.image_size),
                f"{checkpoint.name}-encoder", checkpoint.sha256, **options)
            self.decode_box = openvino_model(
                self.decode_box, (torch.zeros(1, EMBED_DIM, EMBEDDING_SIZE, EMBEDDING_SIZE),
                                  torch.tensor([[0.0, 0.0, 64.0, 64.0]])),
                f"{checkpoint.name}-box-decoder", checkpoint.sha256, **options)
        elif backend != "torch":
            raise ValueError(f"LiteMedSAM runs on torch or openvino, not {backend!r}")

    def input_scale(self, frame_shape) -> tuple:
        scale = self.image_size / max(frame_shape)  # longest side to 256, aspect kept (then padded)
        return scale, scale

    # -- one slice ------------------------------------------------------------------------------
    def _prepare(self, frame: np.ndarray):
        from ..models.lite_medsam import preprocess_slice

        image, scale, new_size = preprocess_slice(frame)
        self.slices_encoded += 1
        return self.encode(image.to(self.device)), scale, new_size

    def _decode(self, frame_shape, embedding, new_size, box=None, points=None, mask_logits=None):
        from ..models.lite_medsam import postprocess_logits

        if points is None and mask_logits is None:
            low_res, iou = self.decode_box(embedding, box)
        else:
            low_res, iou = self.model.decode(embedding, box_256=box, points=points, mask_logits_256=mask_logits)
        return postprocess_logits(low_res, new_size, frame_shape), low_res, float(iou.flatten()[0])

    @torch.inference_mode()
    def segment_seed(self, frame: np.ndarray, seed: SlicePrompt):
        if seed.mask is not None:
            # A painted mask is the answer on its own slice (as SAM 2 does with mask inputs): no
            # need to encode the image, only the model frame's size for the carried logits.
            from ..models.lite_medsam import model_frame

            _, new_size = model_frame(frame.shape)
            logits = np.where(seed.mask, MASK_SEED_LOGIT, -MASK_SEED_LOGIT).astype(np.float32)
            return logits, (seed.mask, self._mask_to_low_res(seed.mask, new_size)), None
        embedding, scale, new_size = self._prepare(frame)
        if seed.box_xyxy is None:
            return self._carry(self._from_clicks(frame, embedding, scale, new_size, seed))
        box = self._box_256(seed.box_xyxy, scale, new_size, margin=0.0)
        points = None
        if len(seed.labels):
            points = (torch.as_tensor(seed.points_xy * scale, dtype=torch.float32)[None],
                      torch.as_tensor(seed.labels, dtype=torch.float32)[None])
        return self._carry(self._decode(frame.shape, embedding, new_size, box=box, points=points))

    @torch.inference_mode()
    def segment_next(self, frame: np.ndarray, carried):
        neighbour_mask, neighbour_low_res = carried
        embedding, scale, new_size = self._prepare(frame)
        rows, cols = np.nonzero(neighbour_mask)
        box = self._box_256(np.array([cols.min(), rows.min(), cols.max(), rows.max()], dtype=np.float64),
                            scale, new_size, margin=self.box_margin)
        mask_logits = neighbour_low_res if self.mask_prompt else None
        return self._carry(self._decode(frame.shape, embedding, new_size, box=box, mask_logits=mask_logits))

    def _from_clicks(self, frame: np.ndarray, embedding, scale: float, new_size, seed: SlicePrompt):
        """The decoded candidate box (squares around the clicks, the grown region's box) that the
        model rates highest (the smallest of those within `CLICK_IOU_TIE` of it) among those whose
        mask covers every positive click and no negative one. None does: an empty mask, which the
        propagation reports as nothing found at the prompt."""
        from ..core.region import grown_region_box

        positive = seed.points_xy[seed.labels == 1]
        negative = seed.points_xy[seed.labels == 0]
        low, high = positive.min(axis=0) * scale, positive.max(axis=0) * scale
        boxes = [self._box_256(np.concatenate([low - half, high + half]) / scale, scale, new_size, margin=0.0)
                 for half in self.CLICK_BOX_HALF_SIZES]
        region = grown_region_box(frame, positive)
        if region is not None:
            # the margin a carried mask's box gets: a box drawn tight on a region the growth
            # under-fills would miss the object's rim
            boxes.append(self._box_256(region, scale, new_size, margin=self.box_margin))
        fitting = []  # smallest box first
        for box in sorted(boxes, key=_area):
            decoded = self._decode(frame.shape, embedding, new_size, box=box)
            mask = decoded[0] > 0
            if _covers(mask, positive) and not _touches(mask, negative):
                fitting.append(decoded)
        if not fitting:
            logits, low_res, iou = decoded
            return np.minimum(logits, -1.0), low_res, iou
        best = max(candidate[2] for candidate in fitting)
        return next(candidate for candidate in fitting if candidate[2] >= best - self.CLICK_IOU_TIE)

    @staticmethod
    def _carry(decoded):
        """(logits, low-res logits, predicted IoU) -> (logits, the prompt a neighbour slice gets
        from them, the confidence: LiteMedSAM's IoU head, trained with the masks)."""
        logits, low_res, iou = decoded
        return logits, (logits > 0, low_res), iou

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


def _area(box_256: torch.Tensor) -> float:
    x0, y0, x1, y1 = box_256.flatten().tolist()
    return (x1 - x0) * (y1 - y0)


def _pixels(mask: np.ndarray, points_xy: np.ndarray) -> np.ndarray:
    rows = np.clip(np.rint(points_xy[:, 1]).astype(int), 0, mask.shape[0] - 1)
    cols = np.clip(np.rint(points_xy[:, 0]).astype(int), 0, mask.shape[1] - 1)
    return mask[rows, cols]


def _covers(mask: np.ndarray, points_xy: np.ndarray) -> bool:
    return bool(_pixels(mask, points_xy).all())


def _touches(mask: np.ndarray, points_xy: np.ndarray) -> bool:
    return bool(len(points_xy)) and bool(_pixels(mask, points_xy).any())

