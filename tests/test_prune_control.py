"""λ controls the pruned network (issue #12.1, #16.5): the cost shapes only the λ-dependent part of the hypernet,
its expectation is exact, Λ runs to where the cheapest valid gate set is optimal, phase 1 is a fit."""
import itertools
import math

import pytest
import torch

from hwnas.prune.gate_cost import GateCost
from hwnas.prune.gate_hypernet import GateHypernet
from hwnas.prune.gate_sampling import gate_probabilities
from hwnas.prune.prune_lambda import cheapest_gates, resolve_lambda_max
from hwnas.spaces import gated_resnet as gr
from tests.test_latency_table import synthetic
from tests.test_prune_gates import SPACE


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_cost_reaches_only_the_lambda_dependent_part(kind):
    h = GateHypernet(kind, 3.0, torch.Generator().manual_seed(0))
    with torch.no_grad():   # a hypernet that already depends on λ (as after some training)
        for name, p in h.named_parameters():
            if name != "net.b2":
                p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    cost = GateCost.from_table(synthetic(SPACE), SPACE)
    lam = torch.tensor([0.6])
    cost.expected(*gate_probabilities(*h.penalty_logits(lam))).backward()
    assert h.net.b2.grad is None or h.net.b2.grad.abs().sum() == 0
    assert sum(float(p.grad.abs().sum()) for n, p in h.named_parameters() if n != "net.b2" and p.grad is not None) > 0
    # ... and the penalty's logits are the network's logits (only the graph differs)
    for a, b in zip(h.penalty_logits(lam), h(lam)):
        torch.testing.assert_close(a, b)


def test_exact_expected_cost_is_the_mean_cost_of_sampled_gate_sets():
    """E[Tᵀγ] from the marginals on Γ_valid against the average of `cost.of` over many exact samples."""
    from hwnas.config import RelaxConfig
    from hwnas.prune.gate_sampling import relax_gates

    cost = GateCost.from_table(synthetic(SPACE), SPACE)
    g = torch.Generator().manual_seed(4)
    bl, sl = torch.randn(8, 5, generator=g), torch.randn(3, 2, generator=g)
    exact = cost.constant + float(cost.expected(*gate_probabilities(bl, sl)))
    hard = RelaxConfig("gumbel", hard=True, tau_start=1.0, tau_end=1.0)
    draws = [cost.of(gr.GateSet.from_indices(wb.argmax(1).tolist(), ws.argmax(1).tolist()))
             for wb, ws in (relax_gates(bl, sl, hard, 1.0, g) for _ in range(3000))]
    mean = sum(draws) / len(draws)
    sd = (sum((d - mean) ** 2 for d in draws) / (len(draws) - 1)) ** 0.5
    assert abs(mean - exact) < 4 * sd / math.sqrt(len(draws))


def test_cheapest_gates_is_the_cheapest_valid_set():
    cost = GateCost.from_table(synthetic(SPACE), SPACE)
    cheap = cheapest_gates(cost)
    assert cheap.is_valid()
    # Independent reference: the cost is a sum over blocks, so enumerate the projection blocks' joint choices
    # (the only coupled gates) with every plain block at its cheapest choice, and keep the cheapest valid set.
    proj = [rk for rk in range(8) if gr.BLOCKS[rk] in gr.PROJECTIONS]
    plain_best = cost.t_branch.argmin(1).tolist()
    best = math.inf
    for choice in itertools.product(range(5), range(2), repeat=3):
        branch = list(plain_best)
        for p, i in enumerate(proj):
            branch[i] = choice[2 * p]
        g = gr.GateSet.from_indices(branch, [choice[2 * p + 1] for p in range(3)])
        if g.is_valid():
            best = min(best, cost.of(g))
    assert cost.of(cheap) == pytest.approx(best)


def test_lambda_max_runs_to_the_cheapest_valid_set():
    lam, source = resolve_lambda_max(2.3, 9.0, 4.0, rule=0.8, margin=2.0)
    assert lam == pytest.approx(1.6) and "cheapest valid gate set" in source and "-1.675" in source
    # no such λ (the cheapest is as good as every sample): Theorem 1, then its fallback, as before
    assert resolve_lambda_max(2.0, 0.5, 3.0, rule=math.nan)[0] == pytest.approx(0.5)
    assert resolve_lambda_max(2.0, 2.5, 4.0)[0] == pytest.approx(0.5)

