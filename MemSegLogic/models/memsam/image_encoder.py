"""SAMUS-style ViT image encoder used by MemSAM (our own implementation).

Reference (MIT licensed): ``dengxl0520/MemSAM``
``models/segment_anything_memsam/modeling/image_encoder.py`` (``ImageEncoderViT``, ``ParaBlock``,
``qkvAttention``, ``SingleCNNEmbed``, ``SingleDown``, ``SingleConv``, ``PostPosEmbed``,
``PatchEmbed0``) and ``.../modeling/common.py`` (``Adapter``). Both are identical to
``xianlin7/SAMUS`` ``models/segment_anything_samus/modeling/{image_encoder,common}.py``.

What differs from Meta's ``ImageEncoderViT`` (a plain SAM ViT):

* the 256 px input is resized to 264 px and cut into *overlapping* 16 px patches with stride 8,
  so SAM's 16x16 patch-embedding weights load unchanged and give a 32x32 token grid;
* a bottleneck adapter after the patch embedding (``input_Adapter``);
* SAM's 64x64 absolute position embedding is kept and shrunk at run time by a learned
  max-pool + conv stage (``post_pos_embed``);
* a parallel CNN branch (``cnn_embed``) whose features are injected into the global-attention
  blocks by cross-attention (``Space_Adapter``), refined there (``refine_Adapter``), and finally
  added to the ViT output with weight 0.5;
* the global-attention blocks also get a parallel MLP adapter (``MLP_Adapter``, scale 0.5).

Attribute names are chosen so that ``state_dict()`` keys equal the official checkpoint's
``image_encoder.*`` keys. Meta's ``Attention``, window partitioning, ``MLPBlock`` and
``LayerNorm2d`` are reused unchanged: the reference copies them verbatim.
"""

from __future__ import annotations

import math
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..sam_components import sam_modeling

__all__ = ["MemSAMImageEncoder", "EMBEDDING_GRID", "SAM_POS_EMBED_GRID"]

EMBEDDING_GRID = 32  # token grid side of the encoder output (fixed by the reference)
SAM_POS_EMBED_GRID = 64  # SAM's absolute position table is 64x64 (1024 px / 16)
_PATCH_KERNEL = 16  # same kernel as SAM's patch embedding, so its weights load unchanged
_PATCH_STRIDE = 8
_CNN_BASE_CHANNELS = 64  # first width of the CNN branch; doubles at every down step


def _sam_parts():
    """Meta's ``image_encoder`` and ``common`` modules (imported without torchvision)."""
    modeling = sam_modeling()
    return modeling.image_encoder, modeling.common


class BottleneckAdapter(nn.Module):
    """Linear D -> D/4 -> D with GELU; optional identity skip (reference: ``common.Adapter``)."""

    def __init__(self, dim: int, ratio: float = 0.25, skip_connect: bool = True) -> None:
        super().__init__()
        self.skip_connect = skip_connect
        self.D_fc1 = nn.Linear(dim, int(dim * ratio))
        self.act = nn.GELU()
        self.D_fc2 = nn.Linear(int(dim * ratio), dim)

    def forward(self, x: Tensor) -> Tensor:
        delta = self.D_fc2(self.act(self.D_fc1(x)))
        return x + delta if self.skip_connect else delta


