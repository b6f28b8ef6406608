"""Networks kept between SPPs: a change of alpha, gamma or the S+E gain reuses the built
network (no weight changes), and its SPP is bit for bit that of a fresh build."""

from __future__ import annotations

import pytest
import torch

from nfcore.engine.model_cache import ModelCache
from nfcore.engine.models import build_model, retune, weights_key
from nfcore.engine.spp import run_spp
from nfcore.spec.config import SPPConfig
from nfcore.spec.edits import with_changes

CPU = torch.device("cpu")
TINY = {"depth": 14, "width": 0.125, "resolution": 32, "batch": 2, "device": "cpu"}


def blocks(config: SPPConfig, cache: ModelCache | None = None) -> list[dict]:
    model = cache.model(config, CPU) if cache is not None else None
    return [block.model_dump() for block in run_spp(config, model=model).blocks]


@pytest.mark.parametrize(
    ("base", "moves"),
    [
        ({"norm": "nf"}, [{"alpha": 0.5}, {"alpha": 0.05}, {"gamma": 1.4}, {"gamma": "auto"}]),
        (
            {"norm": "nf", "activation": "silu", "se_gain": 1.0},
            [{"se_gain": 2.0}, {"se_gain": 0.25, "alpha": 0.3}, {"gamma": 2.5}],
        ),
        (
            {"family": "nf_regnet", "variant": "B0", "width": 0.25},
            [{"alpha": 0.4}, {"gamma": 1.1}, {"se_gain": 1.0}],
        ),
        ({"norm": "bn"}, [{"se_gain": 0.0}]),
        ({"norm": "nf", "gradients": True}, [{"alpha": 0.7}]),
    ],
    ids=["resnet-nf", "resnet-se", "nf-regnet", "bn", "gradients"],
)
def test_a_reused_network_measures_exactly_as_a_fresh_build(base: dict, moves: list[dict]):
    cache = ModelCache(max_bytes=2**30)
    config = SPPConfig(**{**TINY, **base})
    assert blocks(config, cache) == blocks(config)
    for move in moves:
        config = SPPConfig(**{**config.model_dump(), **move})
        assert blocks(config, cache) == blocks(config), move
    assert cache.misses == 1 and cache.hits == len(moves)


def test_what_changes_the_weights_builds_anew():
    cache = ModelCache(max_bytes=2**30)
    config = SPPConfig(**TINY, norm="nf")
    for other in ({"seed": 1}, {"width": 0.25}, {"activation": "silu"}, {"se_gain": 1.0},
                  {"conv": "he"}, {"depth": 26}):  # fmt: skip
        changed = SPPConfig(**with_changes(config.model_dump(), other))
        assert weights_key(changed, changed.seed) != weights_key(config, config.seed), other
        assert blocks(changed, cache) == blocks(changed)
    assert cache.hits == 0


def test_the_cache_holds_at_most_its_bytes_least_recently_used_first():
    one = SPPConfig(**TINY, norm="nf")
    size = 2 * 4 * sum(p.numel() for p in build_model(one, seed=0).parameters())
    cache = ModelCache(max_bytes=2 * size)
    first, second, third = (SPPConfig(**{**one.model_dump(), "seed": s}) for s in range(3))
    for config in (first, second, first, third):  # third evicts second, the least recent
        cache.model(config, CPU)
    assert cache.bytes <= 2 * size
    cache.model(first, CPU)
    assert cache.hits == 2
    cache.model(second, CPU)
    assert cache.misses == 4  # second was built again
    assert ModelCache(max_bytes=0).model(one, CPU) is not None  # too large to keep: still built


def test_retune_sets_beta_and_the_expected_variance_of_the_new_alpha():
    config = SPPConfig(**TINY, norm="nf")
    model = build_model(config, seed=0)
    retune(model, SPPConfig(**{**config.model_dump(), "alpha": 0.5}))
    fresh = build_model(SPPConfig(**{**config.model_dump(), "alpha": 0.5}), seed=0)
    assert [(b.alpha, b.beta, b.expected_var) for b in model.blocks] == [
        (b.alpha, b.beta, b.expected_var) for b in fresh.blocks
    ]
