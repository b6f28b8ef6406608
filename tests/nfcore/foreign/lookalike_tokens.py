"""Tiny Transformers and hybrids with the structure of timm's and torchvision's, each
modelled on its source (see `lookalikes` for the convolutional ones): token tensors N,L,C,
maps kept N,H,W,C, attention sub-layers inside blocks, conv blocks before Transformer ones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tests.nfcore.foreign.lookalikes import ConvNormAct, InvertedResidual


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int = 2) -> None:
        super().__init__()
        self.heads, self.qkv, self.proj = heads, nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or 2 * dim
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LayerScale(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), 0.5))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class Block(nn.Module):
    """timm's ViT block: x + drop_path(ls(attn(norm1(x)))), then the same with the MLP."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm1, self.attn, self.ls1 = nn.LayerNorm(dim), Attention(dim), LayerScale(dim)
        self.drop_path1 = nn.Identity()
        self.norm2, self.mlp, self.ls2 = nn.LayerNorm(dim), Mlp(dim), LayerScale(dim)
        self.drop_path2 = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x))))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


class ViT(nn.Module):
    """vit_tiny_patch16's layout at a small image: a class token, 16 patches of 24 channels
    (17 tokens: fewer tokens than channels, the case a channel-first guess got wrong)."""

    def __init__(self, image: int = 32, patch: int = 8, dim: int = 24, depth: int = 3) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, (image // patch) ** 2 + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim) for _ in range(depth)])
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # N, L, C
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


# --- Swin (torchvision swin_transformer.py): N,H,W,C maps, patch merging between stages -------


class Permute(nn.Module):
    def __init__(self, dims: list[int]) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: Tensor) -> Tensor:
        return torch.permute(x, self.dims)


