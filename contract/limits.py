"""The resource limits a job must meet, and the sentence that says by how much it is over.

The API checks a built-in network's estimated cost before queueing it (`nfcore.cost`); a
worker checks a plugin network's measured cost before running it. Both word it alike.
"""

from __future__ import annotations

from contract.settings import ServiceSettings
from nfcore.cost import Cost


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
