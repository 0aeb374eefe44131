"""Kernel counts of ONNX Runtime's optimised graph, and the calibration's `linear+kernels` correction."""
import random

import numpy as np
import pytest
import torch

from hwnas.latency.calibrate import (
    build_network,
    choose,
    cross_validated,
    fit_and_choose,
    fit_linear,
    fit_linear_kernels,
    metrics,
    random_architecture,
)
from hwnas.latency.kernels import counting_export, network_kernels, optimised_node_count, optimised_op_types
from hwnas.latency.onnx_io import export_onnx
from hwnas.latency.space import SpaceConfig
from hwnas.latency.table import apply_correction
from tests.test_latency_table import synthetic


def _shared_relu_model() -> bytes:
    """Two convolutions of ReLU(x), each with its own ReLU node, summed: what two DARTS edges reading one state
    export to. Built by hand, so that no exporter merges anything first."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), f"w{i}")
         for i, s in enumerate([(8, 8, 3, 3), (8, 8, 1, 1)])]
    nodes = [helper.make_node("Relu", ["x"], ["r0"]), helper.make_node("Relu", ["x"], ["r1"]),
             helper.make_node("Conv", ["r0", "w0"], ["c0"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["r1", "w1"], ["c1"]), helper.make_node("Add", ["c0", "c1"], ["y"])]
    graph = helper.make_graph(nodes, "shared_relu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])], initializer=w)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()


def test_fusion_across_ops_is_counted():
    """5 nodes exported (2 ReLUs, 2 Convs, an Add); ONNX Runtime merges the two identical ReLUs (common
    subexpressions, basic level): 4. With optimisation off, exactly the exported nodes. At `all` the Add goes into
    a convolution and NCHWc reorders may appear, as this CPU's blocked layout needs them (the test's `<= 4` held on
    this VM for days, then it ran Relu, ReorderInput, Conv, Conv, ReorderOutput), each counted as a kernel."""
    model = _shared_relu_model()
    assert optimised_node_count(model, graph_opt="disable") == 5
    assert optimised_node_count(model, graph_opt="basic") == 4
    types = optimised_op_types(model, graph_opt="all")
    reorders = sum(t.startswith("Reorder") for t in types)
    assert "Add" not in types and types.count("Relu") == 1 and types.count("Conv") == 2
    assert len(types) == 3 + reorders == optimised_node_count(model, graph_opt="all")


@pytest.mark.slow
def test_counting_export_agrees_with_the_dynamo_graph():
    """The fast TorchScript export counts the same kernels as the dynamo graph that the timed sessions run."""
    space = SpaceConfig(space="darts", input_h=8, input_w=8, in_channels=1, channels=4, layers=3, batch=1)
    # one network: a dynamo export takes 3-6 s here (more were checked by hand: all equal)
    net = build_network(space, random_architecture(space, random.Random(3)))
    x = [torch.randn(1, 1, 8, 8)]
    assert optimised_node_count(counting_export(net, x, "dynamo", 18)) == \
        optimised_node_count(export_onnx(net, x, "dynamo", 18))


def test_table_counts_kernels_on_ort_cpu_backends_only():
    """`LatencyTable.kernels` counts ONNX Runtime's optimised nodes for ort-cpu and mobile tables (cached per
    architecture), and nothing for torch eager, whose timing has no such graph."""
    space = SpaceConfig(space="darts", input_h=8, input_w=8, in_channels=1, channels=4, layers=3, batch=1)
    g = random_architecture(space, random.Random(0))
    mobile = synthetic(space, backend="mobile")
    expected = optimised_node_count(export_onnx(build_network(space, g), [torch.randn(1, 1, 8, 8)], "torchscript"))
    assert mobile.kernels(g) == expected == network_kernels(space, g)
    assert mobile.features(g, kernels=True)["kernels"] == expected and "kernels" not in mobile.features(g)
    assert mobile.kernels(str(g)) == expected and len(mobile._kernels) == 1
    cpu = synthetic(space, backend="cpu")
    assert cpu.kernels(g) is None and "kernels" not in cpu.features(g, kernels=True)
    # a stored linear+kernels correction prices each kernel
    mobile.meta["calibration"] = {"correction": {"fit": "linear+kernels", "scale": {}, "default_scale": 0.5,
                                                 "per_kernel": 0.002, "intercept": 0.01}}
    assert mobile.predict(g) == pytest.approx(0.5 * mobile.predict(g, corrected=False) + 0.002 * expected + 0.01)


def test_linear_kernels_fit_recovers_a_known_model_and_is_chosen():
    """measured = 0.8 · Σ + 0.001 · K + 0.01 exactly: the fit recovers (0.8, 0.001, 0.01), its held-out error is
    0, the linear fit's is not, and `choose` takes it; with no kernel cost (k = 0) the fit finds k = 0."""
    rng = np.random.default_rng(0)
    sums = rng.uniform(0.08, 0.14, 20)
    kernels = rng.integers(120, 200, 20).astype(float)
    parts = [{"conv": s * 0.7, "fixed": s * 0.3} for s in sums]
    feats = [{"params_m": 0.01, "kernels": k} for k in kernels]
    y = 0.8 * sums + 0.001 * kernels + 0.01
    corr = fit_linear_kernels(parts, y, feats)
    assert (corr["default_scale"], corr["per_kernel"], corr["intercept"]) == pytest.approx((0.8, 0.001, 0.01), abs=1e-6)
    assert apply_correction(parts[0], corr, feats[0]) == pytest.approx(y[0])
    held = {"sum": metrics(sums, y)}
    for name, fit in (("linear", fit_linear), ("linear+kernels", fit_linear_kernels)):
        held[name] = metrics(cross_validated(parts, y, fit, features=feats), y)
    assert held["linear+kernels"]["mape_pct"] < 1e-6 < held["linear"]["mape_pct"]
    assert choose(held, linear_slope=fit_linear(parts, y)["default_scale"]) == "linear+kernels"
    assert fit_linear_kernels(parts, 0.8 * sums + 0.01, feats)["per_kernel"] == pytest.approx(0.0, abs=1e-6)
    # without the feature (a torch eager table) the fit is not offered at all
    figures, *_ = fit_and_choose(parts, y, [{"params_m": 0.01}] * 20, list(sums), folds=5, seed=0)
    assert "linear+kernels" not in figures
    figures, _, chosen, correction = fit_and_choose(parts, y, feats, list(sums), folds=5, seed=0)
    assert chosen == "linear+kernels" and correction["per_kernel"] == pytest.approx(0.001, abs=1e-6)


