"""Short training runs: the recipe's pieces, the paper's claims at small scale, the events."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from pydantic import ValidationError

from nfcore.engine.models import build_model
from nfcore.engine.spp import run_spp
from nfcore.spec.config import TrainConfig
from nfcore.training import train as train_module
from nfcore.training.train import (
    WeightAverage,
    collapse_reason,
    ema_decay_at,
    learning_rate,
    train,
    weight_decay_groups,
)

# A tiny NF-ResNet that learns the digits in a few seconds on two CPU cores.
NF_DIGITS = dict(depth=14, norm="nf", width=0.25, maxpool=False, resolution=32, batch=32)
FAST = dict(depth=14, width=0.125, maxpool=False, resolution=16, batch=8, eval_examples=64)


def test_nf_resnet_learns_the_digits_well_above_chance():
    result = train(TrainConfig(**NF_DIGITS, steps=150, lr=0.1, eval_every=50))
    assert result.status == "finished"
    assert [e.step for e in result.evals] == [50, 100, 150]
    assert result.evals[-1].accuracy > 0.8  # chance is 0.1
    assert result.meta.train_examples == 1438 and result.meta.eval_examples == 359
    assert result.steps[-1].loss < result.steps[0].loss


def test_huge_learning_rate_collapses_and_says_where():
    events = []
    result = train(TrainConfig(**FAST, steps=50, lr=100.0), events.append)
    assert result.status == "collapsed"
    collapse = result.collapse
    assert collapse is not None and collapse.step < 50
    assert "exploded" in collapse.reason or "not finite" in collapse.reason
    assert collapse.step <= len(result.steps) < collapse.step + 3  # it stopped there
    assert events[-2]["kind"] == "collapse" and events[-2]["step"] == collapse.step
    # The SPP of the collapsed network is measured (where the signal broke).
    assert [s.step for s in result.spp] == [0, len(result.steps)]


def test_collapse_reason_thresholds():
    config = TrainConfig(**FAST, collapse_factor=10)
    assert collapse_reason(2.3, config) is None
    assert collapse_reason(10 * math.log(10) + 0.01, config) is not None
    assert "not finite" in collapse_reason(float("nan"), config)
    assert "not finite" in collapse_reason(float("inf"), config)


def test_weight_decay_skips_gains_and_biases():
    config = TrainConfig(family="resnetv2", depth=14, norm="nf", se_gain=2, skipinit=True)
    model = build_model(config, seed=0)
    decayed, undecayed = weight_decay_groups(model, 0.5)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed_names = {names[id(p)] for p in decayed["params"]}
    undecayed_names = {names[id(p)] for p in undecayed["params"]}
    assert decayed["weight_decay"] == 0.5 and undecayed["weight_decay"] == 0.0
    assert all(n.endswith(".weight") for n in decayed_names)
    assert any(".gain" in n for n in undecayed_names)  # Scaled WS gains
    assert any(n.endswith(".bias") for n in undecayed_names)
    assert any("skipinit_gain" in n for n in undecayed_names)
    assert "fc.weight" in decayed_names and "fc.bias" in undecayed_names
    assert len(decayed_names) + len(undecayed_names) == len(names)

    # And in effect: with zero gradients, one SGD step shrinks exactly the decayed weights.
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD(weight_decay_groups(model, 0.5), lr=0.1, momentum=0.0)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    for name, p in model.named_parameters():
        if name in decayed_names:
            assert torch.allclose(p, before[name] * (1 - 0.1 * 0.5)), name
        else:
            assert torch.equal(p, before[name]), name


def test_batchnorm_parameters_are_not_decayed():
    model = build_model(TrainConfig(depth=14, norm="bn"), seed=0)
    _, undecayed = weight_decay_groups(model, 1e-4)
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    ids = {id(p) for p in undecayed["params"]}
    assert id(bn.weight) in ids and id(bn.bias) in ids


def test_ema_warmup_formula():
    # The paper (Appendix D): decay = min(decay, (1 + i) / (10 + i)) at iteration i.
    assert ema_decay_at(0, 0.99999) == pytest.approx(0.1)
    assert ema_decay_at(10, 0.99999) == pytest.approx(11 / 20)
    assert ema_decay_at(990, 0.99999) == pytest.approx(991 / 1000)
    assert ema_decay_at(10**7, 0.99999) == 0.99999  # capped by the decay
    assert ema_decay_at(100, 0.5) == 0.5


def test_weight_average_applies_the_warmup():
    model = torch.nn.Linear(3, 2)
    average = WeightAverage(model, decay=0.999)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    assert average.update(model) == pytest.approx(0.1)
    # 0.1 of the old average, 0.9 of the new weights.
    assert torch.allclose(average.model.weight, 0.1 * start + 0.9 * (start + 1.0))
    with torch.no_grad():
        model.weight.add_(1.0)
    assert average.update(model) == pytest.approx(2 / 11)
    assert not average.model.weight.requires_grad


def test_learning_rate_warms_up_linearly_then_decays_by_cosine():
    config = TrainConfig(**FAST, steps=100, lr=0.4, warmup_steps=10)
    rates = [learning_rate(step, config) for step in range(1, 101)]
    assert rates[0] == pytest.approx(0.04) and rates[9] == pytest.approx(0.4)
    assert rates[10] == pytest.approx(0.4)  # the first step after warm-up is the peak
    assert all(a >= b for a, b in itertools.pairwise(rates[10:]))
    assert rates[-1] < 0.001 and rates[-1] > 0
    halfway = 10 + 45
    assert rates[halfway] == pytest.approx(0.2, rel=0.05)


def test_default_warmup_is_five_percent():
    assert TrainConfig(**FAST, steps=200).warmup_steps == 10
    with pytest.raises(ValidationError, match="warmup_steps"):
        TrainConfig(**FAST, steps=10, warmup_steps=10)


def test_same_seed_same_run_other_seed_other_run():
    config = TrainConfig(**FAST, norm="nf", steps=6, stochdepth_rate=0.2, drop_rate=0.25)
    first = [s.loss for s in train(config).steps]
    assert first == [s.loss for s in train(config).steps]
    other = [s.loss for s in train(config.model_copy(update={"seed": 1})).steps]
    assert other != first


def test_global_random_state_is_left_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train(TrainConfig(**FAST, norm="nf", steps=2))
    assert torch.equal(torch.rand(3), expected)


def test_events_stream_steps_evals_and_spps():
    events = []
    config = TrainConfig(**FAST, norm="nf", steps=12, eval_every=5, spp_every=6, ema_decay=0.99)
    result = train(config, events.append)
    kinds = [(e["kind"], e["step"]) for e in events]
    assert [s for k, s in kinds if k == "step"] == list(range(1, 13))
    assert [s for k, s in kinds if k == "eval"] == [5, 10, 12]
    assert [s for k, s in kinds if k == "spp"] == [0, 6, 12]
    assert kinds[0] == ("spp", 0)
    step = next(e for e in events if e["kind"] == "step")
    assert set(step) == {"kind", "step", "loss", "accuracy", "lr", "grad_norm", "seconds"}
    evaluation = next(e for e in events if e["kind"] == "eval")
    assert evaluation["ema_accuracy"] is not None and evaluation["ema_loss"] is not None
    assert [s.step for s in result.spp] == [0, 6, 12]
    assert result.to_csv().splitlines()[0].startswith("step,loss,accuracy,lr,grad_norm")
    assert len(result.to_csv().splitlines()) == 13


def test_spp_before_training_is_the_spp_of_the_fresh_model():
    config = TrainConfig(**FAST, norm="nf", steps=3)
    result = train(config)
    fresh = run_spp(config.spp_config())
    before, after = result.spp[0].result, result.spp[-1].result
    assert [b.avg_channel_var for b in before.blocks] == [b.avg_channel_var for b in fresh.blocks]
    assert [b.avg_channel_var for b in after.blocks] != [b.avg_channel_var for b in before.blocks]


def test_spps_while_training_leave_the_training_as_it_was():
    """The SPP scrubber's frames (spp_every) cost a few forward passes, not a different run:
    BatchNorm's running statistics and every random stream are left as they were."""
    config = TrainConfig(**FAST, norm="bn", steps=8, eval_every=4, stochdepth_rate=0.2)
    plain = train(config)
    measured = train(config.model_copy(update={"spp_every": 2}))
    assert [s.step for s in measured.spp] == [0, 2, 4, 6, 8]
    assert [s.loss for s in measured.steps] == [s.loss for s in plain.steps]
    assert [e.accuracy for e in measured.evals] == [e.accuracy for e in plain.evals]


