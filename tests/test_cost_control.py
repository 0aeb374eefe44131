"""The pieces of latency-/complexity-controlled search: Tᵀγ, λ-hypernets, Theorem 1's Λ."""
import itertools
import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from hwnas.latency.space import SpaceConfig
from hwnas.search.cost import CostModel
from hwnas.search.hypernet import LinearHypernet, MLPHypernet, sample_lambda
from hwnas.search.lambda_max import (cell_is_broken, is_valid, label_entropy, lambda_max, one_hot,
                                     sample_valid)
from hwnas.spaces.genotype import DARTS_V2, Genotype, edge_ops, num_edges
from hwnas.spaces.network import DiscreteNetwork, NetworkConfig, count_parameters
from hwnas.spaces.ops import PRIMITIVES


def test_expected_cost_matches_brute_force_enumeration():
    """E[cost] under independent per-edge categorical γ, summed over every discrete architecture."""
    torch.manual_seed(0)
    D, E, O = 2, 3, 3
    reduction = [False, True, False]
    T = torch.rand(D, len(reduction), E, O)
    model = CostModel(T, reduction, ["a", "b"], ["ms", "ms"])
    w_n, w_r = torch.softmax(torch.randn(E, O), -1), torch.softmax(torch.randn(E, O), -1)
    brute = torch.zeros(D)
    for a_n in itertools.product(range(O), repeat=E):
        for a_r in itertools.product(range(O), repeat=E):
            p = math.prod(w_n[e, o].item() for e, o in enumerate(a_n)) * math.prod(w_r[e, o].item() for e, o in enumerate(a_r))
            cost = sum(T[:, l, e, (a_r if reduction[l] else a_n)[e]] for l in range(len(reduction)) for e in range(E))
            brute += p * cost
    torch.testing.assert_close(model.expected(w_n, w_r), brute)


def test_max_cost_is_the_dearest_architecture_by_enumeration():
    """Tᵀ1 = the largest cost of any discrete architecture (both normal cells share one op per edge), found
    by pricing every architecture from T's entries; here the dearest op of an edge differs between the two
    normal cells, so Σ_l Σ_e max_o T (per-cell maxima) is no architecture's cost."""
    torch.manual_seed(0)
    D, E, O = 2, 3, 3
    reduction = [False, True, False]
    T = torch.rand(D, len(reduction), E, O)
    T[0, 0, 0] = torch.tensor([0.0, 5.0, 1.0])   # edge 0, target 0: op 1 is dearest in cell 0 ...
    T[0, 2, 0] = torch.tensor([0.0, 1.0, 4.0])   # ... op 2 in cell 2: together 6 (op 1) or 5 (op 2), never 9
    model = CostModel(T, reduction, ["a", "b"], ["ms", "ms"])
    best = torch.zeros(D)
    for a_n in itertools.product(range(O), repeat=E):
        for a_r in itertools.product(range(O), repeat=E):
            cost = torch.tensor([sum(float(T[d, l, e, (a_r if reduction[l] else a_n)[e]])
                                     for l in range(len(reduction)) for e in range(E)) for d in range(D)])
            best = torch.maximum(best, cost)
    torch.testing.assert_close(model.max_cost(), best)
    assert float(T.amax(3).sum((1, 2))[0]) > float(best[0]) + 2.9   # the per-cell sum overstates it by 3


def test_expected_cost_is_differentiable_in_alpha():
    model = CostModel(torch.rand(1, 3, 4, 5), [False, True, False], ["x"], ["ms"])
    alpha = torch.zeros(4, 5, requires_grad=True)
    model.expected(torch.softmax(alpha, -1), torch.softmax(alpha, -1)).sum().backward()
    assert alpha.grad.abs().sum() > 0


def _all_none(g: Genotype) -> Genotype:
    return Genotype(tuple(("none", j) for _, j in g.normal), g.normal_concat,
                    tuple(("none", j) for _, j in g.reduce), g.reduce_concat)


def _genotype_weights(g: Genotype) -> tuple[torch.Tensor, torch.Tensor]:
    """One-hot (edges × ops) weights of a genotype in the supernet's edge order."""
    ops_n, ops_r = edge_ops(g)
    return one_hot(ops_n, len(PRIMITIVES)), one_hot(ops_r, len(PRIMITIVES))


