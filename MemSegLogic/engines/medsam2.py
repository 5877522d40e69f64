"""MedSAM-2 (and any SAM 2 / SAM 2.1 checkpoint) on Meta's `sam2` package, fed slices in memory.

Stock `SAM2VideoPredictor.init_state` only reads JPEG folders or MP4 files; a volume would have
to be written to lossy JPEGs first. `MemSegVideoPredictor` builds the same inference state from
an in-memory stack instead, preprocessed exactly as the stock loader does (8-bit gray replicated
to RGB, Pillow bicubic resize to the model size, /255, ImageNet mean/std), so with the stock
memory it returns the very masks stock SAM 2 returns (tested in Testing/test_medsam2_faithfulness.py).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Dict

import numpy as np

from ..checkpoints import Checkpoint
from ..errors import CheckpointError
from ..progress import Monitor
from ..prompt import SlicePrompt
from .base import Engine, PassResult

try:  # sam2's video stack imports no torchvision, so this works with a CPU-only torch
    import torch
    from PIL import Image
    from sam2.sam2_video_predictor import SAM2VideoPredictor
except ImportError as _error:  # pragma: no cover - reported when an engine is requested
    SAM2VideoPredictor = object
    _IMPORT_ERROR = _error
else:
    _IMPORT_ERROR = None

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OBJECT_ID = 1


class SliceFrames:
    """Sequence of model-ready frames (3, S, S) made on demand from a uint8 stack (N, H, W).

    Lazy so a 500-slice volume never holds 500 x 12 MB of 1024-px float frames at once."""

    def __init__(self, frames: np.ndarray, image_size: int):
        if frames.dtype != np.uint8 or frames.ndim != 3:
            raise ValueError(f"expected a uint8 stack (N, H, W), got {frames.dtype} {frames.shape}")
        self.frames = frames
        self.image_size = image_size
        self._mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32)[:, None, None]
        self._std = torch.tensor(IMAGENET_STD, dtype=torch.float32)[:, None, None]

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int):
        size = (self.image_size, self.image_size)
        # Same operations, in the same precision, as sam2.utils.misc._load_img_as_tensor + the
        # normalisation in load_video_frames: identical inputs give identical outputs.
        pixels = np.asarray(Image.fromarray(np.ascontiguousarray(self.frames[index]), mode="L").resize(size))
        image = torch.from_numpy(pixels / 255.0).to(torch.float32).expand(3, -1, -1).clone()
        image -= self._mean
        image /= self._std
        return image


class MemSegVideoPredictor(SAM2VideoPredictor):
    """`SAM2VideoPredictor` with an inference state built from in-memory slices."""

    @torch.inference_mode()
    def init_state_from_frames(self, frames: SliceFrames, offload_state_to_cpu: bool = False) -> dict:
        """Same state layout as `SAM2VideoPredictor.init_state` (sam2 1.1.0), without the file loader.

        Unlike stock, frame 0 is not encoded up front: the seed is rarely on frame 0."""
        height, width = frames.frames.shape[1:]
        device = self.device
        return {
            "images": frames,
            "num_frames": len(frames),
            "offload_video_to_cpu": False,
            "offload_state_to_cpu": offload_state_to_cpu,
            "video_height": height,
            "video_width": width,
            "device": device,
            "storage_device": torch.device("cpu") if offload_state_to_cpu else device,
            "point_inputs_per_obj": {},
            "mask_inputs_per_obj": {},
            "cached_features": {},
            "constants": {},
            "obj_id_to_idx": OrderedDict(),
            "obj_idx_to_id": OrderedDict(),
            "obj_ids": [],
            "output_dict_per_obj": {},
            "temp_output_dict_per_obj": {},
            "frames_tracked_per_obj": {},
        }


def sam2_overrides(image_size: int) -> list:
    """Hydra overrides for a model run at ``image_size`` (stock configs are for 1024 px)."""
    feat = image_size // 16  # stride of the features memory attention works on
    return [
        f"++model.image_size={image_size}",
        f"++model.memory_attention.layer.self_attention.feat_sizes=[{feat},{feat}]",
        f"++model.memory_attention.layer.cross_attention.feat_sizes=[{feat},{feat}]",
    ]


def build_predictor(checkpoint: Checkpoint, weights_path, device) -> MemSegVideoPredictor:
    """Build the predictor from the checkpoint's sam2 config and load its weights strictly."""
    if _IMPORT_ERROR is not None:
        raise CheckpointError(
            f"the MedSAM-2 engine needs the sam2 package ({_IMPORT_ERROR}): "
            "SAM2_BUILD_CUDA=0 pip install --no-deps --no-build-isolation sam2==1.1.0") from None
    from sam2.build_sam import build_sam2_video_predictor

    overrides = [f"++model._target_={MemSegVideoPredictor.__module__}.{MemSegVideoPredictor.__qualname__}"]
    predictor = build_sam2_video_predictor(
        checkpoint.config, ckpt_path=None, device="cpu",
        hydra_overrides_extra=overrides + sam2_overrides(checkpoint.image_size))
    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or non-torch file
        raise CheckpointError(f"cannot read {weights_path} as a PyTorch checkpoint: {error}") from None
    state = state.get("model", state) if isinstance(state, dict) else state
    missing, unexpected = predictor.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{weights_path} does not fit {checkpoint.config}: {len(missing)} missing keys "
            f"{missing[:3]}, {len(unexpected)} unexpected keys {unexpected[:3]}")
    return predictor.to(device).eval()


class MedSAM2Engine(Engine):
    """One-axis propagation with SAM 2 memory, forward then backward from the seeds."""

    def __init__(self, checkpoint: Checkpoint, weights_path, device):
        from ..devices import autocast

        self.name = checkpoint.name
        self.image_size = checkpoint.image_size
        self.device = device
        self._autocast = lambda: autocast(device)
        self.predictor = build_predictor(checkpoint, weights_path, device)

    @torch.inference_mode()
    def propagate(self, frames: np.ndarray, seeds: Dict[int, SlicePrompt], monitor: Monitor) -> PassResult:
        predictor = self.predictor
        result = PassResult.empty(frames.shape)
        state = predictor.init_state_from_frames(SliceFrames(frames, self.image_size))
        with self._autocast():
            for frame_index, seed in sorted(seeds.items()):
                monitor.report(0.0, f"encoding seed slice {frame_index}")
                if seed.mask is not None:
                    predictor.add_new_mask(state, frame_index, OBJECT_ID, torch.from_numpy(seed.mask))
                else:
                    has_points = len(seed.labels) > 0
                    predictor.add_new_points_or_box(
                        state, frame_index, OBJECT_ID,
                        points=seed.points_xy.astype(np.float32) if has_points else None,
                        labels=seed.labels.astype(np.int32) if has_points else None,
                        box=None if seed.box_xyxy is None else seed.box_xyxy.astype(np.float32))
            # Forward from the first seed through the end, then backward from the last seed; each
            # direction reads the seeds' memories and its own past, as SAM 2 tracks a video.
            for reverse, start in ((False, min(seeds)), (True, max(seeds))):
                for frame_index, _, mask_logits in predictor.propagate_in_video(
                        state, start_frame_idx=start, reverse=reverse):
                    result.logits[frame_index] = mask_logits[0, 0].float().cpu().numpy()
                    result.visited[frame_index] = True
                    monitor.report(result.visited.mean(), f"slice {frame_index} ({'backward' if reverse else 'forward'})")
        return result