class ShiftedWindowAttention(nn.Module):
    def __init__(self, dim: int, window: int, shift: int, heads: int = 2) -> None:
        super().__init__()
        self.window, self.shift, self.heads = window, shift, heads
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, h, w, c = x.shape
        s = self.window
        if self.shift:
            x = torch.roll(x, (-self.shift, -self.shift), (1, 2))
        windows = x.view(b, h // s, s, w // s, s, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, s * s, c)
        q, k, v = (
            self.qkv(windows)
            .reshape(-1, s * s, 3, self.heads, c // self.heads)
            .permute(2, 0, 3, 1, 4)
        )
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(-1, s * s, c)
        out = self.proj(out).view(b, h // s, w // s, s, s, c).permute(0, 1, 3, 2, 4, 5)
        out = out.reshape(b, h, w, c)
        return torch.roll(out, (self.shift, self.shift), (1, 2)) if self.shift else out


class SwinTransformerBlock(nn.Module):
    def __init__(self, dim: int, window: int, shift: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), ShiftedWindowAttention(dim, window, shift)
        self.norm2, self.mlp = nn.LayerNorm(dim), Mlp(dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: Tensor) -> Tensor:
        x0, x1 = x[..., 0::2, 0::2, :], x[..., 1::2, 0::2, :]
        x2, x3 = x[..., 0::2, 1::2, :], x[..., 1::2, 1::2, :]
        return self.reduction(self.norm(torch.cat([x0, x1, x2, x3], -1)))


class Swin(nn.Module):
    """swin_t's layout: `features` = [stem, stage, merging, stage, merging, stage]; the maps
    stay N,H,W,C from the stem's Permute to the head (here H = W = 8 or 4 < C = 16 ... 64)."""

    def __init__(self, dim: int = 16, depths: tuple[int, ...] = (2, 2, 2), window: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Sequential(nn.Conv2d(3, dim, 4, 4), Permute([0, 2, 3, 1]),
                                                 nn.LayerNorm(dim))]  # fmt: skip
        for i, depth in enumerate(depths):
            width = dim * 2**i
            layers.append(nn.Sequential(*[SwinTransformerBlock(width, window, window // 2 * (j % 2))
                                          for j in range(depth)]))  # fmt: skip
            if i < len(depths) - 1:
                layers.append(PatchMerging(width))
        self.features = nn.Sequential(*layers)
        width = dim * 2 ** (len(depths) - 1)
        self.norm, self.permute = nn.LayerNorm(width), Permute([0, 3, 1, 2])
        self.head = nn.Linear(width, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = self.permute(self.norm(self.features(x)))  # N,C,H,W for the pooling
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# --- LeViT (timm levit.py): a stem of four convs, token stages, attention downsampling -------


class LinearNorm(nn.Module):
    """timm's LeViT Linear + BatchNorm1d over the flattened tokens."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.linear, self.bn = nn.Linear(cin, cout, bias=False), nn.BatchNorm1d(cout)

    def forward(self, x: Tensor) -> Tensor:
        x = self.linear(x)
        return self.bn(x.flatten(0, 1)).reshape_as(x)


class LevitMlp(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.ln1, self.act, self.ln2 = (
            LinearNorm(dim, 2 * dim),
            nn.Hardswish(),
            LinearNorm(2 * dim, dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.ln2(self.act(self.ln1(x)))


class LevitAttention(nn.Module):
    def __init__(self, dim: int, dim_out: int | None = None, stride: int = 1) -> None:
        super().__init__()
        self.stride, dim_out = stride, dim_out or dim
        self.q, self.kv = LinearNorm(dim, dim_out), LinearNorm(dim, 2 * dim_out)
        self.proj = LinearNorm(dim_out, dim_out)

    def forward(self, x: Tensor) -> Tensor:
        k, v = self.kv(x).chunk(2, dim=-1)
        n, length, c = x.shape
        if self.stride > 1:  # subsample the query positions (LeViT's AttentionDownsample)
            side = int(length**0.5)
            x = x.view(n, side, side, c)[:, :: self.stride, :: self.stride].reshape(n, -1, c)
        q = self.q(x)
        return self.proj(F.hardswish(F.scaled_dot_product_attention(q, k, v)))


class LevitBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.attn, self.drop_path1 = LevitAttention(dim), nn.Identity()
        self.mlp, self.drop_path2 = LevitMlp(dim), nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path1(self.attn(x))
        return x + self.drop_path2(self.mlp(x))


class LevitDownsample(nn.Module):
    """Attention that subsamples the tokens, then a residual MLP on the subsampled ones."""

    def __init__(self, dim: int, dim_out: int) -> None:
        super().__init__()
        self.attn_downsample = LevitAttention(dim, dim_out, stride=2)
        self.mlp, self.drop_path = LevitMlp(dim_out), nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = self.attn_downsample(x)
        return x + self.drop_path(self.mlp(x))


class LevitStage(nn.Module):
    def __init__(self, dim: int, dim_out: int, depth: int, downsample: bool) -> None:
        super().__init__()
        self.downsample = LevitDownsample(dim, dim_out) if downsample else nn.Identity()
        self.blocks = nn.Sequential(*[LevitBlock(dim_out) for _ in range(depth)])

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(self.downsample(x))


class Stem16(nn.Module):
    """timm's: four stride-2 convs as attributes conv1 ... conv4 (not in a container)."""

    def __init__(self, cout: int) -> None:
        super().__init__()
        self.conv1, self.act1 = ConvNormAct(3, cout // 4, 3, 2, act=False), nn.Hardswish()
        self.conv2, self.act2 = ConvNormAct(cout // 4, cout // 2, 3, 2, act=False), nn.Hardswish()
        self.conv3, self.act3 = ConvNormAct(cout // 2, cout, 3, 2, act=False), nn.Hardswish()
        self.conv4 = ConvNormAct(cout, cout, 3, 2, act=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv4(self.act3(self.conv3(self.act2(self.conv2(self.act1(self.conv1(x)))))))


class LeViT(nn.Module):
    """levit_128s's layout at 64 px: 4 x 4 tokens, then 2 x 2 after the downsampling."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = Stem16(16)
        self.stages = nn.Sequential(LevitStage(16, 16, 2, False), LevitStage(16, 24, 2, True))
        self.head = nn.Linear(24, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x).flatten(2).transpose(1, 2)  # N, L, C
        return self.head(self.stages(x).mean(1))


# --- MaxViT (torchvision maxvit.py): a block of an MBConv and two attention sub-layers -------


class MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.proj = (nn.Sequential(nn.AvgPool2d(3, stride, 1), nn.Conv2d(cin, cout, 1))
                     if stride > 1 or cin != cout else nn.Identity())  # fmt: skip
        self.layers = nn.Sequential(nn.BatchNorm2d(cin), ConvNormAct(cin, 2 * cout, 1),
                                    ConvNormAct(2 * cout, 2 * cout, 3, stride),
                                    nn.Conv2d(2 * cout, cout, 1))  # fmt: skip
        self.stochastic_depth = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        res = self.proj(x)
        x = self.stochastic_depth(self.layers(x))
        return res + x


class PartitionAttentionLayer(nn.Module):
    """Window ('block') or grid attention on partitions of an N,C,H,W map, channels last
    inside, then back: x + attn(norm(x)), x + mlp(norm(x)) on the partitions."""

    def __init__(self, dim: int, partition: int, grid: bool) -> None:
        super().__init__()
        self.p, self.grid = partition, grid
        self.attn_layer = nn.Sequential(nn.LayerNorm(dim), Attention(dim))
        self.mlp_layer = nn.Sequential(nn.LayerNorm(dim), Mlp(dim))
        self.stochastic_dropout = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        p, g = (h // self.p, self.p) if self.grid else (self.p, h // self.p)
        x = x.reshape(n, c, g, p, g, p).permute(0, 2, 4, 3, 5, 1).reshape(n, g * g, p * p, c)
        x = x.reshape(n * g * g, p * p, c)
        x = x + self.stochastic_dropout(self.attn_layer(x))
        x = x + self.stochastic_dropout(self.mlp_layer(x))
        x = x.reshape(n, g, g, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(n, c, h, w)
        return x


class MaxVitLayer(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.layers = nn.Sequential()
        self.layers.add_module("MBconv", MBConv(cin, cout, stride))
        self.layers.add_module("window_attention", PartitionAttentionLayer(cout, 2, False))
        self.layers.add_module("grid_attention", PartitionAttentionLayer(cout, 2, True))

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class MaxVitBlock(nn.Module):
    """torchvision's name for a stage: a ModuleList of MaxVitLayers."""

    def __init__(self, cin: int, cout: int, depth: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [MaxVitLayer(cin if i == 0 else cout, cout, 2 if i == 0 else 1) for i in range(depth)]
        )

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class MaxViT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(ConvNormAct(3, 8, 3, 2), nn.Conv2d(8, 8, 3, padding=1))
        self.blocks = nn.ModuleList([MaxVitBlock(8, 16, 2), MaxVitBlock(16, 24, 1)])
        self.classifier = nn.Linear(24, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.classifier(x.mean((2, 3)))


# --- EfficientFormer (timm efficientformer.py): 2-D blocks, then a token block --------------


class Pooling(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(3, 1, 1, count_include_pad=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(x) - x


class ConvMlpWithNorm(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc1, self.norm1 = nn.Conv2d(dim, 2 * dim, 1), nn.BatchNorm2d(2 * dim)
        self.act, self.fc2 = nn.GELU(), nn.Conv2d(2 * dim, dim, 1)
        self.norm2 = nn.BatchNorm2d(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm2(self.fc2(self.act(self.norm1(self.fc1(x)))))


class LayerScale2d(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), 0.5))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma.view(1, -1, 1, 1)


class MetaBlock2d(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.token_mixer, self.ls1 = Pooling(), LayerScale2d(dim)
        self.mlp, self.ls2 = ConvMlpWithNorm(dim), LayerScale2d(dim)
        self.drop_path1 = self.drop_path2 = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path1(self.ls1(self.token_mixer(x)))
        return x + self.drop_path2(self.ls2(self.mlp(x)))


class Flat(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(2).transpose(1, 2)


class MetaBlock1d(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm1, self.token_mixer, self.ls1 = nn.LayerNorm(dim), Attention(dim), LayerScale(dim)
        self.norm2, self.mlp, self.ls2 = nn.LayerNorm(dim), Mlp(dim), LayerScale(dim)
        self.drop_path = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.ls1(self.token_mixer(self.norm1(x))))
        return x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))


class EfficientFormerStage(nn.Module):
    def __init__(self, dim: int, dim_out: int, depth: int, num_vit: int = 0) -> None:
        super().__init__()
        self.downsample = ConvNormAct(dim, dim_out, 3, 2, act=False) if dim != dim_out else (
            nn.Identity())  # fmt: skip
        blocks: list[nn.Module] = []
        for i in range(depth):
            if num_vit and num_vit > depth - i - 1:
                if not any(isinstance(b, Flat) for b in blocks):
                    blocks.append(Flat())
                blocks.append(MetaBlock1d(dim_out))
            else:
                blocks.append(MetaBlock2d(dim_out))
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(self.downsample(x))


class EfficientFormer(nn.Module):
    """efficientformer_l1's layout: the last stage ends with one token block after a Flat."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(ConvNormAct(3, 8, 3, 2), ConvNormAct(8, 8, 3, 2))
        self.stages = nn.Sequential(EfficientFormerStage(8, 8, 2), EfficientFormerStage(8, 16, 2),
                                    EfficientFormerStage(16, 24, 2, num_vit=1))  # fmt: skip
        self.norm, self.head = nn.LayerNorm(24), nn.Linear(24, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.norm(self.stages(self.stem(x))).mean(1))


# --- MobileViT (timm byobnet.py / mobilevit.py): a conv block before each MobileViT block -----


class MobileVitBlock(nn.Module):
    """Local convs, Transformer blocks over unfolded 2 x 2 patches, a fusion of the input and
    the result by concatenation (no addition of its input)."""

    def __init__(self, dim: int, inner: int, depth: int = 2, patch: int = 2) -> None:
        super().__init__()
        self.patch = patch
        self.conv_kxk, self.conv_1x1 = (
            ConvNormAct(dim, dim, 3),
            nn.Conv2d(dim, inner, 1, bias=False),
        )
        self.transformer = nn.Sequential(*[Block(inner) for _ in range(depth)])
        self.norm = nn.LayerNorm(inner)
        self.conv_proj = ConvNormAct(inner, dim, 1)
        self.conv_fusion = ConvNormAct(2 * dim, dim, 3)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.conv_1x1(self.conv_kxk(x))
        n, c, h, w = x.shape
        p = self.patch
        x = x.reshape(n, c, h // p, p, w // p, p).permute(0, 3, 5, 2, 4, 1)
        x = x.reshape(n * p * p, (h // p) * (w // p), c)  # N*P, L, C
        x = self.norm(self.transformer(x))
        x = x.reshape(n, p, p, h // p, w // p, c).permute(0, 5, 3, 1, 4, 2).reshape(n, c, h, w)
        return self.conv_fusion(torch.cat((shortcut, self.conv_proj(x)), dim=1))


class MobileViT(nn.Module):
    """mobilevit_xxs's layout: stages of inverted-residual bottlenecks, the last ones a
    bottleneck (stride 2, no skip) then a MobileViT block."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = ConvNormAct(3, 8, 3, 2)
        self.stages = nn.Sequential(
            nn.Sequential(InvertedResidual(8, 8)),
            nn.Sequential(InvertedResidual(8, 12, 2), InvertedResidual(12, 12)),
            nn.Sequential(InvertedResidual(12, 16, 2), MobileVitBlock(16, 24)),
            nn.Sequential(InvertedResidual(16, 20, 2), MobileVitBlock(20, 32)),
        )
        self.head = nn.Linear(20, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.stages(self.stem(x)).mean((2, 3)))
