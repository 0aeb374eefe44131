"""The cost term of ResNet18 gate pruning: T(e) per gate choice and the expected cost Tᵀγ.

From a `resnet18` lookup table (`hwnas profile --space resnet18`), for every block b and
width choice f ∈ BRANCH_CHOICES, T_branch[b, f] is the latency of that block's branch at f
with its glue (add + ReLU, or the ReLU alone), and for every projection block
T_shortcut[p] = (0, latency of the 1×1 projection). Stem and head are a constant every gate
set pays. For a one-hot γ, constant + Tᵀγ is exactly the table's prediction for that
pruned network (`LatencyTable.predict`, calibration correction included: each key is scaled
by its kind's factor, pays the correction's cost of its weights if it has one, and the intercept
joins the constant). Under the relaxation the gates
are independent categoricals, so E[cost] = constant + Tᵀγ, linear in γ.

Tᵀ1 of Theorem 1 is the most that any change of gates can save: with a categorical choice
per gate it is Σ_gates max_choice T, the variable cost of the intact network (in the paper's
0/1 gates, the cost of all gates on).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from hwnas.errors import HwnasError
from hwnas.latency import resnet_keys as rk
from hwnas.latency.space import SpaceConfig
from hwnas.spaces.gated_resnet import BRANCH_CHOICES, PROJECTIONS, GateSet


class GateCost(nn.Module):
    def __init__(self, t_branch: torch.Tensor, t_shortcut: torch.Tensor, constant: float, name: str = "latency",
                 unit: str = "ms"):
        super().__init__()
        self.register_buffer("t_branch", t_branch.float())       # (blocks, 5)
        self.register_buffer("t_shortcut", t_shortcut.float())   # (projections, 2)
        self.constant, self.name, self.unit = float(constant), name, unit

    def expected(self, w_branch: torch.Tensor, w_shortcut: torch.Tensor) -> torch.Tensor:
        """Tᵀγ (the gate-dependent part of the expected cost), differentiable in the gate weights."""
        return (self.t_branch * w_branch).sum() + (self.t_shortcut * w_shortcut).sum()

    def of(self, gates: GateSet) -> float:
        """Cost of one gate set: constant + Tᵀγ at its one-hot γ."""
        wb, ws = gates.one_hot(self.t_branch.device)
        return self.constant + float(self.expected(wb, ws))

    def bound(self) -> float:
        """Tᵀ1 of Theorem 1: Σ over gates of the largest choice cost."""
        return float(self.t_branch.amax(1).sum() + self.t_shortcut.amax(1).sum())

    @classmethod
    def from_table(cls, table, space: SpaceConfig | None = None) -> GateCost:
        """T from a resnet18 `LatencyTable`; `space` (when given) must be the one the table measured."""
        ts = table.space
        if ts.space != "resnet18":
            raise HwnasError(f"latency table {table.path} measures the {ts.space} space; pruning needs a resnet18 "
                             f"table: hwnas profile --space resnet18 ...")
        if space is not None:
            fields = ("input_h", "input_w", "in_channels", "num_classes")
            diff = [f"{f} {getattr(ts, f)} (table) vs {getattr(space, f)} (data)" for f in fields
                    if getattr(ts, f) != getattr(space, f)]
            if diff:
                raise HwnasError(f"latency table {table.path} measures another ResNet18 than this one: "
                                 f"{'; '.join(diff)}; profile it with: hwnas profile --device {table.backend} "
                                 f"{SpaceConfig(**{**space.to_dict(), 'batch': ts.batch}).cli_args()}")
        corr = table.correction or {}
        scale, default = corr.get("scale", {}), corr.get("default_scale", 1.0)
        per_param = corr.get("per_param_m", 0.0) / 1e6

        def cost(keys) -> float:
            return sum(table.lookup(k) * scale.get(rk.op_kind(k.op), default)
                       + (per_param * table.key_params(k) if per_param else 0.0) for k in keys)

        positions = rk.block_positions(ts)
        t_branch = torch.zeros(len(positions), len(BRANCH_CHOICES))
        t_shortcut = torch.zeros(len(PROJECTIONS), 2)
        p = 0
        for b, block in enumerate(positions):
            shortcut = cost(rk.block_keys(ts, block, 1.0)) - cost(rk.block_keys(ts, block, 1.0, shortcut=False)) \
                if block.projection else 0.0
            for j, f in enumerate(BRANCH_CHOICES):
                t_branch[b, j] = cost(rk.block_keys(ts, block, f)) - shortcut
            if block.projection:
                t_shortcut[p, 1] = shortcut
                p += 1
        constant = cost([rk.stem_key(ts), rk.head_key(ts)]) + corr.get("intercept", 0.0)
        name = Path(table.path).stem if table.path else table.backend
        return cls(t_branch, t_shortcut, constant, name)