def test_an_event_callback_that_raises_stops_the_run():
    seen = []

    def stop_at_three(event):
        seen.append(event)
        if event["kind"] == "step" and event["step"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**FAST, norm="nf", steps=50), stop_at_three)
    assert max(e["step"] for e in seen) == 3


def test_nf_trains_at_batch_size_one_and_bn_is_refused():
    result = train(TrainConfig(**{**FAST, "batch": 1}, norm="nf", steps=4, eval_every=4))
    assert result.status == "finished" and len(result.steps) == 4
    with pytest.raises(ValidationError, match="batch: BatchNorm cannot train at batch size 1"):
        TrainConfig(**{**FAST, "batch": 1}, norm="bn")


def test_gradient_clipping_bounds_the_first_update(monkeypatch):
    config = TrainConfig(
        **FAST, norm="nf", steps=1, warmup_steps=0, lr=0.1, momentum=0.9, weight_decay=0.0,
        clip_grad_norm=1e-3,
    )  # fmt: skip
    before = build_model(config, seed=config.seed)
    trained = {}
    original = train_module.Trainer.run

    def run_and_keep(self):
        original(self)
        trained["model"] = self.model

    monkeypatch.setattr(train_module.Trainer, "run", run_and_keep)
    result = train(config)
    pairs = zip(trained["model"].parameters(), before.parameters(), strict=True)
    delta = math.sqrt(sum(float(((a - b).detach() ** 2).sum()) for a, b in pairs))
    # Nesterov's first update is lr * (1 + momentum) * g, with |g| clipped to 1e-3.
    assert 0 < delta <= 0.1 * 1.9 * 1e-3 * 1.0001
    assert result.steps[0].grad_norm > 1e-3  # the recorded norm is the one before clipping


