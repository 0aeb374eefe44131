"""The search objective: architecture logits → relaxed weights → supernet → loss.

`SearchObjective` is the one place that turns (x, y) into a loss for a given architecture,
optionally with substituted network weights (the unrolled w′ of second-order DARTS), so
every gradient strategy differentiates the same function.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from hwnas.search.relax import RelaxConfig, expected_weights, relax, sample_gumbel
from hwnas.spaces.supernet import Supernet


class ArchParams(nn.Module):
    """α for the normal and the reduction cell: (n_edges, n_ops) logits each, initialised small as in DARTS."""

    def __init__(self, n_edges: int, n_ops: int, init_scale: float = 1e-3, generator: torch.Generator | None = None):
        super().__init__()
        self.normal = nn.Parameter(init_scale * torch.randn(n_edges, n_ops, generator=generator))
        self.reduce = nn.Parameter(init_scale * torch.randn(n_edges, n_ops, generator=generator))

    def forward(self, lam: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits; `lam` is accepted (and ignored) so that α and a λ-hypernet are interchangeable."""
        return self.normal, self.reduce


@dataclass
class RelaxedArch:
    """One draw of the relaxed architecture: weights per cell type and, in hard mode, the sampled ops."""

    w_normal: torch.Tensor
    w_reduce: torch.Tensor
    idx_normal: list[int] | None = None
    idx_reduce: list[int] | None = None
    noise: tuple[torch.Tensor, torch.Tensor] | None = None  # the Gumbel draw, to rebuild this sample


class SearchObjective:
    """L(x, y) = cross-entropy of the supernet under the relaxed architecture, and the
    architecture's cost penalty λ·Tᵀγ (summed over cost targets) when a cost model is set.

    `lam` is the current trade-off (one entry per cost target) and `lam_input` what the
    architecture module sees (λ/Λ for a hypernet); both are set by the search loop per step.
    """

    def __init__(self, net: Supernet, arch: nn.Module, relax_cfg: RelaxConfig,
                 generator: torch.Generator | None = None, autocast_dtype: torch.dtype | None = None,
                 cost: nn.Module | None = None):
        self.net, self.arch, self.relax_cfg = net, arch, relax_cfg
        self.generator = generator
        self.tau = relax_cfg.tau_start
        self.autocast_dtype = autocast_dtype
        self.cost = cost
        self.lam: torch.Tensor | None = None
        self.lam_input: torch.Tensor | None = None

    def penalty(self, ra: RelaxedArch) -> torch.Tensor | float:
        """λ·Tᵀγ for the relaxed architecture `ra` (0 without a cost model or λ)."""
        if self.cost is None or self.lam is None:
            return 0.0
        return (self.lam.to(ra.w_normal.dtype) * self.cost.expected(ra.w_normal, ra.w_reduce)).sum()

    def sample(self, like: RelaxedArch | None = None) -> RelaxedArch:
        """A relaxation draw from the current α; `like` reuses that draw's noise (a fresh graph, same sample)."""
        a_n, a_r = self.arch(self.lam_input)
        return self.relax_logits(a_n, a_r, like)

    def relax_logits(self, a_n: torch.Tensor, a_r: torch.Tensor, like: RelaxedArch | None = None) -> RelaxedArch:
        """A relaxation draw from given logits (e.g. a perturbed α); `like` reuses that draw's noise."""
        noise = None
        if self.relax_cfg.kind == "gumbel":
            noise = like.noise if like is not None else tuple(
                sample_gumbel(a.shape, a.device, a.dtype, self.generator) for a in (a_n, a_r))
        w_n, i_n = relax(a_n, self.relax_cfg, self.tau, None if noise is None else noise[0])
        w_r, i_r = relax(a_r, self.relax_cfg, self.tau, None if noise is None else noise[1])
        return RelaxedArch(w_n, w_r, i_n, i_r, noise)

    def expected(self) -> RelaxedArch:
        a_n, a_r = self.arch(self.lam_input)
        return RelaxedArch(expected_weights(a_n, self.relax_cfg), expected_weights(a_r, self.relax_cfg))

    def logits(self, x: torch.Tensor, ra: RelaxedArch, params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        args = (x, ra.w_normal, ra.w_reduce, ra.idx_normal, ra.idx_reduce)
        with torch.autocast(x.device.type, dtype=self.autocast_dtype or torch.bfloat16,
                            enabled=self.autocast_dtype is not None):
            out = self.net(*args) if params is None else functional_call(self.net, params, args, strict=False)
        return out.float() if self.autocast_dtype is not None else out  # upcast only from autocast

    def loss(self, x: torch.Tensor, y: torch.Tensor, ra: RelaxedArch | None = None,
             params: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, logits) on a batch; a fresh relaxation sample unless `ra` is given."""
        logits = self.logits(x, self.sample() if ra is None else ra, params)
        return F.cross_entropy(logits, y), logits
