"""Continuous relaxations of the categorical op choice on each edge.

- softmax (DARTS): w = softmax(α)
- gumbel (GDAS/SNAS style): w = softmax((α + g)/τ), g ~ Gumbel(0, 1); `hard` takes the one-hot
  argmax in the forward pass and the soft sample's gradient in the backward (straight-through),
  and returns the sampled index per edge so the supernet evaluates only that op.
- sigmoid (FairDARTS): w = σ(α), each op switched independently.
"""
from __future__ import annotations

import math

import torch

from hwnas.config import RELAXATIONS, RelaxConfig  # noqa: F401  (their home; imported from here too)



def temperature(cfg: RelaxConfig, progress: float) -> float:
    """τ at `progress` ∈ [0, 1] of the search: exponential from tau_start to tau_end."""
    progress = min(max(progress, 0.0), 1.0)
    return cfg.tau_start * math.exp(progress * math.log(cfg.tau_end / cfg.tau_start))


def sample_gumbel(shape: torch.Size, device, dtype, generator: torch.Generator | None) -> torch.Tensor:
    """Gumbel(0, 1) noise, drawn on the generator's device (CPU by default) for reproducibility."""
    u = torch.rand(shape, generator=generator, dtype=torch.float64).clamp_min(1e-20)
    e = -torch.log(u)                      # Exponential(1) > 0
    g = -torch.log(e.clamp_min(1e-20))     # Gumbel(0, 1)
    return g.to(device=device, dtype=dtype, non_blocking=True)


def relax(alpha: torch.Tensor, cfg: RelaxConfig, tau: float = 1.0,
          noise: torch.Tensor | None = None) -> tuple[torch.Tensor, list[int] | None]:
    """Relaxed op weights (n_edges, n_ops) from logits α, and the sampled op per edge in hard mode.

    `noise` is the Gumbel draw (see `sample_gumbel`); passing the same draw again rebuilds the same
    sample as a fresh autograd graph, which second-order DARTS needs for its four passes.
    """
    if cfg.kind == "softmax":
        return torch.softmax(alpha, dim=-1), None
    if cfg.kind == "sigmoid":
        return torch.sigmoid(alpha), None
    if noise is None:
        raise ValueError("the gumbel relaxation needs a noise draw")
    g = noise
    soft = torch.softmax((alpha + g) / tau, dim=-1)
    if not cfg.hard:
        return soft, None
    # The argmax of (α + g) is the sample (independent of τ); taking it from the CPU-side noise
    # and a CPU copy of α keeps one small transfer per step and no device-side nondeterminism.
    index = (alpha.detach().to("cpu", torch.float64) + g.to("cpu", torch.float64)).argmax(dim=-1)
    one_hot = torch.zeros_like(soft).scatter_(-1, index.to(soft.device).unsqueeze(-1), 1.0)
    return one_hot - soft.detach() + soft, index.tolist()


def expected_weights(alpha: torch.Tensor, cfg: RelaxConfig) -> torch.Tensor:
    """Deterministic weights for deriving a genotype and for evaluation: the relaxation without noise
    (softmax of α for both softmax and Gumbel, σ(α) for sigmoid)."""
    return torch.sigmoid(alpha) if cfg.kind == "sigmoid" else torch.softmax(alpha, dim=-1)
