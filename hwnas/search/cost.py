"""The cost term of latency- and complexity-controlled search: T and the expected cost Tᵀγ.

T[d, l, e, o] is the cost on target d (a device's lookup table, or params, or FLOPs) of op o
on edge e of cell l, taken at that edge's real position (channels, resolution, stride) —
the same positions `hwnas profile` measures (`hwnas.latency.darts_keys`); `none` costs 0.
All normal cells share γ_normal and all reduction cells γ_reduce, so

    E[cost_d] = Σ_l Σ_e Σ_o T[d, l, e, o] · γ_{type(l)}[e, o]
              = ⟨T_normal[d], γ_normal⟩ + ⟨T_reduce[d], γ_reduce⟩,

which is linear, hence differentiable, in the relaxed weights γ. Parts every architecture
pays (stem, preprocessing, head) are constants and do not enter the gradient.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from hwnas.config import COMPLEXITY
from hwnas.errors import HwnasError
from hwnas.latency import darts_keys as dk
from hwnas.latency.space import SpaceConfig
from hwnas.search.lambda_max import one_hot
from hwnas.spaces.genotype import edge_ops, num_edges
from hwnas.spaces.network import count_flops
from hwnas.spaces.ops import PRIMITIVES, make_op


class CostModel(nn.Module):
    """Per-target cost matrices, reduced per cell type; `expected` gives Tᵀγ per target."""

    def __init__(self, T: torch.Tensor, reduction: list[bool], names: list[str], units: list[str]):
        super().__init__()
        if T.dim() != 4 or T.shape[1] != len(reduction) or T.shape[0] != len(names):
            raise ValueError(f"T must be (targets, cells, edges, ops); got {tuple(T.shape)}")
        red = torch.tensor(reduction)
        self.register_buffer("T", T.float())
        self.register_buffer("T_normal", T[:, ~red].sum(1).float())   # (D, E, O)
        self.register_buffer("T_reduce", T[:, red].sum(1).float())    # (D, E, O)
        self.names, self.units = list(names), list(units)

    @property
    def n_targets(self) -> int:
        return self.T.shape[0]

    def expected(self, w_normal: torch.Tensor, w_reduce: torch.Tensor) -> torch.Tensor:
        """(D,) expected cost of the relaxed architecture: Tᵀγ for each target."""
        return (self.T_normal * w_normal).sum((1, 2)) + (self.T_reduce * w_reduce).sum((1, 2))

    def of_genotype(self, genotype) -> torch.Tensor:
        """(D,) the cost of a discrete genotype: Tᵀγ with γ one-hot on its op per edge (`none` elsewhere)."""
        n_ops, device = self.T_normal.shape[-1], self.T_normal.device
        ops_n, ops_r = edge_ops(genotype)
        return self.expected(one_hot(ops_n, n_ops, device), one_hot(ops_r, n_ops, device))

    def max_cost(self) -> torch.Tensor:
        """(D,) the largest cost any architecture of the space can have: Σ_e max_o T_normal[e, o] +
        Σ_e max_o T_reduce[e, o] (all normal cells share one op per edge, so the max is taken after
        summing over them; Σ_l Σ_e max_o T would count, on an edge whose dearest op differs between
        cells, ops no single architecture holds together). This is the bound on how much breaking a
        network can save, the `Tᵀ1` of Theorem 1 here (with one op per edge; a 0/1 gate per op, as
        in pruning, would make it Σ over all ops)."""
        return self.T_normal.amax(dim=2).sum(1) + self.T_reduce.amax(dim=2).sum(1)

    @classmethod
    def from_tables(cls, tables: list, space: SpaceConfig, corrected: bool = True) -> CostModel:
        """Latency targets from lookup tables; each table must measure this search's space."""
        if not tables:
            raise HwnasError("no latency table given")
        mats, names = [], []
        for t in tables:
            _check_space(t, space)
            mats.append(t.edge_costs(corrected=corrected))
            names.append(Path(t.path).stem if t.path else t.backend)
        cells = dk.cell_positions(space)
        return cls(torch.stack(mats), [c.reduction for c in cells], names, ["ms"] * len(tables))

    @classmethod
    def complexity(cls, kind: str, space: SpaceConfig) -> CostModel:
        """`params` (parameters of each op) or `flops` (FLOPs of one sample through it)."""
        if kind not in COMPLEXITY:
            raise HwnasError(f"unknown --cost {kind!r}; choose latency (with --table), params or flops")
        cells = dk.cell_positions(space)
        T = torch.zeros(1, len(cells), num_edges(space.steps), len(PRIMITIVES))
        cache: dict[tuple, float] = {}
        for cell in cells:
            e = 0
            for i in range(space.steps):
                for j in range(i + 2):
                    stride, hw = cell.edge_position(j)
                    for o, op in enumerate(PRIMITIVES):
                        if op != "none":
                            key = (op, cell.c, stride, hw)
                            if key not in cache:
                                cache[key] = _op_complexity(kind, op, cell.c, stride, hw)
                            T[0, cell.index, e, o] = cache[key]
                    e += 1
        return cls(T, [c.reduction for c in cells], [kind], [kind])


def _op_complexity(kind: str, op: str, c: int, stride: int, hw: tuple[int, int]) -> float:
    module = make_op(op, c, stride, affine=True).eval()
    if kind == "params":
        return float(sum(p.numel() for p in module.parameters()))
    return count_flops(module, (c, *hw))


def _check_space(table, space: SpaceConfig) -> None:
    ts = table.space
    fields = ("space", "input_h", "input_w", "in_channels", "channels", "layers", "steps", "multiplier")
    diff = [f"{f} {getattr(ts, f)} (table) vs {getattr(space, f)} (search)" for f in fields
            if getattr(ts, f) != getattr(space, f)]
    if diff:
        raise HwnasError(f"latency table {table.path} measures another space than this search: {'; '.join(diff)}; "
                         f"profile this one with: hwnas profile --device {table.backend} {space.cli_args()}")
