"""The resource limits a job must meet, and the sentence that says by how much it is over.

The API checks a built-in network's estimated cost before queueing it (`nfcore.spec.cost`); a
worker checks a plugin network's measured cost before running it, and a training job's bytes
before and while it writes them. Both word it alike.
"""

from __future__ import annotations

from contract.settings import ServiceSettings
from nfcore.spec.config import TrainConfig
from nfcore.spec.cost import Cost
from nfcore.spec.train_result import written_bytes


def over_limit(cost: Cost, settings: ServiceSettings, subject: str, batch: str) -> str | None:
    """Why `cost` is over MAX_FLOPS, MAX_ACTIVATION_BYTES or MAX_MEMORY_BYTES, or None.

    `subject` starts the sentence ("this job is too large: its"); `batch` names what to
    reduce besides width, depth and resolution."""
    memory = (
        f"{cost.memory_bytes:.3g} bytes: {cost.weight_bytes:.3g} of weights, "
        f"{cost.activation_bytes:.3g} of activations"
    )
    limits = (
        ("FLOPs", cost.flops, f"{cost.flops:.3g}", settings.max_flops, "MAX_FLOPS", ""),
        ("peak activation memory", cost.activation_bytes, f"{cost.activation_bytes:.3g} bytes",
         settings.max_activation_bytes, "MAX_ACTIVATION_BYTES", " bytes"),
        ("estimated peak memory", cost.memory_bytes, memory, settings.max_memory_bytes,
         "MAX_MEMORY_BYTES", " bytes"),
    )  # fmt: skip
    for name, value, shown, limit, setting, unit in limits:
        if value > limit:
            return (
                f"{subject} {name} ({shown}) is over the limit {setting} = {limit:.3g}{unit} "
                f"by {value / limit:.1f}x; reduce the width, depth, resolution or {batch}"
            )
    return None


def written_over_limit(config: TrainConfig, limit: int) -> str | None:
    """Why a run of `config` would write more than MAX_TRAIN_RESULT_BYTES = `limit` (its SPP
    frames, steps and evaluations, `written_bytes`), and what to reduce; or None."""
    size = written_bytes(config)
    if size <= limit:
        return None
    spps, blocks = len(config.spp_steps), config.num_blocks
    every = f"spp_every = {config.spp_every}" if config.spp_every else "at the start and end"
    fitting = _least_spp_every(config, limit)
    reduce = (
        f"record fewer SPPs (a spp_every of at least {fitting}), or take fewer steps or a "
        "shallower network"
        if fitting is not None
        else "take fewer steps or a shallower network"
    )
    return (
        f"this training job would write too much: its {spps} SPPs of {blocks} blocks "
        f"({every}) and {config.steps} steps come to at most {size:.3g} bytes (its result, "
        f"and again its events), over the limit MAX_TRAIN_RESULT_BYTES = {limit:.3g} bytes "
        f"by {size / limit:.1f}x; {reduce}"
    )


def _least_spp_every(config: TrainConfig, limit: int) -> int | None:
    """The smallest spp_every whose run is within `limit` bytes, or None when none is (the
    SPPs it records fall as spp_every grows)."""

    def fits(every: int) -> bool:
        return written_bytes(config.model_copy(update={"spp_every": every})) <= limit

    if not fits(config.steps):
        return None
    low, high = config.spp_every or 1, config.steps  # low's run does not fit, high's does
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if fits(middle) else (middle, high)
    return high
