"""The config of an SPP of a network nfcore did not build (a researcher's own `nn.Module`).

Torch-free, as `nfcore.spec.config`: a result carries it (`SPPResult.config`), the API validates
plugin jobs with it, and its canonical JSON is hashed into the job id like any config's. What
the network is, is named rather than described: `model` (`MODULE:FACTORY` from the CLI, the
class name from Python) or `plugin` (an installed plugin a worker advertises), with the
factory's keyword arguments. The rest says how it is measured.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from nfcore.spec.config import Device, InputKind

Channels = Literal["auto", "first", "last"]

MAX_INPUT_ELEMENTS = 2**24  # one example's input tensor, at most (a 4096 x 4096 image)


class ForeignConfig(BaseModel):
    """How a foreign network is measured: its blocks, the residual branches, the input."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    kind: Literal["foreign"] = Field("foreign", description="Tells this config from SPPConfig.")
    model: str | None = Field(
        None,
        max_length=300,
        description="Where the network came from: MODULE:FACTORY (CLI), or the class name.",
    )
    plugin: str | None = Field(
        None,
        max_length=100,
        pattern=r"^[A-Za-z_][A-Za-z0-9_.\-]*$",
        description="An installed model plugin (entry point group nfcore.models).",
    )
    plugin_version: str | None = Field(
        None, max_length=100, description="The plugin package's version (part of the job id)."
    )
    model_args: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments of the network's factory."
    )
    blocks: Literal["auto"] | tuple[str, ...] = Field(
        "auto",
        description="Glob patterns over module names ('*' is one dotted component), or auto.",
    )
    residual: tuple[str, ...] | None = Field(
        None, description="Patterns of each block's residual branch f(x); null: not measured."
    )
    resolution: int = Field(64, ge=1, le=1024, description="Image height and width in pixels.")
    batch: int = Field(8, ge=1, le=4096, description="Input batch size N.")
    input: InputKind = Field("gaussian", description="N(0,1) noise or digit images.")
    input_shape: tuple[int, ...] | None = Field(
        None,
        min_length=1,
        max_length=4,
        description="One example's input shape for a non-image network, e.g. [64] or [16, 32] "
        "(Gaussian); null: 3 x resolution x resolution images.",
    )
    channels: Channels = Field(
        "auto",
        description="Where the channel axis of a block's tensors is: auto (decided from the "
        "network's layers, or refused where they do not say), first (N,C,...) or last "
        "(N,...,C, as token tensors); statistics are per channel over the other axes.",
    )
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seeds the weights and the input.")
    device: Device = Field("auto", description="auto = cuda when available, else cpu.")
    gradients: bool = Field(False, description="Also measure the gradient on the backward pass.")
    extra_stats: bool = Field(False, description="Also Appendix G: activation mean, pixel norm.")
    name: str | None = Field(None, max_length=200, description="The network's name in legends.")

    @field_validator("model_args")
    @classmethod
    def _finite(cls, model_args: dict[str, Any]) -> dict[str, Any]:
        """Arguments are JSON: NaN and infinities (which Python's JSON reads) are refused, as
        they would be stored as null, and two different requests would share one job id."""
        found = _non_finite(model_args, "model_args")
        if found is not None:
            where, number = found
            raise ValueError(f"{where} is {number}, not a finite number")
        return model_args

    @model_validator(mode="after")
    def _check(self) -> ForeignConfig:
        if self.input_shape is not None:
            if any(side < 1 for side in self.input_shape):
                raise ValueError(
                    f"input_shape: every side must be positive, got {self.input_shape}"
                )
            elements = 1
            for side in self.input_shape:
                elements *= side
            if elements > MAX_INPUT_ELEMENTS:
                raise ValueError(
                    f"input_shape: {elements} elements per example is over {MAX_INPUT_ELEMENTS}"
                )
            if self.input != "gaussian":
                raise ValueError("input: a custom input_shape takes Gaussian noise only")
        if isinstance(self.blocks, tuple) and not self.blocks:
            raise ValueError("blocks: give at least one pattern, or auto")
        return self

    # Read like an SPPConfig's by the plots and the dashboard.
    @property
    def norm(self) -> None:
        return None

    @property
    def conv(self) -> None:
        return None

    @property
    def example_shape(self) -> tuple[int, ...]:
        """One example's input: `input_shape`, else a 3 x resolution x resolution image."""
        return self.input_shape or (3, self.resolution, self.resolution)

    @property
    def source(self) -> str:
        """The plugin's name or the factory, for messages."""
        return self.plugin or self.model or "a module"

    @property
    def label(self) -> str:
        """The legend name: `name`, else the plugin or factory with its arguments."""
        if self.name:
            return self.name
        args = ", ".join(f"{k}={v}" for k, v in sorted(self.model_args.items()))
        return f"{self.source}({args})" if args else self.source


def _non_finite(value: Any, where: str) -> tuple[str, float] | None:
    """Where in `value` (decoded JSON) the first NaN or infinity is, and it; or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return where, value
    if isinstance(value, dict):
        items: Any = ((f"{where}.{key}", item) for key, item in value.items())
    elif isinstance(value, list | tuple):
        items = ((f"{where}[{index}]", item) for index, item in enumerate(value))
    else:
        return None
    for path, item in items:
        found = _non_finite(item, path)
        if found is not None:
            return found
    return None
