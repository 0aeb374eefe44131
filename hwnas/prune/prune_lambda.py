"""Λ for ResNet18 gate pruning, two ways (both go to lambda_max.json and the plots).

Theorem 1 (`theorem_lambda_max`): L̄ = entropy of the validation labels (the best constant
predictor's cross-entropy; every broken gate set is at best that), S = the largest
validation loss among evaluated valid gate sets (the intact network, the smallest valid one
— every branch removed, projection shortcuts kept — and gate sets drawn uniformly per gate,
broken draws rejected), Tᵀ1 = `GateCost.bound()`; Λ = (L̄ − S)/Tᵀ1. A sampled maximum
under-estimates the supremum, so Λ is if anything over-estimated. With frozen pretrained
weights many valid sub-networks are worse than a constant predictor (S ≥ L̄), and the theorem
then guarantees nothing. Since every gate set the fit can reach is valid (`gate_sampling`),
the Λ trained with (`auto`) is rather the end of the useful range: margin × the λ at which the
cheapest valid gate set becomes optimal among the sampled ones (`cheapest_optimal_lambda`, the
search's rule, imported). The old fallback L̄/Tᵀ1 sat below that λ (MNIST ResNet18: 0.36 against
0.40), so every λ it offered kept the intact network. Theorem 1's value is recorded either way.

Empirical (`empirical_lambda_max`), as the paper approximates Λ: fit the gates alone at fixed
λ on a geometric grid, evaluate the deterministic gate set of each fit: validation accuracy
stays on a plateau, then falls towards chance. Recorded: the end of the plateau (last λ
within 1 point of the pretrained accuracy) and the first λ whose accuracy is within 5 points
of chance (the empirical Λ; `None` when the grid never gets there). `hwnas prune --lambda-max
empirical` trains the hypernet over [0, empirical Λ] instead of Theorem 1's range.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import nn

from hwnas.prune.gate_cost import GateCost
from hwnas.prune.gate_hypernet import FixedGates
from hwnas.prune.gate_sampling import argmax_gates
from hwnas.prune.prune import GateFit
from hwnas.search.lambda_max import (
    LambdaMax,
    cheapest_optimal_lambda,
    lambda_max,
    losses_and_label_entropy,
    summarise_losses,
)
from hwnas.search.relax import RelaxConfig, temperature
from hwnas.spaces.gated_resnet import (
    BLOCKS,
    PROJECTIONS,
    GatedResNet18,
    GateSet,
    allowed_choices,
    materialise,
    round_gates,
)

PLATEAU_DROP = 0.01   # accuracy within 1 point of the pretrained network: still on the plateau
CHANCE_MARGIN = 0.05  # accuracy within 5 points of chance: fallen


def valid_gate_sets(n: int, seed: int, max_draws: int = 100_000,
                    channel_multiple: int = 1) -> tuple[list[GateSet], int]:
    """The intact and the smallest valid gate set, then uniform draws (broken ones rejected; kept widths rounded to
    multiples of `channel_multiple`, `round_gates`); also the draw count."""
    smallest = GateSet((0.0,) * len(BLOCKS), (True,) * len(PROJECTIONS))
    sets, draws = [GateSet(), smallest], 0
    gen = torch.Generator().manual_seed(seed)
    while len(sets) < n and draws < max_draws:
        draws += 1
        g = GateSet.sample(gen)
        if g.is_valid():
            sets.append(round_gates(g, channel_multiple) if channel_multiple > 1 else g)
    return sets[:n], draws


def cheapest_gates(cost: GateCost, channel_multiple: int = 1) -> GateSet:
    """The cheapest valid gate set under `cost` (the most probable one of logits −T) whose kept widths are
    multiples of `channel_multiple`."""
    branch = (-cost.t_branch.cpu()).masked_fill(~allowed_choices(channel_multiple), float("-inf"))
    return argmax_gates(branch, -cost.t_shortcut.cpu())


@torch.no_grad()
def theorem_lambda_max(model: nn.Module | Callable[[GateSet], nn.Module], cost: GateCost, eval_batches: Callable[[], Iterable], num_classes: int,
                       samples: int, seed: int, margin: float = 2.0, channel_multiple: int = 1) -> dict:
    """Λ of Theorem 1 with its parts, the λ at which the cheapest valid gate set becomes optimal, and the Λ to
    train with (`resolve_lambda_max`). `model`: the network (its gate sets materialised as they are) or a
    function from a gate set to its pruned network (`prune.adapt.pruned_network`: BN re-estimated). With
    `channel_multiple` every gate set evaluated keeps multiples of it (`valid_gate_sets`, `cheapest_gates`)."""
    network = model if not isinstance(model, nn.Module) else (lambda g: materialise(model, g))
    sets, draws = valid_gate_sets(samples, seed, channel_multiple=channel_multiple)
    cheap = cheapest_gates(cost, channel_multiple)
    # L̄ on the samples S is measured on (issue #16.4)
    losses, l_bar = losses_and_label_entropy((network(g) for g in [*sets, cheap]), eval_batches(),
                                             num_classes)
    l_cheap, losses = losses[-1], losses[:-1]
    costs = [cost.of(g) for g in sets]
    s, bound = max(losses), cost.bound()
    lam = lambda_max(l_bar, s, [bound])[0]
    rule = cheapest_optimal_lambda(l_cheap, losses, costs, cost.of(cheap))
    worst = sets[int(np.argmax(losses))]
    rec = LambdaMax([lam], l_bar, s, [bound], [cost.name], len(sets), draws, summarise_losses(losses),
                    f"max validation loss of {len(sets)} valid gate sets (intact, smallest valid, "
                    f"{len(sets) - 2} drawn uniformly per gate, {draws - len(sets) + 2} broken draws rejected) on "
                    f"the pretrained network, materialised (BN re-estimated unless bn is frozen)").to_dict()
    used, source = resolve_lambda_max(l_bar, s, bound, rule, margin)
    rec.update(lambda_max=[used], lambda_max_source=source, theorem_lambda_max=lam, worst_valid_gates=worst.describe(),
               cost_unit=cost.unit, lambda_cheapest_optimal=rule, lambda_margin=margin,
               cheapest={"gates": cheap.describe(), "loss": l_cheap, "cost": cost.of(cheap)},
               sampled={"gates": [g.describe() for g in sets], "loss": losses, "cost": costs})
    return rec


def resolve_lambda_max(l_bar: float, s: float, bound: float, rule: float = math.nan,
                       margin: float = 2.0) -> tuple[float, str]:
    """(Λ to train with, where it comes from). Every gate set the fit can reach is valid (`gate_sampling`), so
    Theorem 1 bounds nothing that can happen; the useful range runs from the intact network to the cheapest
    valid one: margin × the λ at which the cheapest becomes optimal among the sampled sets. Without such a λ
    (the cheapest is as good as every sample): Theorem 1's (L̄ − S)/Tᵀ1 when positive, else L̄/Tᵀ1, said so."""
    lam = lambda_max(l_bar, s, [bound])[0]
    if math.isfinite(rule) and rule > 0:
        return margin * rule, (f"{margin:g} × the λ at which the cheapest valid gate set becomes optimal among the "
                               f"sampled ones (max (L_c − L_a)/(T_a − T_c) = {rule:.4g}); Theorem 1's (L̄ − S)/Tᵀ1 = "
                               f"{lam:.4g} is recorded: no gate set the fit can reach is broken, so it bounds nothing")
    if lam > 0:
        return lam, "Theorem 1: (L̄ − S)/Tᵀ1"
    return l_bar / bound, (f"fallback L̄/Tᵀ1: S = {s:.4f} ≥ L̄ = {l_bar:.4f} (some valid sub-network of the frozen "
                           f"network is worse than a constant predictor), so Theorem 1 gives no positive Λ; trained "
                           f"over [0, L̄/Tᵀ1], the bound with S = 0")


