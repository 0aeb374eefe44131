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
from hwnas.spaces.genotype import num_edges
from hwnas.spaces.ops import PRIMITIVES
from hwnas.spaces.partial import node_softmax
from hwnas.spaces.supernet import Supernet

NONE = PRIMITIVES.index("none")


class ArchParams(nn.Module):
    """α for the normal and the reduction cell: (n_edges, n_ops) logits each, initialised small as in DARTS."""

    def __init__(self, n_edges: int, n_ops: int, init_scale: float = 1e-3, generator: torch.Generator | None = None):
        super().__init__()
        self.normal = nn.Parameter(init_scale * torch.randn(n_edges, n_ops, generator=generator))
        self.reduce = nn.Parameter(init_scale * torch.randn(n_edges, n_ops, generator=generator))

    def forward(self, lam: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits; `lam` is accepted (and ignored) so that α and a λ-hypernet are interchangeable."""
        return self.normal, self.reduce

    def penalty_logits(self, lam: torch.Tensor | None, target: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.normal, self.reduce


class EdgeNorm(nn.Module):
    """PC-DARTS's edge normalisation: β per edge of the normal and the reduction cell (1e-3·N(0, 1), as PC-DARTS
    initialises them); node i weights its input edges by β̂ = softmax of β over them. A partial-channel search
    holds it as the `edges` submodule of its architecture module (α or a λ-hypernet), so β is learnt by α's
    optimiser, checkpointed and averaged with it. It does not depend on λ: a λ-hypernet's α(λ) picks the ops
    (and, through them, the edges) for each λ; β̂ is one edge weighting shared by every λ."""

    def __init__(self, steps: int, init_scale: float = 1e-3, generator: torch.Generator | None = None):
        super().__init__()
        self.steps = steps
        self.normal = nn.Parameter(init_scale * torch.randn(num_edges(steps), generator=generator))
        self.reduce = nn.Parameter(init_scale * torch.randn(num_edges(steps), generator=generator))

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        """β̂ (normal, reduce): (n_edges,) each, summing to 1 over each node's input edges."""
        return node_softmax(self.normal, self.steps), node_softmax(self.reduce, self.steps)


@dataclass
class RelaxedArch:
    """One draw of the relaxed architecture: weights per cell type and, in hard mode, the sampled ops;
    with partial channels, the edge weights β̂ (None: every edge weighs 1)."""

    w_normal: torch.Tensor
    w_reduce: torch.Tensor
    idx_normal: list[int] | None = None
    idx_reduce: list[int] | None = None
    noise: tuple[torch.Tensor, torch.Tensor] | None = None  # the Gumbel draw, to rebuild this sample
    e_normal: torch.Tensor | None = None
    e_reduce: torch.Tensor | None = None

    def detach(self) -> RelaxedArch:
        """The same draw without a graph to the architecture parameters (a weight step needs none)."""
        d = lambda t: None if t is None else t.detach()
        return RelaxedArch(self.w_normal.detach(), self.w_reduce.detach(), self.idx_normal, self.idx_reduce,
                           self.noise, d(self.e_normal), d(self.e_reduce))

    def derivation_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """What the genotype is derived from: w, or β̂ · w per edge with edge normalisation (PC-DARTS ranks a
        node's input edges by β̂_j · max_o w_jo; the op on an edge is its argmax either way)."""
        if self.e_normal is None:
            return self.w_normal, self.w_reduce
        return self.w_normal * self.e_normal.unsqueeze(1), self.w_reduce * self.e_reduce.unsqueeze(1)


