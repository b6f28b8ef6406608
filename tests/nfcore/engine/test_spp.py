"""The paper's findings, reproduced on small networks on the CPU (Sections 3-4, Appendix F).

Each test names the figure it reproduces. Networks are narrow (width 0.25) ResNet-50s at
64px without the stem max-pool, so the last stage still has 4x4 pixels: the paper notes the
residual variance decays near the end "due to zero padding", which at tiny resolutions would
swamp everything else.
"""

from __future__ import annotations

import itertools
import json
import math
from statistics import mean

import numpy as np
import pytest
import torch

from nfcore.engine.models import build_model
from nfcore.engine.spp import run_spp
from nfcore.engine.stats import channel_stats
from nfcore.spec.config import SPPConfig
from nfcore.spec.result import SPPResult

FORWARD = ("sq_channel_mean", "channel_var")  # the reductions of a block output

SMALL = {
    "depth": 50,
    "width": 0.25,
    "resolution": 64,
    "batch": 16,
    "maxpool": False,
    "device": "cpu",
}


def spp(**overrides: object) -> SPPResult:
    return run_spp(SPPConfig(**{**SMALL, **overrides}))


def column(result: SPPResult, key: str) -> list[float]:
    return [getattr(block, key) for block in result.blocks]


def stages(result: SPPResult) -> list[list]:
    out: list[list] = []
    for block in result.blocks:
        if block.transition:
            out.append([])
        out[-1].append(block)
    return out


# --- Section 3, Fig. 1 ------------------------------------------------------------------------


def test_bn_relu_conv_residual_variance_is_068_and_channel_mean_grows() -> None:
    result = spp(norm="bn", order="bn-relu-conv")
    residual = column(result, "residual_avg_channel_var")
    # Var(f) = 2 Var(relu(z)) = 1 - 1/pi = 0.68 for a He-init conv reading ReLU(BN(x)).
    assert mean(residual) == pytest.approx(1 - 1 / math.pi, abs=0.03)
    assert all(0.6 < v < 0.8 for v in residual)
    for stage in stages(result):
        sq_means = [b.avg_sq_channel_mean for b in stage]
        variances = [b.avg_channel_var for b in stage]
        assert sq_means == sorted(sq_means), "the channel mean grows within a stage"
        assert variances == sorted(variances), "the variance grows linearly within a stage"
    assert result.blocks[-1].avg_sq_channel_mean > 0.5


def test_relu_bn_conv_has_no_mean_shift_and_unit_residual_variance() -> None:
    bn_relu = spp(norm="bn", order="bn-relu-conv")
    relu_bn = spp(norm="bn", order="relu-bn-conv")
    assert max(column(relu_bn, "avg_sq_channel_mean")) < 0.01
    assert max(column(relu_bn, "avg_sq_channel_mean")) < 0.01 * min(
        column(bn_relu, "avg_sq_channel_mean")
    )
    assert mean(column(relu_bn, "residual_avg_channel_var")) == pytest.approx(1.0, abs=0.05)


def test_bn_variance_resets_at_every_transition() -> None:
    result = spp(norm="bn", order="relu-bn-conv")
    for stage in stages(result)[1:]:
        assert stage[0].avg_channel_var == pytest.approx(2.0, abs=0.2)  # 1 (reset) + Var(f) = 1
    assert result.blocks[-1].avg_channel_var > 3.5


# --- Section 4.1-4.2, Fig. 2 ------------------------------------------------------------------


