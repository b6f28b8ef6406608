"""SPP input batches: N(0,1) noise (Section 3) and scikit-learn digits as real images."""

from __future__ import annotations

import pytest
import torch

from nfcore.engine.inputs import digits_batch, gaussian_batch, input_batch

DIGITS_IN_DATASET = 1797


def test_gaussian_batch_is_seeded_unit_gaussian_noise() -> None:
    batch = gaussian_batch(64, 32, seed=0)
    assert batch.shape == (64, 3, 32, 32)
    assert batch.dtype == torch.float32
    # Section 3: SPPs feed a batch of N(0, 1) inputs.
    assert float(batch.mean()) == pytest.approx(0.0, abs=0.01)
    assert float(batch.std()) == pytest.approx(1.0, abs=0.01)
    assert torch.equal(batch, gaussian_batch(64, 32, seed=0))
    assert not torch.equal(batch, gaussian_batch(64, 32, seed=1))


def test_gaussian_batch_leaves_the_global_rng_alone() -> None:
    state = torch.random.get_rng_state()
    gaussian_batch(4, 8, seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_digits_batch_is_three_identical_channels() -> None:
    batch = digits_batch(16, 32, seed=0)
    assert batch.shape == (16, 3, 32, 32)
    assert torch.equal(batch[:, 0], batch[:, 1])
    assert torch.equal(batch[:, 0], batch[:, 2])


def test_digits_batch_is_deterministic_per_seed() -> None:
    assert torch.equal(digits_batch(16, 16, seed=3), digits_batch(16, 16, seed=3))
    assert not torch.equal(digits_batch(16, 16, seed=3), digits_batch(16, 16, seed=4))


def test_digits_batch_larger_than_the_dataset_repeats_images() -> None:
    batch = digits_batch(DIGITS_IN_DATASET + 203, 8, seed=0)
    assert batch.shape == (DIGITS_IN_DATASET + 203, 3, 8, 8)
    # The first 1,797 are a permutation of the whole data set: every image exactly once.
    first_pass = {tuple(image.flatten().tolist()) for image in batch[:DIGITS_IN_DATASET, 0]}
    everything = digits_batch(DIGITS_IN_DATASET, 8, seed=1)
    assert first_pass == {tuple(image.flatten().tolist()) for image in everything[:, 0]}


def test_digits_are_standardized_with_the_dataset_statistics() -> None:
    # At the native 8x8 a large draw is zero-mean, unit-variance, like the Gaussian input.
    native = digits_batch(1024, 8, seed=0)
    assert float(native.mean()) == pytest.approx(0.0, abs=0.05)
    assert float(native.std()) == pytest.approx(1.0, abs=0.05)
    # Bilinear upsampling keeps the mean and smooths the variance a little.
    upsampled = digits_batch(256, 32, seed=0)
    assert float(upsampled.mean()) == pytest.approx(0.0, abs=0.1)
    assert 0.75 < float(upsampled.std()) <= 1.05


@pytest.mark.parametrize("kind", ["gaussian", "digits"])
def test_input_batch_dispatches_by_name(kind: str) -> None:
    direct = {"gaussian": gaussian_batch, "digits": digits_batch}[kind]
    assert torch.equal(input_batch(kind, 4, 16, seed=2), direct(4, 16, 2))


def test_unknown_input_names_the_choices() -> None:
    with pytest.raises(ValueError, match="'x'") as excinfo:
        input_batch("x", 4, 16, seed=0)
    assert "gaussian" in str(excinfo.value) and "digits" in str(excinfo.value)
