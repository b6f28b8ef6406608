"""Model plugins: networks of one's own that the service and the dashboard can measure.

A plugin is an installed Python package that declares an entry point in the group
`nfcore.engine.models`, naming a factory that returns an `nn.Module` at initialization:

    [project.entry-points."nfcore.models"]
    my_resnet = "mypkg.nets:build"

The factory's keyword arguments are typed (annotated parameters with defaults, or one
pydantic model), so they have a JSON schema that the API validates a job's `model_args`
against without importing the plugin. Every argument that sizes work is bounded: a number
needs a lower and an upper bound, a string, list or dict a maximum length, e.g.
`depth: Annotated[int, Field(ge=1, le=64)] = 8` (`unbounded_arguments`); a plugin with an
unbounded argument does not load, so no request can ask for a network of a million blocks. `@model_plugin(...)` on the factory says how to
measure it by default: its blocks and residual branches (patterns of `nfcore.foreign.discovery`), its
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
    channels: str = "auto",
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
        default = {"blocks": "auto", "residual": None, "input_shape": None, "channels": "auto",
                   "resolution": 64, "description": ""}  # fmt: skip
        return {**default, **getattr(self.factory, SPEC_ATTRIBUTE, {})}

    def validated(self, model_args: dict[str, Any]) -> dict[str, Any]:
        """The factory's keyword arguments, validated (PluginError naming what is wrong)."""
        try:
            model = self.arguments.model_validate(model_args)
        except ValidationError as error:
            from nfcore.spec.fields import describe_validation_error

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
        f"{name}_arguments",
        __config__=ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False),
        **fields,
    )


def require_bounds(name: str, arguments: type[BaseModel]) -> None:
    """PluginError naming each argument of the plugin `name` that has no bound."""
    problems = unbounded_arguments(arguments.model_json_schema())
    if problems:
        raise PluginError(
            f"plugin {name!r}: {'; '.join(problems)}. An argument that sizes work needs "
            "bounds, so that no request can ask for more than the operator meant: e.g. "
            "`depth: Annotated[int, Field(ge=1, le=64)] = 8`, `Field(max_length=...)` for a "
            "string, list or dict, or a Literal"
        )


def unbounded_arguments(schema: dict[str, Any]) -> list[str]:
    """What in an argument schema (JSON Schema, as pydantic writes it) has no bound: a number
    without a minimum or a maximum, a string, array or free-form object without a maximum
    length, an argument of any type, a type that contains itself. Empty: all bounded.

    The workers check their plugins with it, and the API checks what workers advertise."""
    definitions = schema.get("$defs")
    definitions = definitions if isinstance(definitions, dict) else {}
    problems: list[str] = []
    _check_bounded(schema, "", definitions, (), problems)
    return [problem.replace("argument '' ", "the arguments ") for problem in problems]


def _check_bounded(
    node: Any, where: str, definitions: dict[str, Any], refs: tuple[str, ...], out: list[str]
) -> None:
    if node is False:
        return  # no value at all
    if node is True or not isinstance(node, dict):  # true: any value at all
        out.append(
            f"argument {where!r} " + ("may be of any type" if node is True else "has no schema")
        )
        return
    if "enum" in node or "const" in node:
        return  # one of a few values
    ref = node.get("$ref")
    if ref is not None:
        name = ref.removeprefix("#/$defs/") if isinstance(ref, str) else None
        if name is None or name == ref or name not in definitions:
            out.append(f"argument {where!r} refers to {ref!r}, which is not in the schema's $defs")
        elif name in refs:
            out.append(f"argument {where!r} contains itself (a recursive type has no bound)")
        else:
            _check_bounded(definitions[name], where, definitions, (*refs, name), out)
        return
    choices = [node[key] for key in ("anyOf", "oneOf", "allOf") if isinstance(node.get(key), list)]
    if choices:
        for choice in (c for group in choices for c in group):
            _check_bounded(choice, where, definitions, refs, out)
        return
    kinds = node.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    for kind in kinds:
        _check_kind(node, kind, where, definitions, refs, out)


def _check_kind(
    node: dict[str, Any],
    kind: Any,
    where: str,
    definitions: dict[str, Any],
    refs: tuple[str, ...],
    out: list[str],
) -> None:
    if kind in ("integer", "number"):
        missing = [side for side, keys in (("lower", ("minimum", "exclusiveMinimum")),
                                            ("upper", ("maximum", "exclusiveMaximum")))
                   if not any(isinstance(node.get(key), int | float) for key in keys)]  # fmt: skip
        if missing:
            out.append(f"argument {where!r} (a number) has no {' and no '.join(missing)} bound")
    elif kind == "string":
        if not isinstance(node.get("maxLength"), int):
            out.append(f"argument {where!r} (a string) has no maximum length")
    elif kind == "array":
        if not isinstance(node.get("maxItems"), int):
            out.append(f"argument {where!r} (a list) has no maximum length")
        for index, item in enumerate(node.get("prefixItems") or []):
            _check_bounded(item, f"{where}[{index}]", definitions, refs, out)
        if "items" in node:
            _check_bounded(node["items"], f"{where}[]", definitions, refs, out)
    elif kind == "object":
        _check_object(node, where, definitions, refs, out)
    elif kind not in ("boolean", "null"):
        out.append(f"argument {where!r} has no type that can be bounded (say int, str, ...)")


def _check_object(
    node: dict[str, Any],
    where: str,
    definitions: dict[str, Any],
    refs: tuple[str, ...],
    out: list[str],
) -> None:
    properties = node.get("properties")
    for key, value in properties.items() if isinstance(properties, dict) else ():
        _check_bounded(value, f"{where}.{key}" if where else str(key), definitions, refs, out)
    if "patternProperties" in node:
        out.append(f"argument {where!r} has keys given by a pattern, which the API does not check")
    extra = node.get("additionalProperties", None if properties else True)
    if extra is None or extra is False:
        return  # named fields only (others refused, or ignored by pydantic)
    if not isinstance(node.get("maxProperties"), int):
        out.append(f"argument {where!r} (a dict) has no maximum length")
    _check_bounded(extra, f"{where}[key]", definitions, refs, out)


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
    arguments = arguments_model(name, factory)
    require_bounds(name, arguments)
    return Plugin(name, factory, version, point.value, arguments)
