"""Input batches for SPPs: N(0,1) noise (Section 3) or real images, with no download.

Real images are scikit-learn's handwritten digits (1,797 8x8 grey images shipped inside the
package), upsampled to the requested resolution and repeated over three channels.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

IMAGE_CHANNELS = 3


def gaussian(shape: tuple[int, ...], seed: int) -> Tensor:
    """Seeded samples of the unit Gaussian, of any shape (a non-image network's input)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator)


def gaussian_batch(batch: int, resolution: int, seed: int) -> Tensor:
    """N x 3 x H x W samples of the unit Gaussian, the paper's SPP input."""
    return gaussian((batch, IMAGE_CHANNELS, resolution, resolution), seed)


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # ships with scikit-learn: no network

    data = load_digits()
    return data.images.astype(np.float32), data.target.astype(np.int64)


def digits_images(indices: Tensor, resolution: int) -> Tensor:
    """Digits at `indices`, standardized with the data set's pixel mean and standard deviation,
    then bilinearly upsampled (which smooths them: the variance drops to about 0.85)."""
    images, _ = _digits()
    # Standardize with the statistics of the whole data set, so every batch sees the same map.
    mean, std = float(images.mean()), float(images.std())
    batch = torch.from_numpy((images[indices.numpy()] - mean) / std).unsqueeze(1)  # N,1,8,8
    batch = F.interpolate(
        batch, size=(resolution, resolution), mode="bilinear", align_corners=False
    )
    return batch.expand(-1, IMAGE_CHANNELS, -1, -1).contiguous()  # N,3,H,W


def digits_batch(batch: int, resolution: int, seed: int) -> Tensor:
    """A seeded random draw of `batch` digits (with replacement beyond the 1,797 images)."""
    count = len(_digits()[0])
    generator = torch.Generator().manual_seed(seed)
    order = torch.cat(
        [torch.randperm(count, generator=generator) for _ in range(-(-batch // count))]
    )
    return digits_images(order[:batch], resolution)


def input_batch(kind: str, batch: int, resolution: int, seed: int) -> Tensor:
    """The SPP input a config names, on the CPU (moved to the device by the caller)."""
    if kind == "digits":
        return digits_batch(batch, resolution, seed)
    if kind == "gaussian":
        return gaussian_batch(batch, resolution, seed)
    raise ValueError(f"unknown input {kind!r}; choose gaussian or digits")
