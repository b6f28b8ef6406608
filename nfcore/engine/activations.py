"""Activation functions g and their Scaled WS gains gamma (Brock, De & Smith 2021, Section 4.3).

Scaled Weight Standardization (equation 3) multiplies the standardized weights by a constant
gamma so that a layer z = W_hat g(x) preserves variance: Var(z) = gamma^2 Var(g(x)). Assuming
the pre-activations are x ~ N(0, 1) (Section 4.3), the right gain is

    gamma = 1 / sqrt(Var(g(x))),   x ~ N(0, 1).

This module names the torch functions behind the activation names of `nfcore.spec.activation_names`, lets
a user register their own callable, and computes gamma two ways: accurately by deterministic
Gauss-Legendre quadrature (`gamma_quadrature`, what the models use for gamma="auto"), and by the
paper's Appendix D.1 sampling recipe (`gamma_sampled`, kept to reproduce the paper's numbers).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from nfcore.spec import activation_names
from nfcore.spec.activation_names import BUILTIN_ACTIVATIONS, canonical_activation

ActivationFn = Callable[[Tensor], Tensor]

_LEAKY_RELU_SLOPE = 0.01  # torch's default negative slope

# PyTorch's own defaults, written out so that a torch release changing one cannot move gamma.
_BUILTIN_FNS: dict[str, ActivationFn] = {
    "relu": F.relu,
    "silu": F.silu,
    "gelu": functools.partial(F.gelu, approximate="none"),  # exact x * Phi(x), not tanh form
    "tanh": torch.tanh,
    "identity": lambda x: x,
    "elu": functools.partial(F.elu, alpha=1.0),
    "selu": F.selu,
    "softplus": functools.partial(F.softplus, beta=1.0),
    "sigmoid": torch.sigmoid,
    "leaky_relu": functools.partial(F.leaky_relu, negative_slope=_LEAKY_RELU_SLOPE),
    "mish": F.mish,
}
assert set(_BUILTIN_FNS) == set(BUILTIN_ACTIVATIONS), "registry and activations out of sync"

# Quadrature grid. N(0,1) mass beyond |x| = 16 is ~1e-57, far below float64 resolution, so
# [-16, 16] is the whole line for any activation growing at most polynomially. Panels of width
# 1 put a boundary at 0 (and at every integer), so the kinks of relu, leaky_relu, elu and selu
# at 0 (and of hardtanh/relu6-style functions at integers) fall on panel edges and each panel
# integrates a smooth function, where Gauss-Legendre converges geometrically.
_QUAD_HALF_WIDTH = 16
_QUAD_PANEL_WIDTH = 1.0
_QUAD_NODES_PER_PANEL = 24

# Relative size below which a variance is rounding noise rather than signal: the error of a
# two-pass variance is about (eps * |g|)^2, i.e. ~1e-32 E[g^2] in float64, ~1e-14 in float32.
_ZERO_VARIANCE_RTOL = {torch.float64: 1e-20, torch.float32: 1e-10}


def get_activation(name: str) -> ActivationFn:
    """The torch function for an activation name (aliases and case resolved).

    One lookup for the model builders and the gain computation, so both use the same g.
    Raises ValueError naming the choices for an unknown name.
    """
    key = canonical_activation(name)
    if key in _BUILTIN_FNS:
        return _BUILTIN_FNS[key]
    return activation_names.CUSTOM_ACTIVATIONS[key]


def register_activation(name: str, fn: ActivationFn) -> None:
    """Make a user's callable usable by name in configs, models and the gamma functions.

    The name is stored lower-cased in `activation_names.CUSTOM_ACTIVATIONS`, so config validation (which
    is torch-free) accepts it. Registering a name again replaces the callable. Built-in names
    and aliases cannot be shadowed, since that would silently change what a saved config means.
    Register through this function rather than editing the dict, so cached gains are dropped.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"activation name must be a non-empty string, got {name!r}")
    key = name.strip().lower()
    if key in BUILTIN_ACTIVATIONS or key in activation_names.ACTIVATION_ALIASES:
        raise ValueError(
            f"cannot register activation {name!r}: it is a built-in name or alias; "
            "choose another name"
        )
    if not callable(fn):
        # ValueError, like every other refusal here, so callers (CLI, API) catch one type.
        message = f"activation {name!r} must be a callable Tensor -> Tensor, got {fn!r}"
        raise ValueError(message)
    activation_names.CUSTOM_ACTIVATIONS[key] = fn
    # A cached gain for this name would belong to the old callable. lru_cache cannot drop one
    # key, and re-registration is rare, so clear everything.
    _gamma_quadrature_cached.cache_clear()
    _gamma_sampled_cached.cache_clear()
    _he_gain_cached.cache_clear()


