"""Latency-/complexity-controlled search end to end on tiny configurations."""
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from hwnas.errors import HwnasError
from hwnas.latency.backends import BackendConfig
from hwnas.latency.profiler import ProfileConfig, profile
from hwnas.latency.space import SpaceConfig
from hwnas.latency.stats import TimingConfig
from hwnas.search.control import ControlConfig
from hwnas.search.inherit import InheritConfig
from hwnas.search.lambda_max import NONE, argmax_ops, is_valid, label_entropy
from hwnas.search.loop import SearchConfig, run_search
from hwnas.search.pareto import hypervolume, pareto_mask, write_pareto
from hwnas.spaces.genotype import DARTS_V2, edge_ops, num_edges
from hwnas.spaces.ops import PRIMITIVES
from hwnas_cli.app import app
from tests.cli_helpers import ok

FAST = TimingConfig(warmup_runs=1, warmup_s=0.0, budget_s=0.002, min_runs=3, max_runs=10)


def _tiny(**kw) -> SearchConfig:
    base = dict(dataset="digits", layers=3, channels=4, batch_size=32, epochs=2, max_steps_per_epoch=4, device="cpu")
    return SearchConfig(**{**base, **kw})


def _expected_cost(run, key_prefix="cost"):
    m = pd.read_csv(run / "metrics.csv")
    return m[[c for c in m.columns if c.startswith(key_prefix)]].iloc[-1].to_numpy()


@pytest.mark.slow
def test_lambda_zero_reproduces_the_plain_search_exactly(tmp_path):
    plain = run_search(_tiny(), tmp_path / "plain")
    # With `none` in the candidate set as in the plain search (a cost excludes it by default).
    zero = run_search(_tiny(control=ControlConfig(cost="params", lam=0.0, exclude_none=False)), tmp_path / "zero")
    assert zero.genotype == plain.genotype
    a = torch.load(tmp_path / "plain" / "checkpoint.pt", weights_only=True)["arch"]
    b = torch.load(tmp_path / "zero" / "checkpoint.pt", weights_only=True)["arch"]
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.slow
def test_large_lambda_drives_the_cost_down(tmp_path):
    kw = dict(epochs=2, a_lr=0.3)
    run_search(_tiny(control=ControlConfig(cost="params", lam=0.0), **kw), tmp_path / "l0")
    run_search(_tiny(control=ControlConfig(cost="params", lam=1e-3), **kw), tmp_path / "big")
    assert _expected_cost(tmp_path / "big")[0] < 0.7 * _expected_cost(tmp_path / "l0")[0]


def test_edge_ops_places_a_genotype_on_supernet_edges():
    ops_n, _ = edge_ops(DARTS_V2)
    assert len(ops_n) == num_edges(4)
    assert [PRIMITIVES[o] for o in ops_n[:4]] == ["sep_conv_3x3"] * 4  # nodes 0, 1 read inputs 0 and 1
    assert PRIMITIVES[ops_n[9]] == "skip_connect" and PRIMITIVES[ops_n[11]] == "dil_conv_3x3"  # node 3
    assert sum(o != 0 for o in ops_n) == 8


def test_pareto_mask():
    cost = np.array([1.0, 2.0, 3.0, 2.5, 1.0])
    acc = np.array([0.5, 0.7, 0.9, 0.6, 0.4])
    assert pareto_mask(cost, acc).tolist() == [True, True, True, False, False]


def test_hypervolume_matches_a_brute_force_grid():
    rng = np.random.default_rng(0)
    cost, acc = rng.uniform(0, 1, 7), rng.uniform(0, 1, 7)
    cost[0], acc[0] = 1.5, 0.9  # outside the reference box: adds nothing
    ref_cost, ref_acc = 1.0, 0.1
    gc, ga = np.meshgrid(np.linspace(0, 1, 801)[:-1] + 1 / 1600, np.linspace(0.1, 1, 721)[:-1] + 0.9 / 1440)
    inside = cost < ref_cost
    covered = ((cost[inside][:, None, None] <= gc) & (acc[inside][:, None, None] >= ga)).any(0)
    grid = covered.mean() * (ref_cost - 0) * (1 - ref_acc)
    assert hypervolume(cost, acc, ref_cost, ref_acc) == pytest.approx(grid, abs=2e-3)
    assert hypervolume(np.array([0.5]), np.array([0.6]), 1.0, 0.1) == pytest.approx(0.5 * 0.5)
    assert hypervolume(np.array([0.2, 0.5]), np.array([0.6, 0.4]), 1.0, 0.1) == pytest.approx(0.8 * 0.5)


