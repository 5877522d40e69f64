"""MemSAM's XMem-style memory (our own implementation).

Reference (MIT licensed), ``dengxl0520/MemSAM`` ``models/segment_anything_memsam/modeling/``:

* ``mem.py``: ``Mem`` (-> ``MemSAMMemory``), ``get_similarity`` (-> ``anisotropic_l2_similarity``),
  ``do_softmax``/``get_affinity`` (-> ``memory_affinity``), ``readout`` (-> ``memory_readout``);
* ``mem_modules.py``: ``KeyProjection``, ``ValueEncoder``, ``MemoryDecoder``, ``FeatureFusionBlock``,
  ``GroupResBlock`` (-> ``ResidualConvBlock``), ``CBAM``/``ChannelGate``/``SpatialGate``,
  ``HiddenUpdater``/``HiddenReinforcer`` (-> ``ConvGRUGate``), ``ForegroundReinforcingModule``
  (-> ``ForegroundReinforcement``);
* ``resnet.py``: the ResNet-18 trunk of the value encoder (built here without any download).

The reference carries a "number of objects" axis (B x objects x C x H x W) inherited from XMem,
but MemSAM always uses exactly one object, so every tensor here is plain B x C x H x W; the
arithmetic is the same. Attribute names reproduce the official ``memory.*`` state-dict keys.

Shapes (MemSAM ViT-B, 256 px input): embedding 256 x 32 x 32, key 64, value 256, sensory
state (``hidden``) 64 channels, all on the 32 x 32 grid.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "MemSAMMemory",
    "KeyProjection",
    "ValueEncoder",
    "MemoryDecoder",
    "ForegroundReinforcement",
    "anisotropic_l2_similarity",
    "memory_affinity",
    "memory_readout",
]

# Widths fixed by the official layout (ResNet-18 stages used by the value encoder, and the
# fixed middle width of the memory decoder's fusion block).
_RESNET_WIDTHS = (64, 128, 256)
_VALUE_TRUNK_CHANNELS = 128  # layer2 output at 1/8 resolution (= the 32 x 32 grid at 256 px)
_DECODER_MID_CHANNELS = 512
_REINFORCE_MID_CHANNELS = 128
_VALUE_INPUT_CHANNELS = 5  # RGB + mask + "other objects" (always zeros for one object)


def _is_meta(tensor: Tensor) -> bool:
    return tensor.device.type == "meta"


# --- similarity and readout (reference: mem.py) ---------------------------------------------------
def anisotropic_l2_similarity(
    memory_key: Tensor, memory_shrinkage: Tensor, query_key: Tensor, query_selection: Tensor
) -> Tensor:
    """XMem's anisotropic L2 similarity, B x N x HW for N memory pixels and HW query pixels.

    S[n, q] = -s_n * sum_c e_qc (k_nc - q_qc)^2 / sqrt(C), with memory shrinkage s (>= 1) and
    query selection e (in (0, 1)). Expanded as -a^2 + 2ab - b^2 so that no N x HW x C tensor
    is built.

    Args:
        memory_key: B x C x (any memory dims, e.g. T x H x W).
        memory_shrinkage: B x 1 x (same memory dims).
        query_key, query_selection: B x C x (query dims, e.g. H x W).
    """
    channels = memory_key.shape[1]
    mk = memory_key.flatten(start_dim=2).transpose(1, 2)  # B x N x C
    ms = memory_shrinkage.flatten(start_dim=1).unsqueeze(2)  # B x N x 1
    qk = query_key.flatten(start_dim=2)  # B x C x HW
    qe = query_selection.flatten(start_dim=2)
    a_sq = mk.pow(2) @ qe
    two_ab = 2 * (mk @ (qk * qe))
    b_sq = (qe * qk.pow(2)).sum(dim=1, keepdim=True)
    return (-a_sq + two_ab - b_sq) * ms / math.sqrt(channels)


def memory_affinity(
    memory_key: Tensor, memory_shrinkage: Tensor, query_key: Tensor, query_selection: Tensor
) -> Tensor:
    """Softmax of the similarity over *all* memory pixels (no top-k), B x N x HW.

    Each column (query pixel) sums to 1. Max-subtracted like the reference's ``do_softmax``.
    """
    similarity = anisotropic_l2_similarity(memory_key, memory_shrinkage, query_key, query_selection)
    similarity = similarity - similarity.max(dim=1, keepdim=True).values
    weights = similarity.exp()
    return weights / weights.sum(dim=1, keepdim=True)


def memory_readout(affinity: Tensor, memory_value: Tensor, grid: Tuple[int, int]) -> Tensor:
    """Affinity-weighted sum of memory values: (B x CV x T x H x W, B x N x HW) -> B x CV x H x W."""
    batch, channels = memory_value.shape[:2]
    values = memory_value.reshape(batch, channels, -1)  # B x CV x N, same (T, H, W) order as keys
    return (values @ affinity).view(batch, channels, *grid)


# --- key projection (reference: mem_modules.KeyProjection) -----------------------------------------
class KeyProjection(nn.Module):
    """Embedding -> (key, shrinkage >= 1, selection in (0, 1)), three 3x3 convs."""

    def __init__(self, in_dim: int, key_dim: int) -> None:
        super().__init__()
        self.key_proj = nn.Conv2d(in_dim, key_dim, kernel_size=3, padding=1)
        self.d_proj = nn.Conv2d(in_dim, 1, kernel_size=3, padding=1)  # shrinkage
        self.e_proj = nn.Conv2d(in_dim, key_dim, kernel_size=3, padding=1)  # selection
        if not _is_meta(self.key_proj.weight):
            nn.init.orthogonal_(self.key_proj.weight)
            nn.init.zeros_(self.key_proj.bias)

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        shrinkage = self.d_proj(x) ** 2 + 1
        selection = torch.sigmoid(self.e_proj(x))
        return self.key_proj(x), shrinkage, selection


# --- ResNet-18 trunk (reference: resnet.py; parameter names as torchvision's resnet) ---------------
class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs with batch norm and an identity / 1x1 shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample: Optional[nn.Sequential] = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


def _resnet_stage(in_channels: int, out_channels: int, stride: int, blocks: int = 2) -> nn.Sequential:
    layers = [BasicBlock(in_channels, out_channels, stride)]
    layers += [BasicBlock(out_channels, out_channels) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def _init_resnet_(module: nn.Module) -> None:
    """The reference ResNet's own initialisation (He-normal convs, unit batch norms).

    The reference then overwrites it with downloaded ImageNet weights; we never download (a
    trained MemSAM checkpoint replaces all of it anyway).
    """
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d) and not _is_meta(layer.weight):
            fan_out = layer.kernel_size[0] * layer.kernel_size[1] * layer.out_channels
            nn.init.normal_(layer.weight, 0.0, math.sqrt(2.0 / fan_out))
        elif isinstance(layer, nn.BatchNorm2d) and not _is_meta(layer.weight):
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)


# --- fusion blocks (reference: mem_modules.py) -----------------------------------------------------
class ResidualConvBlock(nn.Module):
    """pre-ReLU 3x3 conv x2 with a 3x3-conv shortcut when widths differ (``GroupResBlock``)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.downsample = (
            None if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 3, padding=1)
        )
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2(F.relu(self.conv1(F.relu(x))))
        return out + (x if self.downsample is None else self.downsample(x))


