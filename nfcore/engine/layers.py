"""Building blocks with the signal-propagation fixes of Section 4 and Appendix B."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Appendix D.2: "Epsilon, a small constant to avoid dividing by zero."
SCALED_WS_EPS = 1e-4

_DEFERRED = ContextVar("nfcore_deferred_init", default=False)


@contextmanager
def deferred_init() -> Iterator[None]:
    """Construct the layers of this module without drawing their parameters.

    Inside, `Conv2d`, `ScaledWSConv2d`, `BatchNorm2d` and `Linear` skip PyTorch's
    `reset_parameters`: their tensors hold whatever `torch.empty` gave, and the caller
    initializes every one (`nfcore.engine.models.init_weights`), so each weight is drawn once.
    A ContextVar: other threads constructing at the same time draw as usual.
    """
    token = _DEFERRED.set(True)
    try:
        yield
    finally:
        _DEFERRED.reset(token)


class Conv2d(nn.Conv2d):
    """nn.Conv2d, whose default init is skipped under `deferred_init`."""

    def reset_parameters(self) -> None:
        if not _DEFERRED.get():
            super().reset_parameters()


class BatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d, whose affine parameters and running statistics are left to the caller
    under `deferred_init`."""

    def reset_parameters(self) -> None:
        if not _DEFERRED.get():
            super().reset_parameters()


class Linear(nn.Linear):
    """nn.Linear, whose default init is skipped under `deferred_init`."""

    def reset_parameters(self) -> None:
        if not _DEFERRED.get():
            super().reset_parameters()