@pytest.mark.parametrize("size, channels, layers", [(8, 4, 5), (28, 8, 5), (32, 6, 8)])
def test_params_and_flops_costs_match_whole_networks(size, channels, layers):
    """Cost of a genotype's chosen ops = whole network minus the same network with every op `none`."""
    space = SpaceConfig(input_h=size, input_w=size, in_channels=1, channels=channels, layers=layers, batch=1)
    cfg = NetworkConfig(channels=channels, layers=layers, in_channels=1)
    w_n, w_r = _genotype_weights(DARTS_V2)
    params = CostModel.complexity("params", space).expected(w_n, w_r).item()
    net, empty = DiscreteNetwork(DARTS_V2, cfg), DiscreteNetwork(_all_none(DARTS_V2), cfg)
    assert params == count_parameters(net) - count_parameters(empty)

    def flops(m):
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            m.eval()(torch.zeros(1, 1, size, size))
        return counter.get_total_flops()

    got = CostModel.complexity("flops", space).expected(w_n, w_r).item()
    assert got == pytest.approx(flops(net) - flops(empty), rel=1e-6)


def test_hypernets_start_at_darts_init_and_learn_lambda_dependence():
    g = torch.Generator().manual_seed(0)
    for net in (LinearHypernet(14, 8, 2, generator=g), MLPHypernet(14, 8, 2, generator=g)):
        a0 = net(torch.tensor([0.0, 0.0]))
        a1 = net(torch.tensor([1.0, 0.3]))
        assert torch.equal(a0[0], a1[0]) and torch.equal(a0[1], a1[1])  # λ does nothing until learnt
        assert a0[0].shape == (14, 8) and a0[0].abs().max() < 0.01
        loss = a1[0][:, 0].sum()  # push `none` up at λ̃ = (1, 0.3)
        loss.backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in net.named_parameters() if n != "b2")


def test_linear_hypernet_is_the_formula():
    net = LinearHypernet(3, 2, 2)
    with torch.no_grad():
        net.b1.normal_()
    lam = torch.tensor([0.4, 0.7])
    a_n, a_r = net(lam)
    want = 0.4 * net.b1[0] + 0.7 * net.b1[1] + net.b2
    torch.testing.assert_close(a_n, want[0])
    torch.testing.assert_close(a_r, want[1])


@pytest.mark.parametrize("mode", ["uniform", "log-uniform"])
def test_lambda_samples_stay_in_the_region_theorem_1_allows(mode):
    """Σ_d λ_d/Λ_d ≤ 1 (Theorem 1 with several targets: Σ_d λ_d·Tᵀ1_d < L̄ − S), not each λ_d ≤ Λ_d."""
    g = torch.Generator().manual_seed(0)
    lmax = torch.tensor([2.0, 0.5])
    s = torch.stack([sample_lambda(lmax, mode, g) for _ in range(4000)])
    frac = s / lmax
    assert torch.all(frac >= 0) and torch.all(frac.sum(1) <= 1 + 1e-9)
    total = frac.sum(1)
    if mode == "uniform":
        # uniform on the 2-simplex: P(λ̃₁ + λ̃₂ ≤ t) = t², and each coordinate has mean 1/3
        for t in (0.3, 0.6, 0.9):
            assert float((total <= t).double().mean()) == pytest.approx(t * t, abs=0.03)
        assert frac.mean(0).tolist() == pytest.approx([1 / 3, 1 / 3], abs=0.02)
    else:
        # log-uniform total over [1e-3, 1]: its log10 is uniform on [-3, 0]
        assert float((total.log10() <= -1.5).double().mean()) == pytest.approx(0.5, abs=0.03)


def test_one_target_lambda_is_uniform_on_zero_to_lambda_max():
    g = torch.Generator().manual_seed(1)
    s = torch.stack([sample_lambda(torch.tensor([4.0]), "uniform", g) for _ in range(4000)]).flatten()
    assert float(s.min()) >= 0 and float(s.max()) <= 4.0
    for q in (0.1, 0.5, 0.9):
        assert float(s.quantile(q)) == pytest.approx(4.0 * q, abs=0.12)


def test_label_entropy_is_the_best_constant_predictor_loss():
    y = torch.arange(10).repeat(50)
    assert label_entropy(y, 10) == pytest.approx(math.log(10))
    y = torch.tensor([0] * 30 + [1] * 10)
    p = torch.tensor([0.75, 0.25])
    assert label_entropy(y) == pytest.approx(float(-(p * p.log()).sum()))
    # no constant prediction does better: cross-entropy of the frequencies themselves
    logits = p.log().expand(40, 2)
    assert torch.nn.functional.cross_entropy(logits, y).item() == pytest.approx(label_entropy(y))


