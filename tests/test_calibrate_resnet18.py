"""`hwnas calibrate` on a resnet18 table: its samples cover the gates `hwnas prune` has (branch widths and
projection shortcuts), and a known relation between table sums and whole-network timings is recovered."""
from __future__ import annotations

import random

import pytest

from hwnas.latency import resnet_keys as rk
from hwnas.latency.backends import Backend
from hwnas.latency.calibrate import calibrate, random_architecture
from hwnas.latency.space import SpaceConfig
from hwnas.latency.stats import TimingStats
from hwnas.spaces.gated_resnet import PROJECTIONS, GateSet
from tests.test_latency_table import synthetic

SPACE = SpaceConfig(space="resnet18", input_h=28, input_w=28, in_channels=1, batch=1)
SCALE, INTERCEPT = 1.3, 0.2


def arch_of(model) -> dict:
    """The arch dict of a `pruned_resnet18` module, read back from its blocks."""
    arch = {}
    for pos in rk.block_positions(SPACE):
        stage, idx = pos.name.split(".")
        blk = getattr(model, stage)[int(idx)]
        arch[pos.name] = 0.0 if blk.branch is None else blk.branch[0].out_channels / pos.c_out
        if pos.projection:
            arch[rk.downsample_name(pos.name)] = float(blk.downsample is not None)
    return arch


class Linear(Backend):
    """Times a whole pruned ResNet18 as SCALE · (the table's sum for it) + INTERCEPT: a known answer."""

    def __init__(self, table):
        super().__init__(None)
        self.table, self.archs = table, []

    def describe(self):
        return {"device": self.table.meta["device"], "backend_version": "0"}

    def measure(self, module, shapes, dtype="float32"):
        arch = arch_of(module)
        self.archs.append(arch)
        ms = SCALE * self.table.predict(arch, corrected=False) + INTERCEPT
        return TimingStats(ms, ms, ms, ms, 10, 0)


def test_resnet18_samples_are_valid_and_remove_shortcuts_too():
    rng = random.Random(0)
    archs = [random_architecture(SPACE, rng) for _ in range(40)]
    for a in archs:
        assert set(a) == set(rk.BLOCKS) | {rk.downsample_name(p) for p in PROJECTIONS}
        gates = GateSet(tuple(a[b] for b in rk.BLOCKS), tuple(bool(a[rk.downsample_name(p)]) for p in PROJECTIONS))
        assert gates.is_valid()
    for a in archs[:3]:
        rk.pruned_keys(SPACE, a)  # a table can price it
    removed = [a[rk.downsample_name(p)] == 0 for a in archs for p in PROJECTIONS]
    assert 0.2 < sum(removed) / len(removed) < 0.6   # about half, less the redrawn broken sets
    assert {a["layer1.0"] for a in archs} == {0.0, *rk.FRACTIONS}
    assert random_architecture(SPACE, random.Random(0)) == archs[0]   # seeded


@pytest.mark.slow
def test_calibrate_a_resnet18_table_recovers_a_known_linear_relation():
    def latency(k):   # a branch costs in proportion to its width; every key differs
        width = float(k.op.rsplit("_", 1)[1]) if k.op.startswith("resnet_branch_") else 0.25
        return 0.001 * k.c_in * k.h * width + 0.01

    table = synthetic(SPACE, device="fake-cpu", backend="cpu", latency=latency)
    backend = Linear(table)
    cal = calibrate(table, samples=10, folds=5, backend=backend)
    assert len(backend.archs) == 10 + 2 and any(  # the random ones, the cheapest and the costliest
        a[rk.downsample_name(p)] == 0 for a in backend.archs for p in PROJECTIONS)
    assert [r["architecture"] for r in cal.samples] == backend.archs   # the networks timed are the ones sampled
    assert cal.figures["linear"]["mape_pct"] < 1e-6 and cal.figures["linear"]["spearman"] == pytest.approx(1.0)
    assert cal.chosen in ("linear", "per-kind", "linear+params") and cal.figures[cal.chosen]["mape_pct"] < 1e-6
    held_out = {**{b: 0.5 for b in rk.BLOCKS}, "layer3.0": 0.0, rk.downsample_name("layer4.0"): 0.0}
    assert table.predict(held_out) == pytest.approx(SCALE * table.predict(held_out, corrected=False) + INTERCEPT)


class PaysForWeights(Linear):
    """SCALE · sum + PER_PARAM · (weights, millions) + INTERCEPT: networks whose weights stream from memory."""

    def measure(self, module, shapes, dtype="float32"):
        arch = arch_of(module)
        self.archs.append(arch)
        ms = SCALE * self.table.predict(arch, corrected=False) + 0.05 * sum(p.numel() for p in module.parameters()) / 1e6
        return TimingStats(ms + INTERCEPT, ms + INTERCEPT, ms + INTERCEPT, ms + INTERCEPT, 10, 0)


@pytest.mark.slow
def test_a_cost_per_weight_is_found_stored_and_priced_by_predict_and_the_prune_cost():
    from hwnas.prune.gate_cost import GateCost

    def latency(k):   # per-op times that do not grow with the weights as fast as the networks do
        return 0.002 * k.h + 0.01

    table = synthetic(SPACE, device="fake-cpu", backend="cpu", latency=latency)
    cal = calibrate(table, samples=15, folds=5, backend=PaysForWeights(table))
    assert cal.chosen == "linear+params" and cal.figures["linear+params"]["mape_pct"] < 1e-4
    assert cal.figures["linear"]["mape_pct"] > 1.0
    assert table.correction["per_param_m"] == pytest.approx(0.05, rel=1e-4)
    # held out: a network calibrate never timed, its whole module's weights against the keys' count
    held_out = {**{b: 0.75 for b in rk.BLOCKS}, "layer1.1": 0.0, rk.downsample_name("layer2.0"): 0.0}
    net = rk.pruned_resnet18(SPACE, held_out)
    truth = (SCALE * table.predict(held_out, corrected=False)
             + 0.05 * sum(p.numel() for p in net.parameters()) / 1e6 + INTERCEPT)
    assert table.features(held_out)["params_m"] == pytest.approx(sum(p.numel() for p in net.parameters()) / 1e6)
    assert table.predict(held_out) == pytest.approx(truth, rel=1e-4)
    # the pruning cost model prices the same correction: constant + Tᵀγ = the table's prediction (less its call)
    gates = GateSet(tuple(held_out[b] for b in rk.BLOCKS), tuple(bool(held_out.get(rk.downsample_name(p), 1.0))
                                                                    for p in PROJECTIONS))
    assert GateCost.from_table(table).of(gates) == pytest.approx(table.predict(held_out), rel=1e-4)
