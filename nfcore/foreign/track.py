"""SPPs of your own training: `nfcore.track(model)` measures them as your loop runs.

    tracker = nfcore.track(model, every=50, out="runs/spp.jsonl")   # options as in measure()
    for step, (x, y) in enumerate(loader):
        ...; optimizer.step()
        tracker.step(step)            # measures at steps 0, 50, 100, ...
    tracker.close()

Each measurement is `nfcore.measure` of the model at its current weights on one fixed probe
batch (the seeded N(0,1) batch `measure` makes, or the batch given as `probe`), appended to
`out` as one JSON line (`nfcore.spec.tracked`; `nfcore plot runs/spp.jsonl` scrubs through
them). The first measurement traces the network; later ones reuse what it decided
(`nfcore.foreign.plan`), so each costs about one forward pass.

Measuring does not change the training: the model is measured where it is (never moved), and
afterwards every module's train/eval flag, every buffer (BatchNorm's running statistics and
`num_batches_tracked`), every parameter's `.grad` and `requires_grad`, and the global torch
random number generators (CPU, and CUDA where it is initialized) are as they were. With the
same seed, a loop with the tracker ends with the same weights, bit for bit, as one without.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import torch
from pydantic import ValidationError
from torch import Tensor, nn

from nfcore.foreign.measure import measure, measure_config
from nfcore.spec.foreign_config import ForeignConfig
from nfcore.spec.result import SPPResult
from nfcore.spec.tracked import TrackedSPP

# measure()'s options a tracker does not take: the model is measured where it is, at once.
_OWN_OPTIONS = {
    "device": "a tracker measures the model where it is; move the model to the device instead",
    "progress": "a tracker's measurement is one pass; it reports no progress",
}
_PROBE_OPTIONS = frozenset({"resolution", "batch", "input", "input_shape"})


class Tracker:
    """Measures a model's SPP at chosen training steps into a JSON-lines file (`track`)."""

    def __init__(
        self,
        model: nn.Module,
        every: int | Iterable[int],
        out: str | Path,
        *,
        probe: Tensor | None = None,
        append: bool = False,
        measure_kwargs: dict[str, Any],
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.every, self.steps = _schedule(every)
        _device_of(model)
        self.options = _checked_options(measure_kwargs, probe)
        self.probe = None if probe is None else probe.detach().clone()
        self.config = (
            _config(model, self.options)
            if probe is None
            else _probe_config(model, probe, self.options)
        )
        self.path = Path(out)
        self.records: list[TrackedSPP] = []
        self._file: IO[str] | None = _opened(self.path, append)

    def due(self, step: int) -> bool:
        """Whether `step` is one the tracker measures at."""
        if self.every is not None:
            return step % self.every == 0
        return step in self.steps

    def step(self, step: int, loss: float | None = None) -> SPPResult | None:
        """Call after each optimizer step: at a due step, measure and append one line (with
        `loss`, where given, for the figure's loss panel); the result, else None."""
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step: expected a whole number >= 0, got {step!r}")
        if self._file is None:
            raise ValueError(f"step: the tracker writing {self.path} is closed")
        if not self.due(step):
            return None
        with untouched(self.model):
            result = self._measure()
        value = None if loss is None else float(loss)
        finite = value if value is not None and math.isfinite(value) else None  # JSON null
        record = TrackedSPP(step, time.time(), result, finite)
        self._file.write(record.to_json_line() + "\n")
        self._file.flush()
        self.records.append(record)
        return result

    def _measure(self) -> SPPResult:
        device = _device_of(self.model)  # where it is now: a tracker never moves it
        blocks, residual = self.options.get("blocks", "auto"), self.options.get("residual")
        return measure_config(self.model, self.config, blocks=blocks, residual=residual,
                              device=str(device), x=self.probe)  # fmt: skip

    def close(self) -> None:
        """Close the file (every line is already written); a closed tracker measures no more."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> Tracker:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def track(
    model: nn.Module,
    every: int | Iterable[int] = 50,
    out: str | Path = "runs/spp.jsonl",
    *,
    probe: Tensor | None = None,
    append: bool = False,
    **measure_kwargs: Any,
) -> Tracker:
    """A tracker of `model`'s SPP during training (see the module docstring).

    `every`: measure at every step divisible by it (0 included: the initialization), or at
    the steps of a list. `out`: the JSON-lines file, made afresh (`append`: added to, for a
    resumed run). `probe`: the batch to measure on (default: the seeded N(0,1) batch of
    `measure`'s `resolution`, `batch`, `input_shape`, `seed`). `measure_kwargs`: `blocks`,
    `residual`, `channels`, `gradients`, `extra_stats`, `name`, ... as in `nfcore.measure`.
    """
    return Tracker(model, every, out, probe=probe, append=append, measure_kwargs=measure_kwargs)


@contextmanager
def untouched(model: nn.Module) -> Iterator[None]:
    """Whatever a measurement might change that training reads, put back as it was: each
    module's mode (`measurement_mode` restores only the root's mode on all of them), every
    buffer, each parameter's gradient and `requires_grad`, and the global RNG states."""
    modules = list(model.modules())
    modes = [module.training for module in modules]
    buffers = [(buffer, buffer.clone()) for buffer in model.buffers()]
    parameters = list(model.parameters())
    grads = [p.grad for p in parameters]
    requires = [p.requires_grad for p in parameters]
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        for module, mode in zip(modules, modes, strict=True):
            module.training = mode  # the flag itself: a custom `train()` may do more
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)
        for p, grad, flag in zip(parameters, grads, requires, strict=True):
            p.grad = grad
            p.requires_grad_(flag)
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)