def test_nf_he_init_squared_channel_mean_exceeds_variance() -> None:
    result = spp(norm="nf", conv="he", alpha=1.0)
    late = result.blocks[len(result.blocks) // 2 :]
    assert all(b.avg_sq_channel_mean > b.avg_channel_var for b in late)
    # ... and the residual branches are not variance preserving ("consistently smaller than one").
    assert max(column(result, "residual_avg_channel_var")) < 0.5


def test_nf_scaled_ws_keeps_mean_small_and_residual_variance_near_one() -> None:
    result = spp(norm="nf", conv="ws", alpha=0.2)
    assert max(column(result, "avg_sq_channel_mean")) < 0.05
    # Stages 0-1 run at 32 and 16 px. Later, zero padding of the 3x3 convs eats a visible part
    # of the variance at these tiny sizes (the paper sees it "decay slightly" even at 512 px).
    early = [b.residual_avg_channel_var for stage in stages(result)[:2] for b in stage]
    assert mean(early) == pytest.approx(1.0, abs=0.1)
    assert all(0.75 < v < 1.25 for v in early)
    assert all(v > 0.5 for v in column(result, "residual_avg_channel_var"))


def test_nf_scaled_ws_variance_grows_by_alpha_squared_and_resets_at_transitions() -> None:
    alpha = 0.5
    result = spp(norm="nf", conv="ws", alpha=alpha)
    for stage in stages(result):
        # Analytic: Var(x_{l+1}) = Var(x_l) + alpha^2, reset to 1 + alpha^2 after a transition.
        assert stage[0].expected_var == pytest.approx(1 + alpha**2)
        for before, after in itertools.pairwise(stage):
            assert after.expected_var - before.expected_var == pytest.approx(alpha**2)
            # Measured: each block adds alpha^2 Var(f), f being (nearly) orthogonal to x.
            growth = after.avg_channel_var - before.avg_channel_var
            assert growth == pytest.approx(alpha**2 * after.residual_avg_channel_var, rel=0.2)
    for previous, stage in zip(stages(result), stages(result)[1:], strict=False):
        assert stage[0].avg_channel_var < previous[-1].avg_channel_var - alpha**2  # the reset
    # Where zero padding is negligible (32 and 16 px), the measured variance tracks beta^2.
    for stage in stages(result)[:2]:
        for block in stage:
            assert block.avg_channel_var == pytest.approx(block.expected_var, rel=0.1)


def test_nf_scaled_ws_matches_relu_bn_conv() -> None:
    # Fig. 2: "the SPPs for a normalizer-free network with Scaled WS are almost identical to
    # those for the batch normalized network" (ReLU-BN-Conv), at alpha = 1.
    nf = spp(norm="nf", conv="ws", alpha=1.0)
    bn = spp(norm="bn", order="relu-bn-conv")
    for a, b in zip(nf.blocks[:7], bn.blocks[:7], strict=True):  # stages 0-1
        assert a.avg_channel_var == pytest.approx(b.avg_channel_var, rel=0.1)


# --- Appendix F -------------------------------------------------------------------------------


def test_relu_gain_sqrt2_attenuates_the_signal_fig8() -> None:
    correct = spp(norm="nf", conv="ws", gamma="auto")
    he_gain = spp(norm="nf", conv="ws", gamma=math.sqrt(2))
    assert max(column(he_gain, "residual_avg_channel_var")) < 0.5
    finals = [stage[-1].avg_channel_var for stage in stages(he_gain)]
    assert finals == sorted(finals, reverse=True), "each transition scales the signal down further"
    assert he_gain.blocks[-1].avg_channel_var < 0.5 * correct.blocks[-1].avg_channel_var


def test_unmodified_squeeze_excite_attenuates_and_gain_two_restores_fig9() -> None:
    plain = spp(norm="nf", conv="ws", se_gain=1.0)
    corrected = spp(norm="nf", conv="ws", se_gain=2.0)
    # The sigmoid gate is about 0.5 at init: the branch variance drops by about 4.
    assert mean(column(plain, "residual_avg_channel_var")) < 0.35
    early = [b.residual_avg_channel_var for stage in stages(corrected)[:2] for b in stage]
    assert mean(early) == pytest.approx(1.0, abs=0.15)
    assert plain.blocks[-1].avg_channel_var < 0.8 * corrected.blocks[-1].avg_channel_var


def test_no_normalization_explodes_fig6() -> None:
    result = spp(norm="none")
    variances = column(result, "avg_channel_var")
    assert variances[-1] > 1000 * variances[0]
    assert result.blocks[-1].avg_sq_channel_mean > 1000


def test_no_normalization_overflow_is_reported_not_crashed() -> None:
    config = SPPConfig(
        norm="none", layout=(200, 200), width=0.1, resolution=32, batch=2, device="cpu"
    )
    result = run_spp(config)
    first_bad = result.meta.nonfinite_from_block
    assert first_bad is not None and 200 < first_bad < 400  # about 2x variance per block
    assert result.blocks[-1].avg_channel_var is None  # overflowed float32: null, not inf
    assert result.blocks[first_bad - 1].avg_channel_var > 1e60
    assert "Infinity" not in json.dumps(result.to_json_dict())


def test_linear_activation_keeps_means_near_zero_fig7() -> None:
    # Over three seeds: one network's early-block mean varies by about 0.04 from seed to seed.
    early = []
    for seed in range(3):
        result = spp(norm="nf", conv="ws", activation="identity", maxpool=False, seed=seed)
        assert max(column(result, "avg_sq_channel_mean")) < 0.01
        early += [b.residual_avg_channel_var for stage in stages(result)[:2] for b in stage]
    assert mean(early) == pytest.approx(1.0, abs=0.1)


def test_fixup_variance_is_constant_within_a_stage_fig10() -> None:
    result = spp(norm="fixup")
    assert max(column(result, "residual_avg_channel_var")) == 0.0  # zero-initialized last conv
    for stage in stages(result):
        assert len({round(b.avg_channel_var, 10) for b in stage}) == 1


def test_the_reference_fixups_variance_falls_stage_by_stage_fig10() -> None:
    """The post-activation FixUp of the paper's code: constant within a stage (its branches
    start at zero), and each transition (shortcut conv over its fan-out, then ReLU) takes it
    down, about halving it (0.074, 0.029, 0.013, 0.006 here; 0.39-0.54 per transition over
    seeds 0-2), an order of magnitude below the pre-activation FixUp's."""
    reference = spp(family="resnetv1", norm="fixup", maxpool=True)
    ours = spp(norm="fixup", maxpool=True)
    assert max(column(reference, "residual_avg_channel_var")) == 0.0
    per_stage = []
    for stage in stages(reference):
        assert len({round(b.avg_channel_var, 10) for b in stage}) == 1
        per_stage.append(stage[0].avg_channel_var)
    assert all(later < 0.65 * earlier for earlier, later in itertools.pairwise(per_stage))
    assert per_stage[0] < 0.2 * stages(ours)[0][0].avg_channel_var


def test_circular_padding_removes_the_border_sag_at_64_px() -> None:
    """At 64 px the last stage is 2x2: a zero-padded 3x3 conv sees 4 of its 9 inputs there,
    so the NF-ResNet's residual variance sags stage by stage. A periodic border gives every
    position the same statistics, and the variance stays near 1 in every stage (over seeds
    0-5 the stage means lie in 0.94-1.15 circular, 0.48-0.55 in the last stage with zeros)."""
    explorer = {"norm": "nf", "depth": 50, "width": 0.25, "resolution": 64, "batch": 8}

    def stage_means(padding: str) -> list[float]:
        result = run_spp(SPPConfig(**explorer, padding=padding, device="cpu"))
        return [mean(b.residual_avg_channel_var for b in stage) for stage in stages(result)]

    circular, zeros = stage_means("circular"), stage_means("zeros")
    assert all(0.85 <= var <= 1.15 for var in circular), circular
    assert not all(0.85 <= var <= 1.15 for var in zeros), zeros
    assert zeros[-1] < 0.6 < 0.9 < circular[-1]


def test_post_activation_v1_keeps_residual_variance_at_one_fig11() -> None:
    result = spp(family="resnetv1", norm="bn")
    assert column(result, "residual_avg_channel_var") == pytest.approx([1.0] * 16, abs=1e-3)
    for stage in stages(result)[1:]:
        assert stage[0].avg_channel_var < stage[-1].avg_channel_var  # resets at transitions


def test_nf_regnet_measures_every_block() -> None:
    result = run_spp(SPPConfig(family="nf_regnet", variant="B0", width=0.5, resolution=64, batch=4))
    assert len(result.blocks) == 16
    assert result.meta.stage_ends == [0, 3, 9, 15]
    assert [b.transition for b in result.blocks].count(True) == 4
    assert result.meta.gamma == pytest.approx(1.7872, abs=1e-3)  # SiLU


def test_bn_regnet_has_batchnorms_signal_propagation() -> None:
    # NF-RegNet-B0's BN twin: BN-SiLU-Conv everywhere, so its SPP is that of Fig. 1's
    # BN-ReLU-Conv ResNet with SiLU in place of ReLU.
    config = SPPConfig(family="nf_regnet", variant="B0", norm="bn", width=0.5, resolution=64,
                       batch=8, gradients=True, device="cpu")  # fmt: skip
    results = [run_spp(config.model_copy(update={"seed": seed})) for seed in range(3)]
    result = results[0]
    assert len(result.blocks) == 16
    assert result.meta.stage_ends == [0, 3, 9, 15]
    assert all(b.expected_var is None for b in result.blocks)  # no alpha/beta bookkeeping
    assert all((b.grad_avg_channel_var or 0) > 0 for r in results for b in r.blocks)

    # The statistics, block by block, averaged over three seeds: one network's vary from seed
    # to seed (a transition's variance by up to 0.3 at this width).
    def averaged(key: str) -> list[float]:
        return [mean(values) for values in zip(*(column(r, key) for r in results), strict=True)]

    residual = averaged("residual_avg_channel_var")
    variance, sq_mean = averaged("avg_channel_var"), averaged("avg_sq_channel_mean")
    # Each branch ends in a He-init conv reading SiLU(BN(.)): Var(f) = 1 - E[g]^2 / E[g^2],
    # 0.88 for SiLU (0.68 for ReLU, Fig. 1); no SkipInit, so the blocks add it in full.
    assert mean(residual) == pytest.approx(0.88, abs=0.06)
    assert all(0.75 < v < 1.1 for v in residual)
    ends = [0, *(i + 1 for i in result.meta.stage_ends)]
    for first, stop in itertools.pairwise(ends):
        for before, after in itertools.pairwise(range(first, stop)):
            growth = variance[after] - variance[before]
            assert growth == pytest.approx(residual[after], rel=0.2)
        assert sq_mean[first:stop] == sorted(sq_mean[first:stop]), "the channel mean grows"
        # The variance resets at every transition, whose shortcut pools and convolves BN's
        # normalized signal (about 0.3 on this noise input), then grows by Var(f) per block.
        assert variance[first] == pytest.approx(1.2, abs=0.2)
        assert variance[stop - 1] == pytest.approx(0.3 + 0.9 * (stop - first), rel=0.1)


# --- the engine ---------------------------------------------------------------------------------


def test_statistics_match_the_appendix_f_numpy_definitions() -> None:
    y = torch.randn(4, 6, 5, 7) * torch.arange(1, 7).view(1, 6, 1, 1) + 0.3
    stats = channel_stats(y, {"sq_channel_mean", "channel_var", "mean", "pixel_norm"})
    nhwc = y.permute(0, 2, 3, 1).numpy().astype(np.float64)
    assert float(stats["sq_channel_mean"]) == pytest.approx(
        np.mean(np.mean(nhwc, axis=(0, 1, 2)) ** 2)
    )
    assert float(stats["channel_var"]) == pytest.approx(np.mean(np.var(nhwc, axis=(0, 1, 2))))
    assert float(stats["mean"]) == pytest.approx(np.mean(nhwc))
    assert float(stats["pixel_norm"]) == pytest.approx(np.mean(np.linalg.norm(nhwc, axis=-1)))


@pytest.mark.parametrize("offset", [0.0, 10.0, 1000.0])
def test_cpu_statistics_stay_exact_when_the_mean_dominates(offset: float) -> None:
    # The CPU path reduces float32 in two passes; a mean 1000x the spread must not cancel.
    y = torch.randn(8, 16, 32, 32, generator=torch.Generator().manual_seed(0)) + offset
    nhwc = y.permute(0, 2, 3, 1).numpy().astype(np.float64)
    stats = channel_stats(y, FORWARD)
    assert float(stats["channel_var"]) == pytest.approx(
        np.var(nhwc, axis=(0, 1, 2)).mean(), rel=1e-6
    )
    assert float(stats["sq_channel_mean"]) == pytest.approx(
        np.mean(np.mean(nhwc, axis=(0, 1, 2)) ** 2), rel=1e-6
    )


def test_one_pass_and_chunked_statistics_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    from nfcore.engine import stats as stats_module

    y = torch.randn(4, 12, 9, 9, generator=torch.Generator().manual_seed(1)) * 3 + 0.5
    fast = channel_stats(y, FORWARD)
    monkeypatch.setattr(stats_module, "CPU_CHUNK_ELEMENTS", 4 * 81 * 5)  # chunks of 5 channels
    chunked = channel_stats(y, FORWARD)
    assert fast.keys() == chunked.keys() == set(FORWARD)
    for key in fast:
        assert float(fast[key]) == pytest.approx(float(chunked[key]), rel=1e-6)
        assert fast[key].dtype == chunked[key].dtype == torch.float64
    only_chunked = channel_stats(y, {"channel_var"})
    monkeypatch.undo()
    only_fast = channel_stats(y, {"channel_var"})
    assert only_chunked.keys() == only_fast.keys() == {"channel_var"}
    assert float(only_chunked["channel_var"]) == float(chunked["channel_var"])
    assert float(only_fast["channel_var"]) == float(fast["channel_var"])


def test_variance_beyond_float32_range_is_computed_in_float64() -> None:
    y = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * 1e25
    nhwc = y.permute(0, 2, 3, 1).numpy().astype(np.float64)
    stats = channel_stats(y, FORWARD)
    assert math.isfinite(float(stats["channel_var"]))
    assert float(stats["channel_var"]) == pytest.approx(np.var(nhwc, axis=(0, 1, 2)).mean())


def test_residual_variance_is_measured_before_alpha_and_skipinit() -> None:
    result = spp(norm="nf", conv="ws", alpha=0.2, skipinit=True)
    # SkipInit zeroes the branch's contribution, but f(x) itself is still variance preserving:
    # the first block reads the same stem output with the same weights (the SkipInit gain draws
    # no random number) as the network without SkipInit and with alpha 1, and measures the same.
    plain = spp(norm="nf", conv="ws", alpha=1.0)
    first = result.blocks[0].residual_avg_channel_var
    assert first == pytest.approx(plain.blocks[0].residual_avg_channel_var, rel=1e-6)
    # About 0.83 at this width (0.78-0.87 over 12 seeds): not zeroed, not scaled by alpha.
    early = [b.residual_avg_channel_var for stage in stages(result)[:2] for b in stage]
    assert 0.7 < mean(early) < 1.1
    for stage in stages(result):
        assert len({round(b.avg_channel_var, 12) for b in stage}) == 1


def test_same_config_and_seed_give_bit_identical_numbers() -> None:
    config = SPPConfig(**SMALL, norm="bn", gradients=True, extra_stats=True)
    first, second = run_spp(config), run_spp(config)
    assert first.blocks == second.blocks
    other = run_spp(config.model_copy(update={"seed": 1}))
    assert other.blocks != first.blocks


def test_progress_is_reported_block_by_block() -> None:
    calls: list[tuple[int, int]] = []
    run_spp(SPPConfig(**SMALL, norm="nf"), progress=lambda done, total: calls.append((done, total)))
    assert calls == [(i, 16) for i in range(1, 17)]
    calls.clear()
    run_spp(
        SPPConfig(**SMALL, norm="nf", gradients=True), progress=lambda d, t: calls.append((d, t))
    )
    assert calls == [(i, 32) for i in range(1, 33)]


def test_a_progress_callback_can_stop_the_run_and_leaves_the_model_intact() -> None:
    class Cancelled(Exception):
        pass

    def cancel_at_block_5(done: int, _total: int) -> None:
        if done == 5:
            raise Cancelled

    config = SPPConfig(**SMALL, norm="bn")
    model = build_model(config, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(Cancelled):
        run_spp(config, progress=cancel_at_block_5, model=model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(not b._forward_hooks and not b.residual_tap._forward_hooks for b in model.blocks)
    assert run_spp(config, model=model).blocks == run_spp(config).blocks


def test_gradient_statistics_when_asked() -> None:
    result = spp(norm="bn", gradients=True)
    keys = result.to_json_dict()["blocks"][0].keys()
    assert {
        "grad_avg_sq_channel_mean",
        "grad_avg_channel_var",
        "grad_residual_avg_channel_var",
    } <= set(keys)
    for key in ("grad_avg_channel_var", "grad_residual_avg_channel_var"):
        assert all(g is not None and g > 0 for g in column(result, key))
    # x_{l+1} = x_l + f(x_l): the gradient reaching f is exactly the one at the block output.
    for block in result.blocks:
        assert block.grad_residual_avg_channel_var == pytest.approx(
            block.grad_avg_channel_var, rel=1e-6
        )
    plain = spp(norm="bn")
    assert "grad_avg_channel_var" not in plain.to_json_dict()["blocks"][0]
    assert column(plain, "avg_channel_var") == column(result, "avg_channel_var")


def test_nf_gradients_neither_explode_nor_vanish() -> None:
    # Section 3: with a well-behaved forward pass, the backward pass of a ResNet neither
    # explodes nor vanishes. Without normalization it does (toward the input).
    nf = spp(norm="nf", alpha=0.2, gradients=True)
    grads = column(nf, "grad_avg_channel_var")
    assert max(grads) / min(grads) < 3
    for block in nf.blocks:  # x_{l+1} = x_l + alpha f(x_l / beta): dL/df = alpha dL/dx_{l+1}
        assert block.grad_residual_avg_channel_var == pytest.approx(
            0.2**2 * block.grad_avg_channel_var, rel=1e-6
        )
    unnormalized = column(spp(norm="none", gradients=True), "grad_avg_channel_var")
    assert unnormalized[0] > 1000 * unnormalized[-1]


def test_appendix_g_statistics_when_asked() -> None:
    result = spp(norm="nf", extra_stats=True)
    block = result.to_json_dict()["blocks"][0]
    assert block["avg_pixel_norm"] > 0
    assert abs(block["activation_mean"]) < 1
    assert "activation_mean" not in spp(norm="nf").to_json_dict()["blocks"][0]


def test_batchnorm_uses_batch_statistics_and_leaves_running_stats_alone() -> None:
    config = SPPConfig(**SMALL, norm="bn")
    model = build_model(config, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = run_spp(config, model=model)
    # With running statistics (mean 0, var 1) the residual variance would not be 0.68.
    assert mean(column(result, "residual_avg_channel_var")) == pytest.approx(0.68, abs=0.03)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training


def test_no_block_activation_outlives_its_hooks() -> None:
    config = SPPConfig(**SMALL, norm="nf")
    model = build_model(config, seed=0)
    alive: list = []
    import weakref

    handles = [
        b.register_forward_hook(lambda _m, _i, out: alive.append(weakref.ref(out)))
        for b in model.blocks
    ]
    run_spp(config, model=model)
    for handle in handles:
        handle.remove()
    assert len(alive) == 16
    assert sum(ref() is not None for ref in alive) <= 1  # at most the network's last output


def test_digit_images_show_the_same_trends() -> None:
    # Section 3: real images instead of noise do "not meaningfully affect the key trends". The
    # scale differs: upsampled 8x8 digits are smooth, and the zero-mean Scaled WS stem filters
    # pass little of them, but the variance still grows within each stage and resets.
    digits = spp(norm="bn", order="bn-relu-conv", input="digits")
    assert digits.config.input == "digits"
    assert mean(column(digits, "residual_avg_channel_var")) == pytest.approx(0.68, abs=0.05)
    for stage in stages(digits):
        variances = [b.avg_channel_var for b in stage]
        assert variances == sorted(variances)
    nf = spp(norm="nf", input="digits", alpha=1.0)
    assert max(column(nf, "avg_sq_channel_mean")) < 0.1


def test_meta_describes_the_run() -> None:
    result = spp(norm="nf")
    meta = result.meta
    assert meta.device == "cpu"
    assert meta.num_blocks == 16
    assert meta.stage_ends == [2, 6, 12, 15]
    assert meta.gamma == pytest.approx(math.sqrt(2 / (1 - 1 / math.pi)))
    assert meta.parameter_count == sum(p.numel() for p in build_model(result.config).parameters())
    assert meta.seconds > 0


def test_the_statistics_are_read_back_once_per_run_not_once_per_block(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A read of a GPU tensor waits for the GPU: one per block would serialize the pass."""
    reads = []
    original = torch.Tensor.tolist

    def counted(self: torch.Tensor) -> object:
        reads.append(self.shape)
        return original(self)

    monkeypatch.setattr(torch.Tensor, "tolist", counted)
    result = run_spp(SPPConfig(depth=14, norm="nf", width=0.125, resolution=32, batch=2,
                               device="cpu", gradients=True))  # fmt: skip
    assert len(reads) == 1
    assert all(block.grad_avg_channel_var is not None for block in result.blocks)
