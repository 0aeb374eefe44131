"""Gate weights on Γ_valid only: relaxed samples for the fit and the deterministic gate set at any λ.

A gate set is broken only when a projection block loses both its branch (f = 0) and its
projection shortcut (`hwnas.spaces.gated_resnet`). Validity is built into the parametrisation:
the branch gate and the shortcut gate of each projection block are one categorical over the
9 valid pairs (f, s) ≠ (0, removed), with logit(f, s) = branch_logit[f] + shortcut_logit[s].
That is exactly the independent per-gate distribution of the 46 logits conditioned on the
pair being valid, so the hypernet's outputs keep their meaning (and shape), but no sample
and no argmax can be broken. Blocks with an identity shortcut keep their own categorical.

The relaxed weights handed to the gated forward and to the cost are the pair's marginals
(w_branch[f] = Σ_s w(f, s), w_shortcut[s] = Σ_f w(f, s)); with a hard sample they are one-hot,
and the expected cost, linear in the marginals, is exact for the joint distribution.
"""
from __future__ import annotations

import torch

from hwnas.latency.resnet_keys import BLOCKS
from hwnas.search.relax import RelaxConfig, relax, sample_gumbel
from hwnas.spaces.gated_resnet import BRANCH_CHOICES, PROJECTIONS, GateSet

PROJ_BLOCKS = [BLOCKS.index(p) for p in PROJECTIONS]                 # branch rows of the projection blocks
PLAIN_BLOCKS = [i for i in range(len(BLOCKS)) if i not in PROJ_BLOCKS]
N_CHOICES = len(BRANCH_CHOICES)
# Pair (f index, s index) ↦ f·2 + s; (0, 0) is branch removed with shortcut removed: broken.
_VALID = torch.ones(N_CHOICES * 2, dtype=torch.bool)
_VALID[0] = False


def pair_logits(branch_logits: torch.Tensor, shortcut_logits: torch.Tensor) -> torch.Tensor:
    """(projections, 10) logits of the (branch, shortcut) pairs, −inf on the broken pair."""
    joint = branch_logits[PROJ_BLOCKS].unsqueeze(-1) + shortcut_logits.unsqueeze(1)   # (P, 5, 2)
    joint = joint.flatten(1)
    return joint.masked_fill(~_VALID.to(joint.device), float("-inf"))


def _marginals(pair_w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    w = pair_w.view(-1, N_CHOICES, 2)
    return w.sum(2), w.sum(1)                                                       # (P, 5), (P, 2)


def _assemble(plain: torch.Tensor, proj_branch: torch.Tensor) -> torch.Tensor:
    rows = [None] * len(BLOCKS)
    for j, i in enumerate(PLAIN_BLOCKS):
        rows[i] = plain[j]
    for j, i in enumerate(PROJ_BLOCKS):
        rows[i] = proj_branch[j]
    return torch.stack(rows)                                                         # (blocks, 5)


def relax_gates(branch_logits: torch.Tensor, shortcut_logits: torch.Tensor, cfg: RelaxConfig, tau: float,
                generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Relaxed (w_branch (blocks, 5), w_shortcut (projections, 2)) of one Gumbel draw, on Γ_valid."""
    device, dtype = branch_logits.device, branch_logits.dtype
    plain_l = branch_logits[PLAIN_BLOCKS]
    pairs = pair_logits(branch_logits, shortcut_logits)
    plain, _ = relax(plain_l, cfg, tau, sample_gumbel(plain_l.shape, device, dtype, generator))
    pair_w, _ = relax(pairs, cfg, tau, sample_gumbel(pairs.shape, device, dtype, generator))
    proj_branch, w_shortcut = _marginals(pair_w)
    return _assemble(plain, proj_branch), w_shortcut


def gate_probabilities(branch_logits: torch.Tensor,
                       shortcut_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-gate marginal probabilities of the distribution on Γ_valid (no noise)."""
    plain = torch.softmax(branch_logits[PLAIN_BLOCKS], -1)
    proj_branch, w_shortcut = _marginals(torch.softmax(pair_logits(branch_logits, shortcut_logits), -1))
    return _assemble(plain, proj_branch), w_shortcut


@torch.no_grad()
def argmax_gates(branch_logits: torch.Tensor, shortcut_logits: torch.Tensor) -> GateSet:
    """The most probable gate set of Γ_valid: the argmax per plain block, the best valid pair per projection block."""
    branch = branch_logits.argmax(1).tolist()
    pair = pair_logits(branch_logits, shortcut_logits).argmax(1).tolist()
    shortcut = []
    for i, k in zip(PROJ_BLOCKS, pair):
        branch[i] = k // 2
        shortcut.append(k % 2)
    return GateSet.from_indices(branch, shortcut)