def gamma_quadrature(fn_or_name: str | ActivationFn) -> float:
    """gamma = 1 / sqrt(Var(g(x))) for x ~ N(0, 1), by deterministic quadrature in float64.

    Composite Gauss-Legendre over width-1 panels covering [-16, 16], with g evaluated on a
    float64 tensor; accurate to ~1e-12 for functions that are smooth except at integers
    (e.g. the kink of relu at 0). This is the value gamma="auto" uses. Results for names are
    cached. Raises ValueError if Var(g(x)) is zero or not finite.
    """
    if isinstance(fn_or_name, str):
        return _gamma_quadrature_cached(canonical_activation(fn_or_name))
    return _quadrature_gamma(fn_or_name, _label(fn_or_name))


def gamma_sampled(
    fn_or_name: str | ActivationFn, seed: int = 2, num_vectors: int = 1024, dim: int = 256
) -> float:
    """gamma estimated by the paper's Appendix D.1 recipe, ported from JAX to torch.

    Sample num_vectors random dim-sized vectors x ~ N(0, 1) (float64, NumPy's PCG64 seeded
    with `seed`), take the population variance of y = g(x) within each vector and average it:
    gamma = mean(var(y, dim=1)) ** -0.5. Deterministic for a seed, and the same on every CPU;
    NumPy's stream differs from JAX's PRNGKey(2), so it does not reproduce the paper's digits. The per-vector
    variance with divisor dim underestimates Var(g(x)) by (dim - 1) / dim, so this is biased
    high by sqrt(dim / (dim - 1)) (+0.2% for dim=256) on top of ~0.2% sampling noise; prefer
    `gamma_quadrature`. Raises ValueError if the variance is zero or not finite.
    """
    if num_vectors < 1 or dim < 2:
        raise ValueError(f"need num_vectors >= 1 and dim >= 2, got {num_vectors} and {dim}")
    if isinstance(fn_or_name, str):
        return _gamma_sampled_cached(canonical_activation(fn_or_name), seed, num_vectors, dim)
    return _sampled_gamma(fn_or_name, _label(fn_or_name), seed, num_vectors, dim)


def he_gain(name: str) -> float:
    """The He et al. (2015) gain for inputs that passed through g: 1 / sqrt(E[g(x)^2]).

    Figure 8 of the paper defines it this way (sqrt(2) for ReLU). It keeps the second moment,
    not the variance, so a He-initialized conv after ReLU passes on the mean shift of eq. 1.
    """
    return _he_gain_cached(canonical_activation(name))


@functools.cache
def _he_gain_cached(name: str) -> float:
    x, w = _quadrature_rule()
    y = _apply(get_activation(name), x.clone(), name)
    second_moment = float(torch.sum(w * y**2))
    if not (math.isfinite(second_moment) and second_moment > 0):
        raise ValueError(f"activation {name!r} has E[g(x)^2] = {second_moment:.3g}; no He gain")
    return second_moment**-0.5


@dataclass(frozen=True, slots=True)
class GammaEstimate:
    """The gain of one activation: quadrature (used), sampled (Appendix D.1), closed form."""

    name: str
    quadrature: float
    sampled: float
    analytic: float | None


def gamma_table(names: Iterable[str] | None = None) -> list[GammaEstimate]:
    """Gains for the given activation names, or for all (built-ins, then registered ones).

    Feeds `nfcore gamma` and the API's /v1/activations, so users can compare the accurate
    value, the paper's sampled estimate and the closed form where one exists.
    """
    keys = (
        activation_names.activation_names()
        if names is None
        else [canonical_activation(n) for n in names]
    )
    return [
        GammaEstimate(
            name=key,
            quadrature=gamma_quadrature(key),
            sampled=gamma_sampled(key),
            analytic=_analytic_gamma(key),
        )
        for key in keys
    ]


def resolve_gamma(gamma: float | str | None, activation: str) -> float:
    """The Scaled WS gain a layer should use for a config's gamma field.

    "auto" means 1/sqrt(Var g(x)) for the activation (by quadrature); a number is used as
    given (e.g. sqrt(2), the He gain of Figure 8); None means no Scaled WS, i.e. gain 1.
    """
    if gamma is None:
        return 1.0
    if isinstance(gamma, str) and gamma.strip().lower() == "auto":
        return gamma_quadrature(activation)
    try:
        value = float(gamma)
    except (TypeError, ValueError):
        raise ValueError(
            f"gamma must be 'auto', a positive number or None, got {gamma!r}"
        ) from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"gamma must be 'auto', a positive number or None, got {gamma!r}")
    return value


# --- internals ------------------------------------------------------------------------------


def _label(fn: ActivationFn) -> str:
    return getattr(fn, "__name__", None) or repr(fn)


def _check_callable(fn: object, label: str) -> None:
    if not callable(fn):
        raise ValueError(f"activation {label!r} is not callable")


