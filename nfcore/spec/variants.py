"""Model families as data: block layouts and widths, one row per variant.

Torch-free so the config (and through it the API) can validate a depth or a variant
without loading torch. The builders in `nfcore.engine.models` read these tables; nothing else
declares a layout.
"""

from __future__ import annotations

from typing import Final, TypedDict

# Pre-activation ResNet (He et al., 2016a) bottleneck layouts: blocks per stage.
# depth = 3 * sum(layout) + 2 (three convs per bottleneck, plus the stem conv and the classifier).
# 50 ... 600 are the depths the paper uses (Table 1, Figs. 1, 2, 6-11); 14 and 26 are tiny
# layouts for tests and quick looks on a laptop.
RESNET_LAYOUTS: Final[dict[int, tuple[int, ...]]] = {
    14: (1, 1, 1, 1),
    26: (2, 2, 2, 2),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
    200: (3, 24, 36, 3),
    288: (24, 24, 24, 24),
    600: (50, 50, 50, 50),
}
PAPER_RESNET_DEPTHS: Final[tuple[int, ...]] = (50, 101, 152, 200, 288, 600)

# Output channels of each ResNet stage at width 1; the bottleneck is a quarter of it.
RESNET_STAGE_WIDTHS: Final[tuple[int, ...]] = (256, 512, 1024, 2048)
RESNET_STEM_WIDTH: Final[int] = 64
RESNET_BOTTLENECK_RATIO: Final[int] = 4
# Squeeze-and-Excite hidden width as a fraction of the channels it gates (Hu et al., 2018: 1/16).
RESNET_SE_RATIO: Final[float] = 1 / 16


class RegNetVariant(TypedDict):
    width: tuple[int, ...]
    depth: tuple[int, ...]


# NF-RegNet B0-B5, copied from the paper's Appendix D.2 listing.
NF_REGNET_VARIANTS: Final[dict[str, RegNetVariant]] = {
    "B0": {
        "width": (48, 104, 208, 440),
        "depth": (1, 3, 6, 6),
    },
    "B1": {
        "width": (48, 104, 208, 440),
        "depth": (2, 4, 7, 7),
    },
    "B2": {
        "width": (56, 112, 232, 488),
        "depth": (2, 4, 8, 8),
    },
    "B3": {
        "width": (56, 128, 248, 528),
        "depth": (2, 5, 9, 9),
    },
    "B4": {
        "width": (64, 144, 288, 616),
        "depth": (2, 6, 11, 11),
    },
    "B5": {
        "width": (80, 168, 336, 704),
        "depth": (3, 7, 14, 14),
    },
}
# Parameter counts the paper reports in Table 3 (millions), checked by the tests.
NF_REGNET_PAPER_PARAMS_M: Final[dict[str, float]] = {
    "B0": 8.6,
    "B1": 10.0,
    "B2": 13.8,
    "B3": 18.1,
    "B4": 29.3,
    "B5": 48.7,
}
# Appendix C: model width multiplier w = 0.75, inverted-bottleneck expansion g = 2.25,
# group width 8, S+E hidden width half the expanded width, final conv to 1280 * w channels.
NF_REGNET_WIDTH: Final[float] = 0.75
NF_REGNET_EXPANSION: Final[float] = 2.25
NF_REGNET_GROUP_SIZE: Final[int] = 8
NF_REGNET_SE_RATIO: Final[float] = 0.5
NF_REGNET_FINAL_WIDTH: Final[int] = 1280
# The listing's head is int(1280 * c_last // 440): 440 is B0's last-stage width, so the head
# grows with the compound-scaled width (B5: 1536 channels). This matches Table 3's counts.
NF_REGNET_FINAL_WIDTH_BASE: Final[int] = 440


def resnet_depth(layout: tuple[int, ...]) -> int:
    """Depth of a bottleneck ResNet with this many blocks per stage.

    The paper's names win for its layouts (ResNet-288 and ResNet-600 count 290 and 602
    layers by the 3-per-block rule); any other layout gets 3 * blocks + 2.
    """
    for depth, known in RESNET_LAYOUTS.items():
        if tuple(layout) == known:
            return depth
    return 3 * sum(layout) + 2
