"""MedSAM-2 (and any SAM 2 / SAM 2.1 checkpoint) on Meta's `sam2` package, fed slices in memory.

Stock `SAM2VideoPredictor.init_state` only reads JPEG folders or MP4 files; a volume would have
to be written to lossy JPEGs first. `MemSegVideoPredictor` builds the same inference state from
an in-memory stack instead, preprocessed exactly as the stock loader does (8-bit gray replicated
to RGB, Pillow bicubic resize to the model size, /255, ImageNet mean/std), so with the stock
memory it returns the very masks stock SAM 2 returns (tested in Testing/test_medsam2_faithfulness.py).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Dict, Optional

import numpy as np

from ..core.prompt import SlicePrompt
from ..errors import CheckpointError
from ..progress import Monitor
from ..runtime.checkpoints import Checkpoint
from ..runtime.dependencies import installed_distributions, sam2_version_problem
from ..runtime.devices import autocast, run_shrinking_batch
from .base import Engine, PassResult, directions
from .memory_bank import BankEntry

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
# Frames encoded at once ahead of the memory loop, per device type. On the CPU batching buys
# nothing measurable and every frame encoded past an early stop is wasted.
DEFAULT_ENCODE_BATCH = {"cuda": 8, "mps": 4, "cpu": 1}


class SliceFrames:
    """Sequence of model-ready frames (3, S, S) made on demand from a uint8 stack (N, H, W).

    Lazy so a 500-slice volume never holds 500 x 12 MB of 1024-px float frames at once. `batch`
    makes several at once on the model's device: the resized 8-bit pixels travel (through pinned
    memory on CUDA: 1 byte per pixel instead of 12), and a 256-entry table per channel turns
    them into normalised floats there."""

    def __init__(self, frames: np.ndarray, image_size: int, device=None):
        if frames.dtype != np.uint8 or frames.ndim != 3:
            raise ValueError(f"expected a uint8 stack (N, H, W), got {frames.dtype} {frames.shape}")
        self.frames = frames
        self.image_size = image_size
        self.device = torch.device("cpu") if device is None else torch.device(device)
        # Same operations, in the same precision, as sam2.utils.misc._load_img_as_tensor + the
        # normalisation in load_video_frames (float64 /255, then float32 - mean, / std), made
        # once for each of the 256 grey values: identical inputs give identical outputs.
        grey = torch.from_numpy(np.arange(256) / 255.0).to(torch.float32)
        mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32)[:, None]
        std = torch.tensor(IMAGENET_STD, dtype=torch.float32)[:, None]
        self._table = ((grey[None, :] - mean) / std).to(self.device)  # (3, 256)

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int):
        return self.batch([index])[0]

    def batch(self, indices) -> "torch.Tensor":
        """Frames ``indices`` as a float32 (B, 3, S, S) tensor on the device."""
        size = (self.image_size, self.image_size)
        pixels = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(self.frames[i]), mode="L").resize(size))
                           for i in indices])
        upload = torch.from_numpy(pixels)
        if self.device.type == "cuda":
            upload = upload.pin_memory().to(self.device, non_blocking=True)
        else:
            upload = upload.to(self.device)
        return self._table[:, upload.long()].transpose(0, 1).contiguous()


class MemSegVideoPredictor(SAM2VideoPredictor):
    """`SAM2VideoPredictor` with an inference state built from in-memory slices, and a switchable
    memory: stock SAM 2 memory (``memory_bank`` None) or a `SelfSortingMemoryBank`.

    With a bank, every tracked frame offers its memory (with the decoder's IoU and a pooled image
    feature) to the bank, and memory attention reads the prompted frames plus memories drawn from
    the bank instead of the 6 most recent frames. Temporal position encodings: a drawn memory
    gets SAM 2's slot for its true slice distance to the current frame, capped at the farthest
    slot (num_maskmem - 1), as stock does for a memory that far back; memories from another pass
    (a shared bank: another axis or direction) get the farthest slot. Object pointers: those of
    the prompted frames (stock rule: only the ones already passed) and of the drawn memories,
    with the same distances for SAM 2.1's pointer position encoding.
    """

    memory_bank = None
    pass_id = 0
    direction = 0  # +1 / -1 while propagating forward / backward; 0 while seeds are added
    encode_batch = 1  # frames encoded at once ahead of the memory loop
    compiled = False  # image encoder compiled for one batch shape (batches are padded to it)
    slices_encoded = 0
    on_batch_shrunk = None  # called with the new batch size when memory forced a smaller one
    DESCRIPTOR_SIZE = 8  # pooled feature grid used to compare slices for resampling

    @torch.inference_mode()
    def init_state_from_frames(self, frames: SliceFrames, offload_state_to_cpu: bool = False) -> dict:
        """Same state layout as `SAM2VideoPredictor.init_state` (sam2 1.1.0), without the file loader.

        Unlike stock, frame 0 is not encoded up front: the seed is rarely on frame 0."""
        height, width = frames.frames.shape[1:]
        device = self.device
        self._descriptors = {}
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

    # -- encoding ahead of the memory loop -------------------------------------------------------
    def _get_image_feature(self, inference_state, frame_idx, batch_size):
        if frame_idx not in inference_state["cached_features"]:
            inference_state["cached_features"] = self._encode_ahead(inference_state, frame_idx)
        features = super()._get_image_feature(inference_state, frame_idx, batch_size)
        if self.memory_bank is not None:
            top = features[2][-1]  # (h*w, B, C) lowest-resolution backbone feature
            h, w = features[4][-1]
            grid = top[:, 0].permute(1, 0).reshape(1, -1, h, w).float()
            pooled = torch.nn.functional.adaptive_avg_pool2d(grid, self.DESCRIPTOR_SIZE)
            self._descriptors[frame_idx] = pooled.flatten()
        return features

    def _encode_ahead(self, inference_state, frame_idx) -> dict:
        """Features of ``frame_idx`` and of the next frames in the direction of travel, encoded
        as one batch (stock encodes one frame per memory step). Only this batch is kept, so GPU
        memory stays bounded whatever the volume's size; out of memory, the batch shrinks."""
        frames = inference_state["images"]
        step = self.direction

        def encode(batch):
            # a seed frame alone (the direction is not known yet), else this one and the next ones
            indices = [i for i in range(frame_idx, frame_idx + step * batch, step) if 0 <= i < len(frames)] \
                if step else [frame_idx]
            padded = indices + indices[-1:] * (batch - len(indices) if self.compiled else 0)  # one compiled shape
            images = frames.batch(padded)
            return indices, images, self.forward_image(images)

        def shrink(batch):
            self.encode_batch = batch
            if self.on_batch_shrunk is not None:
                self.on_batch_shrunk(batch)

        (indices, images, out), _ = run_shrinking_batch(encode, self.encode_batch, frames.device, shrink)
        self.slices_encoded += len(indices)
        return {index: (images[n:n + 1], {"backbone_fpn": [level[n:n + 1] for level in out["backbone_fpn"]],
                                          "vision_pos_enc": [pos[n:n + 1] for pos in out["vision_pos_enc"]]})
                for n, index in enumerate(indices)}

    def _forward_sam_heads(self, *args, **kwargs):
        outputs = super()._forward_sam_heads(*args, **kwargs)
        self._last_iou = float(outputs[2].max())  # with several masks, SAM 2 keeps the best-scored
        return outputs

    def _use_mask_as_output(self, *args, **kwargs):
        outputs = super()._use_mask_as_output(*args, **kwargs)
        self._last_iou = 1.0  # a given mask is taken as it is
        return outputs

    def _run_single_frame_inference(self, inference_state, output_dict, frame_idx, batch_size,
                                    is_init_cond_frame, point_inputs, mask_inputs, reverse, run_mem_encoder,
                                    prev_sam_mask_logits=None):
        out, masks = super()._run_single_frame_inference(
            inference_state, output_dict, frame_idx, batch_size, is_init_cond_frame, point_inputs,
            mask_inputs, reverse, run_mem_encoder, prev_sam_mask_logits)
        if self.memory_bank is not None and run_mem_encoder and out["maskmem_features"] is not None:
            self.memory_bank.offer(self._bank_entry(frame_idx, out, self._last_iou))
        return out, masks

    def _bank_entry(self, frame_idx, out, iou):
        return BankEntry((self.pass_id, frame_idx), out["maskmem_features"], out["maskmem_pos_enc"][-1],
                         out["obj_ptr"], iou, self._descriptors[frame_idx])

    # -- memory selection ----------------------------------------------------------------------
    def _prepare_memory_conditioned_features(self, frame_idx, is_init_cond_frame, current_vision_feats,
                                             current_vision_pos_embeds, feat_sizes, output_dict, num_frames,
                                             track_in_reverse=False):
        bank = self.memory_bank
        if bank is None or is_init_cond_frame or self.num_maskmem == 0:
            return super()._prepare_memory_conditioned_features(
                frame_idx, is_init_cond_frame, current_vision_feats, current_vision_pos_embeds,
                feat_sizes, output_dict, num_frames, track_in_reverse)
        cond_outputs = output_dict["cond_frame_outputs"]
        in_bank = set(bank.keys())
        for t, out in cond_outputs.items():  # prompted frames: always kept, and shared with other passes
            if (self.pass_id, t) not in in_bank and out["maskmem_features"] is not None:
                bank.pin(self._bank_entry(t, out, 1.0))
        drawn = bank.draw(self._descriptors[frame_idx], exclude=[(self.pass_id, t) for t in cond_outputs])

        farthest = self.num_maskmem - 1
        max_ptrs = min(num_frames, self.max_obj_ptrs_in_encoder)
        sign = -1 if track_in_reverse else 1

        def distance(t, cap):
            return min(abs(frame_idx - t), cap)

        memories = [(0, out["maskmem_features"], out["maskmem_pos_enc"][-1]) for out in cond_outputs.values()]
        pointers = [((frame_idx - t) * sign if self.use_signed_tpos_enc_to_obj_ptrs else abs(frame_idx - t),
                     out["obj_ptr"]) for t, out in cond_outputs.items()
                    if self.training or not self.only_obj_ptrs_in_the_past_for_eval
                    or (t >= frame_idx if track_in_reverse else t <= frame_idx)]
        for entry in drawn:
            same_pass = entry.pass_id == self.pass_id
            t_rel = distance(entry.frame, farthest) if same_pass else farthest
            memories.append((self.num_maskmem - t_rel, entry.memory, entry.position))
            if self.use_obj_ptrs_in_encoder and entry.pointer is not None:
                gap = distance(entry.frame, max_ptrs - 1) if same_pass else max_ptrs - 1
                pointers.append((gap * sign if self.use_signed_tpos_enc_to_obj_ptrs else gap, entry.pointer))
        return self._attend(current_vision_feats, current_vision_pos_embeds, feat_sizes, memories,
                            pointers[:max_ptrs] if self.use_obj_ptrs_in_encoder else [], max_ptrs)

    def _attend(self, current_vision_feats, current_vision_pos_embeds, feat_sizes, memories, pointers, max_ptrs):
        """Memory attention over (t_pos, features, position) memories and (distance, pointer)
        object pointers: the token layout and encodings of `SAM2Base._prepare_memory_conditioned_features`."""
        from sam2.modeling.sam2_utils import get_1d_sine_pe

        batch, channels = current_vision_feats[-1].size(1), self.hidden_dim
        height, width = feat_sizes[-1]
        device = current_vision_feats[-1].device
        tokens, positions = [], []
        for t_pos, features, position in memories:
            tokens.append(features.to(device).flatten(2).permute(2, 0, 1))
            positions.append(position.to(device).flatten(2).permute(2, 0, 1)
                             + self.maskmem_tpos_enc[self.num_maskmem - t_pos - 1])
        pointer_tokens = 0
        if pointers:
            distances, vectors = zip(*pointers)
            object_pointers = torch.stack(vectors, dim=0)
            if self.add_tpos_enc_to_obj_ptrs:
                dim = channels if self.proj_tpos_enc_in_obj_ptrs else self.mem_dim
                encoding = get_1d_sine_pe(torch.tensor(distances, device=device) / (max_ptrs - 1), dim=dim)
                pointer_position = self.obj_ptr_tpos_proj(encoding).unsqueeze(1).expand(-1, batch, self.mem_dim)
            else:
                pointer_position = object_pointers.new_zeros(len(distances), batch, self.mem_dim)
            if self.mem_dim < channels:  # a 256-d pointer becomes 256 / 64 tokens, as in stock
                object_pointers = object_pointers.reshape(-1, batch, channels // self.mem_dim, self.mem_dim)
                object_pointers = object_pointers.permute(0, 2, 1, 3).flatten(0, 1)
                pointer_position = pointer_position.repeat_interleave(channels // self.mem_dim, dim=0)
            tokens.append(object_pointers)
            positions.append(pointer_position)
            pointer_tokens = object_pointers.shape[0]
        attended = self.memory_attention(
            curr=current_vision_feats, curr_pos=current_vision_pos_embeds, memory=torch.cat(tokens, dim=0),
            memory_pos=torch.cat(positions, dim=0), num_obj_ptr_tokens=pointer_tokens)
        return attended.permute(1, 2, 0).view(batch, channels, height, width)


def sam2_overrides(image_size: int) -> list:
    """Hydra overrides for a model run at ``image_size`` (stock configs are for 1024 px)."""
    feat = image_size // 16  # stride of the features memory attention works on
    return [
        f"++model.image_size={image_size}",
        f"++model.memory_attention.layer.self_attention.feat_sizes=[{feat},{feat}]",
        f"++model.memory_attention.layer.cross_attention.feat_sizes=[{feat},{feat}]",
    ]


def build_predictor(checkpoint: Checkpoint, weights_path, device, compile_encoder: bool = False) -> MemSegVideoPredictor:
    """Build the predictor from the checkpoint's sam2 config and load its weights strictly.
    ``compile_encoder``: sam2's own switch, torch.compile of the image encoder (max-autotune:
    minutes of compiling on the first call, then faster encoding)."""
    if _IMPORT_ERROR is not None:
        raise CheckpointError(
            f"the MedSAM-2 engine needs the sam2 package ({_IMPORT_ERROR}): "
            "SAM2_BUILD_CUDA=0 pip install --no-deps --no-build-isolation sam2==1.1.0") from None
    problem = sam2_version_problem(installed_distributions(["sam2"]).get("sam2"))
    if problem is not None:
        raise CheckpointError(problem)
    from sam2.build_sam import build_sam2_video_predictor

    overrides = [f"++model._target_={MemSegVideoPredictor.__module__}.{MemSegVideoPredictor.__qualname__}"]
    if compile_encoder:
        overrides.append("++model.compile_image_encoder=true")
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
    predictor.compiled = compile_encoder
    return predictor.to(device).eval()


class MedSAM2Engine(Engine):
    """One-axis propagation with SAM 2 memory, forward then backward from the seeds.

    ``encode_batch`` frames are encoded at once ahead of the memory loop (None: the device's
    default, `DEFAULT_ENCODE_BATCH`); ``compile_encoder`` compiles the image encoder."""

    def __init__(self, checkpoint: Checkpoint, weights_path, device, encode_batch: Optional[int] = None,
                 compile_encoder: bool = False):
        self.name = checkpoint.name
        self.image_size = checkpoint.image_size
        self.device = device
        self.predictor = build_predictor(checkpoint, weights_path, device, compile_encoder)
        self.predictor.encode_batch = encode_batch or DEFAULT_ENCODE_BATCH.get(device.type, 1)
        if self.predictor.encode_batch < 1:
            raise ValueError(f"encode_batch must be at least 1, got {encode_batch}")

    @property
    def slices_encoded(self) -> int:
        """Frames the image encoder has seen since the engine was loaded."""
        return self.predictor.slices_encoded

    @torch.inference_mode()
    def propagate(self, frames: np.ndarray, seeds: Dict[int, SlicePrompt], monitor: Monitor,
                  absent_slices: Optional[int] = None, memory=None) -> PassResult:
        predictor = self.predictor
        result = PassResult.empty(frames.shape)
        state = predictor.init_state_from_frames(SliceFrames(frames, self.image_size, self.device),
                                                 offload_state_to_cpu=self._offload_state(frames))
        predictor.pass_id = memory.new_pass_id() if memory is not None else 0
        predictor.on_batch_shrunk = lambda batch: monitor.report(
            result.visited.mean(), f"{self.device.type.upper()} memory is short: encoding {batch} slices at a time")
        try:
            with autocast(self.device):
                predictor.direction = 0
                for frame_index, seed in sorted(seeds.items()):
                    monitor.report(0.0, f"encoding seed slice {frame_index}")
                    self._add_seed(state, frame_index, seed)
                # Forward from the first seed through the end, then backward from the last seed;
                # each direction reads the seeds' memories and its own past, as SAM 2 tracks a video.
                for step, start, _, stop_from in directions(seeds, len(frames)):
                    predictor.memory_bank = memory.bank_for_direction() if memory is not None else None
                    predictor.direction = step
                    counter = self.absence_counter(absent_slices)
                    for frame_index, _, mask_logits in predictor.propagate_in_video(
                            state, start_frame_idx=start, reverse=step < 0):
                        logits = mask_logits[0, 0].float().cpu().numpy()
                        if not (result.visited[frame_index] and frame_index in seeds):  # each direction yields its seed
                            monitor.frame_done(frame_index, logits)
                        result.logits[frame_index] = logits
                        result.visited[frame_index] = True
                        monitor.report(result.visited.mean(),
                                       f"slice {frame_index} ({'backward' if step < 0 else 'forward'})")
                        if (frame_index - stop_from) * step > 0 and counter.should_stop(
                                self._object_present(state, frame_index, logits)):
                            break
        finally:
            predictor.memory_bank = None
            predictor.on_batch_shrunk = None
        return result

    def _offload_state(self, frames: np.ndarray) -> bool:
        """Keep the per-frame memories of this pass in CPU memory when, on the GPU, they would
        take more than a quarter of its free memory (a very long stack on a small GPU)."""
        if self.device.type != "cuda":
            return False
        free, _ = torch.cuda.mem_get_info(self.device)
        feature = self.image_size // 16
        per_frame = self.predictor.mem_dim * feature * feature * 2 + (self.image_size // 4) ** 2 * 4
        return len(frames) * per_frame > free / 4

    def _add_seed(self, state, frame_index: int, seed: SlicePrompt) -> None:
        if seed.mask is not None:
            self.predictor.add_new_mask(state, frame_index, OBJECT_ID, torch.from_numpy(seed.mask))
            return
        has_points = len(seed.labels) > 0
        self.predictor.add_new_points_or_box(
            state, frame_index, OBJECT_ID,
            points=seed.points_xy.astype(np.float32) if has_points else None,
            labels=seed.labels.astype(np.int32) if has_points else None,
            box=None if seed.box_xyxy is None else seed.box_xyxy.astype(np.float32))

    @staticmethod
    def _object_present(state, frame_index: int, logits: np.ndarray) -> bool:
        """Absent = SAM 2's object score says "no object" and the mask is empty."""
        out = state["output_dict_per_obj"][0]["non_cond_frame_outputs"].get(frame_index)
        score_says_present = out is None or float(out["object_score_logits"].max()) >= 0
        return score_says_present or bool((logits > 0).any())
