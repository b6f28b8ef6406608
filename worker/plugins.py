"""The model plugins this worker serves: loaded once per process, advertised in Redis.

WORKER_PLUGINS names them (a JSON list; unset: every plugin installed in this environment).
A plugin that fails to load is logged and left out, unless WORKER_PLUGINS named it, which
stops the worker with the reason: an operator who asked for it wants to know.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any

from worker.settings import get_settings

if TYPE_CHECKING:
    from nfcore.foreign.plugins import Plugin

log = logging.getLogger(__name__)


class PluginUnavailable(SystemExit):
    """A plugin WORKER_PLUGINS asks for cannot be served."""


@functools.cache
def loaded_plugins() -> dict[str, Plugin]:
    from nfcore.foreign.plugins import PluginError, installed, load

    asked = get_settings().worker_plugins
    names = sorted(installed()) if asked is None else list(asked)
    plugins: dict[str, Plugin] = {}
    for name in names:
        try:
            plugins[name] = load(name)
        except PluginError as error:
            if asked is not None:
                raise PluginUnavailable(f"WORKER_PLUGINS: {error}") from None
            log.error("model plugin %s left out: %s", name, error)
    return plugins


@functools.cache
def descriptions() -> list[dict[str, Any]]:
    """What this worker advertises of each plugin, with its parameter count at its defaults
    (counted on the meta device within the limits, else null: nothing real is built)."""
    out = []
    for plugin in loaded_plugins().values():
        description = plugin.description()
        description["parameters"] = _parameters(plugin)
        out.append(description)
    return out


def _parameters(plugin: Plugin) -> int | None:
    import torch

    from nfcore.foreign.cost import Budget, BuildGuard

    settings = get_settings()
    try:
        args = plugin.validated({})
    except ValueError:
        return None  # no defaults for every argument
    budget = Budget(settings.max_flops, settings.max_activation_bytes, settings.max_memory_bytes)
    try:
        with torch.device("meta"), BuildGuard(budget):
            model = plugin.factory(**args)
        return sum(p.numel() for p in model.parameters())
    except MemoryError:
        raise
    except Exception as error:  # its jobs will say why; the worker still serves the others
        log.warning("model plugin %s: no parameter count at its defaults: %s", plugin.name, error)
        return None
