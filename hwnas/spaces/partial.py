"""Partial channel connections (PC-DARTS, Xu et al., ICLR 2020): 1/K of each edge's channels through its ops.

As in PC-DARTS's `model_search.py`, on every mixed edge of a search cell only the first C/K
channels of the input state go through the candidate ops (which are built with C/K channels);
the other C − C/K channels bypass them unchanged (max-pooled 2×2 on a reduction edge, to the
ops' output size), and the edge's output is `channel_shuffle(cat[mixed, bypass], K)`, so that
the next edge's C/K processed channels are others. Edge normalisation: node i sums its input
edges j weighted by β̂_ij, the softmax over the node's input edges of architecture parameters β
(learnt with α; `node_softmax`). The genotype is derived from β̂_ij · w_ij (edges) and w_ij
(the op on each edge), as PC-DARTS's `genotype()` does.

Two executions of the same function, like the full-channel cell's:
- `per_edge_forward`: the PC-DARTS edge as written (split, mixed op, bypass, shuffle per edge);
  the reference, and the path of hard (indexed) samples and sub-networks;
- `fused_forward` (the default for soft weights): the shuffle is a fixed channel permutation and
  everything else is linear in the edge outputs, so per node
      Σ_j β̂_j · shuffle(cat[m_j, b_j]) = shuffle(cat[Σ_j β̂_j · m_j, Σ_j β̂_j · b_j]),
  and Σ_j β̂_j · m_j = Σ_j Σ_o (β̂_j · w_jo) · o(x_j[:C/K]) is exactly what `hwnas.spaces.fused`
  computes on the C/K-channel slices with op weights β̂ ⊙ w. So the partial cell stays fused
  (one kernel per op kind and source group, as before, on 1/K of the channels); the bypass is one
  weighted sum per source group and the shuffle one copy per node.

With hard indices a `none` edge is off entirely, bypass included: a one-hot architecture is the
genotype's sub-network (each kept edge at C/K channels with its bypass, unit edge weights unless
given), which is what Λ's estimate, the λ-hypernet warm-up and `hwnas pareto` evaluate.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hwnas.spaces.fused import _channels_last, _combine, _groups, _source_group, _sum
from hwnas.spaces.ops import PRIMITIVES

NONE = PRIMITIVES.index("none")


def node_softmax(beta: torch.Tensor, steps: int) -> torch.Tensor:
    """β (n_edges,) → β̂: the softmax over each node's input edges (node i has i + 2 of them), concatenated."""
    out, start = [], 0
    for i in range(steps):
        out.append(beta[start:start + i + 2].softmax(0))
        start += i + 2
    return torch.cat(out)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """PC-DARTS's shuffle: channels (g, j) → (j, g) for g < groups, j < C/groups; output channel j·groups + g is
    input channel g·C/groups + j. Keeps x's memory format."""
    b, c, h, w = x.shape
    if groups == 1:
        return x
    if _channels_last(x):
        nhwc = x.permute(0, 2, 3, 1).reshape(b, h, w, groups, c // groups).transpose(3, 4)
        return nhwc.reshape(b, h, w, c).permute(0, 3, 1, 2)
    return x.reshape(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


def bypass(x: torch.Tensor, cp: int, stride: int) -> torch.Tensor:
    """The channels an edge does not process: x[:, cp:], max-pooled 2×2 at stride 2 (ceil: the ops' output size)."""
    rest = x[:, cp:]
    return rest if stride == 1 else F.max_pool2d(rest, 2, 2, ceil_mode=True)


def partial_edge(edge: nn.Module, x: torch.Tensor, x_relu: torch.Tensor, w: torch.Tensor, index: int | None,
                 k: int, stride: int) -> torch.Tensor:
    """One PC-DARTS edge: the mixed op (`MixedOp` of C/K channels) on x[:, :C/K], the rest bypassed, shuffled."""
    cp = x.shape[1] // k
    mixed = edge(x[:, :cp], x_relu[:, :cp], w, index)
    if k == 1:
        return mixed
    return channel_shuffle(torch.cat([mixed, bypass(x, cp, stride)], dim=1), k)


def per_edge_forward(cell: nn.Module, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor,
                     indices: list[int] | None, edge_weights: torch.Tensor | None, k: int) -> torch.Tensor:
    """A partial-channel `SearchCell` edge by edge, as PC-DARTS writes it; `edge_weights` None: unit weights."""
    states = [cell.preprocess0(s0), cell.preprocess1(s1)]
    relus = [F.relu(s) for s in states]
    c = states[0].shape[1]
    offset = 0
    for _ in range(cell.steps):
        s = None
        for j, h in enumerate(states):
            e = offset + j
            stride = 2 if cell.reduction and j < 2 else 1
            index = None if indices is None else indices[e]
            if index == NONE:  # an edge off in a sub-network: nothing passes, not even the bypass
                continue
            y = partial_edge(cell.edges[e], h, relus[j], weights[e], index, k, stride)
            if edge_weights is not None:
                y = y * edge_weights[e]
            s = y if s is None else s + y
        if s is None:  # every input edge of the node off (possible in hard Gumbel samples)
            b, _, h, w = states[1].shape
            stride = 2 if cell.reduction else 1
            s = states[1].new_zeros(b, c, -(-h // stride), -(-w // stride))
        offset += len(states)
        states.append(s)
        relus.append(F.relu(s))
    return torch.cat(states[-cell.multiplier:], dim=1)


def fused_forward(cell: nn.Module, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor,
                  edge_weights: torch.Tensor | None, k: int) -> torch.Tensor:
    """`per_edge_forward` for soft weights, fused per source group (see the module docstring)."""
    states = [cell.preprocess0(s0), cell.preprocess1(s1)]
    fmt = torch.channels_last if _channels_last(states[0]) else torch.contiguous_format
    c = states[0].shape[1]
    cp = c // k
    ew = torch.ones(weights.shape[0], dtype=weights.dtype, device=weights.device) if edge_weights is None \
        else edge_weights
    w_eff = weights * ew.unsqueeze(1)                                       # β̂ ⊙ w, (E, n_ops)
    mixed: list[list[torch.Tensor]] = [[] for _ in range(cell.steps)]
    rest: list[list[torch.Tensor]] = [[] for _ in range(cell.steps)]
    for g in _groups(cell.steps):
        stride = 2 if cell.reduction and g.sources[0] < 2 else 1
        xs = [states[j] for j in g.sources]
        x = torch.cat([s[:, :cp] for s in xs], dim=1).contiguous(memory_format=fmt)   # (B, S·C/K, H, W)
        out = _source_group(cell, g, x, w_eff, stride)                              # (B, m, C/K, H', W')
        if cp < c:
            by = torch.cat([bypass(s, cp, stride) for s in xs], dim=1).contiguous(memory_format=fmt)
            idx = torch.tensor(g.edges, device=ew.device)                          # (S, m)
            by = _combine(by, ew[idx].unsqueeze(0), per_edge=False)                # (B, m, C − C/K, H', W')
        for t, i in enumerate(g.nodes):
            mixed[i].append(out[:, t])
            if cp < c:
                rest[i].append(by[:, t])
        i = g.sources[-1] - 1  # node i is complete once state i + 1 has been processed (as in fused.py)
        if i < cell.steps:
            node = _sum(mixed[i]) if cp == c else torch.cat([_sum(mixed[i]), _sum(rest[i])], dim=1)
            states.append(channel_shuffle(node.contiguous(memory_format=fmt), k))
    return torch.cat(states[-cell.multiplier:], dim=1)
