"""Recently built networks, kept to measure again: a slider move of alpha, gamma or the S+E
gain changes no weight, so the network is reused (`models.retune`) instead of built again.

Keyed by everything that determines the weights (`models.weights_key`: the architecture,
the seed) and the device; bounded by the bytes of the weights it holds (with Scaled WS, the
standardized copy each conv caches counts too). Least recently used networks go first. Not
thread-safe: one per worker process, which runs one job at a time.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from nfcore.engine.models import Network, build_model, retune, weights_key
from nfcore.spec.config import SPPConfig


class ModelCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._models: OrderedDict[tuple[str, str], tuple[Network, int]] = OrderedDict()
        self.hits = self.misses = 0

    @property
    def bytes(self) -> int:
        return sum(size for _, size in self._models.values())

    def model(self, config: SPPConfig, device: torch.device) -> Network:
        """The network of `config` on `device`, in eval mode: a kept one retuned to the config's
        scalars, or a new build (kept if it fits)."""
        key = (weights_key(config, config.seed), str(device))
        kept = self._models.pop(key, None)
        if kept is not None:
            self.hits += 1
            self._models[key] = kept
            retune(kept[0], config)
            return kept[0]
        self.misses += 1
        model = build_model(config, seed=config.seed).to(device).eval()
        size = _bytes(model, config)
        if size <= self.max_bytes:
            while self._models and self.bytes + size > self.max_bytes:
                self._models.popitem(last=False)
            self._models[key] = (model, size)
        return model

    def clear(self) -> None:
        self._models.clear()


def _bytes(model: Network, config: SPPConfig) -> int:
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return weights * (2 if config.conv == "ws" else 1)
