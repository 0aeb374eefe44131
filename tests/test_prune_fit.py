"""Pruning fit: phase 1 keeps the pretrained network, Λ's parts on labels of known entropy, the empirical Λ,
ONNX export of materialised sub-networks at batch 1 and 5."""
import math

import pytest
import torch

from hwnas.export import check_onnx, export_onnx_dynamic
from hwnas.prune.gate_cost import GateCost
from hwnas.prune.gate_hypernet import GateHypernet
from hwnas.prune.gate_sampling import argmax_gates
from hwnas.prune.prune_lambda import resolve_lambda_max, summarise_empirical, theorem_lambda_max, valid_gate_sets
from hwnas.spaces import gated_resnet as gr
from tests.test_latency_table import synthetic
from tests.test_prune_gates import SPACE, trained_like, x_batch


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_phase1_hypernet_keeps_the_network_intact_at_lambda_zero(kind):
    h = GateHypernet(kind, init_logit=3.0, generator=torch.Generator().manual_seed(0))
    assert argmax_gates(*h(torch.zeros(1))) == gr.GateSet()
    # ... and the gated network at those gates is the pretrained one, so its accuracy is too
    model = trained_like()
    x = x_batch(6)
    y = torch.randint(0, 10, (6,), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = model(x).argmax(1) == y
        got = gr.GatedResNet18(model)(x, *argmax_gates(*h(torch.zeros(1))).one_hot()).argmax(1) == y
    assert torch.equal(got, want)
    # the hypernet depends on λ once trained (gradients reach its λ-dependent part)
    bl, sl = h(torch.ones(1))
    (bl[:, 0].sum() + sl[:, 0].sum()).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in h.named_parameters() if n != "net.b2")


def test_theorem_parts_on_labels_of_known_entropy():
    model = trained_like()
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.zero_()   # every sub-network predicts uniformly: loss ln 10 on any label
    y = torch.tensor([0, 1, 2, 3] * 3)
    x = x_batch(len(y))
    cost = GateCost.from_table(synthetic(SPACE), SPACE)
    rec = theorem_lambda_max(model, cost, lambda: [(x, y)], 10, samples=4, seed=0)
    assert rec["label_entropy"] == pytest.approx(math.log(4), abs=1e-9)
    assert rec["worst_valid_loss"] == pytest.approx(math.log(10), abs=1e-5)
    assert rec["samples"] == 4 and rec["cost_bound"] == [pytest.approx(cost.bound())]
    # S = ln 10 > L̄ = ln 4: Theorem 1 gives no positive Λ; the fallback L̄/Tᵀ1 is used and said so
    assert rec["theorem_lambda_max"] == pytest.approx((math.log(4) - math.log(10)) / cost.bound(), rel=1e-5)
    assert rec["lambda_max"] == [pytest.approx(math.log(4) / cost.bound())]
    assert "fallback" in rec["lambda_max_source"]


def test_resolve_lambda_max_both_branches():
    assert resolve_lambda_max(2.0, 0.5, 3.0) == (pytest.approx(0.5), "Theorem 1: (L̄ − S)/Tᵀ1")
    lam, source = resolve_lambda_max(2.0, 2.5, 4.0)
    assert lam == pytest.approx(0.5) and "S = 2.5000 ≥ L̄ = 2.0000" in source


def test_valid_gate_sets_are_valid_and_include_the_extremes():
    sets, draws = valid_gate_sets(20, seed=3)
    assert len(sets) == 20 and all(g.is_valid() for g in sets) and draws >= 18
    assert sets[0] == gr.GateSet() and set(sets[1].fractions) == {0.0}


def test_empirical_summary_finds_plateau_end_and_fall_to_chance():
    lams = [0.01, 0.1, 1.0, 10.0, 100.0, 1000.0]
    accs = [0.90, 0.90, 0.895, 0.70, 0.14, 0.10]
    s = summarise_empirical(lams, accs, acc0=0.9, chance=0.1)
    assert s["plateau_end"] == 1.0 and s["lambda_max"] == 100.0
    s = summarise_empirical(lams[:4], accs[:4], acc0=0.9, chance=0.1)
    assert s["lambda_max"] is None


