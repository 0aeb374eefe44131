"""Performance control in the search: the cost targets, λ per step, and Λ from Theorem 1.

- `ControlConfig` says what is controlled (latency from lookup tables, params or FLOPs),
  whether α is a λ-hypernet, and how λ is chosen (fixed, or sampled over [0, Λ]).
- `LambdaSchedule` sets the objective's λ (and the hypernet's input λ/Λ) before each step.
- `estimate_lambda_max` evaluates sampled valid architectures on the supernet: S and
  Λ = (L̄ − S) / Tᵀ1 of Theorem 1, and the λ at which the cheapest architecture becomes
  optimal (`cheapest_optimal_lambda`), with their parts. A λ-hypernet search calls it when its
  λ = 0 phase ends (`Search.estimate_lambda_max`): right after the single-path warm-up the
  supernet was still at chance on digits and the rule read noise (Λ 11.6 in one seed, 95–100 in
  two others on one table); on the weights of the λ = 0 phase it gave 414–419 and every seed's
  λ = Λ network was the space's cheapest.

Which Λ a search trains over (`lambda_max_source` in lambda_max.json):
- `none` excluded (the default of a cost-controlled search): no network of the space is
  broken, so Theorem 1 holds for every λ and bounds nothing; the useful range ends where the
  cheapest architecture becomes optimal, Λ = margin · max_a (L_c − L_a)/(T_a − T_c) over the
  sampled architectures a (c: the cheapest op on every edge), so that at λ = Λ the cheapest
  network wins by that margin. The relaxed search lags that discrete rule. Estimated right after the
  warm-up (the supernet at chance), the rule read noise and the λ = Λ network of the quickstart's
  search stopped 17–34 % above the cheapest derivable network with margin 2, 0–11 % with 8. Estimated
  when the λ = 0 phase ends (now), the rule is 50–52 on the quickstart's table in three seeds: with
  margin 8 the hypernet reached the cheapest at 0.55–1.67 × the rule, i.e. in the first 7–21 % of
  [0, Λ], and most λ draws trained the cheapest network; with the default 3 it reaches it at 0.85–1.57 ×
  the rule (28–52 % of [0, Λ]; one seed of three ends 3 % above it) and the front's ends are the same
  (λ = Λ at 0.47 / 0.41 / 0.40 × the λ = 0 latency, against 0.45 / 0.41 / 0.40 with 8). lambda_max.json
  records the cheapest derivable network and its cost (`cheapest_genotype`).
- `none` allowed: Theorem 1's (L̄ − S)/Tᵀ1 when positive, else its S = 0 bound L̄/Tᵀ1.
"""
from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable

import torch
from torch import nn

from hwnas.config import ControlConfig  # its home; imported from here too
from hwnas.evaluation import batch_statistics, merged
from hwnas.search.cost import CostModel
from hwnas.search.inherit import recalibrate_bn
from hwnas.search.hypernet import make_hypernet, sample_lambda
from hwnas.search.lambda_max import (LambdaMax, architecture_loss, cheapest_optimal_lambda, label_entropy,
                                     lambda_max, one_hot, sample_valid, summarise_losses)