def test_a_table_calibrated_where_onnx_runtime_fused_otherwise_warns_once():
    """A table's kernel reference (its calibration's network of the most kernels and that count) is recounted on
    first use: the same count, no word; another count (another CPU's NCHWc reorders), one `HwnasWarning` that says
    both counts, only where the stored correction prices kernels."""
    import warnings

    from hwnas.errors import HwnasWarning

    space = SpaceConfig(space="darts", input_h=8, input_w=8, in_channels=1, channels=4, layers=3, batch=1)
    g = random_architecture(space, random.Random(0))
    correction = {"fit": "linear+kernels", "scale": {}, "default_scale": 0.5, "per_kernel": 0.002, "intercept": 0.01}
    here = network_kernels(space, g)
    for stored, warned in ((here, False), (here + 7, True)):
        t = synthetic(space, backend="mobile")
        t.meta["calibration"] = {"correction": correction,
                                 "kernel_reference": {"architecture": str(g), "kernels": stored}}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            t.predict(g)
            t.predict(random_architecture(space, random.Random(1)))
        mine = [str(w.message) for w in caught if issubclass(w.category, HwnasWarning)]
        assert len(mine) == warned and t.kernel_mismatch() == ((here, here + 7) if warned else None)
        assert not warned or f"{here} kernels here, {here + 7} there" in mine[0]
    # a correction without a per-kernel price says nothing, though the count differs
    t.meta["calibration"]["correction"] = {"fit": "linear", "scale": {}, "default_scale": 0.5, "intercept": 0.01}
    t._kernel_mismatch = False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t.predict(g)
        assert t.kernel_mismatch() == (here, here + 7)
    assert not [w for w in caught if issubclass(w.category, HwnasWarning)]
