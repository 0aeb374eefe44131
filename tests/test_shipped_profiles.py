"""The lookup tables shipped in profiles/ load, cover their space, and predict."""
from pathlib import Path

import pytest
import torch

from hwnas.latency.table import LatencyTable
from hwnas.spaces.genotype import DARTS_V2

SHIPPED = sorted((Path(__file__).resolve().parents[1] / "profiles").glob("*.csv"))
DARTS = [p for p in SHIPPED if p.name.startswith("darts-")]
RESNET = [p for p in SHIPPED if p.name.startswith("resnet18-")]


def test_tables_are_shipped_for_the_cpu_backends():
    backends = {LatencyTable.load(p).backend for p in SHIPPED}
    assert {"cpu", "ort-cpu", "mobile"} <= backends, [p.name for p in SHIPPED]


@pytest.mark.parametrize("path", DARTS, ids=[p.name for p in DARTS])
def test_shipped_table_loads_and_predicts(path):
    table = LatencyTable.load(path)
    assert table.meta["device"] and table.backend in {"cpu", "ort-cpu", "mobile"}
    raw = table.predict(DARTS_V2, corrected=False)
    assert raw > 0
    assert table.correction is not None, f"{path.name} has no calibration; run hwnas calibrate --table {path}"
    assert table.predict(DARTS_V2) > 0
    costs = table.edge_costs()
    assert costs.shape == (table.space.layers, 14, 8)
    assert torch.all(costs[:, :, 0] == 0) and torch.all(costs[:, :, 4:] > 0)  # none is free; convs cost


def test_every_shipped_table_is_of_a_known_space():
    assert set(SHIPPED) == set(DARTS) | set(RESNET) and RESNET


@pytest.mark.parametrize("path", RESNET, ids=[p.name for p in RESNET])
def test_shipped_resnet18_table_predicts_pruning(path):
    table = LatencyTable.load(path)
    assert table.meta["device"] and table.space.space == "resnet18" and table.correction is not None
    intact = table.predict({})
    assert intact > 0
    assert table.predict({"layer4.1": 0.5}) < intact and table.predict({"layer4.1": 0.0}) < table.predict({"layer4.1": 0.5})