@pytest.mark.slow
@pytest.mark.parametrize("gates", [gr.GateSet((0, 0, 0.25, 0, 0.5, 0.75, 0, 0.25), (False, True, True)),
                                   gr.GateSet((0.5, 1.0, 0, 0, 0, 0, 0, 0), (True, True, True))],
                         ids=["layer1-gone-shortcut-off", "identity-blocks"])
def test_materialised_onnx_matches_pytorch_at_batch_1_and_5(tmp_path, gates):
    net = gr.materialise(gr.reorder_by_importance(trained_like()), gates)
    path = tmp_path / "m.onnx"
    export_onnx_dynamic(net, (3, 16, 16), path)
    check = check_onnx(net, path, (3, 16, 16), batches=(1, 5))
    assert check["max_abs_diff"] < 1e-4 and check["top1_identical"]
    import onnx

    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "Mul" not in ops   # no masks in the exported graph


def test_hypernet_input_scales():
    from hwnas.prune.gate_hypernet import hypernet_input

    assert hypernet_input(0.37, "uniform") == 0.37
    assert hypernet_input(1.0, "log-uniform") == pytest.approx(1.0)
    assert hypernet_input(0.1, "log-uniform") == pytest.approx(2 / 3)
    assert hypernet_input(1e-3, "log-uniform") == pytest.approx(0.0, abs=1e-12)
    assert hypernet_input(0.0, "log-uniform") == 0.0 and hypernet_input(1e-5, "log-uniform") == 0.0


def test_check_start_refuses_networks_near_chance():
    from hwnas.errors import HwnasError
    from hwnas.prune.start import check_start

    y = torch.tensor([0] * 30 + [1] * 10 + [2] * 10)   # chance (the majority class): 60 %
    with pytest.raises(HwnasError, match=r"at 62\.0 % .*near chance \(60\.0 %; pruning needs ≥ 64\.0 %\)"):
        check_start(0.62, y, 3, "--weights w.pt")
    check_start(0.64, y, 3, "--weights w.pt")


@pytest.mark.parametrize("sampling", ["log-uniform", "uniform"])
def test_pareto_lambdas_show_the_gate_sets_the_even_grid_misses(sampling):
    """Issue #12.4: the fit's gate set changed only between two points of the even grid (MNIST ResNet18: 9 sets
    along λ, 4 in pareto.csv). pareto.csv's λ are now the first λ of each distinct set along λ (at most n of
    them, λ = 0 and the last set always), topped up from the even grid."""
    from hwnas.prune.gate_hypernet import hypernet_input
    from hwnas.prune.prune_run import lambda_values, pareto_lambdas

    lmax = 2.0
    steps = [0.011, 0.013, 0.02, 0.05, 0.09] if sampling == "log-uniform" else [0.31, 0.32, 0.33, 0.34, 0.35]

    def gates(lam):
        k = sum(lam / lmax >= s for s in steps)
        return gr.GateSet((0.25,) * k + (1.0,) * (8 - k), (True,) * 3)

    assert len({gates(v) for v in lambda_values(lmax, 9, sampling)}) < 6   # the even grid: some sets missing
    lams = pareto_lambdas(gates, lmax, 9, sampling)
    assert len(lams) == 9 and lams == sorted(lams) and lams[0] == 0.0 and lams[-1] <= lmax
    assert len({gates(v) for v in lams}) == 6   # every distinct set, then grid points
    few = pareto_lambdas(gates, lmax, 3, sampling)   # fewer rows than sets: intact, one between, the last
    assert [gates(v).fractions.count(0.25) for v in few] == [0, 2, 5]
    # the rows are spread: no two grid top-ups at the same place on the hypernet's input scale
    assert len({round(hypernet_input(v / lmax, sampling), 9) for v in lams}) == 9
