"""The lookup tables shipped in profiles/ load, cover their space, and predict."""
from pathlib import Path

import pytest
import torch

from hwnas.latency.table import LatencyTable
from hwnas.spaces.genotype import DARTS_V2

SHIPPED = sorted((Path(__file__).resolve().parents[1] / "profiles").glob("*.csv"))


def test_tables_are_shipped_for_the_cpu_backends():
    backends = {LatencyTable.load(p).backend for p in SHIPPED}
    assert {"cpu", "ort-cpu", "mobile"} <= backends, [p.name for p in SHIPPED]


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
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