def test_broken_cells():
    none, skip = PRIMITIVES.index("none"), PRIMITIVES.index("skip_connect")
    E = num_edges(4)
    assert cell_is_broken([none] * E)
    assert not cell_is_broken([skip] * E)
    only_last = [none] * E
    only_last[E - 1] = skip  # node 3 from state 4 (node 2), which is itself unreachable
    assert cell_is_broken(only_last)
    one_path = [none] * E
    one_path[0] = skip  # node 0 from input 0: state 2 is concatenated and reachable
    assert not cell_is_broken(one_path)
    assert not is_valid(one_path, [none] * E) and is_valid(one_path, one_path)


def test_sample_valid_only_returns_valid_architectures():
    archs, draws = sample_valid(50, num_edges(4), torch.Generator().manual_seed(0))
    assert len(archs) == 50 and draws >= 50
    assert all(is_valid(a, b) for a, b in archs)
    w = one_hot(archs[0][0], len(PRIMITIVES))
    assert torch.equal(w.sum(1), torch.ones(num_edges(4)))


def test_lambda_max_formula():
    assert lambda_max(2.3, 0.3, [4.0, 0.5]) == pytest.approx([0.5, 4.0])
    assert lambda_max(1.0, 1.5, [2.0])[0] < 0  # a valid network worse than chance: no useful range


def test_batch_statistics_evaluation_leaves_no_trace():
    from hwnas.evaluation import batch_statistics
    from hwnas.spaces.supernet import Supernet, SupernetConfig

    net = Supernet(SupernetConfig(channels=4, layers=3, in_channels=1)).eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    w = torch.softmax(torch.randn(14, 8), -1)
    with batch_statistics(net):
        assert net.training
        net(torch.randn(4, 1, 8, 8) * 5 + 3, w, w)  # would move every running mean/var
    assert not net.training
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_prune_theorem_parts_come_from_the_evaluated_samples():
    """L̄ is the best constant predictor's loss on the samples S is measured on (issue #16.4), not on the
    whole validation split handed in beside them."""
    from hwnas.latency import resnet_keys as rk
    from hwnas.prune.gate_cost import GateCost
    from hwnas.prune.prune_lambda import theorem_lambda_max
    from tests.test_latency_table import synthetic

    space = SpaceConfig(space="resnet18", input_h=16, input_w=16, in_channels=3, batch=1)
    torch.manual_seed(0)
    model = rk.torchvision_resnet18(space).eval()
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.zero_()   # every sub-network predicts uniformly: loss ln 10 on any label
    y_eval = torch.tensor([3, 3, 3, 7])                  # the samples evaluated: frequencies 3/4, 1/4
    x_eval = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    rec = theorem_lambda_max(model, GateCost.from_table(synthetic(space), space), lambda: iter([(x_eval, y_eval)]),
                             10, samples=3, seed=0)
    constant = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))   # cross-entropy of the frequencies on y_eval
    assert rec["label_entropy"] == pytest.approx(constant, abs=1e-12)
    assert rec["worst_valid_loss"] == pytest.approx(math.log(10), abs=1e-5)


def test_search_theorem_parts_come_from_the_evaluated_batches():
    """The search's Λ estimate: L̄ on the `eval_batches` batches every architecture is evaluated on, even when
    the validation loader offers more."""
    from hwnas.search.control import ControlConfig, estimate_lambda_max
    from hwnas.search.objective import ArchParams, SearchObjective
    from hwnas.search.relax import RelaxConfig
    from hwnas.spaces.supernet import Supernet, SupernetConfig

    net_cfg = SupernetConfig(channels=4, layers=3, in_channels=1)
    torch.manual_seed(0)
    obj = SearchObjective(Supernet(net_cfg), ArchParams(net_cfg.n_edges, net_cfg.n_ops), RelaxConfig())
    space = SpaceConfig(input_h=8, input_w=8, in_channels=1, channels=4, layers=3, batch=1)
    cost = CostModel.complexity("params", space)
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(8, 1, 8, 8, generator=g), torch.tensor([0, 0, 0, 0, 0, 0, 1, 2])),
               (torch.randn(8, 1, 8, 8, generator=g), torch.arange(8))]
    y_all = torch.cat([y for _, y in batches])
    rec = estimate_lambda_max(obj, cost, lambda: iter(batches), 10,
                              ControlConfig(cost="params", hypernet="linear", samples=2, eval_batches=1), seed=0)
    p = torch.tensor([6 / 8, 1 / 8, 1 / 8], dtype=torch.float64)
    assert rec["label_entropy"] == pytest.approx(float(-(p * p.log()).sum()), abs=1e-12)
    assert rec["label_entropy"] != pytest.approx(label_entropy(y_all, 10))
