"""A model plugin's arguments, checked against the JSON schema its workers advertise.

The schema is read from Redis, where anyone who can write to Redis can put one, so it is
untrusted data before it is a schema. It is applied only once it is known to be harmless and
bounded (`schema_refusal`): no `$ref` leaves the document (no file or URL is ever read: the
validator's registry refuses every retrieval too); its size and nesting are bounded, with each
`$ref` counted where it is used (a schema of `$ref`s to `$ref`s cannot grow exponentially);
a `pattern` is matched by pydantic-core's Rust regex engine, which runs in linear time (Python's
`re` backtracks: `^(a+)+$` on 27 characters took 6 s), and `patternProperties`, which jsonschema
would match with `re`, is refused; and every argument that sizes work has bounds
(`nfcore.foreign.plugins.unbounded_arguments`, which the workers apply to their own plugins).

A schema that fails is its plugin's problem: the plugin is left out of /v1/models, and a job
for it gets a 422 naming the plugin and the reason, never a 500.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Final
from urllib.parse import unquote

import jsonschema
import referencing
from jsonschema.exceptions import ValidationError
from jsonschema.protocols import Validator
from pydantic_core import SchemaError, SchemaValidator, core_schema

from contract.plugins import MAX_DESCRIPTION_DEPTH, AdvertisedPlugins
from nfcore.foreign.plugins import unbounded_arguments

# Subschemas a schema may apply, each `$ref` counted again where it is used: pydantic's schema
# of a factory with a few dozen arguments has a few hundred.
MAX_SCHEMA_NODES: Final = 10_000
# A message quotes the value it is about; a 60 KiB string is not worth quoting in full.
MAX_MESSAGE_CHARS: Final = 300
# Keywords that move references outside the document or make them dynamic; pydantic writes
# none of them. `patternProperties`: jsonschema matches property names with Python's `re`.
REFUSED_KEYWORDS: Final = frozenset({
    "$id", "$anchor", "$dynamicRef", "$dynamicAnchor", "$recursiveRef", "$recursiveAnchor",
    "$vocabulary", "patternProperties",
})  # fmt: skip
DRAFT: Final = "https://json-schema.org/draft/2020-12/schema"
# Keywords whose value is a schema, a list of schemas, or a map of names to schemas.
ONE_SCHEMA: Final = ("additionalProperties", "propertyNames", "items", "contains", "not", "if",
                     "then", "else", "unevaluatedItems", "unevaluatedProperties",
                     "additionalItems")  # fmt: skip
SCHEMA_LISTS: Final = ("allOf", "anyOf", "oneOf", "prefixItems")
SCHEMA_MAPS: Final = ("properties", "$defs", "definitions", "dependentSchemas")


class SchemaRefused(ValueError):
    """An advertised argument schema that the API will not apply (the sentence says why)."""


def usable(seen: AdvertisedPlugins) -> AdvertisedPlugins:
    """`seen` with each plugin whose argument schema cannot be applied moved to `refused`."""
    out = AdvertisedPlugins(refused=dict(seen.refused))
    for name, description in seen.usable.items():
        problem = schema_refusal(description["arguments"])
        if problem is None:
            out.usable[name] = description
        else:
            out.refused[name] = problem
    return out


def schema_refusal(schema: dict[str, Any]) -> str | None:
    """Why the API will not apply `schema` (a sentence), or None."""
    compiled = _compiled(json.dumps(schema, sort_keys=True))
    return str(compiled) if isinstance(compiled, SchemaRefused) else None


def arguments_problem(schema: dict[str, Any], value: Any) -> str | None:
    """Why `value` does not meet a plugin's argument schema (a sentence), or None."""
    validator = _compiled(json.dumps(schema, sort_keys=True))
    if isinstance(validator, SchemaRefused):
        return str(validator)
    try:
        errors = sorted(validator.iter_errors(value), key=lambda e: [str(p) for p in e.path])
    except Exception as error:  # e.g. a number too long to quote; never a 500
        return f"they could not be checked against its schema ({type(error).__name__})"
    if not errors:
        return None
    first = errors[0]
    where = ".".join(str(part) for part in first.absolute_path)
    message = _shortened(first.message)
    return f"{where}: {message}" if where else message


@functools.lru_cache(maxsize=64)
def _compiled(schema_json: str) -> Validator | SchemaRefused:
    """The validator of a schema given as its canonical JSON, or why there is none (both
    kept: a plugin's schema is read again for every request)."""
    try:
        return _validator(json.loads(schema_json))
    except SchemaRefused as refusal:
        return refusal


def _validator(schema: Any) -> Validator:
    """The validator of `schema`, or SchemaRefused: checked in this order, each step bounded
    by the ones before it."""
    if not isinstance(schema, dict):
        raise SchemaRefused("its argument schema is not a JSON object")
    _Walk(schema).walk(schema, 1, ())
    try:
        _Validator.check_schema(schema)
    except jsonschema.SchemaError as error:
        raise SchemaRefused(
            f"its argument schema is not valid JSON Schema: {_shortened(error.message)}"
        ) from None
    unbounded = unbounded_arguments(schema)
    if unbounded:
        raise SchemaRefused(f"its argument schema leaves work unbounded: {'; '.join(unbounded)}")
    return _Validator(schema, registry=_NO_RETRIEVAL)


