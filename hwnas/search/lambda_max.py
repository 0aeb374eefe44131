"""Λ of Theorem 1 (performance control): the useful range [0, Λ] of the trade-off λ.

With L̄ = inf_p (1/n) Σ ℓ(p, y_i) — the loss of the best constant predictor, which for
cross-entropy is the entropy of the validation labels — and S = sup over valid networks of
L_val, every broken network has loss ≥ L̄ (its output does not depend on the input, so it
is at best a constant predictor) and saves at most Tᵀ1 in cost. Hence for
λ < Λ = (L̄ − S) / Tᵀ1 a valid network beats every broken one: L_val + λ·cost is minimised
inside Γ_valid.

Valid, for the DARTS space (one op per edge, `none` allowed so that broken networks are
reachable): a cell is *broken* when no path of non-`none` edges leads from either of its
inputs to any of the states it concatenates — its output is then constant. A network is
valid when none of its cells is broken; all normal cells share one choice of ops and all
reduction cells another, so validity is a property of the two cell choices.

S is estimated on a briefly trained supernet by evaluating sampled valid architectures
(ops drawn uniformly per edge, broken draws rejected) and taking the largest loss; the
record says how many were drawn, kept and evaluated. A sampled maximum under-estimates
the supremum, so Λ is, if anything, over-estimated; `lambda_max.json` reports the spread.

On a briefly trained supernet some valid sub-network is often still worse than a constant
predictor (S ≥ L̄, so (L̄ − S)/Tᵀ1 ≤ 0: no guaranteed range yet). The search then trains over
[0, L̄/Tᵀ1] — Theorem 1 with the best case S = 0, an upper bound on the useful range in any
case — and records both values and why in `lambda_max.json`.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from hwnas.spaces.ops import PRIMITIVES

NONE = PRIMITIVES.index("none")


def label_entropy(y: torch.Tensor, num_classes: int | None = None) -> float:
    """L̄ for cross-entropy: the entropy (nats) of the empirical label distribution, the loss of
    the best constant predictor (it predicts the label frequencies)."""
    counts = torch.bincount(y.flatten().long(), minlength=num_classes or 0).double()
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log()).sum())


def cell_is_broken(ops: Sequence[int], steps: int = 4, multiplier: int = 4) -> bool:
    """True when no concatenated state of the cell depends on its inputs (`ops`: op index per edge)."""
    reach = [True, True]
    e = 0
    for i in range(steps):
        reach.append(any(reach[j] and ops[e + j] != NONE for j in range(i + 2)))
        e += i + 2
    return not any(reach[-multiplier:])


def is_valid(ops_normal: Sequence[int], ops_reduce: Sequence[int], steps: int = 4, multiplier: int = 4) -> bool:
    return not (cell_is_broken(ops_normal, steps, multiplier) or cell_is_broken(ops_reduce, steps, multiplier))


def sample_valid(n: int, n_edges: int, generator: torch.Generator, steps: int = 4, multiplier: int = 4,
                 max_draws: int = 100_000, allowed: Sequence[int] | None = None
                 ) -> tuple[list[tuple[list[int], list[int]]], int]:
    """n valid architectures with ops drawn uniformly per edge from `allowed` (default: every op),
    rejection sampling; also the draw count."""
    archs, draws = [], 0
    choices = torch.tensor(range(len(PRIMITIVES)) if allowed is None else list(allowed))
    while len(archs) < n and draws < max_draws:
        draws += 1
        a = choices[torch.randint(len(choices), (2, n_edges), generator=generator)].tolist()
        if is_valid(a[0], a[1], steps, multiplier):
            archs.append((a[0], a[1]))
    return archs, draws


def argmax_ops(w: torch.Tensor) -> list[int]:
    """The strongest op on every edge of relaxed weights (k_edges × n_ops), `none` included: the
    network the relaxed optimum points at, which Theorem 1 is about. (The DARTS derivation never
    picks `none`, so it hides a cell that the search has broken.)"""
    return w.detach().argmax(dim=1).tolist()


def one_hot(ops: Sequence[int], n_ops: int, device=None) -> torch.Tensor:
    w = torch.zeros(len(ops), n_ops, device=device)
    w[torch.arange(len(ops)), torch.tensor(ops)] = 1.0
    return w


@torch.no_grad()
def architecture_loss(logits_fn: Callable[[torch.Tensor], torch.Tensor],
                      batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Mean cross-entropy of one architecture over the validation batches."""
    total, count = 0.0, 0
    for x, y in batches:
        total += float(F.cross_entropy(logits_fn(x).float(), y, reduction="sum"))
        count += y.shape[0]
    return total / max(count, 1)


def losses_and_label_entropy(logits_fns: Iterable[Callable[[torch.Tensor], torch.Tensor]],
                             batches: Iterable[tuple[torch.Tensor, torch.Tensor]], num_classes: int | None = None
                             ) -> tuple[list[float], float]:
    """Each architecture's mean loss and L̄, all on the very same samples: Theorem 1 compares S with L̄,
    so L̄ must be the best constant predictor's loss on the samples S is measured on, not on a larger
    split. `batches` is read once (an iterator is fine) and reused for every architecture."""
    batches = list(batches)
    losses = [architecture_loss(f, batches) for f in logits_fns]
    labels = torch.cat([y for _, y in batches]) if batches else torch.zeros(0, dtype=torch.long)
    return losses, label_entropy(labels, num_classes)


@dataclass(frozen=True)
class LambdaMax:
    """Λ per cost target and its parts, as written to lambda_max.json."""

    lambda_max: list[float]
    label_entropy: float          # L̄
    worst_valid_loss: float       # S (sampled maximum)
    cost_bound: list[float]       # Tᵀ1 per target
    cost_names: list[str]
    samples: int                  # valid architectures evaluated
    draws: int                    # architectures drawn (the rest were broken)
    valid_loss_quantiles: dict    # spread of the sampled valid losses
    estimated_by: str

    def to_dict(self) -> dict:
        return asdict(self)


def lambda_max(l_bar: float, s: float, cost_bound: Sequence[float]) -> list[float]:
    """Λ_d = (L̄ − S) / Tᵀ1_d; non-positive when some valid network is already worse than chance."""
    return [(l_bar - s) / c if c > 0 else math.inf for c in cost_bound]


def cheapest_optimal_lambda(l_cheap: float, losses: Sequence[float], costs: Sequence[float], cost_cheap: float,
                            min_gap: float = 0.25) -> float:
    """The smallest λ at which the cheapest architecture c beats every sampled architecture a on
    L + λ·T: max over a of (L_c − L_a)/(T_a − T_c). Only samples that cost at least `min_gap` of the
    largest sampled saving more than c count, so that a sample priced almost like c cannot blow the
    ratio up; NaN when no such sample is more accurate than c (c is then optimal from λ = 0)."""
    gaps = [t - cost_cheap for t in costs]
    floor = min_gap * max(gaps, default=0.0)
    ratios = [(l_cheap - la) / g for la, g in zip(losses, gaps) if g > 0 and g >= floor and la < l_cheap]
    return max(ratios) if ratios else math.nan


def summarise_losses(losses: Sequence[float]) -> dict:
    t = torch.tensor(losses, dtype=torch.float64)
    q = torch.quantile(t, torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0], dtype=torch.float64)).tolist()
    return dict(zip(("min", "p10", "median", "p90", "max"), q))