class ScaledWSConv2d(Conv2d):
    """Conv2d with Scaled Weight Standardization (eq. 3, Appendix D.2).

    W_hat = gamma * gain * (W - mean(W)) / sqrt(N * Var(W) + eps), the mean and variance taken
    over each filter's fan-in N. `gamma` is the fixed nonlinearity gain 1/sqrt(Var g(x)); `gain`
    and `bias` are the learnable per-output-channel affine parameters of Appendix B.1.

    The standardized weight is differentiable in training. In eval mode or under `no_grad` it
    is computed once and reused until the weight or gain changes (Scaled WS is "free at
    inference"); in eval mode it is therefore a constant, like BatchNorm's running statistics,
    and no gradient flows through it to `weight`.

    A change is noticed through PyTorch's version counters (optimizer steps, `load_state_dict`,
    any in-place op on the parameter) and of gamma. Edits through `param.data` bypass those
    counters: they are picked up at the next switch between training and eval mode, or call
    `reset_cache()`. Calling `eval()` on a model already in eval mode keeps the cache, so a
    network measured again (the worker keeps recent ones) does not standardize again.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        bias: bool = True,
        gamma: float = 1.0,
        eps: float = SCALED_WS_EPS,
        padding_mode: str = "zeros",
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=bias,
            padding_mode=padding_mode,
        )  # fmt: skip
        self.gain = nn.Parameter(torch.ones(out_channels, 1, 1, 1))
        self.gamma = float(gamma)
        self.eps = eps
        self._cached_weight: Tensor | None = None
        self._cache_key: tuple[object, ...] | None = None

    def standardized_weight(self) -> Tensor:
        """W_hat of eq. 3, recomputed from the current weight (OIHW)."""
        fan_in = self.weight[0].numel()
        # Population mean and variance over the fan-in, as in eq. 2 (the paper's PyTorch
        # listing calls torch.var, which would use Bessel's correction). Two float32 passes
        # (the mean, then the mean square of the deviations) cost a fifth of the CPU's
        # var_mean on the large filters (77 against 507 us for 128x128x3x3) and agree with it
        # to 1e-7: every training step, and every new network an SPP measures (since 0.2.0;
        # eval used var_mean before).
        mean = self.weight.mean(dim=(1, 2, 3), keepdim=True)
        centered = self.weight - mean
        var = centered.square().mean(dim=(1, 2, 3), keepdim=True)
        scale = self.gamma * self.gain * torch.rsqrt(var * fan_in + self.eps)
        return centered * scale

    def _weight_for_forward(self) -> Tensor:
        if self.training and torch.is_grad_enabled():
            return self.standardized_weight()
        key = (
            self.weight._version,
            self.gain._version,
            self.weight.data_ptr(),
            self.gain.data_ptr(),
            self.weight.dtype,
            self.weight.device,
            self.gamma,
            self.eps,
        )
        if self._cached_weight is None or key != self._cache_key:
            with torch.no_grad():
                self._cached_weight = self.standardized_weight()
            self._cache_key = key
        return self._cached_weight

    def reset_cache(self) -> None:
        """Forget the cached standardized weight (after edits through `.data`)."""
        self._cached_weight, self._cache_key = None, None

    def train(self, mode: bool = True) -> ScaledWSConv2d:
        if mode != self.training:
            self.reset_cache()
        return super().train(mode)

    def forward(self, x: Tensor) -> Tensor:
        weight = self._weight_for_forward()
        if self.padding_mode == "zeros":
            return F.conv2d(
                x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups
            )
        # As nn.Conv2d does for a padding mode: pad first, then convolve without padding.
        pad_h, pad_w = self.padding  # type: ignore[misc]  # an int pair, never "same"
        padded = F.pad(x, (pad_w, pad_w, pad_h, pad_h), mode=self.padding_mode)
        return F.conv2d(padded, weight, self.bias, self.stride, 0, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, gamma={self.gamma:.4f}, eps={self.eps:g}"


class CircularMaxPool2d(nn.MaxPool2d):
    """The stem's 3x3 stride-2 max-pool padded by 1 with the opposite side of the image, so
    that a border window takes the max of 9 real values, as every other window does (with
    nn.MaxPool2d's padding it takes the max of 6 or 4). The output has the same size."""

    def __init__(self) -> None:
        super().__init__(3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(F.pad(x, (1, 1, 1, 1), mode="circular"))


class CircularAvgPool2d(nn.AvgPool2d):
    """NF-RegNet's 2x2 stride-2 average pool (ceil_mode) whose last window on an odd side is
    completed with the first row or column, so it averages 4 values as the others do; on
    even sides there is no border and it is the plain pool."""

    def __init__(self) -> None:
        super().__init__(2, ceil_mode=True, count_include_pad=False)

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        if height % 2 or width % 2:
            x = F.pad(x, (0, width % 2, 0, height % 2), mode="circular")
        return super().forward(x)


class Activation(nn.Module):
    """A nonlinearity g given as any callable, optionally multiplied by a constant gain."""

    def __init__(self, fn: Callable[[Tensor], Tensor], name: str, gain: float = 1.0) -> None:
        super().__init__()
        self.fn, self.name, self.gain = fn, name, float(gain)

    def forward(self, x: Tensor) -> Tensor:
        out = self.fn(x)
        return out if self.gain == 1.0 else out * self.gain

    def extra_repr(self) -> str:
        return self.name if self.gain == 1.0 else f"{self.name}, gain={self.gain:.4f}"


class SqueezeExcite(nn.Module):
    """y = se_gain * sigmoid(MLP(pool(h))) * h (Section 4.4, Appendix B.3).

    The sigmoid gate halves the signal's scale at initialization; se_gain = 2 is the paper's
    correction and se_gain = 1 the unmodified block (Fig. 9).
    """

    def __init__(self, channels: int, hidden: int, activation: nn.Module, se_gain: float) -> None:
        super().__init__()
        self.se_conv0 = Conv2d(channels, hidden, kernel_size=1, bias=True)
        self.se_conv1 = Conv2d(hidden, channels, kernel_size=1, bias=True)
        self.activation = activation
        self.se_gain = float(se_gain)

    def forward(self, h: Tensor) -> Tensor:
        pooled = h.mean(dim=(2, 3), keepdim=True)  # N,C,1,1
        excite = self.se_conv1(self.activation(self.se_conv0(pooled)))
        return torch.sigmoid(excite) * self.se_gain * h


class SkipInitGain(nn.Module):
    """A learnable scalar at the end of the residual branch, initialized to 0 (De & Smith, 2020)."""

    def __init__(self) -> None:
        super().__init__()
        self.skipinit_gain = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.skipinit_gain


class ScalarBias(nn.Module):
    """FixUp's learnable scalar bias, initialized to 0 (Zhang et al., 2019)."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.bias


class ScalarScale(nn.Module):
    """FixUp's learnable scalar multiplier at the end of the branch, initialized to 1."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


class StochasticDepth(nn.Module):
    """Drops the whole residual branch per example with probability `rate` while training.

    Appendix B.2: the kept branch is not divided by the keep probability, to preserve signal.
    """

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = float(rate)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype) >= self.rate
        return x * keep

    def extra_repr(self) -> str:
        return f"rate={self.rate:g}"
