"""λ-hypernetworks (DARTS-CC): architecture logits as a function of the trade-off, α = G(λ; U).

One search trains G for every λ ∈ [0, Λ] at once (a λ is sampled each step), so the
architecture for any budget is read off afterwards without retraining.

The input is the normalised λ̃ = λ / Λ ∈ [0, 1] (one entry per cost target), so G's
behaviour does not depend on the units of T (ms, parameters, FLOPs) nor on their scale.
Both forms start exactly where DARTS starts: the λ-dependent part is initialised to zero
and the constant part to DARTS's 1e-3·N(0, 1) logits, so λ does nothing until it is learnt.

- linear: α = Σ_d λ̃_d · b₁[d] + b₂                      (DARTS-CC's linear hypernet)
- mlp:    α = W₂ · σ(W₁ λ̃ + c₁) + b₂, one hidden layer   (HyperDARTS-2 style)
"""
from __future__ import annotations

import math

import torch
from torch import nn

HYPERNETS = ("none", "linear", "mlp")
LAMBDA_SAMPLING = ("uniform", "log-uniform")


class LinearHypernet(nn.Module):
    def __init__(self, n_edges: int, n_ops: int, n_targets: int = 1, generator: torch.Generator | None = None):
        super().__init__()
        self.shape = (2, n_edges, n_ops)  # normal, reduce
        self.b1 = nn.Parameter(torch.zeros(n_targets, *self.shape))
        self.b2 = nn.Parameter(1e-3 * torch.randn(*self.shape, generator=generator))

    def forward(self, lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        alpha = torch.tensordot(lam, self.b1, dims=1) + self.b2   # (2, E, O)
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

    def forward(self, lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.sigmoid(self.w1 @ lam + self.c1)                 # (hidden,)
        alpha = (self.w2 @ h + self.b2).view(self.shape)          # (2, E, O)
        return alpha[0], alpha[1]


def make_hypernet(kind: str, n_edges: int, n_ops: int, n_targets: int,
                  generator: torch.Generator | None = None) -> nn.Module:
    if kind == "linear":
        return LinearHypernet(n_edges, n_ops, n_targets, generator)
    if kind == "mlp":
        return MLPHypernet(n_edges, n_ops, n_targets, generator=generator)
    raise ValueError(f"unknown hypernet {kind!r}; choose one of {', '.join(HYPERNETS)}")


def sample_lambda(lambda_max: torch.Tensor, mode: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """λ ∈ [0, Λ] per target: uniform, or log-uniform over [Λ·10⁻³, Λ] (more samples at small λ,
    where accuracy changes fastest)."""
    u = torch.rand(lambda_max.shape, generator=generator, dtype=torch.float64)
    if mode == "uniform":
        frac = u
    elif mode == "log-uniform":
        frac = torch.pow(10.0, -3.0 * (1.0 - u))
    else:
        raise ValueError(f"unknown λ sampling {mode!r}; choose one of {', '.join(LAMBDA_SAMPLING)}")
    return frac.to(lambda_max.dtype) * lambda_max.cpu()