class ChannelGate(nn.Module):
    """CBAM channel attention: shared MLP on global average- and max-pooled features."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels, channels // reduction),
            nn.ReLU(),
            nn.Linear(channels // reduction, channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        logits = self.mlp(F.adaptive_avg_pool2d(x, 1)) + self.mlp(F.adaptive_max_pool2d(x, 1))
        return x * torch.sigmoid(logits)[:, :, None, None]


class _SpatialConv(nn.Module):
    """Holds the conv under the name ``conv`` (reference: ``BasicConv``)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size=7, padding=3)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class SpatialGate(nn.Module):
    """CBAM spatial attention: 7x7 conv on the channel-wise max and mean maps."""

    def __init__(self) -> None:
        super().__init__()
        self.spatial = _SpatialConv()

    def forward(self, x: Tensor) -> Tensor:
        pooled = torch.cat([x.max(dim=1, keepdim=True).values, x.mean(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(pooled))


class CBAM(nn.Module):
    """Channel gate followed by spatial gate."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.ChannelGate = ChannelGate(channels)
        self.SpatialGate = SpatialGate()

    def forward(self, x: Tensor) -> Tensor:
        return self.SpatialGate(self.ChannelGate(x))


class FeatureFusionBlock(nn.Module):
    """cat([x, g]) -> residual block -> + CBAM(.) -> residual block."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int) -> None:
        super().__init__()
        self.block1 = ResidualConvBlock(in_channels, mid_channels)
        self.attention = CBAM(mid_channels)
        self.block2 = ResidualConvBlock(mid_channels, out_channels)

    def forward(self, x: Tensor, g: Tensor) -> Tensor:
        fused = self.block1(torch.cat([x, g], dim=1))
        return self.block2(fused + self.attention(fused))


class ConvGRUGate(nn.Module):
    """XMem's convolutional GRU for the sensory state (``HiddenUpdater``/``HiddenReinforcer``).

    One 3x3 conv on [features; h] gives forget f, update u and candidate n; the new state is
    f * h * (1 - u) + u * tanh(n) (XMem's variant: the forget gate also scales the kept state).
    """

    def __init__(self, feature_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.transform = nn.Conv2d(feature_dim + hidden_dim, hidden_dim * 3, kernel_size=3, padding=1)
        if not _is_meta(self.transform.weight):
            nn.init.xavier_normal_(self.transform.weight)

    def forward(self, features: Tensor, hidden: Tensor) -> Tensor:
        gates = self.transform(torch.cat([features, hidden], dim=1))
        forget, update, candidate = gates.split(self.hidden_dim, dim=1)
        forget, update = torch.sigmoid(forget), torch.sigmoid(update)
        return forget * hidden * (1 - update) + update * torch.tanh(candidate)


# --- value encoder, memory decoder, reinforcement -----------------------------------------------
class ValueEncoder(nn.Module):
    """(frame, mask logits, reinforced embedding, h) -> (value B x CV x h x w, new h).

    ResNet-18 trunk with a 5-channel ``conv1`` on [RGB 0..255; mask logits; zeros], stopped
    after ``layer2`` (1/8 resolution, 128 channels). ``layer3`` exists only so that the official
    weights load; the reference never calls it. Note the reference order
    conv1 -> bn1 -> maxpool -> relu (equal to relu -> maxpool, as both are monotone).
    """

    def __init__(self, embed_dim: int, value_dim: int, hidden_dim: int) -> None:
        super().__init__()
        c1, c2, c3 = _RESNET_WIDTHS
        self.conv1 = nn.Conv2d(_VALUE_INPUT_CHANNELS, c1, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(c1)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = _resnet_stage(c1, c1, stride=1)
        self.layer2 = _resnet_stage(c1, c2, stride=2)
        self.layer3 = _resnet_stage(c2, c3, stride=2)  # unused, kept for the checkpoint layout
        _init_resnet_(self)
        self.fuser = FeatureFusionBlock(embed_dim + _VALUE_TRUNK_CHANNELS, value_dim, value_dim)
        self.hidden_reinforce = ConvGRUGate(value_dim, hidden_dim)

    def forward(
        self, frame: Tensor, image_features: Tensor, hidden: Tensor, mask_logits: Tensor, deep_update: bool
    ) -> Tuple[Tensor, Tensor]:
        others = torch.zeros_like(mask_logits)  # single object: no "other objects" mask
        x = torch.cat([frame, mask_logits, others], dim=1)
        x = self.relu(self.maxpool(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        value = self.fuser(image_features, x)
        if deep_update:
            hidden = self.hidden_reinforce(value, hidden)
        return value, hidden


class MemoryDecoder(nn.Module):
    """(embedding, h, readout) -> (new h, memory embedding used as SAM's dense prompt)."""

    def __init__(self, embed_dim: int, value_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fuser = FeatureFusionBlock(embed_dim + value_dim + hidden_dim, _DECODER_MID_CHANNELS, embed_dim)
        self.hidden_update = ConvGRUGate(embed_dim, hidden_dim)

    def forward(self, embedding: Tensor, hidden: Tensor, readout: Tensor) -> Tuple[Tensor, Tensor]:
        memory_embedding = self.fuser(embedding, torch.cat([readout, hidden], dim=1))
        return self.hidden_update(memory_embedding, hidden), memory_embedding


class ForegroundReinforcement(nn.Module):
    """softmax_c(conv1x1(conv3x3([mask; E]))) * mask, with the mask nearest-resized to E's grid.

    Reference: ``ForegroundReinforcingModule(256, 128, 256, 3)``. The mask is the decoder's raw
    logits (not probabilities), as in the reference. Channels sum to the mask value at each pixel.
    """

    def __init__(self, embed_dim: int, mid_channels: int = _REINFORCE_MID_CHANNELS, kernel: int = 3) -> None:
        super().__init__()
        self.conv_wxh = nn.Conv2d(embed_dim + 1, mid_channels, kernel, padding=kernel // 2)
        self.conv_1x1 = nn.Conv2d(mid_channels, embed_dim, 1)

    def forward(self, embedding: Tensor, mask_logits: Tensor) -> Tensor:
        mask = F.interpolate(mask_logits, size=embedding.shape[-2:], mode="nearest")
        weights = self.conv_1x1(self.conv_wxh(torch.cat([mask, embedding], dim=1)))
        return F.softmax(weights, dim=1) * mask


class MemSAMMemory(nn.Module):
    """Key projection, value encoding, memory readout and memory decoding.

    The reference ``Mem`` also holds ``key_encoder`` (the same object as the SAM image encoder).
    We do not register it a second time: the caller (``MemSAM``) runs the image encoder and
    hands the embeddings in.
    """

    def __init__(
        self,
        embed_dim: int = 256,
        key_dim: int = 64,
        value_dim: int = 256,
        hidden_dim: int = 64,
        reinforce: bool = True,
    ) -> None:
        super().__init__()
        if min(key_dim, value_dim, hidden_dim) <= 0:
            raise ValueError(
                f"key_dim, value_dim and hidden_dim must be positive (got {key_dim}, {value_dim}, {hidden_dim})"
            )
        self.key_dim, self.value_dim, self.hidden_dim = key_dim, value_dim, hidden_dim
        self.reinforce = reinforce
        # Registration order follows the reference.
        self.value_encoder = ValueEncoder(embed_dim, value_dim, hidden_dim)
        self.key_proj = KeyProjection(embed_dim, key_dim)
        self.decoder = MemoryDecoder(embed_dim, value_dim, hidden_dim)
        if reinforce:
            self.memory_reinforce = ForegroundReinforcement(embed_dim)

    def project_key(self, embedding: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """Embeddings N x E x h x w -> key N x CK x h x w, shrinkage N x 1 x h x w, selection."""
        return self.key_proj(embedding)

    def encode_value(
        self, frame: Tensor, embedding: Tensor, hidden: Tensor, mask_logits: Tensor, deep_update: bool = True
    ) -> Tuple[Tensor, Tensor]:
        """Reference ``Mem.encode_value2``: reinforce the embedding with the mask, then encode."""
        features = self.memory_reinforce(embedding, mask_logits) if self.reinforce else embedding
        return self.value_encoder(frame, features, hidden, mask_logits, deep_update)

    def read(
        self,
        query_key: Tensor,
        query_selection: Tensor,
        memory_keys: Tensor,
        memory_shrinkage: Tensor,
        memory_values: Tensor,
    ) -> Tensor:
        """Readout B x CV x h x w from memory keys/shrinkage/values (B x C x T x h x w)."""
        affinity = memory_affinity(memory_keys, memory_shrinkage, query_key, query_selection)
        return memory_readout(affinity, memory_values, tuple(query_key.shape[-2:]))

    def decode(self, embedding: Tensor, hidden: Tensor, readout: Tensor) -> Tuple[Tensor, Tensor]:
        """-> (new hidden, memory embedding)."""
        return self.decoder(embedding, hidden, readout)
