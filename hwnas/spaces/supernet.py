"""The DARTS supernet: mixed ops on every edge of a search cell, cells stacked into a network.

The supernet holds no architecture parameters: its forward takes the relaxed op weights
(one row per edge, one column per op of `OPS`) computed by the search code, so the same
module serves softmax, Gumbel-softmax, sigmoid, a λ-hypernet or a fixed architecture.

Hard (one-hot) weights can come with the sampled op index per edge; then only that op is
evaluated on the edge, which is what makes hard Gumbel-softmax cheap.

Speed (same arithmetic as the reference, fewer passes): `none` is never computed (its
output and its gradients are zero); relu(h) is computed once per state and shared by the
conv ops of every edge that reads that state; weighted sums use fused multiply-adds.
With `fused=True` (the default) soft weights take the per-source fused path of
`hwnas.spaces.fused` (same parameters, same math, far fewer kernel calls); the per-edge
`MixedOp` path stays as the readable reference and serves hard (indexed) samples and, on the
CPU, forward passes without gradients (evaluation), where it is the faster one.

`partial_channels` K > 1 is PC-DARTS (`hwnas.spaces.partial`): each edge's ops see C/K of its
input's channels (they are built with C/K), the rest bypass them, and the forward takes edge
weights β̂ (one per edge; None: 1). Fused as well; K = 1 is the full-channel DARTS cell.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hwnas.spaces import partial
from hwnas.spaces.depthwise import run_op
from hwnas.spaces.fused import fused_cell_forward
from hwnas.spaces.genotype import num_edges
from hwnas.spaces.ops import OPS, PRIMITIVES, FactorizedReduce, ReLUConvBN, make_op

# Without gradients on the CPU (an epoch's evaluation) the per-edge path is the faster one: the fused path's gain
# is in the backward pass, and its forward over m-fold repeated inputs is slower (measured, one thread, 28×28,
# 8 channels, 5 cells, channels-last: per-edge 1.8× faster at batch 64, 3× at the evaluation's batch 256).
# True restores the fused forward there (benchmarks/search_speed.py's before/after row).
FUSED_WITHOUT_GRAD = False


@dataclass(frozen=True)
class SupernetConfig:
    channels: int = 16           # C of the first cells (doubled at each reduction)
    layers: int = 8              # cells; reductions at layers//3 and 2*layers//3
    num_classes: int = 10
    in_channels: int = 3
    steps: int = 4               # intermediate nodes per cell
    multiplier: int = 4          # how many of the last states are concatenated
    stem_multiplier: int = 3
    fused: bool = True           # soft weights: run each cell's edges fused per source state (fused.py)
    partial_channels: int = 1    # K: PC-DARTS, 1/K of each edge's channels through its ops (partial.py); 1: off

    @property
    def n_edges(self) -> int:
        return num_edges(self.steps)

    @property
    def n_ops(self) -> int:
        return len(PRIMITIVES)


def reduction_layers(layers: int) -> tuple[int, int]:
    """Cell indices that reduce (DARTS: at 1/3 and 2/3 of the depth)."""
    return layers // 3, 2 * layers // 3


class MixedOp(nn.Module):
    """ō(x) = Σ_o w_o · o(x) over all ops; pools get a BN(affine=False) as in DARTS."""

    def __init__(self, channels: int, stride: int):
        super().__init__()
        self.ops = nn.ModuleList()
        for name in PRIMITIVES:
            op = make_op(name, channels, stride, affine=False)
            if OPS[name].kind == "pool":
                op = nn.Sequential(op, nn.BatchNorm2d(channels, affine=False))
            self.ops.append(op)
        self._active = [i for i, name in enumerate(PRIMITIVES) if OPS[name].kind != "zero"]

    def forward(self, x: torch.Tensor, x_relu: torch.Tensor, w: torch.Tensor,
                index: int | None = None) -> torch.Tensor:
        if index is not None:  # hard sample: evaluate the chosen op only; w[index] carries the gradient
            return w[index] * run_op(self.ops[index], x, x_relu)
        out = None
        for i in self._active:
            y = run_op(self.ops[i], x, x_relu)
            out = y * w[i] if out is None else torch.addcmul(out, y, w[i])
        return out


class SearchCell(nn.Module):
    """Two inputs, `steps` nodes each summing mixed ops over all earlier states, concat of the last `multiplier`."""

    def __init__(self, steps: int, multiplier: int, c_pp: int, c_p: int, c: int, reduction: bool,
                 reduction_prev: bool, fused: bool = False, partial_channels: int = 1):
        super().__init__()
        self.reduction = reduction
        self.fused = fused  # a plain attribute, not state: the parameters are the same either way
        self.partial = partial_channels  # K: the edges' ops have C/K channels
        self.steps, self.multiplier = steps, multiplier
        self.preprocess0 = FactorizedReduce(c_pp, c, affine=False) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(c_p, c, 1, 1, 0, affine=False)
        self.edges = nn.ModuleList(
            MixedOp(c // partial_channels, 2 if reduction and j < 2 else 1) for i in range(steps) for j in range(i + 2)
        )

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor,
                indices: list[int] | None = None, edge_weights: torch.Tensor | None = None) -> torch.Tensor:
        if self.partial > 1:
            if self.fused and indices is None:
                return partial.fused_forward(self, s0, s1, weights, edge_weights, self.partial)
            return partial.per_edge_forward(self, s0, s1, weights, indices, edge_weights, self.partial)
        if edge_weights is not None:
            raise ValueError("edge weights (PC-DARTS edge normalisation) need a partial-channel supernet")
        fused = self.fused and (torch.is_grad_enabled() or FUSED_WITHOUT_GRAD or s0.device.type != "cpu")
        if fused and indices is None:
            return fused_cell_forward(self, s0, s1, weights)
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        relus = [F.relu(s) for s in states]
        offset = 0
        for _ in range(self.steps):
            s = None
            for j, h in enumerate(states):
                e = offset + j
                y = self.edges[e](h, relus[j], weights[e], None if indices is None else indices[e])
                s = y if s is None else s + y
            offset += len(states)
            states.append(s)
            relus.append(F.relu(s))
        return torch.cat(states[-self.multiplier:], dim=1)


class Supernet(nn.Module):
    """Stem → cells (reductions at 1/3, 2/3) → global pool → linear."""

    def __init__(self, cfg: SupernetConfig):
        super().__init__()
        self.cfg = cfg
        c_curr = cfg.stem_multiplier * cfg.channels
        self.stem = nn.Sequential(nn.Conv2d(cfg.in_channels, c_curr, 3, padding=1, bias=False), nn.BatchNorm2d(c_curr))
        c_pp, c_p, c_curr = c_curr, c_curr, cfg.channels
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(cfg.layers):
            reduction = i in reduction_layers(cfg.layers)
            if reduction:
                c_curr *= 2
            self.cells.append(SearchCell(cfg.steps, cfg.multiplier, c_pp, c_p, c_curr, reduction, reduction_prev,
                                         fused=cfg.fused, partial_channels=cfg.partial_channels))
            reduction_prev = reduction
            c_pp, c_p = c_p, cfg.multiplier * c_curr
        self.classifier = nn.Linear(c_p, cfg.num_classes)

    def forward(self, x: torch.Tensor, w_normal: torch.Tensor, w_reduce: torch.Tensor,
                idx_normal: list[int] | None = None, idx_reduce: list[int] | None = None,
                e_normal: torch.Tensor | None = None, e_reduce: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, C_in, H, W); w_*: (n_edges, n_ops) relaxed weights; idx_*: sampled op per edge (hard mode);
        e_*: (n_edges,) edge weights β̂ of a partial-channel supernet (None: 1)."""
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            w, idx, e = (w_reduce, idx_reduce, e_reduce) if cell.reduction else (w_normal, idx_normal, e_normal)
            s0, s1 = s1, cell(s0, s1, w, idx, e)
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(s1, 1), 1))  # (B, num_classes)
