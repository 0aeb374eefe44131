"""Gate logits for ResNet18 pruning: a λ-hypernet (linear or MLP, `hwnas.search.hypernet`) or fixed logits.

Both give (branch logits (blocks, 5), shortcut logits (projections, 2)) from the normalised
trade-off λ̃ = λ/Λ (on a log scale with log-uniform λ sampling, `hypernet_input`). The hypernets of the search are reused as they are: their output of
shape (2, E, 1) with E = 23 is the 46 gate logits, in the order of their constant term b₂.

Phase 1 of Algorithm 1 starts here (`intact_logits`): the constant term is set so that every
gate's largest logit is "on" (full width, shortcut kept) by a margin `init_logit`, and the
λ-dependent part starts at zero. At λ = 0 the deterministic gates (argmax) are then the
intact network, whose outputs are bit-for-bit the pretrained network's; but a Gumbel sample
is intact only with probability ≈ 0.20 at margin 3, so phase 1 then fits the constant term at
λ = 0 (`Pruner.phase1`) until sampled gate sets reproduce the pretrained accuracy.

With `channel_multiple` N > 16 the branch choices whose kept channel count is not a multiple of N get logit
−inf (`gated_resnet.allowed_choices`, like the broken pair of `gate_sampling`): no sample, no expected cost and
no argmax ever uses them, so every gate set of the run has kept widths that are multiples of N.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from hwnas.latency.resnet_keys import BLOCKS
from hwnas.search.hypernet import make_hypernet
from hwnas.spaces.gated_resnet import BRANCH_CHOICES, PROJECTIONS, allowed_choices

N_BRANCH = len(BLOCKS) * len(BRANCH_CHOICES)
N_LOGITS = N_BRANCH + 2 * len(PROJECTIONS)   # 46


def hypernet_input(lam_frac: float, sampling: str) -> float:
    """What the hypernet sees of λ̃ = λ/Λ: λ̃ itself (uniform sampling), or its place on the log scale
    1 + log10(λ̃)/3 ∈ [0, 1] (log-uniform sampling over [Λ·10⁻³, Λ]; λ̃ ≤ 10⁻³, λ = 0 included, is 0), so
    that small λ, where accuracy changes, are as far apart for the hypernet as they are for the sampler."""
    if sampling != "log-uniform":
        return float(lam_frac)
    return max(0.0, 1.0 + math.log10(lam_frac) / 3.0) if lam_frac > 0 else 0.0


def lambda_from_input(u: float, sampling: str) -> float:
    """λ̃ = λ/Λ at the hypernet input u ∈ [0, 1]: the inverse of `hypernet_input` (u = 0: λ̃ = 0)."""
    if sampling != "log-uniform":
        return float(u)
    return 10.0 ** (3.0 * (u - 1.0)) if u > 0 else 0.0


def intact_logits(margin: float) -> torch.Tensor:
    """(46,) logits whose argmax is the intact network: `margin` on full width and on kept shortcuts."""
    branch = torch.zeros(len(BLOCKS), len(BRANCH_CHOICES))
    branch[:, -1] = margin
    shortcut = torch.zeros(len(PROJECTIONS), 2)
    shortcut[:, 1] = margin
    return torch.cat([branch.flatten(), shortcut.flatten()])


def split_logits(flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return flat[:N_BRANCH].view(len(BLOCKS), -1), flat[N_BRANCH:].view(len(PROJECTIONS), 2)


class _Widths(nn.Module):
    """The −inf mask of branch choices whose kept channel count is not a multiple of `channel_multiple`."""

    def _set_multiple(self, channel_multiple: int) -> None:
        self.channel_multiple = channel_multiple
        self.register_buffer("allowed", allowed_choices(channel_multiple), persistent=False)

    def _mask(self, logits: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        branch, shortcut = logits
        if self.channel_multiple > 1 and not bool(self.allowed.all()):
            branch = branch.masked_fill(~self.allowed, float("-inf"))
        return branch, shortcut


class GateHypernet(_Widths):
    """γ-logits = G(λ̃), with G a linear or MLP λ-hypernet of the search, initialised to the intact network;
    choices off the `channel_multiple` grid masked."""

    def __init__(self, kind: str, init_logit: float = 3.0, generator: torch.Generator | None = None,
                 channel_multiple: int = 1):
        super().__init__()
        self.net = make_hypernet(kind, N_LOGITS // 2, 1, 1, generator)
        with torch.no_grad():
            self.net.b2.view(-1).copy_(intact_logits(init_logit))
        self._set_multiple(channel_multiple)

    def forward(self, lam_frac: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = self.net(lam_frac.reshape(1))
        return self._mask(split_logits(torch.cat([a.flatten(), b.flatten()])))

    def penalty_logits(self, lam_frac: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The same logits with only the λ-dependent part in the graph (the search's `penalty_logits`): the cost
        shapes how the gates move with λ, never the λ = 0 network, which learns from the loss alone."""
        a, b = self.net.penalty_logits(lam_frac.reshape(1), 0)
        return self._mask(split_logits(torch.cat([a.flatten(), b.flatten()])))


class FixedGates(_Widths):
    """Gate logits that do not depend on λ (the fixed-λ fits of the empirical Λ)."""

    def __init__(self, init_logit: float = 3.0, channel_multiple: int = 1):
        super().__init__()
        self.logits = nn.Parameter(intact_logits(init_logit))
        self._set_multiple(channel_multiple)

    def forward(self, lam_frac: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self._mask(split_logits(self.logits))