def _schedule(every: int | Iterable[int]) -> tuple[int | None, frozenset[int]]:
    """(the period, or None; the listed steps)."""
    if isinstance(every, bool):
        raise ValueError(f"every: expected a whole number > 0 or a list of steps, got {every!r}")
    if isinstance(every, int):
        if every <= 0:
            raise ValueError(f"every: must be > 0, got {every}")
        return every, frozenset()
    try:
        steps = list(every)
    except TypeError:
        raise ValueError(
            f"every: expected a whole number > 0 or a list of steps, got {type(every).__name__}"
        ) from None
    bad = [s for s in steps if isinstance(s, bool) or not isinstance(s, int) or s < 0]
    if bad:
        raise ValueError(f"every: steps must be whole numbers >= 0, got {bad[0]!r}")
    if not steps:
        raise ValueError("every: the list of steps is empty")
    return None, frozenset(steps)


def _device_of(model: nn.Module) -> torch.device:
    """The one device the model is on (a tracker never moves it)."""
    devices = {t.device for t in (*model.parameters(), *model.buffers())}
    if len(devices) > 1:
        listed = ", ".join(sorted(str(d) for d in devices))
        raise ValueError(f"model: its tensors are on several devices ({listed}); "
                         "a tracker measures a model on one device")  # fmt: skip
    return devices.pop() if devices else torch.device("cpu")


def _checked_options(options: dict[str, Any], probe: Tensor | None) -> dict[str, Any]:
    """measure()'s keyword arguments, their names checked now rather than at the first due
    step (their values by the config, `_config`)."""
    known = set(inspect.signature(measure).parameters) - {"model"}
    for name in options:
        if name in _OWN_OPTIONS:
            raise ValueError(f"{name}: {_OWN_OPTIONS[name]}")
        if name not in known:
            raise ValueError(f"{name}: not an option of measure(); it takes "
                             f"{', '.join(sorted(known - set(_OWN_OPTIONS)))}")  # fmt: skip
        if probe is not None and name in _PROBE_OPTIONS:
            raise ValueError(f"{name}: the probe batch given decides the input; leave {name} out")
    if probe is not None and (not isinstance(probe, Tensor) or probe.ndim < 2):
        raise ValueError("probe: expected a batch tensor, N x one example's shape")
    return dict(options)


def _config(model: nn.Module, options: dict[str, Any], **fields: Any) -> ForeignConfig:
    """The config `measure` makes of these options (and `fields`), or a one-line ValueError
    naming the option that is wrong. (The device is not in it: a tracker measures the model
    where it is, `measure_config`'s `device`, which may name one GPU of several.)"""
    for key in ("blocks", "residual"):
        spec = options.get(key)
        if spec is not None and not (isinstance(spec, str) and spec == "auto"):
            fields[key] = ((f"<{getattr(spec, '__name__', 'function')}>",) if callable(spec)
                           else (spec,) if isinstance(spec, str) else tuple(spec))  # fmt: skip
    fields.update({k: v for k, v in options.items()
                   if k in ForeignConfig.model_fields and k not in ("blocks", "residual")})  # fmt: skip
    try:
        return ForeignConfig(model=type(model).__name__, **fields)
    except ValidationError as error:
        first = error.errors()[0]
        place = ".".join(str(part) for part in first["loc"]) or "options"
        raise ValueError(f"{place}: {first['msg']}") from None


def _probe_config(model: nn.Module, probe: Tensor, options: dict[str, Any]) -> ForeignConfig:
    """The config of a measurement on the user's batch: its size and one example's shape (a
    resolution, for 3 x H x H images as measure() makes)."""
    example = tuple(probe.shape[1:])
    if len(example) == 3 and example[0] == 3 and example[1] == example[2]:
        return _config(model, options, batch=probe.shape[0], resolution=example[1])
    return _config(model, options, batch=probe.shape[0], input_shape=example)


def _opened(path: Path, append: bool) -> IO[str]:
    if path.is_dir():
        raise ValueError(f"out: {path} is a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.open("a" if append else "w", encoding="utf-8")
    except OSError as error:
        raise ValueError(f"out: cannot write {path} ({error.strerror or error})") from None
