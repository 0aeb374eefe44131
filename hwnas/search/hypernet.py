"""λ-hypernetworks (DARTS-CC): architecture logits as a function of the trade-off, α = G(λ; U).

One search trains G for every λ ∈ [0, Λ] at once (a λ is sampled each step), so the
architecture for any budget is read off afterwards without retraining.

The input is the normalised λ̃ = λ / Λ ∈ [0, 1] (one entry per cost target), so G's
behaviour does not depend on the units of T (ms, parameters, FLOPs) nor on their scale.
Both forms start exactly where DARTS starts: the λ-dependent part is initialised to zero
and the constant part to DARTS's 1e-3·N(0, 1) logits, so λ does nothing until it is learnt.

- linear: α = Σ_d λ̃_d · b₁[d] + b₂                              (DARTS-CC's linear hypernet)
- mlp:    α = W₂ · (σ(W₁ λ̃ + c₁) − σ(c₁)) + b₂, one hidden layer   (HyperDARTS-2 style)

In both, α(0) = b₂: the λ-independent part *is* the unpenalised architecture, and
`penalty_logits(lam, d)` gives the same α with b₂ cut from the graph (and, for the linear form,
every b₁[d'] but target d's), which the search uses for target d's cost term
(`SearchObjective.penalty`). So b₂ learns from the loss only and each cost shapes only its own
λ-dependent part. Measured without it (digits quickstart): Adam moves
every parameter by about its learning rate per step whatever the gradient's size, so b₂ took the
average penalty's direction as fast as b₁ did, and α(0) came out as cheap as α(Λ) — one network
at every λ (and b₁ a scaled copy of b₂'s drift, cosine 0.985).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from hwnas.config import HYPERNETS, LAMBDA_SAMPLING  # their home; imported from here too


class LinearHypernet(nn.Module):
    def __init__(self, n_edges: int, n_ops: int, n_targets: int = 1, generator: torch.Generator | None = None):
        super().__init__()
        self.shape = (2, n_edges, n_ops)  # normal, reduce
        self.b1 = nn.Parameter(torch.zeros(n_targets, *self.shape))
        self.b2 = nn.Parameter(1e-3 * torch.randn(*self.shape, generator=generator))

    def forward(self, lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        alpha = torch.tensordot(lam, self.b1, dims=1) + self.b2   # (2, E, O)
        return alpha[0], alpha[1]

    def penalty_logits(self, lam: torch.Tensor, target: int) -> tuple[torch.Tensor, torch.Tensor]:
        """α(λ) with only λ̃_target·b₁[target] in the graph: target d's cost shapes its own slope only.
        (Sampled on the simplex, λ̃_d and λ̃_d' are correlated, and b₁[d]'s gradient would otherwise carry
        E[λ̃_d λ̃_d']·Λ_d'·∇cost_d' — another device's cost: measured, it made λ_d favour what is cheap on d'.)"""
        own = torch.zeros_like(lam)
        own[target] = 1.0
        b1 = self.b1 * own.view(-1, 1, 1, 1) + self.b1.detach() * (1 - own).view(-1, 1, 1, 1)
        alpha = torch.tensordot(lam, b1, dims=1) + self.b2.detach()
        return alpha[0], alpha[1]


class MLPHypernet(nn.Module):
    def __init__(self, n_edges: int, n_ops: int, n_targets: int = 1, hidden: int = 32,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.shape = (2, n_edges, n_ops)
        out = math.prod(self.shape)
        self.w1 = nn.Parameter(torch.randn(hidden, n_targets, generator=generator) * (2.0 / math.sqrt(n_targets)))
        self.c1 = nn.Parameter(torch.randn(hidden, generator=generator))
        self.w2 = nn.Parameter(torch.zeros(out, hidden))  # zero: α does not depend on λ at the start
        self.b2 = nn.Parameter(1e-3 * torch.randn(out, generator=generator))

    def forward(self, lam: torch.Tensor, base_grad: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.sigmoid(self.w1 @ lam + self.c1) - torch.sigmoid(self.c1)   # (hidden,), 0 at λ = 0
        base = self.b2 if base_grad else self.b2.detach()
        alpha = (self.w2 @ h + base).view(self.shape)                          # (2, E, O)
        return alpha[0], alpha[1]

    def penalty_logits(self, lam: torch.Tensor, target: int) -> tuple[torch.Tensor, torch.Tensor]:
        """α(λ) without b₂ in the graph (the hidden layer is shared by all targets, so no finer routing)."""
        return self(lam, base_grad=False)


def make_hypernet(kind: str, n_edges: int, n_ops: int, n_targets: int,
                  generator: torch.Generator | None = None) -> nn.Module:
    if kind == "linear":
        return LinearHypernet(n_edges, n_ops, n_targets, generator)
    if kind == "mlp":
        return MLPHypernet(n_edges, n_ops, n_targets, generator=generator)
    raise ValueError(f"unknown hypernet {kind!r}; choose one of {', '.join(HYPERNETS)}")


LOG_DECADES = 3.0  # log-uniform λ̃ spans [10⁻³, 1]


def sample_lambda(lambda_max: torch.Tensor, mode: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """λ with Σ_d λ_d/Λ_d ≤ 1 (the region Theorem 1 allows: Σ_d λ_d·Tᵀ1_d < L̄ − S when Λ_d = (L̄ − S)/Tᵀ1_d).

    uniform: λ̃ = λ/Λ uniform on the simplex {λ̃ ≥ 0, Σ λ̃ ≤ 1} (uniform on [0, 1] for one target);
    log-uniform: Σ λ̃ = t log-uniform on [10⁻³, 1] (more samples at small λ, where accuracy changes
    fastest), split over the targets uniformly (a flat Dirichlet)."""
    d = lambda_max.numel()
    if mode == "uniform":
        # The first D of the D + 1 spacings of D sorted uniforms: uniform on the simplex.
        u = torch.sort(torch.rand(d, generator=generator, dtype=torch.float64)).values
        frac = torch.diff(u, prepend=torch.zeros(1, dtype=torch.float64))
    elif mode == "log-uniform":
        t = torch.pow(10.0, -LOG_DECADES * (1.0 - torch.rand(1, generator=generator, dtype=torch.float64)))
        e = -torch.log(torch.rand(d, generator=generator, dtype=torch.float64).clamp_min(1e-300))
        frac = t * e / e.sum()
    else:
        raise ValueError(f"unknown λ sampling {mode!r}; choose one of {', '.join(LAMBDA_SAMPLING)}")
    return frac.to(lambda_max.dtype).view(lambda_max.shape) * lambda_max.cpu()
