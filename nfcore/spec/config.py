"""The run configuration: one contract shared by the CLI, the API, the worker and the dashboard.

Torch-free on purpose (the API validates requests with it without loading torch). A config
is frozen and canonical: family (and norm) defaults are filled in, and fields that do not apply to the
chosen model are set to null, so two requests for the same experiment produce the same JSON
and therefore the same cache key (`config_hash`).
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from nfcore.spec import norms
from nfcore.spec.activation_names import canonical_activation
from nfcore.spec.edits import with_changes
from nfcore.spec.families import DEFAULT_FAMILY, FAMILIES, family, family_defaults
from nfcore.spec.variants import RESNET_LAYOUTS, resnet_depth

Order = Literal["bn-relu-conv", "relu-bn-conv"]
Conv = Literal["ws", "he"]
InputKind = Literal["gaussian", "digits"]
Device = Literal["auto", "cpu", "cuda"]
Dataset = Literal["digits", "cifar10", "gaussian"]
Padding = Literal["zeros", "circular"]

MAX_LAYOUT_BLOCKS = 200  # per stage; 50 is the deepest the paper uses (ResNet-600)

MAX_GAMMA = 100.0  # far above any activation gain (sigmoid needs about 4.8)


def _all_variants() -> list[str | None]:
    """Every variant a family names (the API schema's enum; each family checks its own)."""
    names = dict.fromkeys(name for row in FAMILIES.values() for name in row.variants)
    return [*names, None]


def _one_of(names: list[str]) -> str:
    """The names as pydantic's literal errors list the values: 'a', 'b' or 'c'."""
    quoted = [repr(name) for name in names]
    return f"{', '.join(quoted[:-1])} or {quoted[-1]}" if len(quoted) > 1 else quoted[0]


def _norm_schema(schema: dict[str, Any]) -> None:
    """The norms registered now (`nfcore.spec.norms`), as a Literal field would list them."""
    schema["anyOf"] = [{"enum": list(norms.NORMS), "type": "string"}, {"type": "null"}]


class ModelConfig(BaseModel):
    """Which network to build: family, depth, normalization, conv and activation choices.

    Fields left out take the family's defaults (its row in `nfcore.spec.families`), and where a
    norm needs other ones, that norm's. `family="nf_regnet", norm="bn"` is NF-RegNet's
    batch-normalized twin: the same network with pre-activation BN (BN then g) before every
    activation, He-initialized plain convs, no alpha/beta scaling, and by default plain S+E
    (se_gain 1) and no SkipInit, since the S+E factor 2 and SkipInit are NF-specific fixes
    (the paper's BN baselines use neither); set se_gain/skipinit to override.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    family: str = Field(
        DEFAULT_FAMILY,
        description="Network family (a row of nfcore.spec.families).",
        json_schema_extra=lambda schema: schema.update(enum=list(FAMILIES)),
    )
    depth: int | None = Field(
        None,
        ge=2,
        le=3 * 4 * MAX_LAYOUT_BLOCKS + 2,
        description="ResNet depth (50, 101, 152, 200, 288, 600, or 14/26 for tiny nets).",
    )
    layout: tuple[Annotated[int, Field(ge=1, le=MAX_LAYOUT_BLOCKS)], ...] | None = Field(
        None,
        min_length=1,
        max_length=4,
        description="Custom ResNet blocks per stage (1 to 4 stages); overrides depth.",
    )
    variant: str | None = Field(
        None,
        max_length=32,
        description="Variant of a family sized by variants (NF-RegNet: B0-B5).",
        json_schema_extra=lambda schema: schema.update(enum=_all_variants()),
    )
    norm: str | None = Field(
        None,
        description="bn (BatchNorm), nf (Normalizer-Free), none, or fixup: in resnetv2 FixUp "
        "(pre-activation, ours), in resnetv1 FixUp (reference, post-activation).",
        json_schema_extra=_norm_schema,
    )
    order: Order | None = Field(
        None, description="Order of BN and ReLU in a BN ResNetV2 block; default bn-relu-conv."
    )
    conv: Conv | None = Field(
        None,
        description="ws (Scaled Weight Standardization) or he (Gaussian He init); default ws for nf, else he.",
    )
    activation: str | None = Field(None, description="Nonlinearity g, e.g. relu, silu, identity.")
    alpha: float | None = Field(
        None,
        gt=0,
        le=10,
        description="NF variance growth per block (Var grows by alpha^2); default 0.2 for nf.",
    )
    gamma: Literal["auto"] | float | None = Field(
        None,
        description="Scaled WS gain: 'auto' = 1/sqrt(Var g(x)), or a number (Fig. 8: sqrt 2); default auto.",
    )
    se_gain: float | None = Field(
        None,
        ge=0,
        le=10,
        description="Squeeze-Excite output gain: 0 = no SE, 1 = plain, 2 = corrected.",
    )
    skipinit: bool | None = Field(None, description="Learnable residual gain initialized to 0.")
    maxpool: bool | None = Field(None, description="3x3 max-pool in the ResNet stem; default on.")
    padding: Padding = Field(
        "zeros",
        description="Border of the convs and pools wider than 1x1: zeros (the paper's) or "
        "circular (periodic: every position sees the same statistics, no border effect at "
        "small images).",
    )
    width: float = Field(1.0, gt=0, le=4, description="Channel-width multiplier.")
    stochdepth_rate: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Stochastic depth: block l of L drops its branch with rate * l / L (training only).",
    )
    drop_rate: float = Field(
        0.0, ge=0, lt=1, description="Dropout before the classifier (training only)."
    )
    num_classes: int = Field(1000, ge=2, le=100_000, description="Classifier outputs.")

    @field_validator("family")
    @classmethod
    def _known_family(cls, value: str) -> str:
        if value not in FAMILIES:
            raise PydanticCustomError(
                "literal_error", "Input should be {expected}", {"expected": _one_of(list(FAMILIES))}
            )
        return value

    @field_validator("norm", mode="before")
    @classmethod
    def _known_norm(cls, value: Any) -> Any:
        # Before str's own check, so any other value is refused as a Literal field refuses it.
        if value is not None and not (isinstance(value, str) and value in norms.NORMS):
            raise PydanticCustomError(
                "literal_error",
                "Input should be {expected}",
                {"expected": _one_of(list(norms.NORMS))},
            )
        return value

    @field_validator("gamma", mode="before")
    @classmethod
    def _parse_gamma(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
            return None if value is None else "auto"
        try:
            gain = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"must be 'auto' or a positive number, got {value!r}") from None
        if not (math.isfinite(gain) and 0 < gain <= MAX_GAMMA):
            raise ValueError(f"must be 'auto' or a number in (0, {MAX_GAMMA}], got {value!r}")
        return gain

    @model_validator(mode="before")
    @classmethod
    def _fill_family_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        given = {key for key, value in data.items() if value is not None}
        data = dict(data)
        name = data.get("family") or DEFAULT_FAMILY
        if not isinstance(name, str) or name not in FAMILIES:
            return data  # the field's own validation reports it
        norm = data.get("norm")
        for key, value in family_defaults(name, norm if isinstance(norm, str) else None).items():
            if data.get(key) is None:
                data[key] = value
        sized_by_depth = FAMILIES[name].sized_by == "depth"
        if sized_by_depth and data.get("layout") is not None and "depth" not in given:
            data["depth"] = None  # the layout decides the depth
        return data

    @model_validator(mode="after")
    def _canonicalize(self) -> ModelConfig:
        self._resolve_architecture()
        self._resolve_options()
        return self

    def _set(self, **values: Any) -> None:
        # The model is frozen for users; the validator finishes building it.
        for key, value in values.items():
            object.__setattr__(self, key, value)

    def _resolve_architecture(self) -> None:
        row = family(self.family)
        if self.norm not in row.norms:
            raise ValueError(
                f"norm: {self.norm!r} is not available for {self.family}; "
                f"choose {', '.join(row.norms)}"
            )
        if row.sized_by == "variant":
            if self.variant not in row.variants:
                raise ValueError(
                    f"variant: {self.variant!r} is not a variant of {self.family}; "
                    f"choose {', '.join(row.variants)}"
                )
            layout = tuple(row.variants[self.variant]["depth"])
            if self.layout is not None and tuple(self.layout) != layout:
                raise ValueError(
                    f"layout: NF-{row.label}-{self.variant} has the fixed layout "
                    f"{','.join(map(str, layout))}; custom layouts are for the ResNet families"
                )
            self._set(depth=None, layout=layout, maxpool=None)
            return
        layout = self.layout
        if (
            layout is not None
            and self.depth is not None
            and self.depth != resnet_depth(tuple(layout))
        ):
            raise ValueError(
                f"depth: {self.depth} does not match layout {','.join(map(str, layout))} "
                f"(a {resnet_depth(tuple(layout))}-layer net); give one of them"
            )
        if layout is None:
            if self.depth not in RESNET_LAYOUTS:
                known = ", ".join(str(d) for d in RESNET_LAYOUTS)
                raise ValueError(
                    f"depth: {self.depth} has no block layout (known depths: {known}); "
                    "give a custom per-stage layout instead"
                )
            layout = RESNET_LAYOUTS[self.depth]
        self._set(depth=resnet_depth(tuple(layout)), layout=tuple(layout), variant=None)
        if not row.has_maxpool:
            self._set(maxpool=None)
        elif self.maxpool is None:
            self._set(maxpool=True)

    def _resolve_options(self) -> None:
        try:
            self._set(activation=canonical_activation(self.activation or "relu"))
        except ValueError as error:
            raise ValueError(f"activation: {error}") from None
        norm = norms.norm(str(self.norm))
        if self.conv is not None and self.conv not in norm.convs:
            reason = f", {norm.conv_reason}" if norm.conv_reason else ""
            raise ValueError(
                f"conv: {self.conv!r} does not apply to {norm.name}{reason}; "
                f"use {' or '.join(norm.convs)}"
            )
        conv = self.conv or norm.convs[0]
        order = (
            (self.order or "bn-relu-conv")
            if (norm.parts == "batchnorm" and family(self.family).bn_order)
            else None
        )
        alpha = (self.alpha if self.alpha is not None else norm.alpha) if norm.scaled else None
        gamma = (self.gamma if self.gamma is not None else "auto") if conv == "ws" else None
        skipinit = bool(self.skipinit) if norm.skipinit else False
        self._set(conv=conv, order=order, alpha=alpha, gamma=gamma, skipinit=skipinit)

    # --- derived, read by the builders, the API's cost estimate and the plots ---------------
    @property
    def stage_layout(self) -> tuple[int, ...]:
        """Residual blocks per stage."""
        assert self.layout is not None
        return tuple(self.layout)

    @property
    def num_blocks(self) -> int:
        return sum(self.stage_layout)

    @property
    def total_stride(self) -> int:
        """Downsampling factor from the input image to the last stage."""
        # The stride-2 stem conv (and its max-pool), then the first block of every stage after
        # the first (and of the first too where the family's row says so).
        strided_stages = len(self.stage_layout) - 1 + int(family(self.family).first_stage_strided)
        return 2 ** (1 + int(bool(self.maxpool)) + strided_stages)

    @property
    def label(self) -> str:
        """A short human name, e.g. 'NF-ResNetV2-600 (ws, relu, alpha=0.2)' or, for NF-RegNet's
        batch-normalized twin, 'BN-RegNet-B0 (he, silu, SE x1)'."""
        row = family(self.family)
        prefix = norms.norm(str(self.norm)).prefix
        name = f"{prefix}-{row.label}-{row.size_name(self.depth, self.variant)}"
        parts = [p for p in (self.order, self.conv, self.activation) if p]
        if self.alpha is not None:
            parts.append(f"alpha={self.alpha:g}")
        if self.gamma not in (None, "auto"):
            parts.append(f"gamma={float(self.gamma):.4g}")
        if self.se_gain:
            parts.append(f"SE x{self.se_gain:g}")
        if self.skipinit:
            parts.append("SkipInit")
        if self.padding != "zeros":
            parts.append(f"{self.padding} padding")
        return f"{name} ({', '.join(parts)})"

    def edited(self, changes: dict[str, Any]) -> Self:
        """This config with `changes` applied by the one edit rule (`nfcore.spec.edits`): what
        followed a changed field (a norm's conv and alpha, say) is dropped unless `changes`
        sets it too. A ValidationError when the result is not a valid config."""
        return type(self)(**with_changes(self.model_dump(), changes))


class SPPConfig(ModelConfig):
    """A Signal Propagation Plot run: the model, the input batch, and what to measure."""

    resolution: int = Field(128, ge=8, le=1024, description="Input height and width in pixels.")
    batch: int = Field(16, ge=1, le=4096, description="Input batch size N.")
    input: InputKind = Field("gaussian", description="N(0,1) noise, or scikit-learn digit images.")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seeds the weights and the input batch.")
    device: Device = Field("auto", description="auto = cuda when available, else cpu.")
    gradients: bool = Field(False, description="Also measure the gradient on the backward pass.")
    extra_stats: bool = Field(
        False, description="Also Appendix G: activation mean, average pixel norm."
    )

    @model_validator(mode="after")
    def _check_input(self) -> SPPConfig:
        if self.resolution < self.total_stride:
            raise ValueError(
                f"resolution: {self.resolution} is too small: this network downsamples by "
                f"{self.total_stride}, so the resolution must be at least {self.total_stride}"
            )
        final_side = math.ceil(self.resolution / self.total_stride)
        norm = norms.norm(str(self.norm))
        if norm.batch_statistics and self.batch * final_side**2 < 2:
            raise ValueError(
                f"batch: 1 at this resolution leaves {norm.title} one value per channel in the "
                "last stage; use a batch of at least 2 or a larger resolution"
            )
        return self


# Classes of each training data set (all three have ten).
DATASET_CLASSES: dict[str, int] = {"digits": 10, "cifar10": 10, "gaussian": 10}

MAX_TRAIN_STEPS = 1_000_000  # the API enforces its own, smaller budget (MAX_TRAIN_STEPS)


class TrainConfig(ModelConfig):
    """A short training run: the model, the data, and the paper's recipe scaled down.

    SGD with Nesterov momentum, linear warm-up then cosine decay to zero, label smoothing,
    weight decay on weights only (gains and biases are skipped, Appendix B.1), an optional
    EMA of the weights with the paper's warm-up (decay_i = min(ema_decay, (1+i)/(10+i))),
    stochastic depth and dropout (the model fields), optional gradient-norm clipping.
    """

    dataset: Dataset = Field(
        "digits",
        description="digits (scikit-learn, 32x32), cifar10 (a local folder), or gaussian "
        "(noise with random labels, for speed).",
    )
    resolution: int = Field(32, ge=8, le=1024, description="Image height and width in pixels.")
    batch: int = Field(32, ge=1, le=4096, description="Training batch size.")
    steps: int = Field(300, ge=1, le=MAX_TRAIN_STEPS, description="Optimizer steps to take.")
    lr: float = Field(0.1, gt=0, le=100, description="Peak learning rate (after warm-up).")
    warmup_steps: int | None = Field(
        None, ge=0, description="Linear warm-up from 0 to lr; default 5% of the steps."
    )
    momentum: float = Field(0.9, ge=0, lt=1, description="Nesterov momentum.")
    weight_decay: float = Field(
        5e-5, ge=0, le=1, description="L2 weight decay on weights (not on gains or biases)."
    )
    label_smoothing: float = Field(0.1, ge=0, lt=1, description="Label smoothing of the loss.")
    ema_decay: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="EMA of the weights (the paper: 0.99999), evaluated beside the raw "
        "weights; null = no EMA.",
    )
    clip_grad_norm: float | None = Field(
        None, gt=0, description="Clip the global gradient norm to this value; null = no clip."
    )
    eval_every: int = Field(
        50, ge=1, description="Evaluate on the held-out split every this many steps (and last)."
    )
    eval_examples: int = Field(
        1000, ge=1, le=100_000, description="Held-out examples evaluated (the first ones)."
    )
    spp_every: int | None = Field(
        None, ge=1, description="Also measure the SPP every this many steps (always at start/end)."
    )
    spp_batch: int = Field(8, ge=2, le=256, description="Gaussian batch size of those SPPs.")
    collapse_factor: float = Field(
        10.0,
        gt=1,
        description="Collapse when the loss exceeds this many times ln(classes), a uniform "
        "guess's loss (or is NaN/Inf).",
    )
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seeds weights, data order and dropout.")
    device: Device = Field("auto", description="auto = cuda when available, else cpu.")

    @model_validator(mode="before")
    @classmethod
    def _dataset_classes(cls, data: Any) -> Any:
        dataset = data.get("dataset", "digits") if isinstance(data, dict) else None
        if isinstance(dataset, str) and dataset in DATASET_CLASSES:
            classes = DATASET_CLASSES[dataset]
            given = data.get("num_classes")
            if given is not None and given != classes:
                raise ValueError(
                    f"num_classes: {dataset} has {classes} classes, got {given}; leave it out"
                )
            data = {**data, "num_classes": classes}
        return data

    @model_validator(mode="after")
    def _check_training(self) -> TrainConfig:
        if self.resolution < self.total_stride:
            raise ValueError(
                f"resolution: {self.resolution} is too small: this network downsamples by "
                f"{self.total_stride}, so the resolution must be at least {self.total_stride}"
            )
        norm = norms.norm(str(self.norm))
        if norm.batch_statistics and self.batch < 2:
            raise ValueError(
                f"batch: {norm.title} cannot train at batch size 1 (its statistics would be those "
                "of a single example, and at test time they no longer match); use a batch of at "
                "least 2, or a normalizer-free model (norm 'nf'), which trains at any batch size"
            )
        warmup = self.warmup_steps
        if warmup is None:
            warmup = min(self.steps - 1, max(0, round(0.05 * self.steps)))
        if warmup >= self.steps:
            raise ValueError(f"warmup_steps: {warmup} must be less than steps ({self.steps})")
        self._set(warmup_steps=warmup)
        return self

    def spp_config(self) -> SPPConfig:
        """The SPP measured during this run: the same model, a Gaussian batch at the training
        resolution (before and after training alike, so the two are comparable)."""
        fields = {name: getattr(self, name) for name in ModelConfig.model_fields}
        return SPPConfig(
            **fields,
            resolution=self.resolution,
            batch=self.spp_batch,
            input="gaussian",
            seed=self.seed,
            device=self.device,
        )

    @property
    def eval_steps(self) -> list[int]:
        """The steps after which the held-out split is evaluated (always the last)."""
        return sorted({*range(self.eval_every, self.steps + 1, self.eval_every), self.steps})

    @property
    def spp_steps(self) -> list[int]:
        """The steps at which the SPP is measured: 0 (at initialization), the last, and every
        `spp_every` steps."""
        every = range(self.spp_every, self.steps, self.spp_every) if self.spp_every else ()
        return sorted({0, *every, self.steps})


def canonical_json(config: BaseModel) -> str:
    """The config as compact JSON with sorted keys: the text that is hashed."""
    return json.dumps(config.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


def config_hash(config: BaseModel, version: str) -> str:
    """A stable id for (config, library version): the cache key and job id of a run."""
    digest = hashlib.sha256(f"{version}\n{canonical_json(config)}".encode())
    return digest.hexdigest()[:32]