def test_argmax_ops_keeps_none_and_exposes_broken_cells():
    w = torch.full((num_edges(4), len(PRIMITIVES)), 0.1)
    w[:, NONE] = 0.5  # `none` strongest everywhere: the DARTS rule hides it, the argmax does not
    ops = argmax_ops(w)
    assert ops == [NONE] * num_edges(4) and not is_valid(ops, ops)
    w[0, PRIMITIVES.index("skip_connect")] = 0.9  # one live edge, input 0 → node 0 (concatenated): valid again
    assert is_valid(argmax_ops(w), argmax_ops(w))


def test_control_config_errors():
    with pytest.raises(HwnasError, match="--table"):
        ControlConfig(cost="latency")
    with pytest.raises(HwnasError, match="needs a cost"):
        ControlConfig(hypernet="linear")
    with pytest.raises(HwnasError, match="--cost"):
        ControlConfig(cost="energy")


@pytest.mark.slow
def test_hypernet_search_with_auto_lambda_max_and_pareto(tmp_path):
    """Theorem 1's Λ, a linear λ-hypernet on params, and the architectures along λ."""
    ctl = ControlConfig(cost="params", hypernet="linear", warmup_epochs=1, samples=6, eval_batches=1)
    run_search(_tiny(epochs=3, a_lr=0.05, control=ctl), tmp_path / "h")
    rec = json.loads((tmp_path / "h" / "lambda_max.json").read_text())
    from hwnas.data import load_dataset, search_split

    splits = load_dataset("digits")
    (_, _), (_, y_arch) = search_split(splits.x_train, splits.y_train, 0)
    # L̄ on the very samples S is measured on: eval_batches = 1 batch of 256 of the validation split
    assert rec["label_entropy"] == pytest.approx(label_entropy(y_arch[:256], 10))
    theorem = (rec["label_entropy"] - rec["worst_valid_loss"]) / rec["cost_bound"][0]
    assert rec["lambda_max_theorem"][0] == pytest.approx(theorem)
    assert rec["worst_valid_loss"] == pytest.approx(max(rec["sampled"]["loss"]))
    # `none` excluded: Λ = margin × the smallest λ at which the cheapest architecture beats every sample
    # that saves at least a quarter of the largest saving; brute force over a λ grid as the reference.
    l_c, t_c = rec["cheapest"]["loss"][0], rec["cheapest"]["cost"][0]
    pairs = [(la, c[0]) for la, c in zip(rec["sampled"]["loss"], rec["sampled"]["cost"])]
    floor = 0.25 * max(t - t_c for _, t in pairs)
    pairs = [(la, t) for la, t in pairs if t - t_c >= floor]
    grid = np.linspace(0, 50 * rec["lambda_max"][0], 200001)
    beats = [all(l_c + lam * t_c <= la + lam * t for la, t in pairs) for lam in grid[::100]]
    first = grid[::100][beats.index(True)]
    assert rec["lambda_cheapest_optimal"][0] == pytest.approx(first, abs=grid[100] - grid[0])
    assert rec["lambda_max"][0] == pytest.approx(rec["lambda_margin"] * rec["lambda_cheapest_optimal"][0])
    assert rec["samples"] == 6 and rec["draws"] >= 6
    costs = pd.read_csv(tmp_path / "h" / "metrics.csv")
    col0 = [c for c in costs.columns if c.startswith("cost@0")][0]
    colm = [c for c in costs.columns if c.startswith("cost@max")][0]
    assert costs[colm].iloc[-1] < costs[col0].iloc[-1]  # the hypernet learnt: larger λ, cheaper architecture
    frame = write_pareto(tmp_path / "h", 4, InheritConfig(front_steps=5))  # the default 400 is for real runs; plumbing here
    assert len(frame) == 4 and frame["lambda"].iloc[0] == 0 and frame["lambda"].iloc[-1] == pytest.approx(rec["lambda_max"][0])
    assert frame["params"].iloc[-1] <= frame["params"].iloc[0]
    assert frame["pareto_optimal"].any() and frame["val_acc"].between(0, 1).all()
    assert frame["relaxed_val_acc"].between(0, 1).all() and frame["argmax_valid"].dtype == bool
    assert frame["argmax_none_edges"].between(0, 2 * num_edges(4)).all()
    for name in ("pareto_lambda.png", "pareto_front.png", "pareto_cells.png"):
        assert (tmp_path / "h" / "plots" / name).is_file()