class _Walk:
    """One pass over a schema, following its local `$ref`s: SchemaRefused at the first thing
    the API will not apply."""

    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self.nodes = 0

    def walk(self, node: Any, depth: int, refs: tuple[str, ...]) -> None:
        self.nodes += 1
        if self.nodes > MAX_SCHEMA_NODES:
            raise SchemaRefused(
                f"its argument schema has over {MAX_SCHEMA_NODES} subschemas, counting each "
                "$ref where it is used"
            )
        if depth > MAX_DESCRIPTION_DEPTH:
            raise SchemaRefused(
                f"its argument schema nests over {MAX_DESCRIPTION_DEPTH} levels, counting $refs"
            )
        if isinstance(node, bool):
            return
        if not isinstance(node, dict):
            raise SchemaRefused("its argument schema has a subschema that is not an object")
        refused = sorted(REFUSED_KEYWORDS & node.keys())
        if refused:
            raise SchemaRefused(f"its argument schema uses {refused[0]!r}, which the API refuses")
        if node.get("$schema", DRAFT) != DRAFT:
            raise SchemaRefused(f"its argument schema is not of JSON Schema {DRAFT}")
        if "pattern" in node:
            _linear_pattern(node["pattern"])
        if "$ref" in node:
            ref = node["$ref"]
            if not isinstance(ref, str):
                raise SchemaRefused("its argument schema has a $ref that is not a string")
            if ref in refs:
                raise SchemaRefused(
                    f"its argument schema's $ref {_shortened(ref)!r} contains itself"
                )
            self.walk(self._resolve(ref), depth + 1, (*refs, ref))
        for child in self._children(node):
            self.walk(child, depth + 1, refs)

    def _resolve(self, ref: str) -> Any:
        """The subschema a local JSON pointer (`#/$defs/Name`) points to."""
        if ref != "#" and not ref.startswith("#/"):
            raise SchemaRefused(
                f"its argument schema refers to {_shortened(ref)!r}; only references inside "
                "the schema ('#/$defs/...') are followed: no file or URL is read"
            )
        target: Any = self.root
        for part in ref[2:].split("/") if ref != "#" else ():
            key = unquote(part).replace("~1", "/").replace("~0", "~")
            if isinstance(target, dict) and key in target:
                target = target[key]
            elif isinstance(target, list) and key.isdigit() and int(key) < len(target):
                target = target[int(key)]
            else:
                raise SchemaRefused(
                    f"its argument schema refers to {_shortened(ref)!r}, which is not in it"
                )
        return target

    @staticmethod
    def _children(node: dict[str, Any]) -> list[Any]:
        children = [node[key] for key in ONE_SCHEMA if key in node]
        for key in SCHEMA_LISTS:
            value = node.get(key, [])
            if not isinstance(value, list):
                raise SchemaRefused(f"its argument schema's {key!r} is not a list")
            children.extend(value)
        for key in SCHEMA_MAPS:
            value = node.get(key, {})
            if not isinstance(value, dict):
                raise SchemaRefused(f"its argument schema's {key!r} is not an object")
            children.extend(value.values())
        return children


def _linear_pattern(pattern: Any) -> SchemaValidator:
    """A string validator matching `pattern` anywhere in a string (as JSON Schema does), with
    pydantic-core's Rust engine: linear time, no backtracking on the API's threads."""
    if not isinstance(pattern, str):
        raise SchemaRefused("its argument schema has a pattern that is not a string")
    return _rust_pattern(pattern)


@functools.lru_cache(maxsize=256)
def _rust_pattern(pattern: str) -> SchemaValidator:
    try:
        return SchemaValidator(
            core_schema.str_schema(pattern=pattern),
            config=core_schema.CoreConfig(regex_engine="rust-regex"),
        )
    except SchemaError:
        raise SchemaRefused(
            f"its argument schema's pattern {_shortened(pattern)!r} is not one the API's "
            "linear-time regex engine runs (no look-around or backreferences)"
        ) from None


def _pattern(validator: Any, pattern: str, instance: Any, schema: dict[str, Any]) -> Any:
    """JSON Schema's `pattern` keyword, matched by `_linear_pattern`."""
    if validator.is_type(instance, "string") and not _linear_pattern(pattern).isinstance_python(
        instance
    ):
        yield ValidationError(f"{_shortened(repr(instance))} does not match {pattern!r}")


def _refuse_retrieval(uri: str) -> referencing.Resource[Any]:
    raise LookupError(f"{uri}: the API follows no reference outside a plugin's schema")


def _shortened(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE_CHARS else f"{text[:MAX_MESSAGE_CHARS]}..."


_Validator = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"pattern": _pattern})
_NO_RETRIEVAL: referencing.Registry[Any] = referencing.Registry(retrieve=_refuse_retrieval)  # type: ignore[call-arg]
