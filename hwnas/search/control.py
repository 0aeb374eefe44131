"""Performance control in the search: the cost targets, λ per step, and Λ from Theorem 1.

- `ControlConfig` says what is controlled (latency from lookup tables, params or FLOPs),
  whether α is a λ-hypernet, and how λ is chosen (fixed, or sampled over [0, Λ]).
- `LambdaSchedule` sets the objective's λ (and the hypernet's input λ/Λ) before each step.
- `estimate_lambda_max` trains the supernet briefly, then evaluates sampled valid
  architectures to estimate S, and returns Λ = (L̄ − S) / Tᵀ1 with its parts.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from hwnas.errors import HwnasError
from hwnas.evaluation import batch_statistics
from hwnas.search.cost import COMPLEXITY, CostModel
from hwnas.search.hypernet import HYPERNETS, LAMBDA_SAMPLING, make_hypernet, sample_lambda
from hwnas.search.lambda_max import (LambdaMax, architecture_loss, label_entropy, lambda_max, one_hot,
                                     sample_valid, summarise_losses)
from hwnas.search.objective import ArchParams, RelaxedArch, SearchObjective

COSTS = ("none", "latency", *COMPLEXITY)


@dataclass(frozen=True)
class ControlConfig:
    cost: str = "none"                 # none | latency (needs tables) | params | flops
    tables: tuple[str, ...] = ()       # lookup tables, one λ entry per table
    hypernet: str = "none"             # none (fixed λ) | linear | mlp
    lam: float = 0.0                   # the fixed λ of a plain search (hypernet none)
    lambda_max: float | None = None    # Λ; None: estimated (Theorem 1)
    sampling: str = "uniform"          # λ per step: uniform or log-uniform over [0, Λ]
    warmup_epochs: int = 5             # single-path supernet training before S is estimated
    samples: int = 64                  # valid architectures evaluated for S
    eval_batches: int = 4              # validation batches per evaluated architecture

    def __post_init__(self) -> None:
        object.__setattr__(self, "tables", tuple(str(t) for t in self.tables))
        if self.tables and self.cost == "none":
            object.__setattr__(self, "cost", "latency")
        if self.cost not in COSTS:
            raise HwnasError(f"unknown --cost {self.cost!r}; choose one of {', '.join(COSTS)}")
        if self.cost == "latency" and not self.tables:
            raise HwnasError("--cost latency needs at least one --table (made by hwnas profile)")
        if self.cost != "latency" and self.tables:
            raise HwnasError(f"--table gives latency costs; it cannot be combined with --cost {self.cost}")
        if self.hypernet not in HYPERNETS:
            raise HwnasError(f"unknown --hypernet {self.hypernet!r}; choose one of {', '.join(HYPERNETS)}")
        if self.hypernet != "none" and self.cost == "none":
            raise HwnasError("a λ-hypernet needs a cost: pass --table T.csv, or --cost params|flops")
        if self.sampling not in LAMBDA_SAMPLING:
            raise HwnasError(f"unknown --lambda-sampling {self.sampling!r}; choose {', '.join(LAMBDA_SAMPLING)}")
        if self.lam < 0 or (self.lambda_max is not None and self.lambda_max <= 0):
            raise HwnasError("λ must be non-negative and Λ positive")
        if self.samples < 1 or self.eval_batches < 1 or self.warmup_epochs < 0:
            raise HwnasError("--lambda-samples and evaluation batches must be positive, warm-up epochs non-negative")

    @property
    def active(self) -> bool:
        return self.cost != "none"

    @property
    def needs_lambda_max(self) -> bool:
        return self.hypernet != "none"


def build_cost(cfg: ControlConfig, space) -> CostModel | None:
    """The cost model of this search's space (a `hwnas.latency.space.SpaceConfig`), or None."""
    if cfg.cost == "none":
        return None
    if cfg.cost == "latency":
        from hwnas.latency.table import LatencyTable

        return CostModel.from_tables([LatencyTable.load(t) for t in cfg.tables], space)
    return CostModel.complexity(cfg.cost, space)