@pytest.mark.slow
def test_latency_tables_two_devices_and_the_cli(tmp_path):
    """Two measured tables → a λ vector; CLI search with --table twice, then hwnas pareto."""
    space = SpaceConfig(input_h=8, input_w=8, in_channels=1, channels=4, layers=3, batch=32)
    tables = []
    for name, threads in (("a", 1), ("b", 2)):
        path = tmp_path / f"{name}.csv"
        profile(ProfileConfig(space, BackendConfig("cpu", threads, timing=FAST)), path)
        tables.append(str(path))
    runner = CliRunner()
    out = ok(runner.invoke(app, ["search", "--out", str(tmp_path / "r"), "--layers", "3", "--channels", "4",
                                 "--batch-size", "32", "--epochs", "1", "--max-steps", "3", "--device", "cpu",
                                 "--table", tables[0], "--table", tables[1], "--hypernet", "mlp",
                                 "--lambda-max", "0.5", "--arch-grad", "second"]))
    assert "genotype" in out
    ok(runner.invoke(app, ["pareto", str(tmp_path / "r"), "--lambdas", "3", "--front-steps", "5"]))
    frame = pd.read_csv(tmp_path / "r" / "pareto.csv")
    assert {"predicted_latency_ms[a]", "predicted_latency_ms[b]"} <= set(frame.columns)
    assert math.isclose(frame["lambda"].iloc[-1], 0.5)


def test_table_of_another_space_is_refused(tmp_path):
    space = SpaceConfig(input_h=8, input_w=8, in_channels=1, channels=6, layers=3, batch=32)
    path = tmp_path / "t.csv"
    profile(ProfileConfig(space, BackendConfig("cpu", 1, timing=FAST)), path)
    with pytest.raises(HwnasError, match="another space"):
        run_search(_tiny(control=ControlConfig(tables=(str(path),))), tmp_path / "r")


@pytest.mark.slow
def test_export_a_genotype_checks_and_reports(tmp_path):
    from hwnas.export import export_network
    from hwnas.spaces.network import DiscreteNetwork, NetworkConfig

    net = DiscreteNetwork(DARTS_V2, NetworkConfig(channels=4, layers=3, num_classes=10, in_channels=1))
    report = export_network(net, (1, 8, 8), tmp_path / "m.onnx", extra={"genotype": str(DARTS_V2)})
    assert report["max_abs_diff"] < 1e-4 and report["top1_identical"] and report["batches_checked"] == [1, 5]
    assert report["params"] == sum(p.numel() for p in net.parameters()) and report["flops_per_sample"] > 0
    assert report["measured"]["p50_ms"] > 0
    saved = json.loads((tmp_path / "m.onnx.json").read_text())
    assert saved["genotype"] == str(DARTS_V2)
    with pytest.raises(HwnasError, match="exists"):
        export_network(net, (1, 8, 8), tmp_path / "m.onnx")


def test_a_single_path_search_is_validated_on_the_network_it_derives(tmp_path):
    """Hard Gumbel trains one op per edge; its val_acc is the accuracy of the network its final α derives,
    rebuilt here by hand: the DARTS rule on softmax(α) from the checkpoint, each chosen op placed on its
    edge, the supernet run one op per edge with batch-statistics BN on the validation batches."""
    import copy

    import torch.nn.functional as F

    from hwnas.search.pareto import load_search
    from hwnas.search.relax import RelaxConfig

    run_search(_tiny(epochs=1, relax=RelaxConfig(kind="gumbel", hard=True)), tmp_path / "h")
    search = load_search(tmp_path / "h")
    arch = torch.load(tmp_path / "h" / "checkpoint.pt", weights_only=True)["arch"]
    steps, n_ops, n_edges = 4, len(PRIMITIVES), num_edges(4)

    def derived_ops(alpha: torch.Tensor) -> list[int]:
        w = np.exp(alpha.double().numpy())
        w /= w.sum(1, keepdims=True)
        w[:, NONE] = -1.0                                    # the DARTS rule never picks `none`
        ops, first = [NONE] * n_edges, 0
        for i in range(steps):
            block = w[first:first + i + 2]
            for j in np.argsort(-block.max(1), kind="stable")[:2]:   # the two strongest inputs of node i
                ops[first + j] = int(block[j].argmax())
            first += i + 2
        return ops

    ops_n, ops_r = derived_ops(arch["normal"]), derived_ops(arch["reduce"])
    w_n, w_r = torch.eye(n_ops)[ops_n], torch.eye(n_ops)[ops_r]
    net = copy.deepcopy(search.net).train()                 # batch statistics; the copy keeps the buffers
    correct, loss_sum, n = 0, 0.0, 0
    with torch.no_grad():
        for x, y in search.eval_loader:
            logits = net(x, w_n, w_r, ops_n, ops_r)
            correct += int((logits.argmax(1) == y).sum())
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            n += len(y)
    row = pd.read_csv(tmp_path / "h" / "metrics.csv").iloc[-1]
    assert row["val_acc"] == pytest.approx(correct / n, abs=1e-12)
    assert row["val_loss"] == pytest.approx(loss_sum / n, rel=1e-5)
    assert row["genotype"] == str(search.genotype())
