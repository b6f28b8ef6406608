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
from dataclasses import dataclass, replace
from functools import cache
from typing import Annotated, Any, Literal

import annotated_types
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from nfcore.registry import canonical_activation
from nfcore.variants import NF_REGNET_VARIANTS, RESNET_LAYOUTS, resnet_depth

Family = Literal["resnetv2", "resnetv1", "nf_regnet"]
Norm = Literal["bn", "nf", "none", "fixup"]
Order = Literal["bn-relu-conv", "relu-bn-conv"]
Conv = Literal["ws", "he"]
Variant = Literal["B0", "B1", "B2", "B3", "B4", "B5"]
InputKind = Literal["gaussian", "digits"]
Device = Literal["auto", "cpu", "cuda"]
Dataset = Literal["digits", "cifar10", "gaussian"]

NORMS_BY_FAMILY: dict[str, tuple[str, ...]] = {
    "resnetv2": ("bn", "nf", "none", "fixup"),
    "resnetv1": ("bn", "none"),
    # "bn": NF-RegNet's batch-normalized twin, the baseline of its speed comparison (Table 5).
    "nf_regnet": ("nf", "bn"),
}

# Values a user may leave out; they depend on the family (the paper's choices for each).
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "resnetv2": {
        "depth": 50,
        "norm": "bn",
        "activation": "relu",
        "se_gain": 0.0,
        "skipinit": False,
    },
    "resnetv1": {
        "depth": 50,
        "norm": "bn",
        "activation": "relu",
        "se_gain": 0.0,
        "skipinit": False,
    },
    # Appendix D.2: SiLU, S+E corrected by 2, SkipInit gain, alpha 0.2. Its BN twin changes
    # two of these, see NORM_DEFAULTS.
    "nf_regnet": {
        "variant": "B0",
        "norm": "nf",
        "activation": "silu",
        "se_gain": 2.0,
        "skipinit": True,
    },
}

# Defaults that also depend on the norm: they override FAMILY_DEFAULTS for one (family, norm).
NORM_DEFAULTS: dict[tuple[str, str], dict[str, Any]] = {
    # NF-RegNet's batch-normalized twin keeps the S+E layers but not the NF-specific fixes: the
    # factor 2 undoes the S+E attenuation that an unnormalized net would carry forward
    # (Section 4.4), and here the BN after the S+E renormalizes it anyway (plain S+E, gain 1);
    # the paper's BN baselines use no SkipInit. Both can still be set explicitly.
    ("nf_regnet", "bn"): {"se_gain": 1.0, "skipinit": False},
}


def family_defaults(family: str, norm: str | None = None) -> dict[str, Any]:
    """The values filled in for fields left out: the family's, then its norm's (`norm` None:
    the family's default norm)."""
    defaults = dict(FAMILY_DEFAULTS.get(family, {}))
    defaults.update(NORM_DEFAULTS.get((family, norm or defaults.get("norm", "")), {}))
    return defaults


MAX_LAYOUT_BLOCKS = 200  # per stage; 50 is the deepest the paper uses (ResNet-600)

MAX_GAMMA = 100.0  # far above any activation gain (sigmoid needs about 4.8)


