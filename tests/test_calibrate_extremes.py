"""`calibrate` also times the space's cheapest and costliest networks by the table: the ends a search along λ reaches,
which random networks (sums of many independent choices, near the middle of the range) never sample."""
from __future__ import annotations

import dataclasses
import itertools
import random
import zlib

import pytest

from hwnas.latency import resnet_keys as rk
from hwnas.latency.calibrate import calibrate, extreme_architectures, random_architecture
from hwnas.latency.space import SpaceConfig
from hwnas.spaces.gated_resnet import PROJECTIONS, GateSet
from hwnas.spaces.ops import PRIMITIVES
from tests.test_calibrate_speed import INTERCEPT, SCALE, Drifting
from tests.test_latency_table import synthetic

SMALL = SpaceConfig(channels=4, layers=3, batch=1, steps=2, multiplier=2)
RESNET = SpaceConfig(space="resnet18", input_h=28, input_w=28, in_channels=1, batch=1)


def scattered(k) -> float:
    """A price per key with no order to it (not by op, channels or stride): the ends are found from the table."""
    return 0.01 + (zlib.crc32(repr(tuple(k)).encode()) % 1000) / 1e4


def all_cells(steps: int):
    ops = [p for p in PRIMITIVES if p != "none"]
    per_node = [[((a, i), (b, j)) for i, j in itertools.combinations(range(n + 2), 2) for a in ops for b in ops]
                for n in range(steps)]
    for nodes in itertools.product(*per_node):
        yield tuple(e for node in nodes for e in node)


def test_darts_ends_are_the_exhaustive_cheapest_and_costliest():
    table = synthetic(SMALL, latency=scattered)
    cheapest, costliest = extreme_architectures(table)
    concat = (2, 3)
    for cell in ("normal", "reduce"):   # the two cell types cost independently: search each exhaustively
        def price(edges, base, cell=cell):
            return table.predict(dataclasses.replace(base, **{cell: edges}), corrected=False)

        sums = [price(edges, cheapest) for edges in all_cells(SMALL.steps)]
        assert table.predict(cheapest, corrected=False) == pytest.approx(min(sums))
        sums = [price(edges, costliest) for edges in all_cells(SMALL.steps)]
        assert table.predict(costliest, corrected=False) == pytest.approx(max(sums))
    assert cheapest.normal_concat == concat and costliest.reduce_concat == concat


def test_darts_ends_bound_random_networks_of_the_full_space():
    space = SpaceConfig(channels=4, layers=5, batch=1)
    table = synthetic(space, latency=scattered)
    cheapest, costliest = (table.predict(g, corrected=False) for g in extreme_architectures(table))
    rng = random.Random(0)
    sums = [table.predict(random_architecture(space, rng), corrected=False) for _ in range(200)]
    assert cheapest < min(sums) and costliest > max(sums)


def test_resnet18_ends_are_valid_and_bound_random_gate_sets():
    table = synthetic(RESNET, latency=scattered)
    ends = extreme_architectures(table)
    for a in ends:
        gates = GateSet(tuple(a[b] for b in rk.BLOCKS), tuple(bool(a[rk.downsample_name(p)]) for p in PROJECTIONS))
        assert gates.is_valid()
    cheapest, costliest = (table.predict(a, corrected=False) for a in ends)
    rng = random.Random(0)
    sums = [table.predict(random_architecture(RESNET, rng), corrected=False) for _ in range(200)]
    assert cheapest <= min(sums) and costliest >= max(sums)
    # one block changed to any other valid setting never crosses an end (costs add per block)
    for b in rk.BLOCKS:
        for f in (0.0, *rk.FRACTIONS):
            other = {**ends[0], b: f}
            if b in PROJECTIONS and f == 0.0 and not other[rk.downsample_name(b)]:
                continue
            assert table.predict(other, corrected=False) >= cheapest - 1e-12


def test_calibrate_times_the_ends_beside_the_random_networks():
    table = synthetic(device="fake-cpu")
    cal = calibrate(table, samples=8, folds=4, backend=Drifting(table, speeds=(1.0,)))
    assert [r["drawn"] for r in cal.samples] == ["cheapest"] + ["random"] * 8 + ["costliest"]
    sums = [r["sum_ms"] for r in cal.samples]
    assert sums[0] == min(sums) and sums[-1] == max(sums)
    stored = table.meta["calibration"]
    assert stored["samples"] == 8 and stored["extremes"] == 2
    assert stored["correction"]["default_scale"] == pytest.approx(SCALE, rel=1e-6)
    assert stored["correction"]["intercept"] == pytest.approx(INTERCEPT, rel=1e-6)
    plain = synthetic(device="fake-cpu")
    cal = calibrate(plain, samples=8, folds=4, backend=Drifting(plain, speeds=(1.0,)), extremes=False)
    assert {r["drawn"] for r in cal.samples} == {"random"} and len(cal.samples) == 8