def fixed_lambda_fit(gated: GatedResNet18, cost: GateCost, relax_cfg: RelaxConfig, batches: Callable[[], Iterable],
                     lam: float, steps: int, lr: float, init_logit: float, seed: int,
                     channel_multiple: int = 1) -> GateSet:
    """Gate logits alone (no hypernet) fitted at one λ from the intact start; their deterministic gate set."""
    device = gated.keep0.device
    gates = FixedGates(init_logit, channel_multiple).to(device)
    opt = torch.optim.Adam(gates.parameters(), lr=lr)
    fit = GateFit(gated, cost, relax_cfg, torch.Generator().manual_seed(seed))
    stream = itertools.chain.from_iterable(batches() for _ in itertools.count())
    for step, (x, y) in zip(range(steps), stream):
        opt.zero_grad(set_to_none=True)
        fit.loss(gates, x, y, lam, 0.0, temperature(relax_cfg, step / max(steps - 1, 1)))[0].backward()
        opt.step()
    with torch.no_grad():
        return argmax_gates(*gates())


def lambda_grid(reference: float, lo: float, hi: float, n: int) -> list[float]:
    """n values geometrically spaced over [reference·lo, reference·hi]."""
    return [float(v) for v in np.geomspace(reference * lo, reference * hi, n)]


def summarise_empirical(lams: list[float], accs: list[float], acc0: float, chance: float) -> dict:
    """End of the accuracy plateau and the first λ near chance (the empirical Λ) of an accuracy-vs-λ curve."""
    plateau_end = None
    for lam, acc in zip(lams, accs):
        if acc < acc0 - PLATEAU_DROP:
            break
        plateau_end = lam
    fallen = [lam for lam, acc in zip(lams, accs) if acc <= chance + CHANCE_MARGIN]
    return {"plateau_end": plateau_end, "lambda_max": fallen[0] if fallen else None, "chance_acc": chance,
            "pretrained_acc": acc0, "plateau_rule": f"accuracy ≥ pretrained − {PLATEAU_DROP}",
            "fallen_rule": f"accuracy ≤ chance + {CHANCE_MARGIN}"}


def empirical_lambda_max(gated: GatedResNet18, cost: GateCost, relax_cfg: RelaxConfig,
                         batches: Callable[[], Iterable], accuracy: Callable[[GateSet], float], grid: list[float],
                         acc0: float, chance: float, steps: int, lr: float, init_logit: float, seed: int,
                         on_point: Callable[[int, int], None] | None = None, channel_multiple: int = 1) -> dict:
    """Fixed-λ fits over `grid`: per λ the gate set, predicted cost and accuracy; and the summary."""
    rows = []
    for i, lam in enumerate(grid):
        g = fixed_lambda_fit(gated, cost, relax_cfg, batches, lam, steps, lr, init_logit, seed + i, channel_multiple)
        rows.append({"lambda": lam, "gates": g.describe(), "val_acc": accuracy(g),
                     "predicted_ms": cost.of(g)})
        if on_point is not None:
            on_point(i + 1, len(grid))
    summary = summarise_empirical([r["lambda"] for r in rows], [r["val_acc"] for r in rows], acc0, chance)
    return {**summary, "fits": rows, "steps_per_fit": steps}
