"""nfcore: signal propagation in normalized and Normalizer-Free ResNets (Brock, De & Smith, 2021).

Importing `nfcore` or `nfcore.config` does not import torch; the model and SPP functions
load it when first used.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "build_model": "nfcore.models",
    "run_spp": "nfcore.spp",
    "measure": "nfcore.foreign_spp",
    "register_activation": "nfcore.activations",
    "SPPConfig": "nfcore.config",
    "ModelConfig": "nfcore.config",
    "SPPResult": "nfcore.result",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nfcore' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]
