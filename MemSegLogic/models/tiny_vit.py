"""TinyViT image encoder in the variant used by LiteMedSAM.

TinyViT (Wu et al., ECCV 2022) is a small hierarchical vision transformer: a convolutional
first stage (MBConv blocks) followed by stages of windowed self-attention blocks with a
learned relative-position bias and a depthwise "local" convolution. MobileSAM distilled SAM's
ViT-H encoder into TinyViT-5M and appended SAM's "neck" (1x1 conv, LayerNorm2d, 3x3 conv,
LayerNorm2d) so that it outputs SAM-compatible 256-channel embeddings.

LiteMedSAM keeps MobileSAM's layout but feeds 256x256 images instead of 1024x1024. To still
produce a 64x64 embedding grid, its patch embedding uses two 1x1, stride-1 convolutions (no
4x downsampling), so the first stage runs at full 256x256 resolution. Only two merges
downsample (256 -> 128 -> 64); the merge into the last stage keeps 64x64.

This is an independent implementation written for MemSeg. Module and parameter names are
chosen to match the published LiteMedSAM checkpoint key for key (e.g.
``layers.1.blocks.0.attn.attention_biases``, ``patch_embed.seq.0.c.weight``, ``neck.3.bias``),
so ``load_state_dict(strict=True)`` works. No timm dependency: truncated-normal init comes
from ``torch.nn.init`` and stochastic depth is a small local class.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Type, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["TinyViT", "LayerNorm2d", "build_lite_medsam_encoder"]


class DropPath(nn.Module):
    """Stochastic depth: randomly drops a whole residual branch per sample while training.

    At inference (``eval()``) or with ``drop_prob == 0`` it is the identity, which is the only
    way MemSeg uses it; it exists so the encoder can also be fine-tuned.
    """

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x: Tensor) -> Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        # One Bernoulli draw per sample, broadcast over all other dimensions.
        mask_shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = x.new_empty(mask_shape).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


def _drop_path_or_identity(rate: float) -> nn.Module:
    # The checkpoint has no parameters here either way; Identity keeps the module tree lean.
    return DropPath(rate) if rate > 0.0 else nn.Identity()


class Conv2d_BN(nn.Sequential):
    """Bias-free Conv2d followed by BatchNorm2d (children named ``c`` and ``bn``)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        groups: int = 1,
        bn_weight_init: float = 1.0,
    ) -> None:
        super().__init__()
        self.add_module(
            "c",
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias=False),
        )
        bn = nn.BatchNorm2d(out_channels)
        # A zero BN gamma makes a residual branch start as the identity mapping (used by MBConv).
        nn.init.constant_(bn.weight, bn_weight_init)
        nn.init.zeros_(bn.bias)
        self.add_module("bn", bn)


