"""Finding the residual blocks of a network nfcore did not build, and loading its factory.

Block selection works on `named_modules()` names:
- glob patterns in which `*` matches exactly one dotted component (`layer*.*` matches
  `layer1.0`, not `layer1.0.conv1`);
- a list of exact names, or a callable `(name, module) -> bool`;
- `auto`, the rule below.

**The auto rule.** A *group* is a container (`nn.Sequential` or `nn.ModuleList`) with at
least two children of one class that is neither a container nor a leaf (it has submodules of
its own). The children of that class are the blocks: `layer1.0` ... `layer4.2` of
torchvision's ResNets, `stages.0.blocks.0` of timm's, the `nn.Sequential` of a stack of
blocks, nfcore's `blocks.0` ... A container with one such child joins in when the child's
class is already a block class elsewhere (a stage of one block), or, where no container
holds two, when that class is alone in two containers or more (every stage one block). A
block that holds a group
is a stage, not a block, so the innermost groups win: `stages.0` of timm holds
`stages.0.blocks`. A class that shows up once per container is not a group either, which
keeps a Squeeze-Excite module inside a branch `nn.Sequential` from counting as a block.

**Stages and transitions** come from one forward pass. A transition is a block whose output
shape differs from its input's. Blocks under different parent containers are in different
stages (`layer1`, `layer2`, ...). When every block has the same parent (one flat list), a
new stage starts at each transition after the first block.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from nfcore.models import seeded

BlockSpec = str | Sequence[str] | Callable[[str, nn.Module], bool]
CONTAINERS = (nn.Sequential, nn.ModuleList)
SHOWN_CANDIDATES = 8  # names listed when a pattern matches nothing


class SelectionError(ValueError):
    """A block or residual selection that matches nothing; the message lists candidates."""


class FactoryError(ValueError):
    """A model factory that cannot be loaded or called, or returns no nn.Module."""


@dataclass(frozen=True)
class FoundBlock:
    """A block chosen for measurement: its name, module and place, and why it was chosen."""

    name: str
    module: nn.Module
    parent: str  # the container it sits in ('' for the top level)
    why: str


# --- patterns ------------------------------------------------------------------------------


def glob_regex(pattern: str) -> re.Pattern[str]:
    """`*` matches one dotted component (any characters but '.'), `?` one character."""
    parts = []
    for char in pattern:
        if char == "*":
            parts.append(r"[^.]+")
        elif char == "?":
            parts.append(r"[^.]")
        else:
            parts.append(re.escape(char))
    return re.compile("".join(parts) + r"\Z")


def _named(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, module) for name, module in model.named_modules() if name]


def _candidates(model: nn.Module) -> str:
    names = [name for name, module in _named(model) if next(module.children(), None) is not None]
    shown = ", ".join(names[:SHOWN_CANDIDATES]) or "none"
    more = f" (and {len(names) - SHOWN_CANDIDATES} more)" if len(names) > SHOWN_CANDIDATES else ""
    return f"modules with submodules here: {shown}{more}"


def select(model: nn.Module, spec: BlockSpec, what: str = "blocks") -> list[tuple[str, nn.Module]]:
    """The modules `spec` names, in forward (registration) order; a pattern or name that
    matches nothing raises SelectionError naming it and the first candidates."""
    named = _named(model)
    if callable(spec):
        chosen = [(name, module) for name, module in named if spec(name, module)]
        if not chosen:
            raise SelectionError(
                f"{what}: the selection function chose no module; {_candidates(model)}"
            )
        return chosen
    patterns = [spec] if isinstance(spec, str) else list(spec)
    chosen_names: set[str] = set()
    for pattern in patterns:
        regex = glob_regex(pattern)
        hits = {name for name, _ in named if regex.match(name)}
        if not hits:
            raise SelectionError(f"{what}: {pattern!r} matches no module; {_candidates(model)}")
        chosen_names |= hits
    return [(name, module) for name, module in named if name in chosen_names]


# --- the auto rule ---------------------------------------------------------------------------


def _is_block_class(module: nn.Module) -> bool:
    return not isinstance(module, CONTAINERS) and next(module.children(), None) is not None


def auto_blocks(model: nn.Module) -> list[FoundBlock]:
    """The residual blocks by the rule of the module docstring; SelectionError if none."""
    containers = [
        (name, module)
        for name, module in [("", model), *_named(model)]
        if isinstance(module, CONTAINERS)
    ]
    groups: dict[str, tuple[str, list[tuple[str, nn.Module]]]] = {}  # container -> (class, kids)
    for name, container in containers:
        kids = [(child_name, child) for child_name, child in container.named_children()
                if _is_block_class(child)]  # fmt: skip
        counts = Counter(type(child).__name__ for _, child in kids)
        if counts:
            cls, count = counts.most_common(1)[0]
            if count >= 2:
                groups[name] = (cls, [(k, c) for k, c in kids if type(c).__name__ == cls])
    block_classes = {cls for cls, _ in groups.values()}
    singles: dict[str, list[tuple[str, nn.Module]]] = {}  # container -> its one block-like kid
    for name, container in containers:
        kids = [(k, c) for k, c in container.named_children() if _is_block_class(c)]
        if name not in groups and len(kids) == 1:
            singles[name] = kids
    if not block_classes:  # every stage holds one block: a class alone in two containers
        alone = Counter(type(kids[0][1]).__name__ for kids in singles.values())
        block_classes = {cls for cls, count in alone.items() if count >= 2}
    for name, kids in singles.items():  # stages of one block
        if type(kids[0][1]).__name__ in block_classes:
            groups[name] = (type(kids[0][1]).__name__, kids)
    found: list[FoundBlock] = []
    for parent, (cls, kids) in groups.items():
        for child_name, child in kids:
            full = f"{parent}.{child_name}" if parent else child_name
            found.append(FoundBlock(full, child, parent, f"a {cls} in {parent or 'the model'}"))
    # A block that holds another group is a stage of blocks, not a block.
    names = {block.name for block in found}
    found = [b for b in found if not any(o.startswith(b.name + ".") for o in names)]
    if not found:
        raise SelectionError(
            "blocks: auto found no repeated blocks (no nn.Sequential or nn.ModuleList holds two "
            f"modules of one class); give patterns, e.g. --blocks 'layer*.*'; {_candidates(model)}"
        )
    order = {name: index for index, (name, _) in enumerate(_named(model))}
    return sorted(found, key=lambda block: order[block.name])


def find_blocks(model: nn.Module, spec: BlockSpec = "auto") -> list[FoundBlock]:
    """The blocks to measure: by `auto_blocks`, or as `spec` selects them."""
    if isinstance(spec, str) and spec == "auto":
        return auto_blocks(model)
    parents = {name: name.rpartition(".")[0] for name, _ in _named(model)}
    how = "chosen by the selection function" if callable(spec) else "matched by a pattern"
    return [FoundBlock(name, module, parents[name], how) for name, module in select(model, spec)]


def match_residuals(
    model: nn.Module, blocks: Sequence[FoundBlock], spec: BlockSpec
) -> list[nn.Module | None]:
    """For each block, the one module of `spec` inside it (its residual branch f(x)), or None
    where it has none; SelectionError where a block holds several."""
    chosen = select(model, spec, what="residual")
    out: list[nn.Module | None] = []
    for block in blocks:
        inside = [(name, module) for name, module in chosen if name.startswith(block.name + ".")]
        if len(inside) > 1:
            raise SelectionError(
                f"residual: {len(inside)} modules match inside block {block.name} "
                f"({', '.join(name for name, _ in inside[:3])}); give one per block"
            )
        out.append(inside[0][1] if inside else None)
    if all(module is None for module in out):
        raise SelectionError(
            "residual: the pattern matches no module inside the blocks "
            f"({', '.join(b.name for b in blocks[:3])}, ...)"
        )
    return out


def first_tensor(value: Any) -> Tensor | None:
    """A module's output as a tensor: itself, or the first tensor of a tuple or list."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, list | tuple):
        return next((item for item in value if isinstance(item, Tensor)), None)
    return None


