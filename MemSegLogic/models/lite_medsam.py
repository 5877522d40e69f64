"""LiteMedSAM: TinyViT image encoder + SAM prompt encoder + SAM mask decoder, at 256x256.

LiteMedSAM (Ma et al., MedSAM-Lite, CVPR 2024 efficient-MedSAM baseline) distils MedSAM into
MobileSAM's layout with a 256x256 input. Inference per 2D slice:

1. ``preprocess_slice``: grey slice -> 3 channels, longest side resized to 256, per-slice
   min-max to [0, 1], zero padding to 256x256 at the bottom/right.
2. ``LiteMedSAM.encode``: image -> 256x64x64 embedding (the expensive part; cache it per slice).
3. ``LiteMedSAM.decode``: embedding + box / points / previous low-res logits -> 256x256 logits.
4. ``postprocess_logits``: crop away the padding, resize to the slice size; threshold at 0.

Prompts are in the 256 frame: multiply original-pixel (x, y) coordinates by ``scale`` from
``preprocess_slice`` (see ``to_256_frame``). Boxes are ``[x_min, y_min, x_max, y_max]``.

The encoder is MemSeg's own TinyViT (``tiny_vit.py``); the prompt encoder and mask decoder are
Meta's, imported from ``segment_anything.modeling`` without its torchvision-dependent package
``__init__`` (``sam_components.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .sam_components import sam_modeling
from .tiny_vit import TinyViT, build_lite_medsam_encoder

__all__ = [
    "IMAGE_SIZE",
    "EMBEDDING_SIZE",
    "LiteMedSAM",
    "BoxDecoder",
    "build_lite_medsam",
    "load_lite_medsam",
    "model_frame",
    "preprocess_slice",
    "postprocess_logits",
    "to_256_frame",
]

IMAGE_SIZE = 256  # model input side (pixels)
EMBEDDING_SIZE = 64  # image-embedding grid side; decoder logits are 4x this = 256
EMBED_DIM = 256



class LiteMedSAM(nn.Module):
    """The three LiteMedSAM sub-networks plus per-slice ``encode`` / ``decode`` helpers.

    Attribute names (``image_encoder``, ``prompt_encoder``, ``mask_decoder``) are the
    checkpoint's top-level key prefixes.
    """

    def __init__(self, image_encoder: TinyViT, prompt_encoder: nn.Module, mask_decoder: nn.Module) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.no_grad()
    def encode(self, image_256: Tensor) -> Tensor:
        """Image batch (B, 3, 256, 256) in [0, 1] -> embeddings (B, 256, 64, 64)."""
        if image_256.ndim != 4 or tuple(image_256.shape[1:]) != (3, IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(f"expected (B, 3, {IMAGE_SIZE}, {IMAGE_SIZE}), got {tuple(image_256.shape)}")
        return self.image_encoder(image_256.to(self.device, torch.float32))

    @torch.no_grad()
    def decode(
        self,
        embedding: Tensor,
        box_256: Optional[Tensor] = None,
        points: Optional[Tuple[Tensor, Tensor]] = None,
        mask_logits_256: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Tensor]:
        """Predict one mask for one slice from its embedding and prompts (single-mask output).

        Args:
            embedding: (1, 256, 64, 64) from ``encode``.
            box_256: (1, 4) ``[x0, y0, x1, y1]`` in the 256 frame.
            points: ``(coords (1, N, 2) as (x, y) in the 256 frame, labels (1, N))`` with label
                1 = foreground, 0 = background.
            mask_logits_256: (1, 1, 256, 256) low-res logits (e.g. a previous ``decode`` output
                or a neighbouring slice's) used as SAM's dense mask prompt.

        Returns:
            ``(low_res_logits (1, 1, 256, 256), iou_prediction (1, 1))``.
        """
        if box_256 is None and points is None and mask_logits_256 is None:
            raise ValueError("decode needs at least one prompt (box, points or mask logits)")
        if embedding.ndim != 4 or embedding.shape[0] != 1:
            # segment_anything's MaskDecoder repeats the image embedding once per prompt, so a
            # batch of embeddings would be silently mixed up; keep this API one slice at a time.
            raise ValueError(f"expected a single embedding (1, 256, 64, 64), got {tuple(embedding.shape)}")
        device = embedding.device

        boxes = None
        if box_256 is not None:
            boxes = torch.as_tensor(box_256, dtype=torch.float32, device=device).reshape(1, 4)
        point_prompt = None
        if points is not None:
            coords, labels = points
            coords = torch.as_tensor(coords, dtype=torch.float32, device=device).reshape(1, -1, 2)
            # Float labels: SAM concatenates a float -1 "padding" label when no box is given.
            labels = torch.as_tensor(labels, dtype=torch.float32, device=device).reshape(1, -1)
            if coords.shape[1] != labels.shape[1]:
                raise ValueError("points: coords and labels disagree on the number of points")
            point_prompt = (coords, labels)
        masks = None
        if mask_logits_256 is not None:
            masks = torch.as_tensor(mask_logits_256, dtype=torch.float32, device=device)
            expected = (1, 1, 4 * EMBEDDING_SIZE, 4 * EMBEDDING_SIZE)
            if tuple(masks.shape) != expected:
                raise ValueError(f"mask_logits_256 must be {expected}, got {tuple(masks.shape)}")

        sparse, dense = self.prompt_encoder(points=point_prompt, boxes=boxes, masks=masks)
        low_res_logits, iou = self.mask_decoder(
            image_embeddings=embedding,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        return low_res_logits, iou


class BoxDecoder(nn.Module):
    """``LiteMedSAM.decode`` with one box as the only prompt, as a module of two tensors in and two
    out: what a runtime converts (every carried slice and every candidate box around a click is
    decoded this way)."""

    def __init__(self, model: LiteMedSAM) -> None:
        super().__init__()
        self.model = model

    def forward(self, embedding: Tensor, box_256: Tensor) -> Tuple[Tensor, Tensor]:
        return self.model.decode(embedding, box_256=box_256)


def build_lite_medsam() -> LiteMedSAM:
    """Randomly initialised LiteMedSAM with the published architecture (~9.79 M parameters)."""
    modeling = sam_modeling()
    prompt_encoder = modeling.PromptEncoder(
        embed_dim=EMBED_DIM,
        image_embedding_size=(EMBEDDING_SIZE, EMBEDDING_SIZE),
        input_image_size=(IMAGE_SIZE, IMAGE_SIZE),
        mask_in_chans=16,
    )
    mask_decoder = modeling.MaskDecoder(
        num_multimask_outputs=3,
        transformer=modeling.TwoWayTransformer(depth=2, embedding_dim=EMBED_DIM, mlp_dim=2048, num_heads=8),
        transformer_dim=EMBED_DIM,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    )
    return LiteMedSAM(build_lite_medsam_encoder(), prompt_encoder, mask_decoder)


def load_lite_medsam(path: Union[str, Path], device: Union[str, torch.device] = "cpu") -> LiteMedSAM:
    """Build LiteMedSAM, load weights strictly, move to ``device`` and switch to eval mode.

    Args:
        path: checkpoint file (the verified packaged one: ``MemSegLogic.runtime.checkpoints.ensure_checkpoint(
            "medsam-lite")``). A plain state dict is expected; a ``{"model": state_dict}`` training checkpoint (as written
            by the LiteMedSAM fine-tuning scripts) is unwrapped.
        device: torch device for the model.
    """
    # weights_only=True: never unpickle arbitrary objects from a weights file.
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    model = build_lite_medsam()
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


def model_frame(shape) -> Tuple[float, Tuple[int, int]]:
    """(scale, (new_h, new_w)): a slice of ``shape`` resized so its longest side is 256."""
    h, w = shape
    scale = IMAGE_SIZE / max(h, w)
    return scale, (int(h * scale + 0.5), int(w * scale + 0.5))  # same rounding as upstream


def preprocess_slice(slice_uint8_2d: np.ndarray) -> Tuple[Tensor, float, Tuple[int, int]]:
    """Turn one grey-level slice (H, W) into the model input, following upstream LiteMedSAM.

    Upstream (``CVPR24_LiteMedSAM_infer.py``) does: repeat to 3 channels, ``cv2.resize`` with
    INTER_AREA so the longest side is 256 (uint8 result), min-max normalise with the range
    clipped at 1e-8, zero-pad bottom/right to 256x256. We avoid OpenCV and resize with
    ``torch.nn.functional.interpolate(mode="bilinear", antialias=True)`` on float32, which
    averages over the source footprint like INTER_AREA when shrinking; for uint8 input the
    result is rounded back to integers to mirror upstream's uint8 intermediate.

    The input should already be windowed to 0..255 (CT window / MR percentile clip): that is
    the intensity range MedSAM's training data used.

    Returns:
        ``(image (1, 3, 256, 256) float32, scale, (new_h, new_w))`` where ``scale`` maps
        original pixel coordinates to the 256 frame and ``(new_h, new_w)`` is the unpadded
        region of the model input.
    """
    image = np.asarray(slice_uint8_2d)
    if image.ndim != 2:
        raise ValueError(f"expected a 2D slice, got shape {image.shape}")
    h, w = image.shape
    if h == 0 or w == 0:
        raise ValueError("empty slice")
    scale, (new_h, new_w) = model_frame((h, w))

    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    if (new_h, new_w) != (h, w):
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
        if image.dtype == np.uint8:
            x = x.round().clamp_(0, 255)
    lo, hi = x.min(), x.max()
    x = (x - lo) / torch.clamp(hi - lo, min=1e-8)
    # Pad after normalising so the padding is exactly 0, like upstream.
    x = F.pad(x, (0, IMAGE_SIZE - new_w, 0, IMAGE_SIZE - new_h), value=0.0)
    # Grey -> 3 identical channels (the encoder was trained on RGB-replicated slices).
    return x.expand(1, 3, IMAGE_SIZE, IMAGE_SIZE).contiguous(), scale, (new_h, new_w)


def to_256_frame(coords_xy: Union[np.ndarray, Tensor, list, tuple], scale: float) -> Tensor:
    """Scale original-pixel (x, y) coordinates (a box or points) into the 256 model frame."""
    return torch.as_tensor(np.asarray(coords_xy, dtype=np.float32) * np.float32(scale))


def postprocess_logits(
    low_res_logits: Tensor, new_size: Tuple[int, int], original_size: Tuple[int, int]
) -> np.ndarray:
    """Map decoder logits (1, 1, h, w) back to the slice: float32 logits (H, W); mask = logits > 0.

    Upsamples to 256x256 if needed (a no-op for LiteMedSAM, whose decoder already outputs
    256x256), crops the unpadded ``new_size`` region, then resizes bilinearly to
    ``original_size`` - the same order of operations as upstream ``postprocess_masks``.
    """
    logits = low_res_logits.detach().to(torch.float32)
    if logits.ndim == 2:
        logits = logits[None, None]
    elif logits.ndim == 3:
        logits = logits[None]
    if tuple(logits.shape[-2:]) != (IMAGE_SIZE, IMAGE_SIZE):
        logits = F.interpolate(logits, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    new_h, new_w = new_size
    logits = logits[..., :new_h, :new_w]
    logits = F.interpolate(logits, size=tuple(original_size), mode="bilinear", align_corners=False)
    return logits[0, 0].cpu().numpy().astype(np.float32, copy=False)
