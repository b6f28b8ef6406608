"""Loading a researcher's network factory (`MODULE:FACTORY`) and building its network seeded,
for `nfcore spp --model`, `nfcore blocks` and the workers' model plugins."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from nfcore.engine.models import seeded


class FactoryError(ValueError):
    """A model factory that cannot be loaded or called, or returns no nn.Module."""


def load_factory(spec: str) -> Callable[..., Any]:
    """`MODULE:FACTORY`, MODULE a dotted import path or a path to a .py file."""
    module_part, sep, attribute = spec.rpartition(":")
    if not sep or not module_part or not attribute:
        raise FactoryError(f"{spec!r} is not MODULE:FACTORY (e.g. mynets.py:build_resnet)")
    try:
        if module_part.endswith(".py") or "/" in module_part:
            path = Path(module_part)
            if not path.is_file():
                raise FactoryError(f"{module_part}: no such file")
            name = f"nfcore_user_{path.stem}"
            loaded = importlib.util.spec_from_file_location(name, path)
            if loaded is None or loaded.loader is None:
                raise FactoryError(f"{module_part}: cannot be imported as a Python file")
            module = importlib.util.module_from_spec(loaded)
            sys.modules[name] = module
            loaded.loader.exec_module(module)
        else:
            module = importlib.import_module(module_part)
    except FactoryError:
        raise
    except Exception as error:  # the user's module failed to import
        raise FactoryError(
            f"{module_part}: importing it raised {type(error).__name__}: {error}"
        ) from None
    factory = getattr(module, attribute, None)
    if factory is None or not callable(factory):
        raise FactoryError(f"{module_part} has no callable {attribute!r}")
    return factory


def build_foreign(
    factory: Callable[..., Any],
    args: dict[str, Any],
    seed: int,
    name: str,
    propagate: tuple[type[BaseException], ...] = (),
) -> nn.Module:
    """The factory's network, built with the CPU generator seeded (the same command gives the
    same weights); FactoryError when it raises or returns something else than an nn.Module.
    MemoryError and `propagate` (a caller's control flow: a job's timeout, a cancel, a cost
    guard) are let through as they are."""
    try:
        with seeded(seed):
            model = factory(**args)
    except (MemoryError, *propagate):
        raise
    except TypeError as error:
        raise FactoryError(f"{name}: calling it with {args} raised TypeError: {error}") from None
    except Exception as error:
        raise FactoryError(f"{name} raised {type(error).__name__}: {error}") from None
    if not isinstance(model, nn.Module):
        raise FactoryError(f"{name} returned a {type(model).__name__}, not a torch nn.Module")
    return model
