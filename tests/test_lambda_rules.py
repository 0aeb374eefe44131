"""The pieces of the λ-control's defaults, each against an independent reference."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from hwnas.search.control import ControlConfig, cheapest_genotype, cheapest_ops
from hwnas.search.cost import CostModel
from hwnas.search.hypernet import LinearHypernet, MLPHypernet
from hwnas.search.inherit import recalibrate_bn
from hwnas.search.lambda_max import NONE, cheapest_optimal_lambda, sample_valid
from hwnas.search.loop import auto_arch_lr
from hwnas.search.objective import SearchObjective
from hwnas.search.pareto import lambda_grid, monotone_chain
from hwnas.search.relax import RelaxConfig
from hwnas.spaces.genotype import edge_ops, num_edges


def test_cheapest_optimal_lambda_is_where_the_cheapest_first_wins_against_every_sample():
    rng = np.random.default_rng(0)
    losses, costs = rng.uniform(0.1, 1.0, 40), rng.uniform(2.0, 6.0, 40)
    l_c, t_c = 1.2, 1.0
    got = cheapest_optimal_lambda(l_c, losses.tolist(), costs.tolist(), t_c)
    keep = costs - t_c >= 0.25 * (costs - t_c).max()
    grid = np.linspace(0, 5, 500001)
    # brute force: the first λ on a fine grid at which L_c + λ·T_c ≤ L_a + λ·T_a for every kept sample
    ok = np.all(l_c + grid[:, None] * t_c <= losses[keep] + grid[:, None] * costs[keep], axis=1)
    assert got == pytest.approx(grid[np.argmax(ok)], abs=2e-5)


def test_cheapest_optimal_lambda_ignores_samples_priced_like_the_cheapest():
    # a sample that saves almost nothing would otherwise set λ = 0.5 / 1e-6
    assert cheapest_optimal_lambda(1.0, [0.5, 0.2], [1.0 + 1e-6, 3.0], 1.0) == pytest.approx(0.8 / 2.0)
    assert math.isnan(cheapest_optimal_lambda(0.1, [0.5, 0.2], [2.0, 3.0], 1.0))  # nothing is more accurate


def test_cheapest_ops_and_sampling_never_use_none_when_it_is_excluded():
    T = torch.rand(1, 5, num_edges(4), 8)
    T[..., NONE] = 0.0  # `none` is free: it would be every edge's cheapest op
    cost = CostModel(T, [False, True, False, True, False], ["t"], ["ms"])
    allowed = ControlConfig(cost="params").allowed_ops
    assert NONE not in allowed
    ops_n, ops_r = cheapest_ops(cost, 0, allowed)
    want_n = [allowed[i] for i in cost.T_normal[0][:, allowed].argmin(1).tolist()]
    assert ops_n == want_n and NONE not in ops_n + ops_r
    archs, _ = sample_valid(30, num_edges(4), torch.Generator().manual_seed(0), allowed=allowed)
    assert all(NONE not in a + b for a, b in archs)
    assert NONE in ControlConfig().allowed_ops  # a plain search keeps DARTS's candidate set


def test_cheapest_genotype_is_the_cheapest_network_the_darts_rule_can_derive():
    """Brute force over every derivable cell (two distinct inputs per node, any allowed op on each):
    none is cheaper, on each cell type, than cheapest_genotype's."""
    import itertools

    g = torch.Generator().manual_seed(3)
    T = torch.rand(1, 5, num_edges(4), 8, generator=g)
    T[..., NONE] = 0.0
    cost = CostModel(T, [False, True, False, True, False], ["t"], ["ms"])
    allowed = ControlConfig(cost="params").allowed_ops
    got = cheapest_genotype(cost, 0, allowed)
    ops_n, ops_r = edge_ops(got)

    def best(Tc: torch.Tensor) -> float:  # per node independently: the cheapest pair of inputs
        total, e = 0.0, 0
        for i in range(4):
            pairs = itertools.combinations(range(i + 2), 2)
            total += min(sum(float(Tc[e + j, allowed].min()) for j in p) for p in pairs)
            e += i + 2
        return total

    cell = lambda Tc, ops: sum(float(Tc[e, o]) for e, o in enumerate(ops))  # noqa: E731
    assert cell(cost.T_normal[0], ops_n) == pytest.approx(best(cost.T_normal[0]))
    assert cell(cost.T_reduce[0], ops_r) == pytest.approx(best(cost.T_reduce[0]))
    assert all(op != "none" for op, _ in (*got.normal, *got.reduce))


