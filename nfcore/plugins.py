"""Model plugins: networks of one's own that the service and the dashboard can measure.

A plugin is an installed Python package that declares an entry point in the group
`nfcore.models`, naming a factory that returns an `nn.Module` at initialization:

    [project.entry-points."nfcore.models"]
    my_resnet = "mypkg.nets:build"

The factory's keyword arguments are typed (annotated parameters with defaults, or one
pydantic model), so they have a JSON schema that the API validates a job's `model_args`
against without importing the plugin. `@model_plugin(...)` on the factory says how to
measure it by default: its blocks and residual branches (patterns of `nfcore.foreign`), its
input (images, or one example's `input_shape` with the channel axis `first` or `last`).

Plugins are the operator's allow-list: a worker runs only what is installed beside it, and
no request can name a module, file or callable. This module imports no torch; `load` imports
the plugin's own module (which will).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

GROUP = "nfcore.models"
SPEC_ATTRIBUTE = "__nfcore_plugin__"


def model_plugin(
    *,
    blocks: str | list[str] = "auto",
    residual: list[str] | None = None,
    input_shape: list[int] | None = None,
    channels: str = "first",
    resolution: int = 64,
    description: str | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark a factory with how to measure its network (defaults a job may override)."""

    def mark(factory: Callable[..., Any]) -> Callable[..., Any]:
        setattr(factory, SPEC_ATTRIBUTE, {
            "blocks": blocks, "residual": residual, "input_shape": input_shape,
            "channels": channels, "resolution": resolution,
            "description": description or (inspect.getdoc(factory) or "").split("\n\n")[0],
        })  # fmt: skip
        return factory

    return mark


class PluginError(ValueError):
    """A plugin that is not installed, cannot be loaded, or is called with bad arguments."""


@dataclass(frozen=True)
class Plugin:
    name: str
    factory: Callable[..., Any]
    version: str
    target: str  # the entry point's value, e.g. 'mypkg.nets:build' (for operators' logs)
    arguments: type[BaseModel]

    @property
    def spec(self) -> dict[str, Any]:
        default = {"blocks": "auto", "residual": None, "input_shape": None, "channels": "first",
                   "resolution": 64, "description": ""}  # fmt: skip
        return {**default, **getattr(self.factory, SPEC_ATTRIBUTE, {})}

    def validated(self, model_args: dict[str, Any]) -> dict[str, Any]:
        """The factory's keyword arguments, validated (PluginError naming what is wrong)."""
        try:
            model = self.arguments.model_validate(model_args)
        except ValidationError as error:
            from nfcore.fields import describe_validation_error

            message = describe_validation_error(error)
            raise PluginError(f"model_args of plugin {self.name!r}: {message}") from None
        return {name: getattr(model, name) for name in type(model).model_fields}

    def description(self) -> dict[str, Any]:
        """What a worker advertises (JSON): name, version, argument schema and defaults, and
        how the network is measured by default."""
        spec = self.spec
        return {
            "name": self.name,
            "version": self.version,
            "target": self.target,
            "arguments": self.arguments.model_json_schema(),
            "defaults": self.arguments().model_dump(mode="json")
            if _all_defaulted(self.arguments)
            else {},
            **spec,
        }


def _all_defaulted(model: type[BaseModel]) -> bool:
    return all(not info.is_required() for info in model.model_fields.values())


def arguments_model(name: str, factory: Callable[..., Any]) -> type[BaseModel]:
    """The factory's keyword arguments as a strict pydantic model (extra fields refused)."""
    parameters = list(inspect.signature(factory).parameters.values())
    annotated = inspect.get_annotations(factory, eval_str=True)
    if len(parameters) == 1:
        only = annotated.get(parameters[0].name)
        if isinstance(only, type) and issubclass(only, BaseModel):
            return only
    fields: dict[str, Any] = {}
    for parameter in parameters:
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if parameter.name not in annotated:
            raise PluginError(
                f"plugin {name!r}: the factory's argument {parameter.name!r} has no type "
                "annotation (plugin arguments are typed, so the API can check them)"
            )
        default = ... if parameter.default is parameter.empty else parameter.default
        fields[parameter.name] = (annotated[parameter.name], default)
    return create_model(  # type: ignore[call-overload]
        f"{name}_arguments", __config__=ConfigDict(extra="forbid", frozen=True), **fields
    )


def installed() -> dict[str, EntryPoint]:
    """The plugins installed in this environment, by name (nothing is imported)."""
    return {point.name: point for point in entry_points(group=GROUP)}


def load(name: str) -> Plugin:
    """Import an installed plugin's factory; PluginError when it is not installed or breaks."""
    points = installed()
    point = points.get(name)
    if point is None:
        known = ", ".join(sorted(points)) or "none is installed"
        raise PluginError(f"no model plugin named {name!r} is installed here ({known})")
    try:
        factory = point.load()
    except Exception as error:
        raise PluginError(f"plugin {name!r} ({point.value}) failed to import: {error}") from None
    if not callable(factory):
        raise PluginError(f"plugin {name!r} ({point.value}) is not callable")
    version = point.dist.version if point.dist is not None else "unknown"
    return Plugin(name, factory, version, point.value, arguments_model(name, factory))
