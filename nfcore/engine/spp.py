"""The SPP engine: measure every residual block of a network at initialization (Section 3).

One forward pass with hooks: at each block output x_{l+1} and at the end of its residual
branch f(x) the statistics are reduced to a few float64 scalars on the spot, so memory stays
that of a plain `no_grad` forward pass (no block's activations are kept). BatchNorm uses
batch statistics, as at the start of training; dropout and stochastic depth are off.

With `gradients`, the pass runs with autograd on the input only (no weight gradients), and a
cross-entropy loss on random labels is back-propagated; tensor hooks measure dLoss/dx_{l+1}.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from nfcore import __version__
from nfcore.engine.devices import describe_device, resolve_device
from nfcore.engine.inputs import input_batch
from nfcore.engine.models import Network, build_model
from nfcore.engine.stats import channel_stats
from nfcore.spec.config import SPPConfig
from nfcore.spec.result import BlockStats, SPPMeta, SPPResult, finite_or_none
from nfcore.spec.statistics import measured

ProgressCallback = Callable[[int, int], None]
"""Called as progress(blocks_done, blocks_total) after each block (forward, then backward).

It may raise to stop the run (a worker cancelling a job): the exception propagates out of
`run_spp` after the hooks are removed and the model is restored.
"""


@contextmanager
def measurement_mode(model: nn.Module, device: torch.device) -> Iterator[None]:
    """Eval mode with batch-statistics BatchNorm, exact float32 math, and nothing left changed.

    TF32 would round convolutions to 10 mantissa bits on recent GPUs; deterministic kernels
    make the same config and seed give bit-identical numbers on the same device.
    """
    was_training = model.training
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    saved_buffers = [{k: v.clone() for k, v in m.named_buffers()} for m in norms]
    flags = (
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.allow_tf32,
        torch.backends.cuda.matmul.allow_tf32,
    )
    model.eval()
    for norm in norms:
        norm.train()
    if device.type == "cuda":
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        model.train(was_training)
        with torch.no_grad():
            for norm, buffers in zip(norms, saved_buffers, strict=True):
                for name, value in buffers.items():
                    getattr(norm, name).copy_(value)  # running stats untouched by the SPP
        (
            torch.backends.cudnn.deterministic,
            torch.backends.cudnn.benchmark,
            torch.backends.cudnn.allow_tf32,
            torch.backends.cuda.matmul.allow_tf32,
        ) = flags


class Recorder:
    """Forward and tensor hooks that reduce each block's tensors to scalars as they pass.

    `points`: per block, the module whose output is x_{l+1} and the one whose output is its
    residual branch f(x) (None: not measured). `view` turns a tapped tensor into the N x C x
    ... layout the reductions take (a foreign network's token tensors, `nfcore.foreign.measure`).
    What is taken where comes from the statistics table (`nfcore.spec.statistics`): per tap, the
    rows the run measures and their reductions."""

    def __init__(
        self,
        points: Sequence[tuple[nn.Module, nn.Module | None]],
        *,
        extra_stats: bool,
        gradients: bool,
        progress: ProgressCallback | None,
        view: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        self.points = list(points)
        self.gradients = gradients
        self.progress = progress
        self.view = view
        self.total = len(self.points) * (2 if gradients else 1)
        self.done = 0
        self.taps: dict[str, list[tuple[str, str]]] = {}  # tap -> [(key, reduction)]
        for row in measured(extra_stats, gradients):
            self.taps.setdefault(row.tap, []).append((row.key, row.reduction))
        # Per block, the statistics as 0-d tensors on the model's device: read back all at once
        # at the end (`records`), so a GPU is not made to wait for the host after every block.
        self._pending: list[tuple[int, str, Tensor]] = []
        self.handles: list[torch.utils.hooks.RemovableHandle] = []

    def _tick(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)

    def _measure(self, index: int, tap: str, tensor: Tensor) -> None:
        rows = self.taps.get(tap, [])
        if rows:
            y = tensor if self.view is None else self.view(tensor)
            stats = channel_stats(y, {reduction for _, reduction in rows})
            self._pending += [(index, key, stats[reduction]) for key, reduction in rows]

    def records(self) -> list[dict[str, float]]:
        """Every block's statistics as floats: one transfer from the device for the whole run."""
        out: list[dict[str, float]] = [{} for _ in self.points]
        if self._pending:
            values = torch.stack([value.double() for _, _, value in self._pending]).tolist()
            for (index, name, _), value in zip(self._pending, values, strict=True):
                out[index][name] = value
        return out

    def attach(self) -> None:
        for index, (output, residual) in enumerate(self.points):
            if residual is not None:
                self.handles.append(residual.register_forward_hook(self._hook(index, "residual")))
            self.handles.append(output.register_forward_hook(self._hook(index, "output")))

    def detach(self) -> None:
        for handle in self.handles:
            handle.remove()

    def _hook(self, index: int, tap: str) -> Callable:
        """Measure the module's output (its first tensor); with gradients, hook its gradient.
        A block's output ends its forward part: progress ticks there, and at its gradient."""

        def hook(_module: nn.Module, _inputs: tuple, output: Any) -> None:
            tensor = first_tensor(output)
            if tensor is None:
                return
            self._measure(index, tap, tensor)
            if self.gradients and tensor.requires_grad:
                tensor.register_hook(self._gradient_hook(index, f"grad_{tap}", tap == "output"))
            if tap == "output":
                self._tick()

        return hook

    def _gradient_hook(self, index: int, tap: str, tick: bool) -> Callable:
        def hook(grad: Tensor) -> None:
            self._measure(index, tap, grad)
            if tick:
                self._tick()

        return hook


def first_tensor(value: Any) -> Tensor | None:
    """A module's output as a tensor: itself, or the first tensor of a tuple or list."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, list | tuple):
        return next((item for item in value if isinstance(item, Tensor)), None)
    return None


def forward_pass(model: nn.Module, x: Tensor, *, gradients: bool, seed: int) -> None:
    """The measured pass: `no_grad`, or with gradients with respect to activations only
    (weight gradients would cost memory for nothing) of a loss back-propagated from the
    output: the cross-entropy of random labels (seeded by `seed + 1`) for N x K logits, else
    half the mean square of the output."""
    if not gradients:
        with torch.no_grad():
            model(x)
        return
    requires = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        with torch.enable_grad():
            output = first_tensor(model(x.requires_grad_(True)))
            if output is None:
                raise ValueError("the network's output holds no tensor to take a loss of")
            if output.ndim == 2:
                generator = torch.Generator().manual_seed(seed + 1)
                labels = torch.randint(output.shape[1], (x.shape[0],), generator=generator)
                F.cross_entropy(output, labels.to(x.device)).backward()
            else:
                (output.float().square().mean() / 2).backward()
    finally:
        for p, flag in zip(model.parameters(), requires, strict=True):
            p.requires_grad_(flag)


def run_spp(
    config: SPPConfig,
    progress: ProgressCallback | None = None,
    model: Network | None = None,
    device: str | None = None,
) -> SPPResult:
    """Measure the SPP of the network `config` describes (or of `model`, e.g. after training).

    `device` overrides `config.device` (a worker applying its own choice to 'auto'); the
    result keeps the config as given.
    """
    device = resolve_device(device or config.device)
    if model is None:
        model = build_model(config, seed=config.seed)
    model.to(device)
    x = input_batch(config.input, config.batch, config.resolution, config.seed).to(device)
    points = [(block, block.residual_tap) for block in model.blocks]
    recorder = Recorder(points, extra_stats=config.extra_stats, gradients=config.gradients,
                        progress=progress)  # fmt: skip
    start = time.perf_counter()
    with measurement_mode(model, device):
        recorder.attach()
        try:
            forward_pass(model, x, gradients=config.gradients, seed=config.seed)
        finally:
            recorder.detach()
    records = recorder.records()  # waits for the device's last kernel
    seconds = time.perf_counter() - start
    return _result(config, model, records, device, seconds)


def _result(
    config: SPPConfig,
    model: Network,
    records: list[dict[str, float]],
    device: torch.device,
    seconds: float,
) -> SPPResult:
    blocks, nonfinite_from = [], None
    for index, (block, record) in enumerate(zip(model.blocks, records, strict=True)):
        values = {key: finite_or_none(value) for key, value in record.items()}
        if nonfinite_from is None and any(
            values[k] is None for k in ("avg_channel_var", "avg_sq_channel_mean")
        ):
            nonfinite_from = index
        blocks.append(
            BlockStats(
                index=index,
                stage=block.stage,
                transition=block.transition,
                expected_var=block.expected_var,
                **values,
            )
        )
    meta = SPPMeta(
        version=__version__,
        torch_version=torch.__version__,
        device=describe_device(device),
        seconds=round(seconds, 4),
        parameter_count=sum(p.numel() for p in model.parameters()),
        gamma=getattr(model, "gamma", None) if config.conv == "ws" else None,
        model=config.label,
        num_blocks=len(blocks),
        stage_ends=model.stage_ends,
        nonfinite_from_block=nonfinite_from,
    )
    return SPPResult(config=config, blocks=blocks, meta=meta)