def test_excluded_none_gets_zero_weight_under_every_relaxation():
    net = nn.Module()
    arch = LinearHypernet(num_edges(4), 8, 1, torch.Generator().manual_seed(0))
    for relax in (RelaxConfig("softmax"), RelaxConfig("gumbel", hard=True), RelaxConfig("sigmoid")):
        obj = SearchObjective(net, arch, relax, torch.Generator().manual_seed(1), exclude_none=True)
        obj.lam_input = torch.tensor([0.3])
        ra = obj.sample()
        assert float(ra.w_normal.detach()[:, NONE].abs().max()) == 0.0 and float(ra.w_reduce.detach()[:, NONE].abs().max()) == 0.0
        if ra.idx_normal is not None:
            assert NONE not in ra.idx_normal + ra.idx_reduce
        if relax.kind == "softmax":
            torch.testing.assert_close(ra.w_normal.sum(1), torch.ones(num_edges(4)))


@pytest.mark.parametrize("cls", [LinearHypernet, MLPHypernet])
def test_hypernet_at_lambda_zero_is_its_base(cls):
    h = cls(num_edges(4), 8, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for p in h.parameters():
            p.normal_()
    a_n, a_r = h(torch.zeros(2))
    b2 = h.b2.view(2, num_edges(4), 8)
    torch.testing.assert_close(a_n, b2[0])
    torch.testing.assert_close(a_r, b2[1])


def test_linear_hypernet_routes_each_targets_cost_to_its_own_slope():
    h = LinearHypernet(num_edges(4), 8, 2, torch.Generator().manual_seed(0))
    with torch.no_grad():
        h.b1.normal_()
    lam = torch.tensor([0.3, 0.5])
    a_n, a_r = h.penalty_logits(lam, 1)
    torch.testing.assert_close(torch.stack([a_n, a_r]), torch.tensordot(lam, h.b1, dims=1) + h.b2)  # same value
    (a_n.sum() + a_r.sum()).backward()
    assert h.b2.grad is None or float(h.b2.grad.abs().max()) == 0.0
    assert float(h.b1.grad[0].abs().max()) == 0.0
    torch.testing.assert_close(h.b1.grad[1], torch.full_like(h.b1[1], 0.5))


def test_auto_arch_lr_moves_a_logit_by_the_same_amount_as_darts():
    assert auto_arch_lr(20_000) == pytest.approx(3e-4)        # DARTS: 3e-4 over its ~20k steps
    assert auto_arch_lr(200) == pytest.approx(0.03)
    assert auto_arch_lr(1000) == pytest.approx(6e-3)
    assert auto_arch_lr(10**7) == pytest.approx(3e-4) and auto_arch_lr(1) == pytest.approx(3e-2)


def _brute_chain_length(costs) -> int:
    """Most distinct costs on a non-increasing subsequence that holds both ends, by trying every subset."""
    import itertools

    n, best = len(costs), 0
    for r in range(n - 1):
        for mid in itertools.combinations(range(1, n - 1), r):
            seq = [costs[i] for i in (0, *mid, n - 1)]
            if all(a >= b for a, b in zip(seq, seq[1:])):
                best = max(best, len(set(seq)))
    return best


@pytest.mark.parametrize("seed", range(6))
def test_monotone_chain_is_a_longest_non_increasing_path_from_lambda_zero_to_lambda_max(seed):
    rng = np.random.default_rng(seed)
    costs = np.concatenate([[1.0], rng.choice([0.3, 0.45, 0.5, 0.6, 0.7, 0.9, 1.1], size=8), [0.2]])
    chain = monotone_chain(costs)
    assert chain[0] == 0 and chain[-1] == len(costs) - 1
    assert all(costs[a] >= costs[b] for a, b in zip(chain, chain[1:]))
    assert len(set(costs[chain])) == _brute_chain_length(list(costs))


def test_monotone_chain_drops_a_network_priced_above_an_earlier_one():
    # the quickstart's case: 0.041 ms at one λ, 0.042 ms at the next, 0.040 ms at Λ — the 0.042 one is dominated
    assert monotone_chain(np.array([0.096, 0.06, 0.041, 0.042, 0.042, 0.040])) == [0, 1, 2, 5]
    # a λ = Λ network priced above the λ = 0 one: no chain holds both, every point is kept
    assert monotone_chain(np.array([0.05, 0.04, 0.06])) == [0, 1, 2]


def test_lambda_grid_covers_the_simplex():
    assert lambda_grid(5, 1) == [(0.0,), (0.25,), (0.5,), (0.75,), (1.0,)]
    g = lambda_grid(3, 2)
    assert sorted(g) == sorted([(0.0, 0.0), (0.0, 0.5), (0.5, 0.0), (0.0, 1.0), (0.5, 0.5), (1.0, 0.0)])
    assert len(lambda_grid(4, 3)) == math.comb(3 + 3, 3)  # points (i, j, k) with i + j + k ≤ 3


@pytest.mark.parametrize("n, size", [(4, 8), (3, 200)])
def test_bn_recalibration_gives_the_batches_mean_and_variance(n, size):
    """Batches are merged into forwards of up to MERGE_SAMPLES samples (4 × 8: one forward; 3 × 200: one
    each); the running statistics are the cumulative average of each forward's mean and unbiased variance."""
    from hwnas.evaluation import MERGE_SAMPLES

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3))
    net[1].running_mean.fill_(5.0)
    batches = [(torch.randn(size, 2, 6, 6) * 2 + 1, None) for _ in range(n)]
    recalibrate_bn(net, net, batches)
    with torch.no_grad():
        feats = [net[0](x) for x, _ in batches]
    chunks = [torch.cat(feats)] if n * size <= MERGE_SAMPLES else feats
    mean = torch.cat(feats).mean((0, 2, 3))  # equal-size chunks: the mean of their means
    var = torch.stack([f.var((0, 2, 3), unbiased=True) for f in chunks]).mean(0)
    torch.testing.assert_close(net[1].running_mean, mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(net[1].running_var, var, rtol=1e-5, atol=1e-5)
    assert not net.training and net[1].momentum == 0.1


def test_merged_batches_keep_every_sample_in_order_and_cap_the_size():
    from hwnas.evaluation import merged

    batches = [(torch.full((k, 1), float(i)), torch.full((k,), i)) for i, k in enumerate([64, 64, 64, 64, 64, 300, 10])]
    out = list(merged(batches, 256))
    assert [len(y) for _, y in out] == [256, 64, 300, 10]
    torch.testing.assert_close(torch.cat([x for x, _ in out]), torch.cat([x for x, _ in batches]))
    assert torch.equal(torch.cat([y for _, y in out]), torch.cat([y for _, y in batches]))


@pytest.mark.parametrize("bad", [dict(a_lr=float("nan")), dict(a_lr=0.0), dict(a_lr=-1e-3)])
def test_bad_arch_learning_rates_are_refused(bad):
    from hwnas.errors import HwnasError
    from hwnas.search.loop import SearchConfig

    with pytest.raises(HwnasError, match="--arch-lr"):
        SearchConfig(**bad)


@pytest.mark.parametrize("margin", [0.0, -1.0, float("inf"), float("nan")])
def test_bad_lambda_margins_are_refused(margin):
    from hwnas.errors import HwnasError

    with pytest.raises(HwnasError, match="margin"):
        ControlConfig(cost="params", lambda_margin=margin)
