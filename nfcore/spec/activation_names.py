"""Names of the activations a config may ask for (torch-free).

The built-in callables live in `nfcore.engine.activations`; a user's own callable is registered
here through `nfcore.engine.activations.register_activation`, so that configs naming it validate.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

BUILTIN_ACTIVATIONS: Final[tuple[str, ...]] = (
    "relu",
    "silu",
    "gelu",
    "tanh",
    "identity",
    "elu",
    "selu",
    "softplus",
    "sigmoid",
    "leaky_relu",
    "mish",
)
# Other names users type for the same function.
ACTIVATION_ALIASES: Final[dict[str, str]] = {"linear": "identity", "swish": "silu"}

CUSTOM_ACTIVATIONS: dict[str, Callable[[Any], Any]] = {}


def activation_names() -> tuple[str, ...]:
    """Every activation name a config accepts: the built-ins, then registered ones."""
    return BUILTIN_ACTIVATIONS + tuple(
        n for n in CUSTOM_ACTIVATIONS if n not in BUILTIN_ACTIVATIONS
    )


def canonical_activation(name: str) -> str:
    """The registered name for `name` (aliases resolved); ValueError naming the choices."""
    key = name.strip().lower()
    key = ACTIVATION_ALIASES.get(key, key)
    if key not in activation_names():
        raise ValueError(
            f"unknown activation {name!r}; choose one of {', '.join(activation_names())}"
        )
    return key