def _fmt(value: Any, limit: int = 60) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ModelConfig(BaseModel):
    """Which network to build: family, depth, normalization, conv and activation choices.

    Fields left out take the family's defaults (FAMILY_DEFAULTS), and where a norm needs other
    ones, that norm's (NORM_DEFAULTS). `family="nf_regnet", norm="bn"` is NF-RegNet's
    batch-normalized twin: the same network with pre-activation BN (BN then g) before every
    activation, He-initialized plain convs, no alpha/beta scaling, and by default plain S+E
    (se_gain 1) and no SkipInit, since the S+E factor 2 and SkipInit are NF-specific fixes
    (the paper's BN baselines use neither); set se_gain/skipinit to override.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    family: Family = Field("resnetv2", description="Network family.")
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
    variant: Variant | None = Field(None, description="NF-RegNet variant B0-B5.")
    norm: Norm | None = Field(
        None, description="bn (BatchNorm), nf (Normalizer-Free), none, or fixup."
    )
    order: Order | None = Field(None, description="Order of BN and ReLU in a pre-activation block.")
    conv: Conv | None = Field(
        None, description="ws (Scaled Weight Standardization) or he (Gaussian He init)."
    )
    activation: str | None = Field(None, description="Nonlinearity g, e.g. relu, silu, identity.")
    alpha: float | None = Field(
        None, gt=0, le=10, description="NF variance growth per block (Var grows by alpha^2)."
    )
    gamma: Literal["auto"] | float | None = Field(
        None, description="Scaled WS gain: 'auto' = 1/sqrt(Var g(x)), or a number (Fig. 8: sqrt 2)."
    )
    se_gain: float | None = Field(
        None,
        ge=0,
        le=10,
        description="Squeeze-Excite output gain: 0 = no SE, 1 = plain, 2 = corrected.",
    )
    skipinit: bool | None = Field(None, description="Learnable residual gain initialized to 0.")
    maxpool: bool | None = Field(None, description="3x3 max-pool in the ResNet stem.")
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
        family = data.get("family") or "resnetv2"
        if not isinstance(family, str):
            return data  # the field's own validation reports it
        norm = data.get("norm")
        for key, value in family_defaults(family, norm if isinstance(norm, str) else None).items():
            if data.get(key) is None:
                data[key] = value
        if family != "nf_regnet" and data.get("layout") is not None and "depth" not in given:
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
        if self.norm not in NORMS_BY_FAMILY[self.family]:
            allowed = ", ".join(NORMS_BY_FAMILY[self.family])
            raise ValueError(
                f"norm: {self.norm!r} is not available for {self.family}; choose {allowed}"
            )
        if self.family == "nf_regnet":
            assert self.variant is not None
            layout = NF_REGNET_VARIANTS[self.variant]["depth"]
            if self.layout is not None and tuple(self.layout) != layout:
                raise ValueError(
                    f"layout: NF-RegNet-{self.variant} has the fixed layout "
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
        if self.maxpool is None:
            self._set(maxpool=True)

    def _resolve_options(self) -> None:
        try:
            self._set(activation=canonical_activation(self.activation or "relu"))
        except ValueError as error:
            raise ValueError(f"activation: {error}") from None
        norm = self.norm
        if norm == "fixup" and self.conv == "ws":
            raise ValueError(
                "conv: 'ws' does not apply to fixup, which has its own initialization; use he"
            )
        conv = self.conv or ("ws" if norm == "nf" else "he")
        order = (
            (self.order or "bn-relu-conv") if (norm == "bn" and self.family == "resnetv2") else None
        )
        alpha = (self.alpha if self.alpha is not None else 0.2) if norm == "nf" else None
        gamma = (self.gamma if self.gamma is not None else "auto") if conv == "ws" else None
        skipinit = bool(self.skipinit) if norm in ("nf", "none", "bn") else False
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
        stages = len(self.stage_layout)
        if self.family == "nf_regnet":
            return 2 ** (1 + stages)  # stride-2 stem conv, then every stage starts with stride 2
        return 2 ** (1 + int(bool(self.maxpool)) + stages - 1)  # stem conv (+ pool), stages 2..n

    @property
    def label(self) -> str:
        """A short human name, e.g. 'NF-ResNetV2-600 (ws, relu, alpha=0.2)' or, for NF-RegNet's
        batch-normalized twin, 'BN-RegNet-B0 (he, silu, SE x1)'."""
        prefix = {"bn": "BN", "nf": "NF", "none": "Unnormalized", "fixup": "FixUp"}[str(self.norm)]
        if self.family == "nf_regnet":
            name = f"{prefix}-RegNet-{self.variant}"
        else:
            name = (
                f"{prefix}-{'ResNetV2' if self.family == 'resnetv2' else 'ResNetV1'}-{self.depth}"
            )
        parts = [p for p in (self.order, self.conv, self.activation) if p]
        if self.alpha is not None:
            parts.append(f"alpha={self.alpha:g}")
        if self.gamma not in (None, "auto"):
            parts.append(f"gamma={float(self.gamma):.4g}")
        if self.se_gain:
            parts.append(f"SE x{self.se_gain:g}")
        if self.skipinit:
            parts.append("SkipInit")
        return f"{name} ({', '.join(parts)})"


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
        if self.norm == "bn" and self.batch * final_side**2 < 2:
            raise ValueError(
                "batch: 1 at this resolution leaves BatchNorm one value per channel in the last "
                "stage; use a batch of at least 2 or a larger resolution"
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
        if self.norm == "bn" and self.batch < 2:
            raise ValueError(
                "batch: BatchNorm cannot train at batch size 1 (its statistics would be those of "
                "a single example, and at test time they no longer match); use a batch of at "
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


# Fields a canonical config filled in from another field's value: changing that field
# invalidates them. (The NORM_DEFAULTS fields are handled apart in `with_changes`.)
DERIVED_FIELDS: dict[str, tuple[str, ...]] = {
    "family": ("depth", "layout", "variant", "norm", "order", "conv", "activation", "alpha",
               "gamma", "se_gain", "skipinit", "maxpool"),
    "depth": ("layout",),
    "layout": ("depth",),
    "variant": ("layout",),
    "norm": ("order", "conv", "alpha", "gamma"),
    "conv": ("gamma",),
}  # fmt: skip


# Families whose networks are laid out by the same depth table: between them a depth (or a
# custom layout) means the same blocks, so a change of family keeps it.
LAYOUT_BY_DEPTH: frozenset[str] = frozenset({"resnetv2", "resnetv1"})


def _kept_across(field: str, old: Any, new: Any) -> tuple[str, ...]:
    """Derived fields that still mean the same after `field` went from `old` to `new`."""
    if field == "family" and old in LAYOUT_BY_DEPTH and new in LAYOUT_BY_DEPTH:
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

    A field whose default depends on the norm (NORM_DEFAULTS: NF-RegNet's S+E gain and
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
    family = base.get("family") or "resnetv2"
    old_norm, new_norm = base.get("norm"), changes.get("norm")
    if (
        "norm" in changes
        and old_norm != new_norm
        and changes.get("family", family) == family
        and all(isinstance(v, str | None) for v in (family, old_norm, new_norm))
    ):
        old, new = family_defaults(family, old_norm), family_defaults(family, new_norm)
        for key in sorted({k for (f, _), d in NORM_DEFAULTS.items() if f == family for k in d}):
            if key not in changes and key in values and values[key] == old.get(key) != new.get(key):
                values.pop(key)
    values.update(changes)
    return values


def canonical_json(config: BaseModel) -> str:
    """The config as compact JSON with sorted keys: the text that is hashed."""
    return json.dumps(config.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


def config_hash(config: BaseModel, version: str) -> str:
    """A stable id for (config, library version): the cache key and job id of a run."""
    digest = hashlib.sha256(f"{version}\n{canonical_json(config)}".encode())
    return digest.hexdigest()[:32]


@dataclass(frozen=True)
class Bounds:
    """A numeric field's bounds from its `Field` metadata; None where it has none."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low < value (Gt), else low <= value (Ge)
    high_open: bool = False  # value < high (Lt), else value <= high (Le)


