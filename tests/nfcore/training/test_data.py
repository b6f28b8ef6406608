"""Training data with no download: the digits split, CIFAR-10 files in their python format."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from nfcore.spec.config import TrainConfig
from nfcore.training.data import DataUnavailableError, load_dataset
from nfcore.training.train import train


def write_cifar10(folder, train_sizes=(6, 4, 5, 3, 2), test_size=7, seed=0):
    """CIFAR-10's python version in miniature: pickled dicts of b'data' (N x 3072 uint8,
    channel-major rows) and b'labels', as the real data_batch_1..5 and test_batch are."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name, size in zip(names, [*train_sizes, test_size], strict=True):
        entry = {
            b"batch_label": name.encode(),
            b"labels": [int(v) for v in rng.integers(0, 10, size)],
            b"data": rng.integers(0, 256, (size, 3072), dtype=np.uint8),
            b"filenames": [f"{name}_{i}.png".encode() for i in range(size)],
        }
        with (folder / name).open("wb") as handle:
            pickle.dump(entry, handle, protocol=2)
    return folder


def test_digits_split_is_fixed_and_standardized():
    data = load_dataset("digits", 32)
    assert (len(data.train), len(data.test)) == (1438, 359)
    again = load_dataset("digits", 32, seed=5)  # the split does not depend on the run's seed
    assert torch.equal(data.test.labels, again.test.labels)
    x, y = data.batch(data.train, torch.arange(len(data.train)))
    assert x.shape == (1438, 3, 32, 32) and y.dtype == torch.int64
    assert abs(float(x.mean())) < 0.05  # standardized with the training split's statistics
    assert sorted(set(y.tolist())) == list(range(10))


def test_cifar10_reads_the_python_format(tmp_path):
    folder = write_cifar10(tmp_path / "cifar-10-batches-py")
    data = load_dataset("cifar10", 32, data_dir=tmp_path)  # the parent folder works too
    assert (len(data.train), len(data.test)) == (20, 7)
    with (folder / "data_batch_1").open("rb") as handle:
        first = pickle.load(handle, encoding="bytes")
    x, y = data.batch(data.train, torch.tensor([0, 1]))
    assert y.tolist() == first[b"labels"][:2]
    # Pixel (channel 0, row 0, col 0) of image 0 is byte 0 of its row; channel 1 starts at 1024.
    raw = torch.tensor(first[b"data"][0], dtype=torch.float32) / 255.0
    assert float(x[0, 0, 0, 0]) == pytest.approx(float((raw[0] - data.mean[0]) / data.std[0]))
    assert float(x[0, 1, 0, 0]) == pytest.approx(float((raw[1024] - data.mean[1]) / data.std[1]))
    small, _ = load_dataset("cifar10", 16, data_dir=folder).batch(data.train, torch.tensor([0]))
    assert small.shape == (1, 3, 16, 16)


def test_training_on_a_local_cifar10_folder(tmp_path):
    folder = write_cifar10(tmp_path / "cifar", train_sizes=(16, 16, 16, 16, 16), test_size=8)
    config = TrainConfig(
        dataset="cifar10", depth=14, norm="nf", width=0.125, maxpool=False, resolution=16,
        batch=8, steps=3, eval_every=3,
    )  # fmt: skip
    result = train(config, data_dir=folder)
    assert result.status == "finished"
    assert result.meta.train_examples == 80 and result.meta.eval_examples == 8


def test_cifar10_without_a_folder_says_how_to_give_one():
    with pytest.raises(DataUnavailableError, match=r"--data-dir.*CIFAR10_DIR"):
        load_dataset("cifar10", 32)


def test_cifar10_missing_files_are_named(tmp_path):
    with pytest.raises(DataUnavailableError, match="does not exist"):
        load_dataset("cifar10", 32, data_dir=tmp_path / "nowhere")
    with pytest.raises(DataUnavailableError, match="no CIFAR-10 training batches"):
        load_dataset("cifar10", 32, data_dir=tmp_path)
    folder = write_cifar10(tmp_path / "c")
    (folder / "test_batch").unlink()
    with pytest.raises(DataUnavailableError, match=r"test_batch.*is missing"):
        load_dataset("cifar10", 32, data_dir=folder)


class _RunsCode:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_cifar10_files_cannot_run_code(tmp_path, capsys):
    folder = write_cifar10(tmp_path / "c")
    with (folder / "data_batch_1").open("wb") as handle:
        pickle.dump({b"data": _RunsCode(), b"labels": []}, handle, protocol=2)
    with pytest.raises(DataUnavailableError, match=r"print is not allowed in a CIFAR-10 batch"):
        load_dataset("cifar10", 32, data_dir=folder)
    assert "must never run" not in capsys.readouterr().out


def test_cifar10_malformed_batches_are_refused(tmp_path):
    folder = write_cifar10(tmp_path / "c")
    (folder / "data_batch_2").write_bytes(b"not a pickle at all")
    with pytest.raises(DataUnavailableError, match=r"data_batch_2.*not a CIFAR-10 python batch"):
        load_dataset("cifar10", 32, data_dir=folder)
    with (folder / "data_batch_2").open("wb") as handle:
        pickle.dump({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}, handle)
    with pytest.raises(DataUnavailableError, match="expected 'data' of N x 3072"):
        load_dataset("cifar10", 32, data_dir=folder)


def test_gaussian_batches_are_reproducible():
    data = load_dataset("gaussian", 16, seed=3)
    first, labels = data.batch(data.train, torch.arange(8, 16))
    again, _ = load_dataset("gaussian", 16, seed=3).batch(data.train, torch.arange(8, 16))
    assert torch.equal(first, again) and labels.shape == (8,)
    assert abs(float(first.std()) - 1) < 0.1
