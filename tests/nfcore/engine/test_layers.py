"""Layers with the signal-propagation fixes: Scaled WS (Section 4.2), S+E (4.4), Appendix B."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nfcore.engine.activations import gamma_quadrature
from nfcore.engine.layers import (
    Activation,
    CircularAvgPool2d,
    CircularMaxPool2d,
    ScalarBias,
    ScalarScale,
    ScaledWSConv2d,
    SkipInitGain,
    SqueezeExcite,
    StochasticDepth,
)


def avg_sq_channel_mean(x: Tensor) -> float:
    """Appendix F: the squared mean of each channel over N, H, W, averaged over channels."""
    return float(x.mean(dim=(0, 2, 3)).pow(2).mean())


def avg_channel_var(x: Tensor) -> float:
    """Appendix F: the variance of each channel over N, H, W, averaged over channels."""
    return float(x.var(dim=(0, 2, 3)).mean())


def count_standardizations(conv: ScaledWSConv2d) -> list[int]:
    """Replace `conv.standardized_weight` by a wrapper that records each call."""
    calls: list[int] = []
    original = conv.standardized_weight

    def counting() -> Tensor:
        calls.append(1)
        return original()

    conv.standardized_weight = counting  # type: ignore[method-assign]
    return calls


def reference_output(conv: ScaledWSConv2d, x: Tensor) -> Tensor:
    """The output with W_hat recomputed from the current weight, bypassing any cache."""
    with torch.no_grad():
        weight = ScaledWSConv2d.standardized_weight(conv)
        return F.conv2d(x, weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)


@pytest.fixture
def conv() -> ScaledWSConv2d:
    torch.manual_seed(0)
    return ScaledWSConv2d(8, 16, 3, padding=1, gamma=1.7)


@pytest.fixture
def x() -> Tensor:
    return torch.randn(4, 8, 6, 6, generator=torch.Generator().manual_seed(1))


# --- Scaled Weight Standardization ------------------------------------------------------------


def test_standardized_weight_has_zero_mean_and_fan_in_variance_gamma_squared() -> None:
    torch.manual_seed(0)
    conv = ScaledWSConv2d(16, 32, 3, gamma=1.7)
    with torch.no_grad():
        conv.weight.normal_(mean=0.5, std=2.0)  # a mean and scale that eq. 3 must remove
        conv.gain.uniform_(0.5, 2.0)
    w_hat = conv.standardized_weight()
    fan_in = 16 * 3 * 3
    # Eq. 3: mean(W_hat_i) = 0 and N * Var(W_hat_i) = (gamma * gain_i)^2, eps aside.
    channel_mean = w_hat.mean(dim=(1, 2, 3))
    torch.testing.assert_close(channel_mean, torch.zeros(32), atol=1e-6, rtol=0)
    fan_in_var = fan_in * w_hat.var(dim=(1, 2, 3), unbiased=False)
    expected = (1.7 * conv.gain.detach().flatten()) ** 2
    torch.testing.assert_close(fan_in_var, expected, rtol=1e-4, atol=0)


def test_constant_filter_standardizes_to_zero_without_nan() -> None:
    # Appendix D.2: eps keeps the division finite when a filter has zero variance.
    conv = ScaledWSConv2d(4, 2, 1)
    with torch.no_grad():
        conv.weight.fill_(3.0)
    w_hat = conv.standardized_weight()
    assert torch.isfinite(w_hat).all()
    assert torch.equal(w_hat, torch.zeros_like(w_hat))


def test_gain_and_bias_are_learnable_per_output_channel() -> None:
    # Appendix B.1: Scaled WS layers keep a learnable affine gain and bias.
    conv = ScaledWSConv2d(8, 16, 3)
    params = dict(conv.named_parameters())
    assert params["gain"].shape == (16, 1, 1, 1)
    assert params["bias"].shape == (16,)
    assert params["gain"].requires_grad and params["bias"].requires_grad
    assert torch.equal(conv.gain.detach(), torch.ones(16, 1, 1, 1))


def test_scaled_ws_removes_the_relu_mean_shift_and_preserves_variance() -> None:
    torch.manual_seed(0)
    z = torch.randn(128, 64, 10, 10)
    relu_z = F.relu(z)
    scaled_ws = ScaledWSConv2d(64, 128, 3, gamma=gamma_quadrature("relu"))
    nn.init.normal_(scaled_ws.weight)
    nn.init.zeros_(scaled_ws.bias)
    he = nn.Conv2d(64, 128, 3, bias=False)
    nn.init.normal_(he.weight, std=math.sqrt(2 / (64 * 9)))
    with torch.no_grad():
        ws_out = scaled_ws(relu_z)
        he_out = he(relu_z)
    # Section 4.2: zero-mean weights cancel E[relu(z)] = 1/sqrt(2 pi); gamma restores Var = 1.
    assert avg_sq_channel_mean(ws_out) < 0.005
    assert avg_channel_var(ws_out) == pytest.approx(1.0, abs=0.05)
    # Eq. 1: a He-initialized conv passes the mean shift on, E[mean^2] = 2 * E[relu]^2 = 1/pi.
    assert avg_sq_channel_mean(he_out) > 0.1


# --- caching of the standardized weight -------------------------------------------------------


@pytest.mark.parametrize(
    ("training", "grad_enabled"), [(False, True), (False, False), (True, False)]
)
def test_standardized_weight_is_computed_once_outside_training(
    conv: ScaledWSConv2d, x: Tensor, training: bool, grad_enabled: bool
) -> None:
    # Scaled WS is free at inference: eval mode or no_grad reuses W_hat.
    conv.train(training)
    calls = count_standardizations(conv)
    with torch.set_grad_enabled(grad_enabled):
        outputs = [conv(x) for _ in range(3)]
    assert len(calls) == 1
    for out in outputs:
        torch.testing.assert_close(out, reference_output(conv, x), rtol=0, atol=0)


def test_cached_weight_is_recomputed_after_an_in_place_weight_change(
    conv: ScaledWSConv2d, x: Tensor
) -> None:
    conv.eval()
    calls = count_standardizations(conv)
    before = conv(x)
    with torch.no_grad():
        conv.weight.mul_(-1.0)  # negates W_hat, so a stale cache would be plain to see
    after = conv(x)
    assert len(calls) == 2
    torch.testing.assert_close(after, reference_output(conv, x), rtol=0, atol=0)
    assert not torch.allclose(after, before)


def test_cached_weight_is_recomputed_after_an_in_place_gain_change(
    conv: ScaledWSConv2d, x: Tensor
) -> None:
    conv.eval()
    conv(x)
    with torch.no_grad():
        conv.gain.mul_(3.0)
    torch.testing.assert_close(conv(x), reference_output(conv, x), rtol=0, atol=0)


def test_cached_weight_is_recomputed_after_an_optimizer_step(
    conv: ScaledWSConv2d, x: Tensor
) -> None:
    optimizer = torch.optim.SGD(conv.parameters(), lr=0.5)
    conv.eval()
    before = conv(x).detach()
    conv.train()
    conv(x).pow(2).mean().backward()
    optimizer.step()
    conv.eval()
    after = conv(x).detach()
    torch.testing.assert_close(after, reference_output(conv, x), rtol=0, atol=0)
    assert not torch.allclose(after, before)


def test_cached_weight_is_recomputed_after_loading_a_state_dict(
    conv: ScaledWSConv2d, x: Tensor
) -> None:
    conv.eval()
    conv(x)
    other = ScaledWSConv2d(8, 16, 3, padding=1, gamma=1.7)
    conv.load_state_dict(other.state_dict())
    torch.testing.assert_close(conv(x), reference_output(conv, x), rtol=0, atol=0)


def test_cached_weight_is_recomputed_after_a_change_through_data(
    conv: ScaledWSConv2d, x: Tensor
) -> None:
    # `param.data.<op>_()` is a common way to edit weights; the documented refresh points work.
    conv.eval()
    conv(x)
    conv.weight.data.mul_(-1.0)
    conv.train()
    conv.eval()  # .data bypasses the version counters: a mode switch refreshes the cache
    torch.testing.assert_close(conv(x), reference_output(conv, x), rtol=0, atol=0)
    conv.weight.data.mul_(-1.0)
    conv.reset_cache()  # ... and so does reset_cache()
    torch.testing.assert_close(conv(x), reference_output(conv, x), rtol=0, atol=0)


def test_training_recomputes_every_forward_and_trains_weight_and_gain(
    conv: ScaledWSConv2d, x: Tensor
) -> None:
    conv.train()
    calls = count_standardizations(conv)
    for _ in range(3):
        conv(x).pow(2).mean().backward()
    assert len(calls) == 3
    for name in ("weight", "gain", "bias"):
        grad = getattr(conv, name).grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_training_and_cached_eval_outputs_agree(conv: ScaledWSConv2d, x: Tensor) -> None:
    """Training standardizes with autograd, eval once without and caches it: the same
    weights and outputs, to float32 rounding."""
    conv.train()
    uncached = conv(x).detach()
    conv.eval()
    with torch.no_grad():
        cached = conv(x)
    torch.testing.assert_close(cached, uncached, rtol=1e-5, atol=1e-6)
    trained_weight = conv.standardized_weight()
    conv.train()
    torch.testing.assert_close(
        conv.standardized_weight().detach(), trained_weight, rtol=0, atol=1e-6
    )


# --- Squeeze-and-Excite -----------------------------------------------------------------------


def make_se(se_gain: float) -> SqueezeExcite:
    torch.manual_seed(0)
    return SqueezeExcite(64, 4, Activation(F.relu, "relu"), se_gain)


def test_se_gain_two_doubles_the_output() -> None:
    plain, corrected = make_se(1.0), make_se(2.0)
    corrected.load_state_dict(plain.state_dict())
    h = torch.randn(8, 64, 4, 4)
    # Section 4.4: the corrected block is the plain one times 2.
    assert torch.equal(corrected(h), 2 * plain(h))


def test_plain_se_gate_quarters_the_variance_at_init() -> None:
    torch.manual_seed(1)
    h = torch.randn(64, 64, 8, 8)
    with torch.no_grad():
        plain_ratio = avg_channel_var(h) / avg_channel_var(make_se(1.0)(h))
        corrected_ratio = avg_channel_var(h) / avg_channel_var(make_se(2.0)(h))
    # Section 4.4 / Fig. 9: sigmoid(~0) = 0.5 scales the signal by 1/2, its variance by 1/4.
    assert 3.0 < plain_ratio < 5.5
    assert 0.75 < corrected_ratio < 1.4


# --- Appendix B: stochastic depth, SkipInit, FixUp scalars -------------------------------------


def test_stochastic_depth_drops_whole_examples_without_rescaling() -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 3, 4, 4) + 2.0
    drop = StochasticDepth(0.5).train()
    y = drop(x)
    kept = [torch.equal(y[i], x[i]) for i in range(64)]
    dropped = [bool((y[i] == 0).all()) for i in range(64)]
    # Appendix B.2: a kept branch is not divided by the keep probability.
    assert all(k or d for k, d in zip(kept, dropped, strict=True))
    assert any(kept) and any(dropped)


def test_stochastic_depth_is_identity_in_eval_and_at_rate_zero() -> None:
    x = torch.randn(16, 3, 4, 4)
    assert torch.equal(StochasticDepth(0.5).eval()(x), x)
    assert torch.equal(StochasticDepth(0.0).train()(x), x)


def test_skipinit_gain_starts_at_zero_and_learns() -> None:
    gain = SkipInitGain()
    params = dict(gain.named_parameters())
    assert list(params) == ["skipinit_gain"]
    assert params["skipinit_gain"].item() == 0.0
    x = torch.randn(4, 3, 2, 2)
    out = gain(x)
    # De & Smith (2020): the residual branch is switched off at initialization.
    assert torch.equal(out, torch.zeros_like(x))
    out.mul(x).sum().backward()
    assert gain.skipinit_gain.grad is not None and gain.skipinit_gain.grad.item() > 0


def test_fixup_scalars_start_as_identity() -> None:
    x = torch.randn(4, 3, 2, 2)
    assert torch.equal(ScalarBias()(x), x)
    assert torch.equal(ScalarScale()(x), x)
    assert [n for n, _ in ScalarBias().named_parameters()] == ["bias"]
    assert [n for n, _ in ScalarScale().named_parameters()] == ["scale"]


def test_eval_again_keeps_the_cached_weight_and_a_new_gamma_recomputes_it(
    conv: ScaledWSConv2d, x: Tensor
) -> None:
    """A network measured again (the worker keeps recent ones) is put in eval mode by every
    SPP: that must not standardize every weight again; a retuned gamma must."""
    conv.eval()
    calls = count_standardizations(conv)
    conv(x)
    conv.eval()
    conv(x)
    assert len(calls) == 1
    conv.gamma = 2.5
    torch.testing.assert_close(conv(x), reference_output(conv, x), rtol=0, atol=0)
    assert len(calls) == 2


# --- circular padding (no border) -------------------------------------------------------------


def test_a_circular_scaled_ws_conv_treats_every_position_alike() -> None:
    """A periodic border makes the conv commute with a circular shift of the image; zeros
    padding does not (its border outputs see fewer real inputs)."""
    torch.manual_seed(0)
    x = torch.randn(2, 4, 6, 6)
    circular = ScaledWSConv2d(4, 5, 3, padding=1, padding_mode="circular")
    zeros = ScaledWSConv2d(4, 5, 3, padding=1)
    zeros.load_state_dict(circular.state_dict())
    with torch.no_grad():
        shifted = circular(torch.roll(x, (2, 3), dims=(2, 3)))
        torch.testing.assert_close(shifted, torch.roll(circular(x), (2, 3), dims=(2, 3)))
        assert not torch.allclose(
            zeros(torch.roll(x, (2, 3), dims=(2, 3))), torch.roll(zeros(x), (2, 3), dims=(2, 3))
        )
        # The same weights: inside the border both convs agree.
        torch.testing.assert_close(circular(x)[..., 1:-1, 1:-1], zeros(x)[..., 1:-1, 1:-1])
        # And as nn.Conv2d pads in that mode, given the standardized weight.
        plain = nn.Conv2d(4, 5, 3, padding=1, padding_mode="circular")
        plain.weight.copy_(circular.standardized_weight())
        plain.bias.copy_(circular.bias)
        torch.testing.assert_close(circular(x), plain(x))


def test_the_circular_max_pool_takes_nine_values_in_every_window() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    pooled = CircularMaxPool2d()(x)
    assert pooled.shape == nn.MaxPool2d(3, stride=2, padding=1)(x).shape
    # The corner window wraps round: rows and columns -1, 0 and 1.
    corner = x[..., [-1, 0, 1], :][..., [-1, 0, 1]].amax(dim=(2, 3))
    torch.testing.assert_close(pooled[..., 0, 0], corner)
    # A shift by the stride shifts the output by one: no position is special.
    torch.testing.assert_close(
        CircularMaxPool2d()(torch.roll(x, (2, 2), dims=(2, 3))), torch.roll(pooled, (1, 1), (2, 3))
    )


@pytest.mark.parametrize("side", [8, 7])
def test_the_circular_average_pool_completes_an_odd_sides_last_window(side: int) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, side, side)
    plain = nn.AvgPool2d(2, ceil_mode=True, count_include_pad=False)(x)
    pooled = CircularAvgPool2d()(x)
    assert pooled.shape == plain.shape
    if side % 2 == 0:
        assert torch.equal(pooled, plain)  # no border at all
        return
    # The last window holds the last row and column and, wrapped round, the first ones.
    last = x[..., [-1, 0], :][..., [-1, 0]].mean(dim=(2, 3))
    torch.testing.assert_close(pooled[..., -1, -1], last)
    torch.testing.assert_close(pooled[..., :-1, :-1], plain[..., :-1, :-1])