def field_bounds(kind: type[BaseModel], name: str) -> Bounds:
    """The bounds of `kind`'s field `name`: the one source for widget limits and help texts."""
    bounds = Bounds()
    for bound in kind.model_fields[name].metadata:
        if isinstance(bound, annotated_types.Gt):
            bounds = replace(bounds, low=bound.gt, low_open=True)
        elif isinstance(bound, annotated_types.Ge):
            bounds = replace(bounds, low=bound.ge, low_open=False)
        elif isinstance(bound, annotated_types.Lt):
            bounds = replace(bounds, high=bound.lt, high_open=True)
        elif isinstance(bound, annotated_types.Le):
            bounds = replace(bounds, high=bound.le, high_open=False)
    return bounds


def allowed_range(field: str) -> str | None:
    """The numeric bounds of a config field as text, e.g. '0 < alpha <= 10'."""
    info = SPPConfig.model_fields.get(field) or TrainConfig.model_fields.get(field)
    if info is None:
        return None
    low = high = ""
    for bound in info.metadata:
        if isinstance(bound, annotated_types.Gt):
            low = f"{bound.gt} < "
        elif isinstance(bound, annotated_types.Ge):
            low = f"{bound.ge} <= "
        elif isinstance(bound, annotated_types.Lt):
            high = f" < {bound.lt}"
        elif isinstance(bound, annotated_types.Le):
            high = f" <= {bound.le}"
    return f"{low}{field}{high}" if low or high else None


