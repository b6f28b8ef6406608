"""Short training runs: the paper's recipe, scaled down, with SPPs before and after.

SGD with Nesterov momentum; a linear warm-up from zero, then cosine decay to zero; label
smoothing; weight decay on the weights of convolutions and linear layers only, never on gains
and biases (Appendix B.1); optionally an EMA of the weights with the warm-up of Appendix D
(`ema_decay_at`), stochastic depth and dropout (model fields), and gradient-norm clipping.

Every step streams a `step` event; every `eval_every` steps the held-out split is evaluated
(raw and EMA weights); the SPP is measured at initialization, at the end and every
`spp_every` steps by the same engine as SPP jobs (`nfcore.engine.spp.run_spp`). A loss that is NaN or
infinite, or stays above `collapse_factor` x ln(classes) for COLLAPSE_PATIENCE steps, stops the
run as `collapsed` at the step where that began.

Reproducible: the seed fixes the weights, the data order, dropout and stochastic depth (the
global RNG is forked, so a caller's random state is left as it was).
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nfcore import __version__
from nfcore.engine.devices import describe_device, resolve_device
from nfcore.engine.models import Network, build_model
from nfcore.engine.spp import run_spp
from nfcore.spec.config import TrainConfig
from nfcore.spec.cost import EVAL_BATCH
from nfcore.spec.result import finite_or_none
from nfcore.spec.train_result import (
    Collapse,
    EvalRecord,
    SPPSnapshot,
    StepRecord,
    TrainMeta,
    TrainResult,
)
from nfcore.training.data import DataSet, load_dataset

EventCallback = Callable[[dict[str, Any]], None]
"""Called with each event (see `nfcore.spec.train_result`); it may raise to stop the run."""


# --- the recipe, piece by piece ---------------------------------------------------------------
def weight_decay_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two optimizer groups: conv and linear weights decay; gains, biases and scalars do not.

    The decayed set is the `weight` of every `nn.Conv2d` (Scaled WS convs included) and
    `nn.Linear`. Everything else, the Scaled WS gains and biases, BatchNorm's affine
    parameters, SkipInit gains and FixUp's scalars, is left undecayed (Appendix B.1).
    """
    decayed = {
        id(module.weight)
        for module in model.modules()
        if isinstance(module, (nn.Conv2d, nn.Linear))
    }
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if id(p) in decayed], "weight_decay": weight_decay},
        {"params": [p for p in params if id(p) not in decayed], "weight_decay": 0.0},
    ]


def learning_rate(step: int, config: TrainConfig) -> float:
    """The learning rate of optimizer step `step` (1-based): linear warm-up from zero over
    `warmup_steps`, then cosine decay toward zero at the last step."""
    warmup = config.warmup_steps or 0
    if step <= warmup:
        return config.lr * step / warmup
    progress = (step - 1 - warmup) / max(1, config.steps - warmup)
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def ema_decay_at(update: int, decay: float) -> float:
    """The EMA decay at the `update`-th average (0-based): min(decay, (1 + i) / (10 + i)).

    The paper's warm-up (Appendix D): early averages follow the weights closely, so the EMA
    is useful long before 1 / (1 - decay) steps have passed.
    """
    return min(decay, (1.0 + update) / (10.0 + update))


