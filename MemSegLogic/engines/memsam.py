"""MemSAM over a cine loop: one prompt on any frame, propagated forward and backward in time.

The per-frame algorithm is the reference's (`MemSAM.propagate`): the prompted frame is decoded
from its prompt, that mask's value seeds the memory, and every frame, the prompted one included,
is then decoded from memory alone. Choices where the reference has none or is a training-time
artefact (written down in README "MemSAM on cine loops"):

* **Both directions.** The reference always starts at frame 0. From a prompt on frame f we run
  f, f+1, ..., T-1 and f, f-1, ..., 0 from the same prompt step; frame f's output is the same in
  both (same memory, same state), frames before f come from the backward pass.
* **Memory cap.** The reference reads every earlier frame (fine for its 10-frame clips, cost and
  memory growing with every frame of a long loop). We read the prompted frame's successor memory
  (the first written frame) plus the most recent ones, ``memory_frames`` in all (default 16).
  A clip of up to 17 frames (the reference's 10-frame half cycles included) is therefore computed
  exactly as the reference does.
* **Deep updates** of the sensory memory: the reference draws them at random at test time too
  (p = 0.2). Default: the same draws from a fixed seed, so a result is reproducible;
  ``deep_update_every=k`` gives XMem's deterministic schedule instead.
* **Prompts**: points (positive/negative) and a box go through SAM's prompt encoder as in the
  reference's click; a painted mask skips the prompt decode and becomes the first memory value
  directly, as confident logits (the value encoder sees logits in the reference).
* **Frames** are grey (colour converted to luma by the caller), resized to 256 x 256 with
  bilinear interpolation and fed as 0..255 without normalisation, as in the reference; logits
  are resized back to the frame size before the 0.6 sigmoid threshold.

The ViT-B image encoder (most of a frame's time on a CPU) runs on PyTorch or OpenVINO
(`backends`, as LiteMedSAM's): converted at first use from these weights, cached beside them.
"""

from __future__ import annotations

import pathlib
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..core.prompt import SlicePrompt
from ..progress import Monitor
from ..runtime.checkpoints import MEMSAM_DEFAULT, resolve_memsam_weights
from ..runtime.devices import autocast, run_shrinking_batch
from .base import MASK_SEED_LOGIT
from .cache import engine_cache

DEFAULT_MEMORY_FRAMES = 16
ENCODE_CHUNK = 8  # frames per image-encoder batch: bounds peak memory, progress between chunks


