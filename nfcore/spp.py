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
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from nfcore import __version__
from nfcore.config import SPPConfig
from nfcore.devices import describe_device, resolve_device
from nfcore.inputs import input_batch
from nfcore.models import Network, build_model
from nfcore.result import BlockStats, SPPMeta, SPPResult, finite_or_none
from nfcore.statistics import measured
from nfcore.stats import channel_stats

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


class _Recorder:
    """Forward and tensor hooks that reduce each block's tensors to scalars as they pass.

    What is taken where comes from the statistics table (`nfcore.statistics`): per tap, the
    rows the run measures and their reductions."""

    def __init__(
        self, model: Network, config: SPPConfig, progress: ProgressCallback | None
    ) -> None:
        self.blocks = list(model.blocks)
        self.gradients = config.gradients
        self.progress = progress
        self.total = len(self.blocks) * (2 if config.gradients else 1)
        self.done = 0
        self.taps: dict[str, list[tuple[str, str]]] = {}  # tap -> [(key, reduction)]
        for row in measured(config.extra_stats, config.gradients):
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
            stats = channel_stats(tensor, {reduction for _, reduction in rows})
            self._pending += [(index, key, stats[reduction]) for key, reduction in rows]

    def records(self) -> list[dict[str, float]]:
        """Every block's statistics as floats: one transfer from the device for the whole run."""
        out: list[dict[str, float]] = [{} for _ in self.blocks]
        if self._pending:
            values = torch.stack([value.double() for _, _, value in self._pending]).tolist()
            for (index, name, _), value in zip(self._pending, values, strict=True):
                out[index][name] = value
        return out

    def attach(self) -> None:
        for index, block in enumerate(self.blocks):
            self.handles.append(
                block.residual_tap.register_forward_hook(self._residual_hook(index))
            )
            self.handles.append(block.register_forward_hook(self._output_hook(index)))

    def detach(self) -> None:
        for handle in self.handles:
            handle.remove()

    def _residual_hook(self, index: int) -> Callable:
        def hook(_module: nn.Module, _inputs: tuple, residual: Tensor) -> None:
            self._measure(index, "residual", residual)
            if self.gradients and residual.requires_grad:
                residual.register_hook(self._gradient_hook(index, "grad_residual", tick=False))

        return hook

    def _output_hook(self, index: int) -> Callable:
        def hook(_module: nn.Module, _inputs: tuple, output: Tensor) -> None:
            self._measure(index, "output", output)
            if self.gradients and output.requires_grad:
                output.register_hook(self._gradient_hook(index, "grad_output", tick=True))
            self._tick()

        return hook

    def _gradient_hook(self, index: int, tap: str, tick: bool) -> Callable:
        def hook(grad: Tensor) -> None:
            self._measure(index, tap, grad)
            if tick:
                self._tick()

        return hook


def _forward(model: Network, x: Tensor, config: SPPConfig) -> None:
    if not config.gradients:
        with torch.no_grad():
            model(x)
        return
    # Gradients with respect to activations only: weight gradients would cost memory for nothing.
    requires = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        with torch.enable_grad():
            logits = model(x.requires_grad_(True))
            generator = torch.Generator().manual_seed(config.seed + 1)
            labels = torch.randint(config.num_classes, (x.shape[0],), generator=generator).to(
                x.device
            )
            F.cross_entropy(logits, labels).backward()
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
    recorder = _Recorder(model, config, progress)
    start = time.perf_counter()
    with measurement_mode(model, device):
        recorder.attach()
        try:
            _forward(model, x, config)
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