class WeightAverage:
    """An exponential moving average of a model's parameters.

    Buffers (BatchNorm's running statistics) are copied, not averaged: the averaged model
    normalizes with the statistics of the current model.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> float:
        decay = ema_decay_at(self.updates, self.decay)
        averaged = list(self.model.parameters())
        current = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(averaged, current, 1.0 - decay)
        for mine, theirs in zip(self.model.buffers(), model.buffers(), strict=True):
            mine.copy_(theirs)
        self.updates += 1
        return decay


COLLAPSE_PATIENCE = 3  # steps in a row above the limit before a finite loss counts as collapse


def collapse_reason(loss: float, config: TrainConfig) -> str | None:
    """Why a loss is alarming (not finite, or past the limit), or None when it is not."""
    if not math.isfinite(loss):
        return f"the training loss is {loss} (not finite)"
    limit = config.collapse_factor * math.log(config.num_classes)
    if loss > limit:
        return (
            f"the training loss {loss:.4g} exploded past {limit:.4g} "
            f"({config.collapse_factor:g} x ln {config.num_classes}, a uniform guess's loss)"
        )
    return None


def _batches(count: int, batch: int, generator: torch.Generator) -> Iterator[Tensor]:
    """Index batches of a shuffled epoch after another; the last short batch of an epoch is
    dropped so every step sees `batch` examples."""
    if count < batch:
        while True:  # fewer examples than a batch: sample with replacement
            yield torch.randint(count, (batch,), generator=generator)
    while True:
        order = torch.randperm(count, generator=generator)
        for start in range(0, count - batch + 1, batch):
            yield order[start : start + batch]


@torch.no_grad()
def evaluate(
    model: nn.Module, data: DataSet, limit: int, device: torch.device
) -> tuple[float, float]:
    """(mean cross-entropy, top-1 accuracy) of `model` in eval mode on the first `limit`
    held-out examples."""
    was_training = model.training
    model.eval()
    total = min(limit, len(data.test))
    loss_sum, correct = 0.0, 0
    try:
        for start in range(0, total, EVAL_BATCH):
            indices = torch.arange(start, min(total, start + EVAL_BATCH))
            x, y = data.batch(data.test, indices)
            x, y = x.to(device), y.to(device)
            logits = model(x).double()
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(dim=1) == y).sum())
    finally:
        model.train(was_training)
    return loss_sum / total, correct / total


# --- the run --------------------------------------------------------------------------------
class Trainer:
    """One run's model, optimizer, EMA and records; `step` is one optimizer step (the unit the
    benchmarks time), `run` the whole schedule."""

    def __init__(
        self,
        config: TrainConfig,
        on_event: EventCallback | None,
        device: torch.device,
        data: DataSet,
    ) -> None:
        self.config = config
        self.on_event = on_event
        self.device = device
        self.data = data
        self.steps: list[StepRecord] = []
        self.evals: list[EvalRecord] = []
        self.spp: list[SPPSnapshot] = []
        self.collapse: Collapse | None = None
        self.model: Network = build_model(config, seed=config.seed).to(device).train()
        self.optimizer = torch.optim.SGD(
            weight_decay_groups(self.model, config.weight_decay),
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.momentum > 0,
        )
        self.average = WeightAverage(self.model, config.ema_decay) if config.ema_decay else None
        self.exploding: list[tuple[int, str, float]] = []  # (step, reason, loss) of a spike
        self.sync = (
            (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
        )

    def emit(self, kind: str, step: int, **values: Any) -> None:
        if self.on_event is not None:
            self.on_event({"kind": kind, "step": step, **values})

    def measure_spp(self, step: int) -> None:
        result = run_spp(self.config.spp_config(), model=self.model, device=str(self.device))
        self.spp.append(SPPSnapshot(step=step, result=result))
        self.emit("spp", step, result=result.to_json_dict())

    def evaluate(self, step: int) -> None:
        loss, accuracy = evaluate(self.model, self.data, self.config.eval_examples, self.device)
        record = EvalRecord(step=step, loss=finite_or_none(loss), accuracy=accuracy)
        if self.average is not None:
            ema_loss, ema_accuracy = evaluate(
                self.average.model, self.data, self.config.eval_examples, self.device
            )
            record.ema_loss, record.ema_accuracy = finite_or_none(ema_loss), ema_accuracy
        self.evals.append(record)
        self.emit("eval", **record.model_dump())

    def step(self, step: int, indices: Tensor) -> bool:
        """One optimizer step; False when the loss collapsed (nothing is updated then)."""
        config = self.config
        start = time.perf_counter()
        x, y = self.data.batch(self.data.train, indices)
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        lr = learning_rate(step, config)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        logits = self.model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
        loss_value = float(loss.detach())
        accuracy = float((logits.argmax(dim=1) == y).float().mean())
        reason = collapse_reason(loss_value, config)
        # A NaN/Inf loss ends the run at once; a finite spike past the limit must last
        # COLLAPSE_PATIENCE steps (early BN nets at a high learning rate spike and recover).
        if reason is None:
            self.exploding = []
        elif math.isfinite(loss_value):
            self.exploding.append((step, reason, loss_value))
            reason = None
            if len(self.exploding) == COLLAPSE_PATIENCE:
                reason = f"{self.exploding[0][1]} and stayed above it for {COLLAPSE_PATIENCE} steps"
        elif self.exploding:
            reason = f"{reason}, after a spike past the limit from step {self.exploding[0][0]}"
        grad_norm: float | None = None
        if reason is None:
            loss.backward()
            grad_norm = float(
                torch.nn.utils.clip_grad_norm_(
                    self.model.parameters(), config.clip_grad_norm or math.inf
                )
            )
            self.optimizer.step()
            if self.average is not None:
                self.average.update(self.model)
        self.sync()
        record = StepRecord(
            step=step,
            loss=finite_or_none(loss_value),
            accuracy=accuracy,
            lr=lr,
            grad_norm=None if grad_norm is None else finite_or_none(grad_norm),
            seconds=time.perf_counter() - start,
        )
        self.steps.append(record)
        self.emit("step", **record.model_dump())
        if reason is not None:
            first, _, first_loss = self.exploding[0] if self.exploding else (step, "", loss_value)
            self.collapse = Collapse(step=first, reason=reason, loss=finite_or_none(first_loss))
            self.emit("collapse", first, reason=reason, loss=finite_or_none(first_loss))
            return False
        return True

    def run(self) -> None:
        config = self.config
        eval_steps, spp_steps = set(config.eval_steps), set(config.spp_steps)
        self.measure_spp(0)
        generator = torch.Generator().manual_seed(config.seed)
        batches = _batches(len(self.data.train), config.batch, generator)
        for step in range(1, config.steps + 1):
            if not self.step(step, next(batches)):
                self.measure_spp(step)  # the collapsed network's SPP: where the signal broke
                return
            if step in eval_steps:
                self.evaluate(step)
            if step in spp_steps:
                self.measure_spp(step)


def train(
    config: TrainConfig,
    on_event: EventCallback | None = None,
    *,
    device: str | None = None,
    data_dir: str | os.PathLike | None = None,
) -> TrainResult:
    """Train the model `config` describes and return its history and SPPs.

    `device` overrides `config.device` (a worker applying its own choice to 'auto');
    `data_dir` is the local CIFAR-10 folder (dataset cifar10 only).
    """
    resolved = resolve_device(device or config.device)
    data = load_dataset(config.dataset, config.resolution, seed=config.seed, data_dir=data_dir)
    start = time.perf_counter()
    devices = [resolved.index or 0] if resolved.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(config.seed)
        run = Trainer(config, on_event, resolved, data)
        run.run()
    train_seconds = sum(record.seconds for record in run.steps)
    meta = TrainMeta(
        version=__version__,
        torch_version=torch.__version__,
        device=describe_device(resolved),
        model=config.label,
        parameter_count=sum(p.numel() for p in run.model.parameters()),
        train_examples=len(data.train),
        eval_examples=min(config.eval_examples, len(data.test)),
        seconds=round(time.perf_counter() - start, 4),
        steps_per_second=len(run.steps) / train_seconds if train_seconds > 0 else None,
    )
    return TrainResult(
        config=config,
        status="collapsed" if run.collapse else "finished",
        collapse=run.collapse,
        steps=run.steps,
        evals=run.evals,
        spp=run.spp,
        meta=meta,
    )