def json_type_errors(kind: type[BaseModel], data: Any) -> list[dict[str, Any]]:
    """Pydantic-style error items for the fields of `data` (decoded JSON) whose JSON type is
    not one the config's schema documents, which validation would otherwise coerce:
    `"depth": "50"`, `"batch": true`, `"skipinit": 1`, `"alpha": "0.2"`. Values of the right
    type (right or wrong) are left to validation, as are unknown fields.

    The API takes the JSON types its schema documents; the CLI and the dashboard, which
    read text, keep pydantic's coercion.
    """
    if not isinstance(data, dict):
        return [{"type": "model_type", "loc": (), "msg": "Input should be a JSON object",
                 "input": data}]  # fmt: skip
    errors: list[dict[str, Any]] = []
    for name, value in data.items():
        schema = _field_schema(kind, name) if isinstance(name, str) else None
        if schema is not None and not _admits(schema, value):
            errors.append({"type": "json_type", "loc": (name,), "input": value,
                           "msg": f"Input should be {_json_type_words(schema)}"})  # fmt: skip
    return errors


@cache
def _field_schema(kind: type[BaseModel], name: str) -> dict[str, Any] | None:
    """The JSON schema of a field's type (None for a field the config does not have)."""
    field = kind.model_fields.get(name)
    return None if field is None else TypeAdapter(field.annotation).json_schema()


def _json_type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _admits(schema: dict[str, Any], value: Any, among: bool = False) -> bool:
    """Whether a JSON value has one of the JSON types `schema` allows (an integer is a number).

    A field of one literal type (norm: a string) admits any value of that type, and leaves a
    wrong one to validation's message; where literals are one option `among` others
    (gamma: "auto" or a number), a string must be one of them.
    """
    if "anyOf" in schema:
        options = schema["anyOf"]
        mixed = any(
            "const" not in o and "enum" not in o and o.get("type") != "null" for o in options
        )
        return any(_admits(option, value, among=mixed) for option in options)
    kind = _json_type_of(value)
    literals = schema.get("enum", [schema["const"]] if "const" in schema else None)
    if literals is not None and among:
        return any(value == v and kind == _json_type_of(v) for v in literals)
    if literals is not None:
        allowed = {_json_type_of(v) for v in literals}
    else:
        allowed = {schema["type"]} if "type" in schema else {kind}
    if "number" in allowed:
        allowed.add("integer")
    if kind not in allowed:
        return False
    if kind == "array" and "items" in schema:
        return all(_admits(schema["items"], item) for item in value)
    return True


_JSON_TYPE_WORDS = {"integer": "an integer", "number": "a number", "boolean": "a boolean",
                    "string": "a string", "null": "null", "array": "an array",
                    "object": "an object"}  # fmt: skip


def _json_type_words(schema: dict[str, Any]) -> str:
    """'an integer or null', "'auto', a number or null": what a field's JSON schema admits."""
    options = []
    for option in schema.get("anyOf", [schema]):
        if "const" in option:
            options.append(json.dumps(option["const"]))
        elif "enum" in option:
            options.append("one of " + ", ".join(json.dumps(value) for value in option["enum"]))
        elif option.get("type") == "array" and "items" in option:
            options.append(f"an array of {_json_type_words(option['items']).removeprefix('an ')}s")
        else:
            options.append(_JSON_TYPE_WORDS.get(option.get("type", ""), "a JSON value"))
    return options[0] if len(options) == 1 else ", ".join(options[:-1]) + " or " + options[-1]


_BOUND_ERRORS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")


def describe_error_items(items: list[dict[str, Any]]) -> str:
    """One readable sentence per pydantic error item, naming the field (and its range)."""
    lines = []
    for item in items:
        loc = ".".join(str(part) for part in item["loc"] if not isinstance(part, int))
        message = str(item["msg"]).removeprefix("Value error, ")
        if item["type"] == "json_invalid":
            reason = (item.get("ctx") or {}).get("error", "")
            lines.append(f"the body is not valid JSON ({reason})" if reason else message)
            continue
        if item["type"] == "json_type":  # JSON's words for true, false and null
            value = item.get("input")
            shown = json.dumps(value) if value is None or isinstance(value, bool) else _fmt(value)
            lines.append(f"{loc}: {message} (got {shown})")
            continue
        if item["type"] in ("literal_error", "enum"):
            message = f"{message}, got {_fmt(item.get('input'))}"
        elif "input" in item and item["type"] not in ("value_error", "assertion_error", "missing"):
            message = f"{message} (got {_fmt(item['input'])})"
        bounds = allowed_range(loc) if item["type"] in _BOUND_ERRORS else None
        if bounds:
            message = f"{message}; allowed: {bounds}"
        lines.append(f"{loc}: {message}" if loc else message)
    return "; ".join(lines)


def describe_validation_error(error: ValidationError) -> str:
    """One readable line per problem, naming the field, e.g. 'depth: 51 has no layout ...'."""
    return describe_error_items(error.errors())