from hwnas.search.objective import ArchParams, RelaxedArch, SearchObjective
from hwnas.spaces.genotype import Genotype, derive_genotype
from hwnas.spaces.ops import PRIMITIVES



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
    """Chooses λ for each step and sets it on the objective (λ for the penalty, λ/Λ for a hypernet).

    A λ-hypernet's search starts with `zero_share` of its `total_steps` at λ = 0 only, then samples λ over
    [0, Λ]. Sampled from the first step, nine steps in ten land where the answer is already a cheap cell
    (the λ at which the networks change lies well below Λ), so the weights train mostly cheap cells and α(0)
    settles on a cheaper network than the unpenalised search finds: on the quickstart's table the λ = 0
    network measured 0.073–0.091 ms predicted against 0.083–0.095 for plain DARTS searches (3 seeds each).
    The λ = 0 phase shapes the weights the other way: they learn the convolutions, and the cheap end then
    keeps some that a fixed-λ search at the same λ drops. With the first half at λ = 0 the hypernet's
    network at ¼–¾Λ was 1.12–1.22× the predicted latency of a fixed-λ search's at that λ (digits, mlp, 3
    seeds; fixed-λ α searches on the hypernet's frozen weights kept most of them, so it is mostly the
    weights); with the first quarter (the default) 0.98–1.02× at every λ, the λ = 0 end 0.99× that of an
    unpenalised search, and the quickstart's table's fronts 0.43 / 0.43 / 0.37× from λ = 0 to Λ (0.46 / 0.38 /
    0.38× with the half)."""

    def __init__(self, cfg: ControlConfig, n_targets: int, device: torch.device, seed: int, total_steps: int = 0):
        self.cfg, self.device = cfg, device
        self.n_targets = n_targets
        self.generator = torch.Generator().manual_seed(seed)
        self.lambda_max: torch.Tensor | None = None
        self.zero_steps = round(cfg.zero_share * total_steps) if cfg.needs_lambda_max else 0
        self.step = 0   # λ's drawn so far (checkpointed)

    def set_lambda_max(self, values: list[float]) -> None:
        self.lambda_max = torch.tensor(values, dtype=torch.float32)

    def apply(self, obj: SearchObjective, lam: torch.Tensor | None = None) -> None:
        """Set λ on the objective: `lam` if given, else sampled (hypernet) or the fixed λ."""
        if not self.cfg.active:
            return
        if lam is None and self.cfg.needs_lambda_max:
            # the λ = 0 phase runs before Λ is known (it is estimated when the phase ends: `zero_phase_done`)
            self.step += 1
            lam = (torch.zeros(self.n_targets) if self.lambda_max is None or self.step <= self.zero_steps
                   else sample_lambda(self.lambda_max, self.cfg.sampling, self.generator))
        elif lam is None:
            lam = torch.full((self.n_targets,), float(self.cfg.lam))
        obj.lam = lam.to(self.device, non_blocking=True)
        if not self.cfg.needs_lambda_max:
            obj.lam_input = None
        elif self.lambda_max is None:  # the warm-up before Λ is known runs at λ = 0 only
            if torch.any(lam != 0):
                raise RuntimeError("λ ≠ 0 asked for before Λ is known")
            obj.lam_input = torch.zeros_like(lam).to(self.device)
        else:
            obj.lam_input = (lam / self.lambda_max).to(self.device, non_blocking=True)

    def zero_phase_done(self) -> bool:
        """Whether the λ = 0 phase is over: the next sampled step would need Λ."""
        return self.step >= self.zero_steps

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "lambda_max": self.lambda_max, "step": self.step}

    def load_state_dict(self, s: dict) -> None:
        self.generator.set_state(s["generator"])
        self.lambda_max = s["lambda_max"]
        self.step = s.get("step", 0)


def cheapest_ops(cost: CostModel, target: int, allowed: list[int]) -> tuple[list[int], list[int]]:
    """The cheapest allowed op on every edge of the normal and the reduction cell, on one target."""
    def pick(T: torch.Tensor) -> list[int]:
        sub = T[target][:, allowed]                     # (E, allowed)
        return [allowed[i] for i in sub.argmin(dim=1).tolist()]
    return pick(cost.T_normal), pick(cost.T_reduce)


def cheapest_genotype(cost: CostModel, target: int, allowed: list[int], steps: int = 4, multiplier: int = 4
                      ) -> Genotype:
    """The cheapest network a search can derive on one target: the DARTS rule (two inputs per node, one
    op per edge) applied to minus the edge costs, so each node keeps its two cheapest edges with their
    cheapest allowed op. It is where λ = Λ should arrive (issue #10.4); lambda_max.json records it."""
    def weights(T: torch.Tensor) -> torch.Tensor:
        w = torch.full_like(T[target], float("-inf"))
        w[:, allowed] = -T[target][:, allowed]
        return w
    return derive_genotype(weights(cost.T_normal), weights(cost.T_reduce), steps, multiplier)


