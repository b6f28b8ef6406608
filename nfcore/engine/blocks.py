"""One residual block for every family: x_{l+1} = post(skip + alpha * gain * f(pre(x) / beta)).

The families differ only in the parts injected here (see `nfcore.engine.models`):

- pre-activation ResNetV2 (Fig. 4): `pre` is BN-ReLU, ReLU-BN, or g(.) for NF and
  unnormalized nets; transition blocks convolve `pre(x) / beta` on the skip path;
- post-activation ResNetV1 (Fig. 5): no `pre`, the skip path is conv-BN, `post` is ReLU;
- NF-RegNet (Appendix D.2): `pre` is g(.) (BN then g in its BN twin), the skip path is avg-pool then conv.

For Normalizer-Free blocks beta_l = sqrt(Var(x_l)) of the expected signal variance (Section 4);
for the others beta = alpha = 1.
"""

from __future__ import annotations

from torch import Tensor, nn

from nfcore.engine.layers import SkipInitGain, StochasticDepth


class ResidualBlock(nn.Module):
    """A residual block with its place in the network (stage, transition, expected variance)."""

    def __init__(
        self,
        *,
        pre: nn.Module,
        branch: nn.Module,
        shortcut: nn.Module | None,
        post: nn.Module | None = None,
        beta: float = 1.0,
        alpha: float = 1.0,
        skipinit: bool = False,
        stochdepth_rate: float = 0.0,
        stage: int = 0,
        expected_var: float | None = None,
    ) -> None:
        super().__init__()
        self.pre = pre
        self.shortcut = shortcut
        self.branch = branch
        # The SPP engine hooks here to measure f(x): before alpha, SkipInit and stochastic depth.
        self.residual_tap = nn.Identity()
        self.drop_path = StochasticDepth(stochdepth_rate)
        self.skipinit = SkipInitGain() if skipinit else nn.Identity()
        self.post = post if post is not None else nn.Identity()
        self.beta = float(beta)
        self.alpha = float(alpha)
        self.stage = stage
        self.expected_var = expected_var  # analytic Var(x_{l+1}) for NF blocks, else None

    @property
    def transition(self) -> bool:
        """A transition block replaces the identity skip with a convolution (a new stage)."""
        return self.shortcut is not None

    def forward(self, x: Tensor) -> Tensor:
        out = self.pre(x) / self.beta
        skip = x if self.shortcut is None else self.shortcut(out)
        residual = self.residual_tap(self.branch(out))  # f(x / beta)
        residual = self.skipinit(self.drop_path(residual))
        return self.post(skip + self.alpha * residual)

    def extra_repr(self) -> str:
        parts = [f"stage={self.stage}", f"beta={self.beta:.4f}", f"alpha={self.alpha:g}"]
        if self.expected_var is not None:
            parts.append(f"expected_var={self.expected_var:.4f}")
        return ", ".join(parts)