class CrossAttentionAdapter(nn.Module):
    """Multi-head attention with separate query and key/value sources, channels-last maps.

    Queries come from the ViT tokens, keys and values from the CNN branch, both B x H x W x C on
    the same grid. No relative position term (reference: ``qkvAttention`` with its default
    ``use_rel_pos=False``).
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def _split_heads(self, x: Tensor) -> Tensor:
        batch, height, width, dim = x.shape
        x = x.reshape(batch, height * width, self.num_heads, dim // self.num_heads)
        return x.transpose(1, 2)  # B x heads x HW x head_dim

    def forward(self, query: Tensor, context: Tensor) -> Tensor:
        batch, height, width, dim = query.shape
        q = self._split_heads(self.q(query))
        k = self._split_heads(self.k(context))
        v = self._split_heads(self.v(context))
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(batch, height, width, dim)
        return self.proj(out)


class ConvNormGELU(nn.Module):
    """3x3 conv (no bias) -> LayerNorm2d -> GELU, same size (reference: ``SingleConv``)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        layer_norm_2d = _sam_parts()[1].LayerNorm2d
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
            layer_norm_2d(out_channels),
            nn.GELU(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class DownConvNormGELU(nn.Module):
    """2x2 max-pool, then 3x3 conv (no bias) -> LayerNorm2d -> GELU (reference: ``SingleDown``)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        layer_norm_2d = _sam_parts()[1].LayerNorm2d
        self.maxpool_conv = nn.Sequential(
            nn.MaxPool2d(2),
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
            layer_norm_2d(out_channels),
            nn.GELU(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.maxpool_conv(x)


class CNNBranch(nn.Module):
    """Convolutional stem run in parallel to the ViT (reference: ``SingleCNNEmbed``).

    Channels 3 -> 64 at full resolution, then ``log2(downsample)`` pooled stages doubling the
    width (64 -> 128 -> 256 ...), the last one mapping to the ViT width. Output is channels-last
    B x H/downsample x W/downsample x embed_dim, like the tokens.
    """

    def __init__(self, downsample: int, embed_dim: int, in_chans: int = 3) -> None:
        super().__init__()
        steps = int(math.log2(downsample))
        self.inc = ConvNormGELU(in_chans, _CNN_BASE_CHANNELS)
        self.downs = nn.ModuleList()
        width = _CNN_BASE_CHANNELS
        for step in range(steps):
            out = embed_dim if step == steps - 1 else width * 2
            self.downs.append(DownConvNormGELU(width, out))
            width *= 2

    def forward(self, x: Tensor) -> Tensor:
        x = self.inc(x)
        for down in self.downs:
            x = down(x)
        return x.permute(0, 2, 3, 1)


class PositionEmbeddingShrink(nn.Module):
    """Learned 2x down-sampling of SAM's 64x64 position table to the token grid
    (reference: ``PostPosEmbed``); one ``DownConvNormGELU`` per halving."""

    def __init__(self, embed_dim: int, source_grid: int, target_grid: int) -> None:
        super().__init__()
        steps = int(math.log2(source_grid // target_grid))
        self.downs = nn.ModuleList(DownConvNormGELU(embed_dim, embed_dim) for _ in range(steps))

    def forward(self, pos_embed: Tensor) -> Tensor:
        x = pos_embed.permute(0, 3, 1, 2)
        for down in self.downs:
            x = down(x)
        return x.permute(0, 2, 3, 1)


class OverlappingPatchEmbed(nn.Module):
    """Bilinear resize to (grid*8 + 8) px, then conv kernel 16 / stride 8 -> grid x grid tokens.

    Reference: ``PatchEmbed0``, which hard-codes the resize to 264 px (= 32*8 + 8); expressing
    it through the 32x32 grid keeps that exact size.
    """

    def __init__(self, embed_dim: int, grid: int = EMBEDDING_GRID, in_chans: int = 3) -> None:
        super().__init__()
        self.resized = grid * _PATCH_STRIDE + _PATCH_KERNEL - _PATCH_STRIDE
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=_PATCH_KERNEL, stride=_PATCH_STRIDE)

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, (self.resized, self.resized), mode="bilinear", align_corners=False)
        return self.proj(x).permute(0, 2, 3, 1)


class ParaBlock(nn.Module):
    """ViT block (windowed or global attention); global blocks carry the SAMUS adapters.

    Reference: ``ParaBlock``. In a global block the normalised tokens first attend to the CNN
    features (``Space_Adapter``, added to the attention input only), the CNN features are
    refined by a conv (``refine_Adapter``), and the MLP gets a parallel adapter
    (``MLP_Adapter``, no skip, weight 0.5) fed with the same normalised tokens.
    """

    adapter_scale = 0.5

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        grid: int,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        sam_image_encoder, sam_common = _sam_parts()
        self.window_size = window_size
        self.is_global = window_size == 0
        attn_size = grid if self.is_global else window_size
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = sam_image_encoder.Attention(
            dim, num_heads=num_heads, qkv_bias=True, use_rel_pos=True, input_size=(attn_size, attn_size)
        )
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = sam_common.MLPBlock(embedding_dim=dim, mlp_dim=int(dim * mlp_ratio), act=nn.GELU)
        if self.is_global:
            self.MLP_Adapter = BottleneckAdapter(dim, skip_connect=False)
            self.Space_Adapter = CrossAttentionAdapter(dim, num_heads=num_heads)
            self.refine_Adapter = ConvNormGELU(dim, dim)
        self._partition = sam_image_encoder.window_partition
        self._unpartition = sam_image_encoder.window_unpartition

    def forward(self, x: Tensor, cnn_features: Tensor) -> Tuple[Tensor, Tensor]:
        shortcut = x
        x = self.norm1(x)
        if self.is_global:
            x = x + self.Space_Adapter(x, cnn_features)
            refined = self.refine_Adapter(cnn_features.permute(0, 3, 1, 2))
            cnn_features = refined.permute(0, 2, 3, 1)
            x = self.attn(x)
        else:
            height, width = x.shape[1:3]
            windows, padded = self._partition(x, self.window_size)
            x = self._unpartition(self.attn(windows), self.window_size, padded, (height, width))
        x = shortcut + x
        normed = self.norm2(x)
        x = x + self.mlp(normed)
        if self.is_global:
            x = x + self.adapter_scale * self.MLP_Adapter(normed)
        return x, cnn_features


class MemSAMImageEncoder(nn.Module):
    """Frames B x 3 x S x S (float 0..255, not normalised) -> embedding B x out_chans x 32 x 32.

    A single-channel input is repeated to 3 channels, as in the reference.
    """

    cnn_weight = 0.5  # weight of the CNN branch in the final sum (reference: ``x + 0.5*cnnx``)

    def __init__(
        self,
        image_size: int = 256,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        global_attn_indexes: Sequence[int] = (2, 5, 8, 11),
        window_size: int = 14,
        out_chans: int = 256,
    ) -> None:
        super().__init__()
        if image_size % EMBEDDING_GRID or (image_size // EMBEDDING_GRID) & (image_size // EMBEDDING_GRID - 1):
            raise ValueError(
                f"image_size must be 32 times a power of two (the reference uses 256); got {image_size}"
            )
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        bad = [i for i in global_attn_indexes if not 0 <= i < depth]
        if bad:
            raise ValueError(f"global_attn_indexes {bad} are outside 0..{depth - 1}")
        self.img_size = image_size
        self.global_attn_indexes = tuple(global_attn_indexes)
        grid = EMBEDDING_GRID
        # Registration order follows the reference (it only affects the state_dict order).
        self.cnn_embed = CNNBranch(downsample=image_size // grid, embed_dim=embed_dim)
        self.patch_embed = OverlappingPatchEmbed(embed_dim, grid=grid)
        self.pos_embed = nn.Parameter(torch.zeros(1, SAM_POS_EMBED_GRID, SAM_POS_EMBED_GRID, embed_dim))
        self.post_pos_embed = PositionEmbeddingShrink(embed_dim, SAM_POS_EMBED_GRID, grid)
        self.blocks = nn.ModuleList(
            ParaBlock(
                embed_dim,
                num_heads,
                window_size=0 if index in self.global_attn_indexes else window_size,
                grid=grid,
            )
            for index in range(depth)
        )
        layer_norm_2d = _sam_parts()[1].LayerNorm2d
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, out_chans, kernel_size=1, bias=False),
            layer_norm_2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            layer_norm_2d(out_chans),
        )
        self.input_Adapter = BottleneckAdapter(embed_dim)

    def forward(self, frames: Tensor) -> Tensor:
        if frames.shape[1] == 1:
            frames = frames.repeat(1, 3, 1, 1)
        cnn_features = self.cnn_embed(frames)
        x = self.input_Adapter(self.patch_embed(frames))
        x = x + self.post_pos_embed(self.pos_embed)  # 1 x grid x grid x D, broadcast over batch
        for block in self.blocks:
            x, cnn_features = block(x, cnn_features)
        x = x + self.cnn_weight * cnn_features
        return self.neck(x.permute(0, 3, 1, 2))
