"""MemSAM (Deng et al., CVPR 2024): SAM with a SAMUS encoder and an XMem-style memory, for
echocardiography clips. Our own implementation of the official model.

Reference (MIT licensed), ``dengxl0520/MemSAM``:

* ``models/segment_anything_memsam/modeling/memsam.py`` (``MemSAM``, ``_forward_with_memory``)
  -> ``MemSAM`` below (``forward_clip`` is the per-clip algorithm, split into the step methods
  ``encode_frames``/``decode_prompt``/``read_memory``/``decode_from_memory``/``encode_value``);
* ``models/segment_anything_memsam/build_memsam.py`` (``_build_memsam``, ``load_from2``)
  -> ``build_memsam``, ``init_from_sam``; the checkpoint handling of ``test_video.py``
  -> ``load_memsam``.

The prompt encoder and mask decoder are Meta's ``segment_anything.modeling`` classes, built for a
256 px input and a 32 x 32 embedding. They are numerically the reference's copies, with one API
difference: where the reference passes ``sparse_prompt_embeddings=None`` (frames decoded from
memory), we pass an empty B x 0 x 256 tensor, which gives the same tokens. Meta's decoder
repeats the image embedding once per prompt, so it is always called with batch 1.

Input frames are float 0..255 with 3 (or 1, repeated) channels at 256 x 256, *not*
normalised, as in the reference's video path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..sam_components import sam_modeling
from .image_encoder import EMBEDDING_GRID, MemSAMImageEncoder
from .memory import MemSAMMemory

__all__ = [
    "MemSAMConfig",
    "MemSAM",
    "MemoryDecodeResult",
    "SamInitReport",
    "build_memsam",
    "deep_update_schedule",
    "load_memsam",
    "official_state_dict",
    "save_memsam",
    "init_from_sam",
    "MASK_THRESHOLD",
]

# The reference evaluation binarises sigmoid(logits) > 0.6 (utils/evaluation.py).
MASK_THRESHOLD = 0.6
_IMAGE_SIZE = 256
_KEY_ENCODER_PREFIX = "memory.key_encoder."  # duplicate of image_encoder.* in official files
_ENCODER_PREFIX = "image_encoder."
_DATA_PARALLEL_PREFIX = "module."
# Reference freezing rule (memsam.py __init__): in the image encoder only names containing one of
# these, plus the relative-position tables of the global-attention blocks, are trained.
_TRAINABLE_ENCODER_MARKERS = ("cnn_embed", "post_pos_embed", "Adapter")
_REL_POS_KEY = re.compile(r"^image_encoder\.blocks\.(\d+)\.attn\.rel_pos_[hw]$")


@dataclass(frozen=True)
class MemSAMConfig:
    """Hyper-parameters of MemSAM. The defaults are the official ViT-B build (build_memsam.py)."""

    image_size: int = 256
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    global_attn_indexes: Tuple[int, ...] = (2, 5, 8, 11)
    window_size: int = 14
    out_chans: int = 256  # embedding channels = SAM prompt/decoder width
    key_dim: int = 64
    value_dim: int = 256
    hidden_dim: int = 64
    reinforce: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "global_attn_indexes", tuple(int(i) for i in self.global_attn_indexes))

    @classmethod
    def tiny(cls) -> "MemSAMConfig":
        """A small encoder with the same parameter names, for fast tests (not a trained model).

        Only the ViT width/depth/heads/windows shrink; the memory keeps the official widths.
        """
        return cls(embed_dim=48, depth=4, num_heads=2, global_attn_indexes=(1, 3), window_size=4)

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Tensor]) -> "MemSAMConfig":
        """Infer the configuration from a (normalised, ``image_encoder.*``-keyed) state dict."""
        try:
            embed_dim = state_dict["image_encoder.patch_embed.proj.weight"].shape[0]
            block_ids = {int(m.group(1)) for k in state_dict if (m := re.match(r"image_encoder\.blocks\.(\d+)\.", k))}
            depth = max(block_ids) + 1
            global_ids = tuple(
                sorted(i for i in block_ids if f"image_encoder.blocks.{i}.Space_Adapter.q.weight" in state_dict)
            )
            windowed = [i for i in sorted(block_ids) if i not in global_ids]
            head_dim = state_dict[f"image_encoder.blocks.{depth - 1}.attn.rel_pos_h"].shape[1]
            window = (
                (state_dict[f"image_encoder.blocks.{windowed[0]}.attn.rel_pos_h"].shape[0] + 1) // 2
                if windowed
                else cls.window_size
            )
            out_chans = state_dict["image_encoder.neck.0.weight"].shape[0]
            key_dim = state_dict["memory.key_proj.key_proj.weight"].shape[0]
            value_dim = state_dict["memory.value_encoder.fuser.block2.conv2.weight"].shape[0]
            hidden_dim = state_dict["memory.decoder.hidden_update.transform.weight"].shape[0] // 3
        except (KeyError, ValueError) as exc:
            raise ValueError(
                f"Cannot infer the MemSAM configuration from this state dict ({type(exc).__name__}: {exc}); "
                "is it a MemSAM checkpoint? Pass config= explicitly otherwise."
            ) from exc
        return cls(
            embed_dim=embed_dim,
            depth=depth,
            num_heads=embed_dim // head_dim,
            global_attn_indexes=global_ids,
            window_size=window,
            out_chans=out_chans,
            key_dim=key_dim,
            value_dim=value_dim,
            hidden_dim=hidden_dim,
            reinforce="memory.memory_reinforce.conv_wxh.weight" in state_dict,
        )

    @property
    def embedding_size(self) -> int:
        return EMBEDDING_GRID


class MemoryDecodeResult(NamedTuple):
    low_res_logits: Tensor  # B x 1 x 128 x 128
    iou: Tensor  # B x 1
    hidden: Tensor  # B x hidden_dim x 32 x 32, the updated sensory state
    memory_embedding: Tensor  # B x 256 x 32 x 32, the dense prompt that was used


@dataclass
class SamInitReport:
    """What ``init_from_sam`` did. Keys are MemSAM state-dict names."""

    loaded: List[str]  # copied from the SAM file (including the interpolated ones)
    interpolated: List[str]  # global-attention rel-pos tables resized to 2*32-1 rows
    not_set: List[str]  # MemSAM entries SAM has no weights for (adapters, CNN branch, memory)
    unused: List[str]  # SAM entries with no MemSAM counterpart


class MemSAM(nn.Module):
    """MemSAM with ``image_encoder``, ``prompt_encoder``, ``mask_decoder`` and ``memory``.

    The reference additionally registers the image encoder as ``memory.key_encoder`` (one
    module under two names, hence 256 duplicated state-dict entries); we register it once.
    """

    def __init__(self, config: MemSAMConfig = MemSAMConfig()) -> None:
        super().__init__()
        if config.image_size != _IMAGE_SIZE:
            # The value encoder's ResNet-18 stops at 1/8 resolution, which must equal the
            # encoder's fixed 32 x 32 grid; as in the reference, only 256 px works.
            raise ValueError(f"MemSAM needs image_size {_IMAGE_SIZE}; got {config.image_size}")
        modeling = sam_modeling()
        self.config = config
        grid = EMBEDDING_GRID
        self.image_encoder = MemSAMImageEncoder(
            image_size=config.image_size,
            embed_dim=config.embed_dim,
            depth=config.depth,
            num_heads=config.num_heads,
            global_attn_indexes=config.global_attn_indexes,
            window_size=config.window_size,
            out_chans=config.out_chans,
        )
        self.prompt_encoder = modeling.PromptEncoder(
            embed_dim=config.out_chans,
            image_embedding_size=(grid, grid),
            input_image_size=(config.image_size, config.image_size),
            mask_in_chans=16,
        )
        self.mask_decoder = modeling.MaskDecoder(
            num_multimask_outputs=3,
            transformer=modeling.TwoWayTransformer(
                depth=2, embedding_dim=config.out_chans, mlp_dim=2048, num_heads=8
            ),
            transformer_dim=config.out_chans,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        )
        self.memory = MemSAMMemory(
            embed_dim=config.out_chans,
            key_dim=config.key_dim,
            value_dim=config.value_dim,
            hidden_dim=config.hidden_dim,
            reinforce=config.reinforce,
        )
        # Like the reference constructor: requires_grad follows the training recipe.
        self.freeze_for_training()

    # --- training recipe ---------------------------------------------------------------------
    def is_trainable_name(self, name: str) -> bool:
        """The reference's freezing rule for a parameter name.

        Trained: the whole memory; in the image encoder the CNN branch, the position-embedding
        shrink, every ``*Adapter*`` and the rel-pos tables of the global-attention blocks.
        Frozen: everything else, incl. the prompt encoder and mask decoder. (The reference tests
        the substrings "2/5/8/11.attn.rel_pos", i.e. ViT-B's global blocks; we use the
        configured global blocks, which is the same set for ViT-B.)
        """
        if name.startswith("memory."):
            return True
        if not name.startswith(_ENCODER_PREFIX):
            return False
        if any(marker in name for marker in _TRAINABLE_ENCODER_MARKERS):
            return True
        match = _REL_POS_KEY.match(name)
        return bool(match) and int(match.group(1)) in self.config.global_attn_indexes

    def trainable_parameters(self) -> Iterator[Tuple[str, nn.Parameter]]:
        """(name, parameter) pairs the reference trains, whatever requires_grad currently says."""
        return ((n, p) for n, p in self.named_parameters() if self.is_trainable_name(n))

    def freeze_for_training(self) -> None:
        """Set requires_grad according to the reference's rule (see ``is_trainable_name``)."""
        for name, parameter in self.named_parameters():
            parameter.requires_grad_(self.is_trainable_name(name))

    # --- per-clip steps ------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.memory.key_proj.key_proj.weight.device

    def _check_frames(self, frames: Tensor) -> None:
        size = self.config.image_size
        if frames.shape[-2:] != (size, size) or frames.shape[-3] not in (1, 3):
            raise ValueError(
                f"frames must be ... x 3 (or 1) x {size} x {size} float 0..255; got shape {tuple(frames.shape)}"
            )

    def encode_frames(
        self, frames: Tensor, chunk_size: Optional[int] = None, image_encoder: Optional[Callable[[Tensor], Tensor]] = None
    ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """Frames B x T x 3 x S x S (float 0..255) -> (embeddings, keys, shrinkage, selection).

        embeddings: B x T x 256 x 32 x 32; keys: B x 64 x T x 32 x 32; shrinkage: B x 1 x T x ...;
        selection: B x 64 x T x ... (the reference's ``Mem.encode_key`` layout). The reference
        encodes all frames in one batch; ``chunk_size`` bounds peak memory with the same result
        (every layer is per-sample). ``image_encoder``: what runs ``self.image_encoder``'s
        computation (e.g. its OpenVINO build, `MemSegLogic.engines.backends`); default the module.
        """
        image_encoder = image_encoder or self.image_encoder
        if frames.dim() != 5:
            raise ValueError(f"frames must be B x T x C x H x W; got shape {tuple(frames.shape)}")
        self._check_frames(frames)
        batch, time = frames.shape[:2]
        flat = frames.flatten(0, 1).to(self.device, self.memory.key_proj.key_proj.weight.dtype)
        step = chunk_size or flat.shape[0]
        embeddings = torch.cat([image_encoder(flat[i : i + step]) for i in range(0, flat.shape[0], step)])
        keys, shrinkage, selection = self.memory.project_key(embeddings)

        def to_memory_layout(x: Tensor) -> Tensor:  # (B*T) x C x h x w -> B x C x T x h x w
            return x.view(batch, time, *x.shape[1:]).transpose(1, 2).contiguous()

        embeddings = embeddings.view(batch, time, *embeddings.shape[1:])
        return embeddings, to_memory_layout(keys), to_memory_layout(shrinkage), to_memory_layout(selection)

    def _decode_masks(self, embedding: Tensor, sparse: Tensor, dense: Tensor) -> Tuple[Tensor, Tensor]:
        """One Meta mask-decoder call per batch item (it repeats the embedding per prompt)."""
        image_pe = self.prompt_encoder.get_dense_pe()
        logits, ious = [], []
        for i in range(embedding.shape[0]):
            low_res, iou = self.mask_decoder(
                image_embeddings=embedding[i : i + 1],
                image_pe=image_pe,
                sparse_prompt_embeddings=sparse[i : i + 1],
                dense_prompt_embeddings=dense[i : i + 1],
                multimask_output=False,
            )
            logits.append(low_res)
            ious.append(iou)
        return torch.cat(logits), torch.cat(ious)

    def decode_prompt(
        self, embedding: Tensor, points: Tensor, labels: Tensor, box: Optional[Tensor] = None
    ) -> Tuple[Tensor, Tensor]:
        """Prompted SAM decode of one frame (the first-frame click of the reference).

        Args:
            embedding: B x 256 x 32 x 32.
            points: B x N x 2 (x, y) in input pixels (0..256); labels: B x N (1 fg, 0 bg).
            box: optional B x 4 (x0, y0, x1, y1). The official pipeline never uses one.
        Returns:
            low-res logits B x 1 x 128 x 128 and predicted IoU B x 1.
        """
        sparse, dense = [], []
        for i in range(embedding.shape[0]):
            s, d = self.prompt_encoder(
                points=(points[i : i + 1].to(embedding), labels[i : i + 1].to(embedding)),
                boxes=None if box is None else box[i : i + 1].to(embedding),
                masks=None,
            )
            sparse.append(s)
            dense.append(d)
        return self._decode_masks(embedding, torch.cat(sparse), torch.cat(dense))

    def upsample_logits(self, low_res_logits: Tensor) -> Tensor:
        """128 x 128 decoder logits -> input size, bilinear (as in the reference)."""
        size = self.config.image_size
        return F.interpolate(low_res_logits, (size, size), mode="bilinear", align_corners=False)

    def initial_hidden(self, batch: int = 1) -> Tensor:
        """The zero sensory state a clip starts from."""
        grid = EMBEDDING_GRID
        weight = self.memory.key_proj.key_proj.weight
        return torch.zeros(batch, self.config.hidden_dim, grid, grid, device=weight.device, dtype=weight.dtype)

    def read_memory(
        self,
        query_key: Tensor,
        query_selection: Tensor,
        memory_keys: Tensor,
        memory_shrinkage: Tensor,
        memory_values: Tensor,
    ) -> Tensor:
        """Readout B x 256 x 32 x 32: softmax(anisotropic L2) over all T*32*32 memory pixels.

        query_key/query_selection: B x 64 x 32 x 32; memory_keys: B x 64 x T x 32 x 32;
        memory_shrinkage: B x 1 x T x ...; memory_values: B x 256 x T x ...
        """
        return self.memory.read(query_key, query_selection, memory_keys, memory_shrinkage, memory_values)

    def decode_from_memory(self, embedding: Tensor, hidden: Tensor, readout: Tensor) -> MemoryDecodeResult:
        """Memory decoder -> memory embedding -> SAM mask decoder with it as the dense prompt
        and no sparse tokens. Also returns the updated sensory state."""
        hidden, memory_embedding = self.memory.decode(embedding, hidden, readout)
        no_tokens = embedding.new_zeros(embedding.shape[0], 0, self.config.out_chans)
        low_res, iou = self._decode_masks(embedding, no_tokens, memory_embedding)
        return MemoryDecodeResult(low_res, iou, hidden, memory_embedding)

    def encode_value(
        self, frame: Tensor, embedding: Tensor, hidden: Tensor, mask_logits: Tensor, deep_update: bool = True
    ) -> Tuple[Tensor, Tensor]:
        """Memory value of a frame: (B x 3 x S x S 0..255, B x 256 x 32 x 32, hidden,
        B x 1 x S x S logits) -> (value B x 256 x 32 x 32, hidden; updated only if deep_update)."""
        if frame.shape[1] == 1:
            frame = frame.repeat(1, 3, 1, 1)
        return self.memory.encode_value(frame, embedding, hidden, mask_logits, deep_update)

    # --- whole clip ----------------------------------------------------------------------------
    def forward_clip(
        self,
        frames: Tensor,
        point_xy: Sequence[float],
        label: int = 1,
        *,
        deep_update_every: Optional[int] = None,
        seed: int = 1234,
        deep_update_probability: float = 0.2,
    ) -> Tensor:
        """Segment one clip from a single click on its first frame (reference
        ``_forward_with_memory``, batch 1). Returns logits T x 1 x S x S.

        Args:
            frames: T x 3 x S x S (or T x 1 x S x S / T x S x S grey), float 0..255.
            point_xy: (x, y) of the click on frame 0, in input pixels.
            label: 1 foreground (the official pipeline), 0 background.
            deep_update_every: how the sensory state is refreshed by the value encoder when a
                frame is written to memory. ``None`` (default) follows the reference: an
                independent draw with probability ``deep_update_probability`` per write, here
                from a private ``numpy.random.RandomState(seed)`` so that results do not depend
                on global RNG state (the reference uses the global numpy stream, seeded once
                with 1234 per test run). An integer k deep-updates on every k-th write
                (1 = always, XMem's own inference behaviour). The prompt-frame value is always
                a deep update, as in the reference.
        """
        if frames.dim() == 3:
            frames = frames.unsqueeze(1)
        if frames.dim() != 4:
            raise ValueError(f"frames must be T x C x H x W (one clip); got shape {tuple(frames.shape)}")
        self._check_frames(frames)
        frames = frames.to(self.device, torch.float32)
        if frames.shape[1] == 1:
            frames = frames.repeat(1, 3, 1, 1)
        time = frames.shape[0]
        deep_updates = deep_update_schedule(time - 1, deep_update_every, seed, deep_update_probability)

        # 1. all frames: embeddings, keys, shrinkage, selection
        embeddings, keys, shrinkage, selection = self.encode_frames(frames.unsqueeze(0))
        hidden = self.initial_hidden(1)
        # 2. prompt step on frame 0; its mask is only used to build the first memory value
        points = torch.tensor([[list(point_xy)]], dtype=torch.float32, device=self.device)
        labels = torch.tensor([[label]], dtype=torch.float32, device=self.device)
        prompt_logits, _ = self.decode_prompt(embeddings[:, 0], points, labels)
        prompt_value, hidden = self.encode_value(
            frames[:1], embeddings[:, 0], hidden, self.upsample_logits(prompt_logits), deep_update=True
        )
        # 3. every frame (frame 0 again) from memory
        logits = self.propagate(frames, embeddings, keys, shrinkage, selection, list(range(time)),
                                prompt_value, hidden, deep_updates)
        return torch.cat(logits)

    def propagate(
        self,
        frames: Tensor,
        embeddings: Tensor,
        keys: Tensor,
        shrinkage: Tensor,
        selection: Tensor,
        order: Sequence[int],
        prompt_value: Tensor,
        hidden: Tensor,
        deep_updates: Sequence[bool],
        memory_frames: Optional[int] = None,
        on_frame: Optional[Callable[[int, int], None]] = None,
    ) -> List[Tensor]:
        """Decode the frames ``order`` (frame indices, the prompted frame first) from memory, one
        after the other, writing each but the last to memory. Returns logits (1 x 1 x S x S) in
        ``order``'s order.

        frames: T x 3 x S x S; embeddings ... selection: `encode_frames` of those T frames;
        prompt_value, hidden: the value and sensory state of the prompt step; deep_updates: one
        flag per write (``deep_update_schedule``). The first frame reads only the prompt value;
        later ones read the written frames. ``memory_frames`` caps what is read to the first
        written frame plus the most recent ones (XMem's working memory keeps the same two kinds);
        ``None`` keeps every frame, as the reference does. ``on_frame(position, frame)`` is called
        before each frame (progress, cancel).
        """
        if memory_frames is not None and memory_frames < 1:
            raise ValueError(f"memory_frames must be >= 1 or None; got {memory_frames}")
        written: List[Tuple[int, Tensor]] = []  # (frame index, value)
        outputs = []
        for position, t in enumerate(order):
            if on_frame is not None:
                on_frame(position, t)
            if position == 0:
                ref_keys, ref_shrinkage, ref_values = keys[:, :, t : t + 1], shrinkage[:, :, t : t + 1], prompt_value.unsqueeze(2)
            else:
                if memory_frames is not None and len(written) > memory_frames:
                    written = written[:1] + written[len(written) - memory_frames + 1 :]
                index = torch.tensor([w[0] for w in written], device=keys.device)
                ref_keys, ref_shrinkage = keys.index_select(2, index), shrinkage.index_select(2, index)
                ref_values = torch.stack([w[1] for w in written], dim=2)
            readout = self.read_memory(keys[:, :, t], selection[:, :, t], ref_keys, ref_shrinkage, ref_values)
            result = self.decode_from_memory(embeddings[:, t], hidden, readout)
            hidden = result.hidden
            logits = self.upsample_logits(result.low_res_logits)
            outputs.append(logits)
            if position < len(order) - 1:  # the last frame is never written
                value, hidden = self.encode_value(
                    frames[t : t + 1], embeddings[:, t], hidden, logits, deep_update=deep_updates[position]
                )
                written.append((t, value))
        return outputs

    forward = forward_clip


def deep_update_schedule(
    num_writes: int, deep_update_every: Optional[int] = None, seed: int = 1234, probability: float = 0.2
) -> List[bool]:
    """Whether each of the ``num_writes`` memory writes of a clip also deep-updates the sensory
    state (see ``MemSAM.forward_clip``). ``None``: the reference's Bernoulli(probability) draws,
    from ``numpy.random.RandomState(seed)``; k >= 1: every k-th write."""
    if deep_update_every is None:
        draws = np.random.RandomState(seed).rand(num_writes)
        return [bool(d < probability) for d in draws]
    if deep_update_every < 1:
        raise ValueError(f"deep_update_every must be >= 1 or None; got {deep_update_every}")
    return [(i + 1) % deep_update_every == 0 for i in range(num_writes)]


# --- construction and loading ------------------------------------------------------------------
def build_memsam(config: Optional[MemSAMConfig] = None) -> MemSAM:
    """A randomly initialised MemSAM in eval mode (respects ``torch.device(...)`` contexts)."""
    return MemSAM(config or MemSAMConfig()).eval()


def _unwrap_state_dict(obj: object) -> Dict[str, Tensor]:
    if isinstance(obj, Mapping) and obj and all(isinstance(v, Tensor) for v in obj.values()):
        return dict(obj)
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), Mapping):
                return _unwrap_state_dict(obj[key])
    raise ValueError(
        "Expected a MemSAM state dict (name -> tensor), or a dict with one under 'model' or "
        f"'state_dict'; got {type(obj).__name__}"
    )