def _apply(fn: ActivationFn, x: Tensor, label: str) -> Tensor:
    """g(x) as a tensor of x's dtype and shape; the gains assume an elementwise g."""
    # On the CPU even inside `torch.device("meta")`: a network built there (a plugin's, to
    # count its cost) resolves its gains from numbers, not from meta tensors.
    with torch.no_grad(), torch.device("cpu"):  # a user's nn.Module may hold parameters
        y = torch.as_tensor(fn(x)).detach()
    if y.shape != x.shape:
        raise ValueError(
            f"activation {label!r} must be elementwise: input shape {tuple(x.shape)} gave "
            f"output shape {tuple(y.shape)}"
        )
    return y.to(x.dtype)


def _gain_from_variance(var: float, second_moment: float, dtype: torch.dtype, label: str) -> float:
    if not math.isfinite(var) or var <= _ZERO_VARIANCE_RTOL[dtype] * second_moment or var <= 0:
        raise ValueError(
            f"activation {label!r} has zero/non-finite variance under N(0,1); gamma is "
            f"undefined (Var g(x) = {var:.3g})"
        )
    return var**-0.5


@functools.lru_cache(maxsize=1)
def _quadrature_rule() -> tuple[Tensor, Tensor]:
    """Nodes x_i and weights w_i * phi(x_i) so that E[f(x)] ~ sum_i weight_i * f(x_i)."""
    nodes, weights = np.polynomial.legendre.leggauss(_QUAD_NODES_PER_PANEL)
    edges = np.arange(-_QUAD_HALF_WIDTH, _QUAD_HALF_WIDTH + _QUAD_PANEL_WIDTH, _QUAD_PANEL_WIDTH)
    lo, hi = edges[:-1, None], edges[1:, None]
    half = (hi - lo) / 2  # map [-1, 1] onto each panel [lo, hi]
    x = (lo + hi) / 2 + half * nodes[None, :]
    w = half * weights[None, :] * np.exp(-0.5 * x**2) / math.sqrt(2 * math.pi)
    return torch.from_numpy(x.ravel()), torch.from_numpy(w.ravel())


def _quadrature_gamma(fn: ActivationFn, label: str) -> float:
    _check_callable(fn, label)
    x, w = _quadrature_rule()
    y = _apply(fn, x.clone(), label)  # clone: an in-place activation must not edit the grid
    mean = torch.sum(w * y)
    # Two passes (E[(g - E g)^2] rather than E[g^2] - E[g]^2) to avoid cancellation, e.g. for
    # sigmoid where E[g]^2 = 0.25 dwarfs Var = 0.043.
    var = float(torch.sum(w * (y - mean) ** 2))
    second_moment = float(torch.sum(w * y**2))
    return _gain_from_variance(var, second_moment, torch.float64, label)


def _sampled_gamma(fn: ActivationFn, label: str, seed: int, num_vectors: int, dim: int) -> float:
    _check_callable(fn, label)
    # NumPy's PCG64 normals in float64, not torch.randn: torch's float32 normals come from
    # another kernel on another CPU (AVX2 or not), and float32 sums in another order, so the
    # estimate would change in the 8th digit from one machine to the next.
    x = torch.from_numpy(np.random.default_rng(seed).standard_normal((num_vectors, dim)))
    y = _apply(fn, x, label)
    # jnp.var defaults to the population variance (divisor dim); correction=0 matches it.
    var = float(torch.mean(torch.var(y, dim=1, correction=0)))
    second_moment = float(torch.mean(y**2))
    return _gain_from_variance(var, second_moment, torch.float64, label)


@functools.cache
def _gamma_quadrature_cached(name: str) -> float:
    return _quadrature_gamma(get_activation(name), name)


@functools.lru_cache(maxsize=256)
def _gamma_sampled_cached(name: str, seed: int, num_vectors: int, dim: int) -> float:
    return _sampled_gamma(get_activation(name), name, seed, num_vectors, dim)


def _leaky_relu_gamma(slope: float) -> float:
    # Closed form by integrating half-normal moments, E[x; x>0] = 1/sqrt(2 pi) and
    # E[x^2; x>0] = 1/2: for g = max(x, 0) + a min(x, 0), E[g] = (1 - a)/sqrt(2 pi) and
    # E[g^2] = (1 + a^2)/2, so Var(g) = (1 + a^2)/2 - (1 - a)^2/(2 pi). a = 0 is the rectified
    # Gaussian variance (1/2)(1 - 1/pi) the paper quotes from Arpit et al. (2016), Section 4.3.
    var = (1 + slope**2) / 2 - (1 - slope) ** 2 / (2 * math.pi)
    return var**-0.5


def _analytic_gamma(name: str) -> float | None:
    """The closed-form gain where one is known, else None."""
    if name == "relu":
        # Section 4.3: gamma = sqrt(2) / sqrt(1 - 1/pi) (Arpit et al., 2016).
        return math.sqrt(2 / (1 - 1 / math.pi))
    if name == "identity":
        return 1.0  # Var(x) = 1 for x ~ N(0, 1)
    if name == "leaky_relu":
        return _leaky_relu_gamma(_LEAKY_RELU_SLOPE)
    return None