class MemSAMSequenceEngine:
    """A loaded MemSAM model and how it runs over one cine."""

    def __init__(self, model, name: str, device, weights_verified: bool, backend: str = "torch",
                 image_encoder=None):
        self.model = model
        self.name = name
        self.device = device
        self.weights_verified = weights_verified
        self.backend = backend  # "torch" or "openvino": where the image encoder runs
        self.image_encoder = image_encoder or model.image_encoder
        self.image_size = model.config.image_size
        self.encode_batch = ENCODE_CHUNK  # halved for good if the device runs out of memory
        self.slices_encoded = 0

    @torch.inference_mode()
    def segment(self, frames: np.ndarray, seed: SlicePrompt, monitor: Optional[Monitor] = None,
                memory_frames: Optional[int] = DEFAULT_MEMORY_FRAMES, deep_update_every: Optional[int] = None,
                seed_rng: int = 1234) -> np.ndarray:
        """Grey frames (T, H, W), 0..255 -> logits (T, H, W) float32 at the frames' size (bf16
        autocast on CUDA, as the SAM 2 engine)."""
        monitor = monitor or Monitor()
        time_steps, height, width = frames.shape
        size = self.image_size
        batch = torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32)).unsqueeze(1).to(self.device)
        resized = F.interpolate(batch, (size, size), mode="bilinear", align_corners=False).clamp_(0, 255)
        resized = resized.repeat(1, 3, 1, 1)

        with autocast(self.device):
            return self._segment(resized, (height, width), seed, monitor, memory_frames, deep_update_every, seed_rng)

    def _segment(self, resized, frame_shape, seed, monitor, memory_frames, deep_update_every, seed_rng):
        from ..models.memsam import deep_update_schedule

        model, size, time_steps = self.model, self.image_size, len(resized)
        encoded = []
        encode = monitor.sub(0.0, 0.4)
        start = 0
        while start < time_steps:
            encode.report(start / time_steps, f"encoding frames {start + 1}-{min(start + self.encode_batch, time_steps)}"
                                              f" of {time_steps}")
            chunk, self.encode_batch = run_shrinking_batch(
                lambda batch: model.encode_frames(resized[start:start + batch].unsqueeze(0),
                                                  image_encoder=self.image_encoder), self.encode_batch,
                self.device, lambda batch: encode.report(start / time_steps, f"{self.device.type.upper()} memory is "
                                                                             f"short: encoding {batch} frames at a time"))
            encoded.append(chunk)
            start += chunk[0].shape[1]
        self.slices_encoded += time_steps
        embeddings = torch.cat([e[0] for e in encoded], dim=1)
        keys, shrinkage, selection = (torch.cat([e[i] for e in encoded], dim=2) for i in (1, 2, 3))

        f = seed.frame_index
        prompt_logits = self._prompt_logits(embeddings[:, f], seed, frame_shape)
        prompt_value, hidden = model.encode_value(resized[f:f + 1], embeddings[:, f], model.initial_hidden(1),
                                                  prompt_logits, deep_update=True)
        orders = [list(range(f, time_steps))] + ([list(range(f, -1, -1))] if f > 0 else [])
        total = sum(len(order) for order in orders) - (len(orders) - 1)
        done = [0]
        track = monitor.sub(0.4, 1.0)

        def on_frame(position, t):
            if position > 0 or done[0] == 0:
                track.report(done[0] / total, f"frame {done[0] + 1} of {total} (from frame {f})")
                done[0] += 1

        logits = torch.empty(time_steps, 1, size, size, device=self.device)
        for number, order in enumerate(orders):
            schedule = deep_update_schedule(len(order) - 1, deep_update_every, seed_rng)
            outputs = model.propagate(resized, embeddings, keys, shrinkage, selection, order, prompt_value,
                                      hidden, schedule, memory_frames=memory_frames, on_frame=on_frame)
            for position, (t, output) in enumerate(zip(order, outputs)):
                if number == 0 or position > 0:  # frame f: the forward pass' (identical) output
                    logits[t] = output[0]
        full = F.interpolate(logits.float(), frame_shape, mode="bilinear", align_corners=False)
        return full[:, 0].cpu().numpy()

    def _prompt_logits(self, embedding, seed: SlicePrompt, frame_shape) -> torch.Tensor:
        """Logits 1 x 1 x S x S of the prompted frame: SAM's decode of the points/box, or the
        painted mask as confident logits."""
        size = self.image_size
        height, width = frame_shape
        scale = np.array([size / width, size / height])
        if seed.mask is not None and seed.mask.any() and not len(seed.points_xy) and seed.box_xyxy is None:
            mask = torch.from_numpy(seed.mask.astype(np.float32))[None, None].to(self.device)
            mask = F.interpolate(mask, (size, size), mode="nearest")
            return (mask * 2.0 - 1.0) * MASK_SEED_LOGIT
        # pixel centres map to pixel centres of the 256 grid (SAM's encoder adds the 0.5 back)
        points = (np.asarray(seed.points_xy, dtype=np.float64).reshape(-1, 2) + 0.5) * scale - 0.5
        labels = np.asarray(seed.labels, dtype=np.float32).reshape(-1)
        box = None
        if seed.box_xyxy is not None:
            box = torch.tensor(((np.asarray(seed.box_xyxy, dtype=np.float64).reshape(2, 2) + 0.5) * scale - 0.5)
                               .reshape(1, 4), dtype=torch.float32, device=self.device)
        point_tensor = torch.tensor(points[None], dtype=torch.float32, device=self.device)
        label_tensor = torch.tensor(labels[None], dtype=torch.float32, device=self.device)
        low_res, _ = self.model.decode_prompt(embedding, point_tensor, label_tensor, box)
        return self.model.upsample_logits(low_res)


def load_memsam_engine(model=MEMSAM_DEFAULT, device=None, progress=None, backend: str = "torch",
                       precision: str = "fp32") -> MemSAMSequenceEngine:
    """A MemSAM engine from a registered name, ``"memsam"`` (the weights folder's memsam.pth) or
    a checkpoint path (the official layout; checked against ``<file>.sha256`` when present).
    ``backend``, ``precision``: where its image encoder runs (`backends.backend_options`)."""
    from ..errors import CheckpointError
    from ..models.memsam import load_memsam
    from .backends import backend_options

    device = torch.device(device or "cpu")
    path, verified = resolve_memsam_weights(model, progress=progress)
    name = model if isinstance(model, str) and not _is_path(model) else pathlib.Path(path).name
    note = None if progress is None else (lambda message: progress(0.0, message))
    options = backend_options(backend, precision, device, note)
    # A file rewritten since it was loaded (training) has another size or time: loaded afresh.
    stat = pathlib.Path(path).stat()
    key = ("memsam", str(pathlib.Path(path).resolve()), stat.st_size, stat.st_mtime_ns, str(device), name, verified,
           tuple(sorted(options.items())))

    def build() -> MemSAMSequenceEngine:
        try:
            network = load_memsam(path, device=device)
        except Exception as error:  # torch.load raises many types: text, truncated file, another model...
            reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            raise CheckpointError(f"{path} is not a loadable MemSAM checkpoint (expected a PyTorch file holding "
                                  f"MemSAM weights in the official layout; {reason})") from None
        image_encoder = None
        if options["backend"] == "openvino":
            from .backends import openvino_model

            size = network.config.image_size
            image_encoder = openvino_model(
                network.image_encoder, torch.zeros(1, 3, size, size), f"{pathlib.Path(name).stem}-encoder",
                _sha256(path, verified), precision=options["precision"], threads=options["threads"], note=note)
        return MemSAMSequenceEngine(network, name, device, verified, options["backend"], image_encoder)

    return engine_cache.get(key, build)


def _sha256(path, verified: bool) -> str:
    """The weights' SHA-256: the record they were just checked against, else hashed here."""
    from ..runtime.checkpoints import recorded_sha256, sha256_of

    return (recorded_sha256(path) if verified else None) or sha256_of(path)


def _is_path(model) -> bool:
    return isinstance(model, pathlib.Path) or str(model).endswith((".pth", ".pt")) or "/" in str(model)
