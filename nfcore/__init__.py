"""nfcore: signal propagation in normalized and Normalizer-Free ResNets (Brock, De & Smith, 2021).

Importing `nfcore` or `nfcore.spec.config` does not import torch; the model and SPP functions
load it when first used.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.2.0"

_LAZY = {
    "build_model": "nfcore.engine.models",
    "run_spp": "nfcore.engine.spp",
    "measure": "nfcore.foreign.measure",
    "register_activation": "nfcore.engine.activations",
    "SPPConfig": "nfcore.spec.config",
    "ModelConfig": "nfcore.spec.config",
    "SPPResult": "nfcore.spec.result",
    "model_plugin": "nfcore.foreign.plugins",
    "track": "nfcore.foreign.track",
    "compare": "nfcore.foreign.compare",
    "read_tracked": "nfcore.spec.tracked",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nfcore' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]