def test_gaussian_data_trains_at_chance():
    result = train(TrainConfig(**FAST, norm="bn", dataset="gaussian", steps=8, eval_every=8))
    assert result.status == "finished"
    assert result.meta.train_examples == 50_000
    assert result.evals[-1].accuracy < 0.35  # labels are random: nothing to learn


def test_num_classes_comes_from_the_data_set():
    assert TrainConfig(**FAST).num_classes == 10
    with pytest.raises(ValidationError, match="num_classes: digits has 10 classes"):
        TrainConfig(**FAST, num_classes=1000)


def _spikes_at(steps: set[int]):
    """A collapse_reason that calls the loss of the given (1-based) steps exploding."""
    calls = iter(range(1, 10**6))

    def reason(loss, config):
        return "the training loss exploded (test)" if next(calls) in steps else None

    return reason


def test_a_short_finite_spike_is_not_a_collapse(monkeypatch):
    monkeypatch.setattr(train_module, "collapse_reason", _spikes_at({2, 3}))
    result = train(TrainConfig(**FAST, norm="nf", steps=6))
    assert result.status == "finished" and len(result.steps) == 6


def test_a_spike_that_lasts_collapses_at_its_first_step(monkeypatch):
    monkeypatch.setattr(train_module, "collapse_reason", _spikes_at({2, 3, 4}))
    result = train(TrainConfig(**FAST, norm="nf", steps=10))
    assert result.status == "collapsed"
    assert result.collapse.step == 2 and len(result.steps) == 4
    assert "stayed above it for 3 steps" in result.collapse.reason