class SearchObjective:
    """L(x, y) = cross-entropy of the supernet under the relaxed architecture, and the
    architecture's cost penalty λ·Tᵀγ (summed over cost targets) when a cost model is set.

    `lam` is the current trade-off (one entry per cost target) and `lam_input` what the
    architecture module sees (λ/Λ for a hypernet); both are set by the search loop per step.

    `exclude_none` takes `none` out of the candidate ops (its logit is −∞: weight 0 under every
    relaxation, never sampled). Cost-controlled searches do this by default: `none` costs
    nothing and only scales a mixed op's output, which the following BN undoes, so a soft
    penalty is paid off through `none` without changing the network — and the derived genotype,
    which never picks `none`, does not move (measured; see DESIGN.md).
    """

    def __init__(self, net: Supernet, arch: nn.Module, relax_cfg: RelaxConfig,
                 generator: torch.Generator | None = None, autocast_dtype: torch.dtype | None = None,
                 cost: nn.Module | None = None, exclude_none: bool = False, edges: EdgeNorm | None = None):
        self.net, self.arch, self.relax_cfg = net, arch, relax_cfg
        self.edges = edges  # PC-DARTS's β (partial channels), or None
        self.exclude_none = exclude_none
        self.generator = generator
        self.tau = relax_cfg.tau_start
        self.autocast_dtype = autocast_dtype
        self.cost = cost
        self.lam: torch.Tensor | None = None
        self.lam_input: torch.Tensor | None = None

    def penalty(self, ra: RelaxedArch | None = None) -> torch.Tensor | float:
        """λ·Tᵀγ (0 without a cost model or λ), with γ the exact expected op weights of the current α:
        softmax(α) for softmax and Gumbel, σ(α) for sigmoid. (`ra`, the draw the loss was computed on,
        is accepted for symmetry and not used.)

        Under Gumbel-softmax the network deployed is the argmax of α + g, which is op o with
        probability softmax(α)_o (Gumbel-max), so Tᵀsoftmax(α) is its expected cost exactly, with no
        sampling noise in the gradient. For a λ-hypernet each target's cost term reaches only its own
        λ-dependent part of α (`penalty_logits`, see `hwnas.search.hypernet`): α(0) is the unpenalised
        search's."""
        if self.cost is None or self.lam is None:
            return 0.0
        total = 0.0
        for d in range(self.cost.n_targets):
            a_n, a_r = self.arch.penalty_logits(self.lam_input, d)
            w_n = expected_weights(self.mask(a_n), self.relax_cfg)
            w_r = expected_weights(self.mask(a_r), self.relax_cfg)
            total = total + self.lam[d].to(w_n.dtype) * self.cost.expected(w_n, w_r)[d]
        return total

    def arch_logits(self) -> tuple[torch.Tensor, torch.Tensor]:
        """α (normal, reduce) at the current λ, with `none` masked out when it is excluded."""
        a_n, a_r = self.arch(self.lam_input)
        return self.mask(a_n), self.mask(a_r)

    def mask(self, a: torch.Tensor) -> torch.Tensor:
        if not self.exclude_none:
            return a
        keep = torch.ones(a.shape[-1], dtype=torch.bool, device=a.device)
        keep[NONE] = False
        return a.masked_fill(~keep, float("-inf"))

    def sample(self, like: RelaxedArch | None = None) -> RelaxedArch:
        """A relaxation draw from the current α; `like` reuses that draw's noise (a fresh graph, same sample)."""
        return self.relax_logits(*self.arch_logits(), like)

    def relax_logits(self, a_n: torch.Tensor, a_r: torch.Tensor, like: RelaxedArch | None = None) -> RelaxedArch:
        """A relaxation draw from given logits (e.g. a perturbed α); `like` reuses that draw's noise."""
        a_n, a_r = self.mask(a_n), self.mask(a_r)
        noise = None
        if self.relax_cfg.kind == "gumbel":
            noise = like.noise if like is not None else tuple(
                sample_gumbel(a.shape, a.device, a.dtype, self.generator) for a in (a_n, a_r))
        w_n, i_n = relax(a_n, self.relax_cfg, self.tau, None if noise is None else noise[0])
        w_r, i_r = relax(a_r, self.relax_cfg, self.tau, None if noise is None else noise[1])
        return RelaxedArch(w_n, w_r, i_n, i_r, noise, *self.edge_weights())

    def edge_weights(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """β̂ (normal, reduce) with edge normalisation, else (None, None)."""
        return (None, None) if self.edges is None else self.edges()

    def expected(self) -> RelaxedArch:
        a_n, a_r = self.arch_logits()
        return RelaxedArch(expected_weights(a_n, self.relax_cfg), expected_weights(a_r, self.relax_cfg),
                           None, None, None, *self.edge_weights())

    def logits(self, x: torch.Tensor, ra: RelaxedArch, params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        args = (x, ra.w_normal, ra.w_reduce, ra.idx_normal, ra.idx_reduce)
        if ra.e_normal is not None:
            args += (ra.e_normal, ra.e_reduce)
        with torch.autocast(x.device.type, dtype=self.autocast_dtype or torch.bfloat16,
                            enabled=self.autocast_dtype is not None):
            out = self.net(*args) if params is None else functional_call(self.net, params, args, strict=False)
        return out.float() if self.autocast_dtype is not None else out  # upcast only from autocast

    def loss(self, x: torch.Tensor, y: torch.Tensor, ra: RelaxedArch | None = None,
             params: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, logits) on a batch; a fresh relaxation sample unless `ra` is given."""
        logits = self.logits(x, self.sample() if ra is None else ra, params)
        return F.cross_entropy(logits, y), logits