class PatchEmbed(nn.Module):
    """LiteMedSAM patch embedding: two 1x1 stride-1 Conv2d_BN with an activation between.

    Unlike MobileSAM (two 3x3 stride-2 convs, i.e. 4x downsampling), the spatial size is kept,
    so ``patches_resolution`` equals the input image size.
    """

    def __init__(self, in_chans: int, embed_dim: int, resolution: int, activation: Type[nn.Module]) -> None:
        super().__init__()
        self.patches_resolution: Tuple[int, int] = (resolution, resolution)
        self.num_patches = resolution * resolution
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        hidden = embed_dim // 2
        # Indices 0/1/2 matter: the checkpoint stores seq.0.* and seq.2.* (seq.1 is the activation).
        self.seq = nn.Sequential(
            Conv2d_BN(in_chans, hidden, kernel_size=1, stride=1, padding=0),
            activation(),
            Conv2d_BN(hidden, embed_dim, kernel_size=1, stride=1, padding=0),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted-residual block: 1x1 expand, 3x3 depthwise, 1x1 project, residual, activation."""

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        expand_ratio: float,
        activation: Type[nn.Module],
        drop_path: float,
    ) -> None:
        super().__init__()
        self.in_chans = in_chans
        self.hidden_chans = int(in_chans * expand_ratio)
        self.out_chans = out_chans

        self.conv1 = Conv2d_BN(in_chans, self.hidden_chans, kernel_size=1)
        self.act1 = activation()
        self.conv2 = Conv2d_BN(
            self.hidden_chans, self.hidden_chans, kernel_size=3, stride=1, padding=1, groups=self.hidden_chans
        )
        self.act2 = activation()
        self.conv3 = Conv2d_BN(self.hidden_chans, out_chans, kernel_size=1, bn_weight_init=0.0)
        self.act3 = activation()
        self.drop_path = _drop_path_or_identity(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        branch = self.act1(self.conv1(x))
        branch = self.act2(self.conv2(branch))
        branch = self.conv3(branch)
        # Note: the final activation is applied *after* the residual sum (TinyViT design).
        return self.act3(x + self.drop_path(branch))


class PatchMerging(nn.Module):
    """Channel projection + (optionally strided) depthwise conv between stages.

    Accepts a feature map (B, C, H, W) or tokens (B, H*W, C) and returns tokens (B, H'*W', C').
    """

    def __init__(
        self,
        input_resolution: Tuple[int, int],
        dim: int,
        out_dim: int,
        activation: Type[nn.Module],
        stride: int = 2,
    ) -> None:
        super().__init__()
        self.input_resolution = input_resolution
        self.dim = dim
        self.out_dim = out_dim
        self.stride = stride
        self.act = activation()
        self.conv1 = Conv2d_BN(dim, out_dim, kernel_size=1)
        self.conv2 = Conv2d_BN(out_dim, out_dim, kernel_size=3, stride=stride, padding=1, groups=out_dim)
        self.conv3 = Conv2d_BN(out_dim, out_dim, kernel_size=1)

    @property
    def output_resolution(self) -> Tuple[int, int]:
        # 3x3 conv with padding 1: out = ceil(in / stride).
        h, w = self.input_resolution
        return (h - 1) // self.stride + 1, (w - 1) // self.stride + 1

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim == 3:
            h, w = self.input_resolution
            x = x.transpose(1, 2).reshape(x.shape[0], -1, h, w)
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))
        x = self.conv3(x)
        return x.flatten(2).transpose(1, 2)


class ConvLayer(nn.Module):
    """First TinyViT stage: a stack of MBConv blocks on a feature map, then an optional merge."""

    def __init__(
        self,
        dim: int,
        input_resolution: Tuple[int, int],
        depth: int,
        activation: Type[nn.Module],
        drop_path: Union[float, Sequence[float]] = 0.0,
        downsample: Optional[nn.Module] = None,
        conv_expand_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.input_resolution = input_resolution
        self.depth = depth
        rates = _per_block(drop_path, depth)
        self.blocks = nn.ModuleList(
            [MBConv(dim, dim, conv_expand_ratio, activation, rates[i]) for i in range(depth)]
        )
        # Always define the attribute so that "downsample" exists even when None (keys unchanged).
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        if self.downsample is not None:
            x = self.downsample(x)
        return x


class Mlp(nn.Module):
    """Pre-norm feed-forward: LayerNorm, Linear, activation, Linear (dropout optional)."""

    def __init__(
        self,
        in_features: int,
        hidden_features: Optional[int] = None,
        out_features: Optional[int] = None,
        act_layer: Type[nn.Module] = nn.GELU,
        drop: float = 0.0,
    ) -> None:
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.norm = nn.LayerNorm(in_features)
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.act = act_layer()
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        x = self.drop(self.act(self.fc1(self.norm(x))))
        return self.drop(self.fc2(x))


def _relative_bias_index(height: int, width: int) -> Tensor:
    """Index (N, N) into a per-head table of biases, one bias per |dy|, |dx| offset pair.

    Offsets are symmetric (absolute values), so a height x width window has height*width
    distinct offsets; offset (dy, dx) is stored at column dy * width + dx, which is the
    column order of ``attention_biases`` in TinyViT checkpoints.
    """
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    ys, xs = ys.reshape(-1), xs.reshape(-1)
    dy = (ys[:, None] - ys[None, :]).abs()
    dx = (xs[:, None] - xs[None, :]).abs()
    return (dy * width + dx).long()


class Attention(nn.Module):
    """Multi-head self-attention over one window, with pre-LayerNorm and relative-position bias.

    The fused ``qkv`` projection is laid out head-major: for each head, ``key_dim`` query
    channels, ``key_dim`` key channels and ``d`` value channels, in that order.
    """

    def __init__(
        self,
        dim: int,
        key_dim: int,
        num_heads: int = 8,
        attn_ratio: float = 4.0,
        resolution: Tuple[int, int] = (14, 14),
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.scale = key_dim ** -0.5
        self.nh_kd = key_dim * num_heads
        self.d = int(attn_ratio * key_dim)
        self.dh = self.d * num_heads
        self.attn_ratio = attn_ratio

        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, self.dh + 2 * self.nh_kd)
        self.proj = nn.Linear(self.dh, dim)

        self.attention_biases = nn.Parameter(torch.zeros(num_heads, resolution[0] * resolution[1]))
        # Non-persistent: the index is derived from the window size and is NOT in the checkpoint.
        self.register_buffer("attention_bias_idxs", _relative_bias_index(*resolution), persistent=False)

    def forward(self, x: Tensor) -> Tensor:  # x: (B, N, C), N = window area
        b, n, _ = x.shape
        x = self.norm(x)
        qkv = self.qkv(x).view(b, n, self.num_heads, -1)
        q, k, v = qkv.split([self.key_dim, self.key_dim, self.d], dim=3)
        q, k, v = (t.permute(0, 2, 1, 3) for t in (q, k, v))  # (B, heads, N, ch)

        # Gathering the bias every call (instead of caching it on eval()) costs microseconds and
        # cannot go stale when weights are loaded after the model was switched to eval mode.
        bias = self.attention_biases[:, self.attention_bias_idxs]  # (heads, N, N)
        attn = (q @ k.transpose(-2, -1)) * self.scale + bias
        attn = attn.softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, n, self.dh)
        return self.proj(out)


class TinyViTBlock(nn.Module):
    """Window attention (with residual), depthwise 3x3 local conv, then MLP (with residual)."""

    def __init__(
        self,
        dim: int,
        input_resolution: Tuple[int, int],
        num_heads: int,
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        drop: float = 0.0,
        drop_path: float = 0.0,
        local_conv_size: int = 3,
        activation: Type[nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        if window_size <= 0:
            raise ValueError("window_size must be positive")
        if dim % num_heads != 0:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim = dim
        self.input_resolution = input_resolution
        self.num_heads = num_heads
        self.window_size = window_size
        self.mlp_ratio = mlp_ratio

        self.drop_path = _drop_path_or_identity(drop_path)
        head_dim = dim // num_heads
        self.attn = Attention(dim, head_dim, num_heads, attn_ratio=1, resolution=(window_size, window_size))
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=activation, drop=drop)
        self.local_conv = Conv2d_BN(
            dim, dim, kernel_size=local_conv_size, stride=1, padding=local_conv_size // 2, groups=dim
        )

    def _window_attention(self, x: Tensor) -> Tensor:
        """Self-attention inside non-overlapping windows; x and result are (B, H*W, C)."""
        h, w = self.input_resolution
        b, length, c = x.shape
        ws = self.window_size
        if h == ws and w == ws:
            return self.attn(x)

        grid = x.view(b, h, w, c)
        # Zero-pad bottom/right up to a multiple of the window. The padded tokens do take part
        # in attention as keys/values (no masking) - this matches how the weights were trained.
        pad_h = (-h) % ws
        pad_w = (-w) % ws
        if pad_h or pad_w:
            grid = F.pad(grid, (0, 0, 0, pad_w, 0, pad_h))
        ph, pw = h + pad_h, w + pad_w
        nh, nw = ph // ws, pw // ws

        windows = (
            grid.view(b, nh, ws, nw, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b * nh * nw, ws * ws, c)
        )
        windows = self.attn(windows)
        grid = windows.view(b, nh, nw, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b, ph, pw, c)
        if pad_h or pad_w:
            grid = grid[:, :h, :w]
        return grid.reshape(b, length, c)

    def forward(self, x: Tensor) -> Tensor:
        h, w = self.input_resolution
        b, length, c = x.shape
        if length != h * w:
            raise ValueError(f"expected {h * w} tokens for resolution {h}x{w}, got {length}")

        x = x + self.drop_path(self._window_attention(x))

        # Depthwise conv mixes information across window borders (no residual of its own).
        fmap = x.transpose(1, 2).reshape(b, c, h, w)
        x = self.local_conv(fmap).view(b, c, length).transpose(1, 2)

        return x + self.drop_path(self.mlp(x))

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, input_resolution={self.input_resolution}, num_heads={self.num_heads}, "
            f"window_size={self.window_size}, mlp_ratio={self.mlp_ratio}"
        )


class BasicLayer(nn.Module):
    """One attention stage: ``depth`` TinyViTBlocks, then an optional PatchMerging."""

    def __init__(
        self,
        dim: int,
        input_resolution: Tuple[int, int],
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float = 4.0,
        drop: float = 0.0,
        drop_path: Union[float, Sequence[float]] = 0.0,
        downsample: Optional[nn.Module] = None,
        local_conv_size: int = 3,
        activation: Type[nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.input_resolution = input_resolution
        self.depth = depth
        rates = _per_block(drop_path, depth)
        self.blocks = nn.ModuleList(
            [
                TinyViTBlock(
                    dim=dim,
                    input_resolution=input_resolution,
                    num_heads=num_heads,
                    window_size=window_size,
                    mlp_ratio=mlp_ratio,
                    drop=drop,
                    drop_path=rates[i],
                    local_conv_size=local_conv_size,
                    activation=activation,
                )
                for i in range(depth)
            ]
        )
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        if self.downsample is not None:
            x = self.downsample(x)
        return x

    def extra_repr(self) -> str:
        return f"dim={self.dim}, input_resolution={self.input_resolution}, depth={self.depth}"


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel dimension of a (B, C, H, W) map, as in SAM's neck."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


def _per_block(rate: Union[float, Sequence[float]], depth: int) -> List[float]:
    if isinstance(rate, (int, float)):
        return [float(rate)] * depth
    rates = [float(r) for r in rate]
    if len(rates) != depth:
        raise ValueError(f"expected {depth} drop-path rates, got {len(rates)}")
    return rates


class TinyViT(nn.Module):
    """TinyViT backbone + SAM neck, producing ``out_chans`` x (img_size/4) x (img_size/4) embeddings.

    Defaults are MobileSAM's TinyViT-5M; ``build_lite_medsam_encoder`` gives the LiteMedSAM
    configuration. There is no classification head.
    """

    def __init__(
        self,
        img_size: int = 256,
        in_chans: int = 3,
        embed_dims: Sequence[int] = (64, 128, 160, 320),
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (2, 4, 5, 10),
        window_sizes: Sequence[int] = (7, 7, 14, 7),
        mlp_ratio: float = 4.0,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        mbconv_expand_ratio: float = 4.0,
        local_conv_size: int = 3,
        out_chans: int = 256,
    ) -> None:
        super().__init__()
        if not (len(embed_dims) == len(depths) == len(num_heads) == len(window_sizes)):
            raise ValueError("embed_dims, depths, num_heads and window_sizes must have equal length")
        self.img_size = img_size
        self.depths = list(depths)
        self.num_layers = len(depths)
        self.mlp_ratio = mlp_ratio
        activation = nn.GELU

        self.patch_embed = PatchEmbed(in_chans, embed_dims[0], img_size, activation)
        self.patches_resolution = self.patch_embed.patches_resolution

        # Stochastic-depth rate grows linearly over all blocks (0 everywhere by default).
        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()

        self.layers = nn.ModuleList()
        resolution = self.patches_resolution
        for i in range(self.num_layers):
            rates = dpr[sum(depths[:i]) : sum(depths[: i + 1])]
            downsample: Optional[PatchMerging] = None
            if i < self.num_layers - 1:
                # The merge into the last stage keeps the resolution (stride 1), as in MobileSAM,
                # so the final grid is img_size / 4 (64x64 for 256x256 inputs).
                stride = 1 if i == self.num_layers - 2 else 2
                downsample = PatchMerging(resolution, embed_dims[i], embed_dims[i + 1], activation, stride)
            if i == 0:
                layer: nn.Module = ConvLayer(
                    dim=embed_dims[i],
                    input_resolution=resolution,
                    depth=depths[i],
                    activation=activation,
                    drop_path=rates,
                    downsample=downsample,
                    conv_expand_ratio=mbconv_expand_ratio,
                )
            else:
                layer = BasicLayer(
                    dim=embed_dims[i],
                    input_resolution=resolution,
                    depth=depths[i],
                    num_heads=num_heads[i],
                    window_size=window_sizes[i],
                    mlp_ratio=mlp_ratio,
                    drop=drop_rate,
                    drop_path=rates,
                    downsample=downsample,
                    local_conv_size=local_conv_size,
                    activation=activation,
                )
            self.layers.append(layer)
            if downsample is not None:
                resolution = downsample.output_resolution
        self.output_resolution: Tuple[int, int] = resolution

        self.apply(self._init_weights)

        # SAM neck: project to out_chans and normalise (keys neck.0 .. neck.3).
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # Only matters for training from scratch; the checkpoint overwrites everything.
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_chans, img_size, img_size) -> (B, out_chans, H', W')."""
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        b, _, c = x.shape
        h, w = self.output_resolution
        x = x.transpose(1, 2).reshape(b, c, h, w)
        return self.neck(x)


def build_lite_medsam_encoder() -> TinyViT:
    """TinyViT-5M configured exactly as LiteMedSAM's image encoder (256x256 in, 256x64x64 out)."""
    return TinyViT(
        img_size=256,
        in_chans=3,
        embed_dims=(64, 128, 160, 320),
        depths=(2, 2, 6, 2),
        num_heads=(2, 4, 5, 10),
        window_sizes=(7, 7, 14, 7),
        mlp_ratio=4.0,
        drop_rate=0.0,
        drop_path_rate=0.0,
        mbconv_expand_ratio=4.0,
        local_conv_size=3,
    )