def _load_file(path_or_state_dict: Union[str, Path, Mapping[str, Tensor]]) -> Dict[str, Tensor]:
    if isinstance(path_or_state_dict, (str, Path)):
        path = Path(path_or_state_dict)
        if not path.is_file():
            raise FileNotFoundError(f"MemSAM checkpoint not found: {path}")
        # weights_only: never run pickled code from a checkpoint; also reads the legacy
        # (non-zip) format the reference saves with.
        obj = torch.load(path, map_location="cpu", weights_only=True)
    else:
        obj = path_or_state_dict
    return _unwrap_state_dict(obj)


def _format_keys(keys: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(sorted(keys)[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def normalize_official_state_dict(state_dict: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """Official MemSAM state dict -> our layout.

    Strips a DataParallel ``module.`` prefix and drops the ``memory.key_encoder.*`` duplicates of
    ``image_encoder.*`` (after checking that they really are identical copies).
    """
    out: Dict[str, Tensor] = {}
    for key, value in state_dict.items():
        out[key[len(_DATA_PARALLEL_PREFIX):] if key.startswith(_DATA_PARALLEL_PREFIX) else key] = value
    duplicates = {k: out.pop(k) for k in [k for k in out if k.startswith(_KEY_ENCODER_PREFIX)]}
    for key, value in duplicates.items():
        twin = _ENCODER_PREFIX + key[len(_KEY_ENCODER_PREFIX):]
        if twin not in out:
            raise ValueError(f"Checkpoint has '{key}' but no '{twin}': the key encoder must be the image encoder")
        if (out[twin].shape != value.shape or not torch.equal(out[twin], value)):
            raise ValueError(
                f"Checkpoint entries '{key}' and '{twin}' differ; in MemSAM they are one shared module"
            )
    return out


def official_state_dict(model: MemSAM) -> Dict[str, Tensor]:
    """Our state dict in the reference's layout: the image encoder also under
    ``memory.key_encoder.*`` (the reference registers that module twice), so that the official
    code loads the file strictly too."""
    state = dict(model.state_dict())
    for key, value in list(state.items()):
        if key.startswith(_ENCODER_PREFIX):
            state[_KEY_ENCODER_PREFIX + key[len(_ENCODER_PREFIX):]] = value
    return state


def save_memsam(model: MemSAM, path: Union[str, Path]) -> Path:
    """Write ``model`` in the official checkpoint layout and format (a legacy-serialised state
    dict, as the reference's train_video.py saves), atomically: a reader never sees half a file."""
    from ...io.atomic import replace_atomically

    state = {k: v.detach().cpu() for k, v in official_state_dict(model).items()}
    return replace_atomically(path, lambda partial: torch.save(state, partial, _use_new_zipfile_serialization=False))


def load_memsam(
    path_or_state_dict: Union[str, Path, Mapping[str, Tensor]],
    config: Optional[MemSAMConfig] = None,
    device: Union[str, torch.device] = "cpu",
) -> MemSAM:
    """Load a MemSAM checkpoint in the official layout (or ours) strictly; eval mode.

    Accepts a path (``torch.load``, CPU map, weights only) or a state dict. ``config`` defaults
    to the one inferred from the weights' shapes. Any missing, unexpected or mis-shaped entry
    raises ``ValueError`` naming the entries.
    """
    state_dict = normalize_official_state_dict(_load_file(path_or_state_dict))
    config = config or MemSAMConfig.from_state_dict(state_dict)
    model = build_memsam(config)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing: {_format_keys(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected: {_format_keys(unexpected)}")
        raise ValueError(f"Checkpoint does not match the MemSAM layout for {config}: " + "; ".join(parts))
    wrong = [
        f"{k} {tuple(state_dict[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if state_dict[k].shape != v.shape
    ]
    if wrong:
        raise ValueError(f"Checkpoint shapes do not match the MemSAM layout for {config}: {_format_keys(wrong)}")
    model.load_state_dict(state_dict, strict=True)
    return model.to(device).eval()


def init_from_sam(model: MemSAM, sam_state_dict: Union[str, Path, Mapping[str, Tensor]]) -> SamInitReport:
    """Initialise the SAM parts of ``model`` from a Meta SAM checkpoint (e.g. sam_vit_b_01ec64.pth).

    As the reference's ``load_from2``: entries with the same name are copied; the global-attention
    rel-pos tables (2*64-1 rows for SAM's 64x64 grid) are resized bilinearly
    (align_corners=False) to 2*32-1 rows; ``pos_embed`` stays 64x64 (``post_pos_embed`` shrinks it)
    and the 16x16 patch-embedding weights load unchanged. Any other shape mismatch raises
    ``ValueError``. Returns which entries were loaded, interpolated, left as they were, unused.
    """
    source = _load_file(sam_state_dict)
    target = model.state_dict(keep_vars=True)  # the live parameters and buffers
    grid = EMBEDDING_GRID
    update: Dict[str, Tensor] = {}
    interpolated: List[str] = []
    for key, value in source.items():
        if key not in target:
            continue
        wanted = target[key].shape
        match = _REL_POS_KEY.match(key)
        if value.shape != wanted and match and int(match.group(1)) in model.config.global_attn_indexes:
            if wanted != (2 * grid - 1, value.shape[1]):
                raise ValueError(f"Unexpected rel-pos target shape for '{key}': {tuple(wanted)}")
            value = F.interpolate(
                value[None, None].float(), size=tuple(wanted), mode="bilinear", align_corners=False
            )[0, 0].to(value.dtype)
            interpolated.append(key)
        if value.shape != wanted:
            raise ValueError(
                f"SAM entry '{key}' has shape {tuple(value.shape)}, MemSAM expects {tuple(wanted)}; "
                "is this a ViT-B SAM checkpoint matching the configured encoder?"
            )
        update[key] = value
    if not update:
        raise ValueError("No SAM entries matched MemSAM names; is this a Meta SAM state dict?")
    # Copy in place rather than load_state_dict(strict=False): that would also touch entries
    # SAM does not have (BatchNorm fills in num_batches_tracked).
    with torch.no_grad():
        for key, value in update.items():
            target[key].copy_(value)
    return SamInitReport(
        loaded=sorted(update),
        interpolated=sorted(interpolated),
        not_set=sorted(k for k in target if k not in update),
        unused=sorted(k for k in source if k not in target),
    )

