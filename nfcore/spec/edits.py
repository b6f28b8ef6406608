"""Editing a config: the one rule of which fields follow which.

A canonical config fills in fields from others (a norm brings its conv, alpha and gamma; a
family its depth and defaults). `with_changes` applies an edit to a saved config and drops
what followed the edited field, so the CLI's --config with flags, the API's sweeps, the
dashboard's widgets and `presets.rescale_config` all edit alike. Torch-free.
"""

from __future__ import annotations

from typing import Any

from nfcore.spec.families import DEFAULT_FAMILY, FAMILIES, family_defaults

# Fields a canonical config filled in from another field's value: changing that field
# invalidates them. (`norm_default_fields` are handled apart in `with_changes`.)
DERIVED_FIELDS: dict[str, tuple[str, ...]] = {
    "family": ("depth", "layout", "variant", "norm", "order", "conv", "activation", "alpha",
               "gamma", "se_gain", "skipinit", "maxpool"),
    "depth": ("layout",),
    "layout": ("depth",),
    "variant": ("layout",),
    "norm": ("order", "conv", "alpha", "gamma"),
    "conv": ("gamma",),
}  # fmt: skip


def _kept_across(field: str, old: Any, new: Any) -> tuple[str, ...]:
    """Derived fields that still mean the same after `field` went from `old` to `new`:
    families laid out by the same depth table read a depth (or a custom layout) alike."""
    if field == "family" and isinstance(old, str) and isinstance(new, str):
        rows = [FAMILIES.get(old), FAMILIES.get(new)]
        if all(row is not None and row.sized_by == "depth" for row in rows):
            return ("depth", "layout")
    return ()


def with_changes(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`base` (e.g. a saved canonical config) with `changes` applied, as config input.

    Changing e.g. the norm drops what the base derived from the old norm (its conv, order,
    alpha, gamma) unless `changes` sets those too, so a saved config can be varied field by
    field. The one rule of what follows what: the CLI's --config with flags, the API's
    sweeps, the dashboard's widgets and `presets.rescale_config` all edit through it.
    Between the ResNet families a depth means the same blocks, so a change of family keeps
    the depth (or the custom layout).

    A field whose default depends on the norm (a row's norm_defaults: NF-RegNet's S+E gain and
    SkipInit) is dropped on a change of norm only while it holds the old norm's default, so
    NF-RegNet <-> its BN twin swaps those defaults but keeps a value the user chose.
    """
    values = dict(base)
    for field, derived in DERIVED_FIELDS.items():
        if field in changes and values.get(field) != changes[field]:
            keep = _kept_across(field, base.get(field), changes[field])
            for key in derived:
                if key not in changes and key not in keep:
                    values.pop(key, None)
    name = base.get("family") or DEFAULT_FAMILY
    old_norm, new_norm = base.get("norm"), changes.get("norm")
    if (
        "norm" in changes
        and old_norm != new_norm
        and changes.get("family", name) == name
        and all(isinstance(v, str | None) for v in (name, old_norm, new_norm))
        and name in FAMILIES
    ):
        old, new = family_defaults(name, old_norm), family_defaults(name, new_norm)
        row = FAMILIES[name]
        for key in sorted({k for d in row.norm_defaults.values() for k in d}):
            if key not in changes and key in values and values[key] == old.get(key) != new.get(key):
                values.pop(key)
    values.update(changes)
    return values
