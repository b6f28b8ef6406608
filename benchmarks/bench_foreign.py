"""`measure` on a network nfcore did not build, next to a plain `no_grad` forward of the same
network and input, side by side (issue 20: at most 1.3x).

    .venv/bin/python -m benchmarks.bench_foreign --threads 1   # the sizes below, one thread
    .venv/bin/python -m benchmarks.bench_foreign --quick       # smaller, for a smoke run

Three networks written here, in the layouts people use: a ResNet-50 laid out as
torchvision's (`layer1.0` ..., N,C,H,W), a ViT-Tiny as timm's (`blocks.0` ..., N,L,C tokens)
and a Swin-T as torchvision's (`features.1.0` ..., N,H,W,C maps, patch merging between the
stages). Each is timed three ways in one interleaved run: the plain forward, `measure`'s
first call on the model (its one pass traced to find the blocks and their layouts, and
measured; `meta.seconds` is checked to count all of it) and a repeated call (the plan of
the first reused with hooks on the blocks, `nfcore.foreign.plan`), each against the same
plain forward. The floor is the plain forward plus the block statistics alone.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks._report import Figure, format_table, machine_facts, time_side_by_side

TARGET = 1.3  # measure / plain forward (issue 20)


class Bottleneck(nn.Module):
    """torchvision's: relu(bn3(conv3(...)) + downsample(x))."""

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, planes, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, 4 * planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(4 * planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != 4 * planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, 4 * planes, 1, stride, bias=False), nn.BatchNorm2d(4 * planes)
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    def __init__(self, layers: tuple[int, ...] = (3, 4, 6, 3), width: int = 64) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width)
        self.relu, self.maxpool = nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)
        cin = width
        for index, count in enumerate(layers):
            planes = width * 2**index
            blocks = [Bottleneck(cin, planes, 1 if index == 0 else 2)]
            blocks += [Bottleneck(4 * planes, planes) for _ in range(count - 1)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*blocks))
            cin = 4 * planes
        self.fc = nn.Linear(cin, 1000)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.qkv, self.proj = heads, nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """timm's ViT block: x + attn(norm1(x)), then + mlp(norm2(x))."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2, self.mlp = nn.LayerNorm(dim), Mlp(dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    def __init__(self, image: int = 64, dim: int = 192, depth: int = 12, heads: int = 3) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, 16, 16)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, (image // 16) ** 2 + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, heads) for _ in range(depth)])
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, 1000)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # N, L, C
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


class WindowAttention(nn.Module):
    """Attention within windows of an N,H,W,C map (torchvision's ShiftedWindowAttention,
    without the shift)."""

    def __init__(self, dim: int, heads: int, window: int) -> None:
        super().__init__()
        self.heads, self.window = heads, window
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, h, w, c = x.shape
        s = min(self.window, h)
        windows = x.view(b, h // s, s, w // s, s, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, s * s, c)
        q, k, v = (
            self.qkv(windows)
            .reshape(-1, s * s, 3, self.heads, c // self.heads)
            .permute(2, 0, 3, 1, 4)
        )
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(-1, s * s, c)
        out = self.proj(out).view(b, h // s, w // s, s, s, c).permute(0, 1, 3, 2, 4, 5)
        return out.reshape(b, h, w, c)


class SwinBlock(nn.Module):
    def __init__(self, dim: int, heads: int, window: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), WindowAttention(dim, heads, window)
        self.norm2, self.mlp = nn.LayerNorm(dim), Mlp(dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm, self.reduction = nn.LayerNorm(4 * dim), nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        x0, x1 = x[..., 0::2, 0::2, :], x[..., 1::2, 0::2, :]
        x2, x3 = x[..., 0::2, 1::2, :], x[..., 1::2, 1::2, :]
        return self.reduction(self.norm(torch.cat([x0, x1, x2, x3], -1)))


class Swin(nn.Module):
    def __init__(self, dim: int = 96, depths: tuple[int, ...] = (2, 2, 6, 2), window: int = 4):
        super().__init__()
        stem = nn.Sequential(nn.Conv2d(3, dim, 4, 4), Permute(), nn.LayerNorm(dim))
        layers: list[nn.Module] = [stem]
        for index, depth in enumerate(depths):
            width = dim * 2**index
            layers.append(nn.Sequential(*[SwinBlock(width, 3 * 2**index, window)
                                          for _ in range(depth)]))  # fmt: skip
            if index < len(depths) - 1:
                layers.append(PatchMerging(width))
        self.features = nn.Sequential(*layers)
        self.norm, self.head = nn.LayerNorm(dim * 2 ** (len(depths) - 1)), nn.Linear(768, 1000)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.norm(self.features(x)).mean(dim=(1, 2)))


class Permute(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.permute(0, 2, 3, 1)  # N,C,H,W -> N,H,W,C


NETWORKS = {
    "ResNet-50 (torchvision layout), 64px N8": (ResNet, {}, 64, 8),
    "ViT-Ti/16 (timm layout), 64px N8": (ViT, {}, 64, 8),
    "Swin-T (torchvision layout, NHWC), 64px N8": (Swin, {}, 64, 8),
    # The same ViT on 196 patches: the trace's cost is per operation, not per pixel.
    "ViT-Ti/16 (timm layout), 224px N8": (ViT, {"image": 224}, 224, 8),
}
QUICK = {
    "ResNet-26 w32, 64px N8": (ResNet, {"layers": (2, 2, 2, 2), "width": 32}, 64, 8),
    "ViT depth 4, 64px N8": (ViT, {"depth": 4}, 64, 8),
    "Swin (1,1,2,1), 64px N8": (Swin, {"depths": (1, 1, 2, 1)}, 64, 8),
}


def overhead(quick: bool, repeats: int) -> list[Figure]:
    """`measure` against a plain `no_grad` forward of the same model and input, side by
    side: the first call on the model (the measured pass traced: blocks and layouts found
    from it) and a repeated call (what the first decided, reused with hooks on the blocks).

    The denominator is the forward a user would run and nothing else: `model(x)` under
    `no_grad`, on a twin of the model whose BatchNorm layers use batch statistics as the
    SPP is defined (no mode switching, no buffer copies inside the timing). The floor is
    what any measurement must add to it: the block outputs reduced to their statistics
    (`nfcore.foreign.reduce`), timed alone on outputs kept from a forward."""
    from nfcore import measure
    from nfcore.foreign.plan import forget

    figures = []
    for name, (make, args, resolution, batch) in (QUICK if quick else NETWORKS).items():
        torch.manual_seed(0)
        model = make(**args).eval()
        twin = _batch_statistics(copy.deepcopy(model))
        x = torch.randn(batch, 3, resolution, resolution)
        covered: list[float] = []

        def plain(twin: nn.Module = twin, x: Tensor = x) -> None:
            with torch.no_grad():
                twin(x)

        def first(model: nn.Module = model, size: tuple[int, int] = (resolution, batch),
                  covered: list[float] = covered) -> None:  # fmt: skip
            forget(model)  # as if never measured: the pass is traced
            start = time.perf_counter()
            result = measure(model, resolution=size[0], batch=size[1], device="cpu")
            covered.append(result.meta.seconds / (time.perf_counter() - start))

        def again(model: nn.Module = model, size: tuple[int, int] = (resolution, batch)) -> None:
            measure(model, resolution=size[0], batch=size[1], device="cpu")

        floor = _floor(model, twin, x, resolution, batch)
        times = time_side_by_side({"plain": plain, "first": first, "again": again}, repeats)
        result = measure(model, resolution=resolution, batch=batch, device="cpu")
        base = times["plain"]
        shape = f"{result.meta.num_blocks} blocks, {result.meta.layout}"
        for call, key in (("first call", "first"), ("repeated call", "again")):
            ratio = times[key] / base
            note = (f"measure {times[key] * 1e3:.1f} ms, plain forward {base * 1e3:.1f} ms; "
                    f"floor {(base + floor) * 1e3:.1f} ms ({1 + floor / base:.2f}x: the "
                    f"statistics alone); {shape}")  # fmt: skip
            if key == "first":
                note += f"; meta.seconds is {min(covered):.0%} of the call"
            figures.append(Figure("20.6", f"measure / plain forward, {call}, {name}",
                                  f"{ratio:.2f}x", f"<= {TARGET}x", ratio <= TARGET, note))  # fmt: skip
    return figures


def _batch_statistics(model: nn.Module) -> nn.Module:
    """The model as the SPP runs it: eval mode, BatchNorm on batch statistics."""
    model.eval()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.train()
    return model


def _floor(model: nn.Module, twin: nn.Module, x: Tensor, resolution: int, batch: int) -> float:
    """Seconds to reduce the block outputs of one forward to their statistics, the least
    any measurement adds to the forward (the median of a few)."""
    from nfcore import measure
    from nfcore.foreign.plan import plan_of
    from nfcore.foreign.reduce import reduce_all
    from nfcore.spec.statistics import measured

    measure(model, resolution=resolution, batch=batch, device="cpu")
    plan = plan_of(model)
    assert plan is not None
    names = {block.module_name for block in plan.found.blocks}
    layouts = plan.found.layouts
    outputs: list[Tensor] = []
    modules = dict(twin.named_modules())
    handles = [modules[name].register_forward_hook(lambda _m, _i, out: outputs.append(out))
               for name in names]  # fmt: skip
    with torch.no_grad():
        twin(x)
    for handle in handles:
        handle.remove()
    rows = [(row.key, row.reduction) for row in measured(False, False) if row.tap == "output"]
    wanted = [(i, y, layout, rows)
              for i, (y, layout) in enumerate(zip(outputs, layouts, strict=True))]  # fmt: skip
    samples = []
    for _ in range(5):
        start = time.perf_counter()
        values = reduce_all(wanted)
        torch.stack([value for _, _, value in values]).tolist()
        samples.append(time.perf_counter() - start)
    return sorted(samples)[len(samples) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller networks, fewer repeats")
    parser.add_argument("--threads", type=int, help="torch intra-op threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(machine_facts("cpu"))
    print(format_table(overhead(args.quick, 3 if args.quick else 7)))


if __name__ == "__main__":
    main()