def stages_and_transitions(
    blocks: Sequence[FoundBlock], shapes: Sequence[tuple[tuple[int, ...], tuple[int, ...]]]
) -> tuple[list[int], list[bool]]:
    """Each block's stage and whether it is a transition, from its (input, output) shapes."""
    transitions = [inp != out for inp, out in shapes]
    stages, stage = [], 0
    one_parent = len({block.parent for block in blocks}) == 1
    for index, block in enumerate(blocks):
        if index > 0:
            changed = (transitions[index] if one_parent
                       else block.parent != blocks[index - 1].parent)  # fmt: skip
            stage += int(changed)
        stages.append(stage)
    return stages, transitions


def block_shapes(
    model: nn.Module, blocks: Sequence[FoundBlock], x: Tensor
) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """(input shape, output shape) of every block in one eval-mode forward pass."""
    shapes: dict[int, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    handles = []
    for index, block in enumerate(blocks):

        def hook(_m: nn.Module, inputs: tuple, output: Any, index: int = index) -> None:
            given, out = first_tensor(inputs), first_tensor(output)
            if given is not None and out is not None:
                shapes.setdefault(index, (tuple(given.shape), tuple(out.shape)))

        handles.append(block.module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    missing = [b.name for i, b in enumerate(blocks) if i not in shapes]
    if missing:
        raise SelectionError(
            f"blocks: {', '.join(missing[:3])} did not run on a tensor in the forward pass "
            "(not called, or no tensor in and out); choose other blocks"
        )
    return [shapes[index] for index in range(len(blocks))]


# --- factories ---------------------------------------------------------------------------


def load_factory(spec: str) -> Callable[..., Any]:
    """`MODULE:FACTORY`, MODULE a dotted import path or a path to a .py file."""
    module_part, sep, attribute = spec.rpartition(":")
    if not sep or not module_part or not attribute:
        raise FactoryError(f"{spec!r} is not MODULE:FACTORY (e.g. mynets.py:build_resnet)")
    try:
        if module_part.endswith(".py") or "/" in module_part:
            path = Path(module_part)
            if not path.is_file():
                raise FactoryError(f"{module_part}: no such file")
            name = f"nfcore_user_{path.stem}"
            loaded = importlib.util.spec_from_file_location(name, path)
            if loaded is None or loaded.loader is None:
                raise FactoryError(f"{module_part}: cannot be imported as a Python file")
            module = importlib.util.module_from_spec(loaded)
            sys.modules[name] = module
            loaded.loader.exec_module(module)
        else:
            module = importlib.import_module(module_part)
    except FactoryError:
        raise
    except Exception as error:  # the user's module failed to import
        raise FactoryError(
            f"{module_part}: importing it raised {type(error).__name__}: {error}"
        ) from None
    factory = getattr(module, attribute, None)
    if factory is None or not callable(factory):
        raise FactoryError(f"{module_part} has no callable {attribute!r}")
    return factory


def build_foreign(
    factory: Callable[..., Any],
    args: dict[str, Any],
    seed: int,
    name: str,
    propagate: tuple[type[BaseException], ...] = (),
) -> nn.Module:
    """The factory's network, built with the CPU generator seeded (the same command gives the
    same weights); FactoryError when it raises or returns something else than an nn.Module.
    MemoryError and `propagate` (a caller's control flow: a job's timeout, a cancel, a cost
    guard) are let through as they are."""
    try:
        with seeded(seed):
            model = factory(**args)
    except (MemoryError, *propagate):
        raise
    except TypeError as error:
        raise FactoryError(f"{name}: calling it with {args} raised TypeError: {error}") from None
    except Exception as error:
        raise FactoryError(f"{name} raised {type(error).__name__}: {error}") from None
    if not isinstance(model, nn.Module):
        raise FactoryError(f"{name} returned a {type(model).__name__}, not a torch nn.Module")
    return model
