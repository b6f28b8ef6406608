"""Training data with no download at run time: digits, CIFAR-10 from a local folder, or noise.

- digits: scikit-learn's 1,797 handwritten digits (8x8, shipped inside the package), a fixed
  held-out fifth (360 images, the same for every run and seed), upsampled to the resolution;
- cifar10: the standard "python version" (`cifar-10-batches-py`: data_batch_1..5 and
  test_batch) from a folder the user points to, read with an unpickler that only admits
  numpy arrays, so a file from elsewhere cannot run code;
- gaussian: N(0, 1) images with random labels, generated per batch (for speed tests; the
  held-out accuracy stays at chance).

Images are kept at their native size (uint8 for CIFAR-10) and standardized per channel with
the training split's statistics, then resized, one batch at a time.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from nfcore.engine.inputs import IMAGE_CHANNELS

DIGITS_HELD_OUT = 0.2  # fraction of the digits kept for evaluation
SPLIT_SEED = 0  # the held-out split does not depend on a run's seed: runs stay comparable
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch"
CIFAR10_SIDE = 32
GAUSSIAN_TRAIN_EXAMPLES = 50_000
GAUSSIAN_TEST_EXAMPLES = 1_000


class DataUnavailableError(ValueError):
    """The data set cannot be read (no folder given, missing or malformed files)."""


@dataclass(frozen=True)
class Split:
    """Images at their native size (N, C, h, w; uint8 or float32) and their int64 labels.

    A Gaussian split has no stored images: `images` is None and batches are generated.
    """

    images: Tensor | None
    labels: Tensor
    noise_offset: int = 0  # a Gaussian split's images are seeded by index + this offset

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class DataSet:
    name: str
    train: Split
    test: Split
    num_classes: int
    resolution: int
    mean: Tensor  # per channel, of the training split (in [0, 1] units for uint8 images)
    std: Tensor
    seed: int = 0

    def batch(self, split: Split, indices: Tensor) -> tuple[Tensor, Tensor]:
        """Standardized N x 3 x R x R images and labels of `split` at `indices` (on the CPU)."""
        labels = split.labels[indices]
        if split.images is None:  # gaussian: the same indices always give the same images
            generator = torch.Generator().manual_seed(
                self.seed * 1_000_003 + split.noise_offset + int(indices[0])
            )
            shape = (len(indices), IMAGE_CHANNELS, self.resolution, self.resolution)
            return torch.randn(shape, generator=generator), labels
        x = split.images[indices]
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        x = (x - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1)
        if x.shape[-1] != self.resolution or x.shape[-2] != self.resolution:
            x = F.interpolate(
                x,
                size=(self.resolution, self.resolution),
                mode="bilinear",
                align_corners=False,
                antialias=x.shape[-1] > self.resolution,
            )
        if x.shape[1] != IMAGE_CHANNELS:
            x = x.expand(-1, IMAGE_CHANNELS, -1, -1)
        return x.contiguous(), labels


def load_dataset(
    name: str, resolution: int, *, seed: int = 0, data_dir: str | os.PathLike | None = None
) -> DataSet:
    """The data set `name` at `resolution`; `data_dir` is needed for cifar10 only."""
    if name == "digits":
        return _digits(resolution)
    if name == "cifar10":
        return _cifar10(resolution, data_dir)
    if name == "gaussian":
        return _gaussian(resolution, seed)
    raise DataUnavailableError(f"unknown data set {name!r}; choose digits, cifar10 or gaussian")


def _digits(resolution: int) -> DataSet:
    from sklearn.datasets import load_digits  # ships with scikit-learn: no network

    data = load_digits()
    images = torch.from_numpy(data.images.astype(np.float32)).unsqueeze(1)  # N,1,8,8
    labels = torch.from_numpy(data.target.astype(np.int64))
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(SPLIT_SEED))
    held_out = round(DIGITS_HELD_OUT * len(labels))
    test, train = order[:held_out], order[held_out:]
    train_images = images[train]
    return DataSet(
        name="digits",
        train=Split(train_images, labels[train]),
        test=Split(images[test], labels[test]),
        num_classes=10,
        resolution=resolution,
        mean=train_images.mean().reshape(1),
        std=train_images.std().reshape(1),
    )


def _gaussian(resolution: int, seed: int) -> DataSet:
    generator = torch.Generator().manual_seed(seed)
    return DataSet(
        name="gaussian",
        train=Split(None, torch.randint(10, (GAUSSIAN_TRAIN_EXAMPLES,), generator=generator)),
        test=Split(
            None,
            torch.randint(10, (GAUSSIAN_TEST_EXAMPLES,), generator=generator),
            noise_offset=GAUSSIAN_TRAIN_EXAMPLES,
        ),
        num_classes=10,
        resolution=resolution,
        mean=torch.zeros(IMAGE_CHANNELS),
        std=torch.ones(IMAGE_CHANNELS),
        seed=seed,
    )


# --- CIFAR-10, python version -------------------------------------------------------------

_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how Python 3 writes bytes at pickle protocol 2
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, numbers, strings and numpy arrays; refuses anything else."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _NUMPY_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR-10 batch file")


def cifar10_folder(data_dir: str | os.PathLike | None) -> Path:
    """The `cifar-10-batches-py` folder: `data_dir` itself or its child of that name."""
    if data_dir is None or str(data_dir) == "":
        raise DataUnavailableError(
            "cifar10 needs a local copy of CIFAR-10 (python version, the cifar-10-batches-py "
            "folder): give its folder with --data-dir, or set CIFAR10_DIR for the worker"
        )
    folder = Path(data_dir).expanduser()
    if (folder / CIFAR10_FOLDER).is_dir():
        folder = folder / CIFAR10_FOLDER
    if not folder.is_dir():
        raise DataUnavailableError(f"CIFAR-10 folder {str(folder)!r} does not exist")
    return folder


def read_cifar10_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images N x 3 x 32 x 32 uint8, labels N int64) from one batch file."""
    try:
        with path.open("rb") as handle:
            entry = _ArrayUnpickler(handle, encoding="bytes").load()
    except FileNotFoundError:
        raise DataUnavailableError(f"CIFAR-10 file {str(path)!r} is missing") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as error:
        raise DataUnavailableError(
            f"{str(path)!r} is not a CIFAR-10 python batch file ({error})"
        ) from None
    if not isinstance(entry, dict):
        raise DataUnavailableError(f"{str(path)!r} is not a CIFAR-10 batch (not a dict)")
    entry = {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}
    data, labels = entry.get("data"), entry.get("labels")
    side = CIFAR10_SIDE
    if (
        not isinstance(data, np.ndarray)
        or data.ndim != 2
        or data.shape[1] != IMAGE_CHANNELS * side * side
        or labels is None
        or len(labels) != len(data)
    ):
        raise DataUnavailableError(
            f"{str(path)!r} is not a CIFAR-10 batch: expected 'data' of N x 3072 uint8 and "
            "N 'labels'"
        )
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataUnavailableError(f"{str(path)!r} has labels outside 0-9")
    images = data.astype(np.uint8, copy=False).reshape(-1, IMAGE_CHANNELS, side, side)
    return images, labels


def _cifar10(resolution: int, data_dir: str | os.PathLike | None) -> DataSet:
    folder = cifar10_folder(data_dir)
    present = [folder / name for name in CIFAR10_TRAIN_FILES if (folder / name).exists()]
    if not present:
        raise DataUnavailableError(
            f"no CIFAR-10 training batches (data_batch_1 ... data_batch_5) in {str(folder)!r}"
        )
    parts = [read_cifar10_batch(path) for path in present]
    train_images = torch.from_numpy(np.concatenate([p[0] for p in parts]))
    train_labels = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    test_images, test_labels = read_cifar10_batch(folder / CIFAR10_TEST_FILE)
    scaled = train_images.float().div_(255.0)
    return DataSet(
        name="cifar10",
        train=Split(train_images, train_labels),
        test=Split(torch.from_numpy(test_images), torch.from_numpy(test_labels)),
        num_classes=10,
        resolution=resolution,
        mean=scaled.mean(dim=(0, 2, 3)),
        std=scaled.std(dim=(0, 2, 3)),
    )
