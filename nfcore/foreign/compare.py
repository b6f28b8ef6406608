"""Several networks in one Signal Propagation Plot: `nfcore.compare({"label": model, ...})`.

    nfcore.compare({"mine": model, "torchvision": resnet50()}, resolution=64)
    nfcore.compare([resnet50(), timm_resnet50])     # labelled "ResNet", "ResNet (2)"

Each network is measured with the same options (`nfcore.measure`), and the results are drawn
overlaid as the paper's Fig. 2 (`nfcore.plots.spp.spp_figure`). Without labels (a list), each
network is labelled by its class name, and networks that share one are told apart
(`nfcore.plots.spp.unique_labels`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from nfcore.foreign.measure import measure
from nfcore.spec.result import SPPResult


def compare(models: Mapping[str, nn.Module] | Sequence[nn.Module], **measure_kwargs: Any) -> Any:
    """The SPPs of `models` (label -> network, or a list of networks) overlaid in one Plotly
    figure (a `go.Figure`: in a notebook it shows itself). `measure_kwargs` apply to every
    network (`nfcore.measure`); `log_y`, `title` and `panels` to the figure."""
    figure_options = {k: measure_kwargs.pop(k) for k in ("log_y", "title", "panels")
                      if k in measure_kwargs}  # fmt: skip
    if isinstance(models, Mapping):
        labels: list[str] | None = [str(label) for label in models]
        named = [(repr(label), model) for label, model in models.items()]
    elif isinstance(models, Sequence) and not isinstance(models, str):
        labels, named = None, [(str(i), model) for i, model in enumerate(models)]
    else:
        raise ValueError("models: expected a dict of label -> network, or a list of networks")
    if not named:
        raise ValueError("models: give at least one network")
    for where, model in named:
        if not isinstance(model, nn.Module):
            raise ValueError(f"models[{where}]: expected a torch.nn.Module, "
                             f"got {type(model).__name__}")  # fmt: skip
    results: list[SPPResult] = [measure(model, **measure_kwargs) for _, model in named]
    first, *others = results
    return first.figure(*others, labels=labels, **figure_options)
