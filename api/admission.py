"""What the API lets into the queue: a job within the resource limits, a plugin a live worker has.

Each kind of job names its policy (`JobKind.admission`, `contract.kinds`), one of `POLICIES`:
a built-in network's SPP within the cost limits (`cost`), a training run within its own
(`training`), or a model plugin a live worker advertises, with arguments its schema accepts
(`plugin`). A refusal is a 422 saying what is over which limit, or what is wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from api.errors import Invalid
from api.plugin_args import arguments_problem, usable
from api.settings import ApiSettings
from contract import JobQueue, available_plugins, kind_of_config
from contract.limits import over_limit, written_over_limit
from contract.plugins import AdvertisedPlugins
from nfcore.spec.config import SPPConfig, TrainConfig
from nfcore.spec.cost import EVAL_BATCH, Cost, estimate, train_costs
from nfcore.spec.foreign_config import ForeignConfig

JobConfig = SPPConfig | TrainConfig | ForeignConfig
# The plugin's advertised defaults a job takes where its body leaves a field out.
PLUGIN_DEFAULT_FIELDS = ("blocks", "residual", "input_shape", "channels", "resolution")
MODEL_REFUSED = (
    "model: a request may not name a module, file or callable; a network of your own runs "
    "through an installed model plugin (give `plugin`; GET /v1/models lists them)"
)


class Admission:
    """The admission policies, over the queue (which workers are live) and the settings."""

    def __init__(self, queue: JobQueue, settings: ApiSettings) -> None:
        self.queue = queue
        self.settings = settings

    def admit(self, config: Any) -> Any:
        """The config to queue, or a 422, by its kind's policy (none: as it is). A plugin's
        config comes back with its defaults and version filled in, so that equal requests
        share one job id."""
        name = kind_of_config(config).admission
        return config if name is None else POLICIES[name](self, config)

    # --- the cost of a built-in network ---------------------------------------------------------
    def check_cost(self, config: SPPConfig | TrainConfig) -> SPPConfig | TrainConfig:
        """Refuse, before enqueueing, a job over the configured limits, saying by how much."""
        if isinstance(config, TrainConfig):
            return self.check_training(config)
        self._check_limits(estimate(config), "this job is too large: its", "batch")
        return config

    def _check_limits(self, cost: Cost, subject: str, batch: str) -> None:
        """MAX_FLOPS, MAX_ACTIVATION_BYTES and MAX_MEMORY_BYTES (weights and activations), for
        one SPP or one training step."""
        message = over_limit(cost, self.settings, subject, batch)
        if message is not None:
            raise Invalid(message)

    def check_training(self, config: TrainConfig) -> TrainConfig:
        """Steps under MAX_TRAIN_STEPS; each step (and each SPP taken during the run) under the
        SPP limits; what the run writes under MAX_TRAIN_RESULT_BYTES; all steps, evaluations
        and SPPs together, in FLOP-equivalents (with their layers' fixed cost: a deep, narrow
        network takes far longer than its FLOPs say), under MAX_TRAIN_FLOPS."""
        limit = self.settings.max_train_steps
        if config.steps > limit:
            raise Invalid(
                f"steps: {config.steps} is over the limit MAX_TRAIN_STEPS = {limit}; "
                f"ask for at most {limit} steps"
            )
        costs = train_costs(config)
        self._check_limits(
            costs.step,
            "this training job is too large: one step's (forward and backward)",
            "batch",
        )
        self._check_limits(costs.spp, "this training job is too large: its SPP's", "spp_batch")
        self._check_limits(
            costs.eval,
            f"this training job is too large: an evaluation batch's ({EVAL_BATCH} examples)",
            "eval_examples",
        )
        written = written_over_limit(config, self.settings.max_train_result_bytes)
        if written is not None:
            raise Invalid(written)
        total, budget = costs.total, self.settings.max_train_flops
        if total > budget:
            raise Invalid(
                f"this training job is too large: its cost over {config.steps} steps, "
                f"evaluations and SPPs ({total:.3g} FLOP-equivalents: {total - costs.overhead:.3g}"
                f" FLOPs, and {costs.overhead:.3g} for the fixed cost of its "
                f"{costs.spp.layer_calls} layer calls a pass) is over the limit MAX_TRAIN_FLOPS "
                f"= {budget:.3g} by {total / budget:.1f}x; reduce the steps (at most about "
                f"{costs.affordable_steps(config, budget)} at this size), the SPPs (a larger "
                "spp_every), or the depth, width, resolution or batch"
            )
        return config

    # --- model plugins ------------------------------------------------------------------------
    def admit_plugin(self, config: ForeignConfig) -> ForeignConfig:
        """A plugin a live worker has, with arguments its schema accepts. Its network's cost
        is checked by the worker, which can count it."""
        if config.model is not None:
            raise Invalid(MODEL_REFUSED)
        if config.plugin is None:
            raise Invalid("plugin: name an installed model plugin (GET /v1/models lists them)")
        advertised = self.advertised_plugins()
        if config.plugin in advertised.refused:
            raise Invalid(
                f"plugin: the model plugin {config.plugin!r} is unavailable: "
                f"{advertised.refused[config.plugin]}"
            )
        info = advertised.usable.get(config.plugin)
        if info is None:
            names = ", ".join(repr(name) for name in advertised.usable) or "none"
            raise Invalid(
                f"plugin: no live worker has the model plugin {config.plugin!r}; available: {names}"
            )
        if config.plugin_version not in (None, info["version"]):
            raise Invalid(
                f"plugin_version: the workers have {config.plugin} {info['version']}, "
                f"not {config.plugin_version}"
            )
        args = {**info["defaults"], **config.model_args}
        problem = arguments_problem(info["arguments"], args)
        if problem is not None:
            raise Invalid(f"model_args of plugin {config.plugin!r}: {problem}")
        updates: dict[str, Any] = {"model_args": args, "plugin_version": info["version"]}
        for name in PLUGIN_DEFAULT_FIELDS:
            if name not in config.model_fields_set and info.get(name) is not None:
                updates[name] = info[name]
        try:
            return ForeignConfig.model_validate({**config.model_dump(), **updates})
        except ValueError as error:
            raise Invalid(f"the plugin's defaults do not make a valid config: {error}") from None

    def plugins(self) -> dict[str, dict[str, Any]]:
        """The plugins a live worker has and the API can use: name -> what it advertises."""
        return self.advertised_plugins().usable

    def advertised_plugins(self) -> AdvertisedPlugins:
        """The plugins live workers have, each usable or refused with the reason (a
        description or an argument schema the API will not apply: `api.plugin_args`)."""
        return usable(available_plugins(self.queue, self.settings.heartbeat_ttl))


# A kind's `admission` -> its policy: the config to queue, or a 422.
POLICIES: dict[str, Callable[[Admission, Any], Any]] = {
    "cost": Admission.check_cost,
    "training": Admission.check_training,
    "plugin": Admission.admit_plugin,
}