@torch.no_grad()
def estimate_lambda_max(obj: SearchObjective, cost: CostModel, val_batches: Callable, num_classes: int,
                        cfg: ControlConfig, seed: int, steps: int = 4,
                        multiplier: int = 4, recal_batches: list | None = None) -> dict:
    """Λ on the (briefly trained) supernet of `obj`, with its parts: the lambda_max.json record.

    Sampled valid architectures (ops uniform per edge over the candidate ops) and the cheapest one
    per target are evaluated on the same validation batches. The supernet's running BN statistics
    belong to what it was trained as, not to one sub-network: with `recal_batches` (training
    batches) each sub-network's BN statistics are re-estimated on them in a copy of the supernet
    (`hwnas.search.inherit.recalibrate_bn`), as `hwnas pareto` evaluates; without, batch statistics
    of the validation batches are used. The search's supernet is left untouched either way. L̄ is the
    label entropy of the same samples that S is measured on.
    """
    net = obj.net
    n_edges, n_ops = obj.net.cfg.n_edges, obj.net.cfg.n_ops
    allowed = cfg.allowed_ops
    archs, draws = sample_valid(cfg.samples, n_edges, torch.Generator().manual_seed(seed), steps, multiplier,
                                allowed=allowed)
    cheapest = [cheapest_ops(cost, d, allowed) for d in range(cost.n_targets)]
    device = next(net.parameters()).device
    batches = list(itertools.islice(val_batches(), cfg.eval_batches))
    # recalibrated, the probe evaluates in eval mode, where a forward of several batches is exact: the batches
    # are merged once here, not again for each of the architectures
    eval_batches = list(merged(batches)) if recal_batches else batches
    recal = list(merged(recal_batches)) if recal_batches else None
    losses, costs = [], []
    probe = copy.deepcopy(net) if recal_batches else net
    with batch_statistics(net):
        for ops_n, ops_r in [*archs, *cheapest]:
            ra = RelaxedArch(one_hot(ops_n, n_ops, device), one_hot(ops_r, n_ops, device), list(ops_n), list(ops_r))
            forward = lambda x, ra=ra: probe(x, ra.w_normal, ra.w_reduce, ra.idx_normal, ra.idx_reduce)  # noqa: E731
            if recal:
                recalibrate_bn(probe, forward, recal)
            losses.append(architecture_loss(forward, eval_batches))
            costs.append(cost.expected(ra.w_normal, ra.w_reduce).tolist())
    n = len(archs)
    l_bar = label_entropy(torch.cat([y for _, y in batches]), num_classes)
    s = max(losses[:n])
    bound = cost.max_cost().tolist()
    theorem = lambda_max(l_bar, s, bound)
    record = LambdaMax(theorem, l_bar, s, bound, cost.names, n, draws, summarise_losses(losses[:n]),
                       f"max validation loss of {n} valid architectures (ops uniform per edge over "
                       f"{len(allowed)} candidate ops, {draws - n} broken draws rejected) on the supernet after "
                       f"{cfg.warmup_epochs} warm-up epochs, {len(batches)} validation batches each "
                       f"({sum(len(y) for _, y in batches)} samples, the same ones L̄ is computed on), "
                       + (f"BN recalibrated on {len(recal_batches)} training batches" if recal_batches
                          else "batch-statistics BN")).to_dict()
    # the cheapest network a search can derive, per target, priced as the search prices a genotype
    derivable = [cheapest_genotype(cost, d, allowed, steps, multiplier) for d in range(cost.n_targets)]
    derivable_cost = [float(cost.of_genotype(g)[d]) for d, g in enumerate(derivable)]
    rule = []
    for d in range(cost.n_targets):
        l_c, t_c = losses[n + d], costs[n + d][d]
        rule.append(cheapest_optimal_lambda(l_c, losses[:n], [c[d] for c in costs[:n]], t_c))
    record.update(lambda_max_theorem=theorem, none_excluded=cfg.none_excluded,
                  sampled={"loss": losses[:n], "cost": costs[:n]},
                  cheapest={"ops_normal": [PRIMITIVES[i] for i in cheapest[0][0]],
                            "ops_reduce": [PRIMITIVES[i] for i in cheapest[0][1]],
                            "loss": losses[n:], "cost": [costs[n + d][d] for d in range(cost.n_targets)],
                            "genotype": [str(g) for g in derivable], "genotype_cost": derivable_cost},
                  lambda_cheapest_optimal=rule, lambda_margin=cfg.lambda_margin)
    record["lambda_max"], record["lambda_max_source"] = choose_lambda_max(record, cfg)
    return record


def choose_lambda_max(rec: dict, cfg: ControlConfig) -> tuple[list[float], str]:
    """(Λ per target, the rule that set it); see the module docstring."""
    l_bar, s, bound = rec["label_entropy"], rec["worst_valid_loss"], rec["cost_bound"]
    rule = rec["lambda_cheapest_optimal"]
    if cfg.none_excluded and all(math.isfinite(r) and r > 0 for r in rule):
        return [cfg.lambda_margin * r for r in rule], (
            f"{cfg.lambda_margin:g} × the λ at which the cheapest architecture becomes optimal among "
            f"{rec['samples']} sampled ones (max (L_c − L_a)/(T_a − T_c)): with `none` excluded no network is "
            f"broken, so Theorem 1 ((L̄ − S)/Tᵀ1 = {_fmt(rec['lambda_max_theorem'])}) bounds nothing")
    if min(rec["lambda_max_theorem"]) > 0 and not cfg.none_excluded:
        return list(rec["lambda_max_theorem"]), "Theorem 1: (L̄ − S)/Tᵀ1"
    # Some valid sub-network is still worse than a constant predictor (S ≥ L̄), or (none excluded) the cheapest
    # architecture is already as accurate as every sample: Theorem 1 with the best case S = 0 still bounds the
    # useful range from above (beyond L̄/Tᵀ1 even a perfect valid network can lose to a broken one). Said, not silent.
    why = (f"the cheapest architecture is as accurate as every sampled one" if cfg.none_excluded else
           f"the sampled worst valid loss S = {s:.3f} ≥ L̄ = {l_bar:.3f}, so (L̄ − S)/Tᵀ1 ≤ 0 on this briefly "
           f"trained supernet")
    return [l_bar / b for b in bound], f"upper bound L̄/Tᵀ1 (Theorem 1 with S = 0): {why}"


def _fmt(values: list[float]) -> str:
    return ", ".join(f"{v:.4g}" for v in values)