def build_arch(cfg: ControlConfig, n_edges: int, n_ops: int, n_targets: int, generator: torch.Generator) -> nn.Module:
    """α itself, or a λ-hypernet producing it."""
    if cfg.hypernet == "none":
        return ArchParams(n_edges, n_ops, generator=generator)
    return make_hypernet(cfg.hypernet, n_edges, n_ops, n_targets, generator)


class LambdaSchedule:
    """Chooses λ for each step and sets it on the objective (λ for the penalty, λ/Λ for a hypernet)."""

    def __init__(self, cfg: ControlConfig, n_targets: int, device: torch.device, seed: int):
        self.cfg, self.device = cfg, device
        self.n_targets = n_targets
        self.generator = torch.Generator().manual_seed(seed)
        self.lambda_max: torch.Tensor | None = None

    def set_lambda_max(self, values: list[float]) -> None:
        self.lambda_max = torch.tensor(values, dtype=torch.float32)

    def apply(self, obj: SearchObjective, lam: torch.Tensor | None = None) -> None:
        """Set λ on the objective: `lam` if given, else sampled (hypernet) or the fixed λ."""
        if not self.cfg.active:
            return
        if lam is None:
            lam = (sample_lambda(self.lambda_max, self.cfg.sampling, self.generator) if self.cfg.needs_lambda_max
                   else torch.full((self.n_targets,), float(self.cfg.lam)))
        obj.lam = lam.to(self.device, non_blocking=True)
        if not self.cfg.needs_lambda_max:
            obj.lam_input = None
        elif self.lambda_max is None:  # the warm-up before Λ is known runs at λ = 0 only
            if torch.any(lam != 0):
                raise RuntimeError("λ ≠ 0 asked for before Λ is known")
            obj.lam_input = torch.zeros_like(lam).to(self.device)
        else:
            obj.lam_input = (lam / self.lambda_max).to(self.device, non_blocking=True)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "lambda_max": self.lambda_max}

    def load_state_dict(self, s: dict) -> None:
        self.generator.set_state(s["generator"])
        self.lambda_max = s["lambda_max"]


@torch.no_grad()
def estimate_lambda_max(obj: SearchObjective, cost: CostModel, val_batches: Callable, y_val: torch.Tensor,
                        num_classes: int, cfg: ControlConfig, seed: int, steps: int = 4,
                        multiplier: int = 4) -> LambdaMax:
    """Λ of Theorem 1 on the (briefly trained) supernet of `obj`.

    Sub-networks are evaluated with batch statistics (BN in training mode): the running
    statistics belong to the mixture the supernet was trained as, not to one sub-network.
    Buffers are restored afterwards, so the estimate leaves no trace in the search.
    """
    net = obj.net
    n_edges, n_ops = obj.net.cfg.n_edges, obj.net.cfg.n_ops
    archs, draws = sample_valid(cfg.samples, n_edges, torch.Generator().manual_seed(seed), steps, multiplier)
    device = next(net.parameters()).device
    losses = []
    with batch_statistics(net):
        for ops_n, ops_r in archs:
            ra = RelaxedArch(one_hot(ops_n, n_ops, device), one_hot(ops_r, n_ops, device), list(ops_n), list(ops_r))
            batches = itertools.islice(val_batches(), cfg.eval_batches)
            losses.append(architecture_loss(lambda x, ra=ra: obj.logits(x, ra), batches))
    l_bar = label_entropy(y_val, num_classes)
    s = max(losses)
    bound = cost.max_cost().tolist()
    lmax = lambda_max(l_bar, s, bound)
    return LambdaMax(lmax, l_bar, s, bound, cost.names, len(archs), draws, summarise_losses(losses),
                     f"max validation loss of {len(archs)} valid architectures (ops uniform per edge, {draws - len(archs)} "
                     f"broken draws rejected) on the supernet after {cfg.warmup_epochs} warm-up epochs, "
                     f"{cfg.eval_batches} validation batches each, batch-statistics BN")
