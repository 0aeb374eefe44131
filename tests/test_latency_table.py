import json
import random

import pandas as pd
import pytest
import torch

from hwnas.errors import HwnasError
from hwnas.latency import darts_keys as dk
from hwnas.latency import resnet_keys as rk
from hwnas.latency.space import SpaceConfig
from hwnas.latency.table import LatencyTable, sidecar_path
from hwnas.spaces.genotype import DARTS_V2, Genotype
from hwnas.spaces.ops import PRIMITIVES
from tests.test_genotype import random_genotype

TINY = SpaceConfig(channels=4, layers=3, batch=2)


def synthetic(space=TINY, device="cpu-A", backend="cpu", latency=None):
    """A table whose latencies are a known function of the key (default: distinct per op)."""
    keys = dk.darts_keys(space) if space.space == "darts" else rk.resnet_keys(space)
    latency = latency or (lambda k: 0.001 * len(k.op) * k.c_in * k.h)
    rows = [{**k._asdict(), "p50_ms": latency(k), "p10_ms": latency(k) * 0.9, "p90_ms": latency(k) * 1.1, "n": 10}
            for k in keys]
    meta = {"device": device, "backend": backend, "threads": 1, "space": space.to_dict(), "calibration": None}
    return LatencyTable(pd.DataFrame(rows), meta)


def test_save_load_round_trip(tmp_path):
    t = synthetic()
    t.save(tmp_path / "t.csv")
    assert sidecar_path(tmp_path / "t.csv").is_file()
    u = LatencyTable.load(tmp_path / "t.csv")
    assert u.keys() == t.keys()
    assert all(u.lookup(k) == pytest.approx(t.lookup(k), rel=1e-5) for k in t.keys())
    assert u.space == TINY and u.meta["device"] == "cpu-A"


def test_predict_is_the_hand_computed_sum():
    t = synthetic(latency=lambda k: 1.0)  # every key costs 1 ms: the prediction counts keys
    g = DARTS_V2
    # stem + 3 cells × (2 preprocess + 8 ops + 4 adds + 1 concat) + head
    assert t.predict(g) == pytest.approx(1 + 3 * 15 + 1)
    none_g = Genotype.from_dict({**g.to_dict(), "normal": [["none", 0], *g.to_dict()["normal"][1:]]})
    assert t.predict(none_g) == pytest.approx(1 + 3 * 15 + 1 - 1)  # `none` costs 0 (one normal cell here)



@pytest.mark.parametrize("seed", [None, 1, 2, 3])
def test_predict_prices_each_op_at_its_position(seed):
    """Op costs that depend on the op, its channels, its input resolution and its stride, summed by hand from
    the genotype's lists and the DARTS geometry written out here (8×8 input, C = 4, 3 cells: normal at
    C 4 / 8×8, reductions at C 8 / 8×8 and C 16 / 4×4; a reduction's edges from its two inputs have stride 2
    at the input resolution, the rest stride 1 at half of it) — not from the key walk `predict` uses."""
    g = DARTS_V2 if seed is None else random_genotype(random.Random(seed))
    cost = {op: 10.0 ** i for i, op in enumerate(p for p in PRIMITIVES if p != "none")}

    def latency(k):  # every fixed key (stem, preprocessing, adds, concat, head) 1 ms
        return cost[k.op] * k.c_in * k.h * (3.0 if k.stride == 2 else 1.0) if k.op in cost else 1.0

    t = synthetic(latency=latency)
    fixed = 1 + 1 + 3 * (2 + 4 + 1)   # stem, head; per cell 2 preprocess, 4 adds, 1 concat
    cells = [("normal", 4, 8), ("reduce", 8, 8), ("reduce", 16, 4)]   # (cell type, C, input resolution)
    by_hand = fixed
    for kind, c, h in cells:
        for op, j in (g.normal if kind == "normal" else g.reduce):
            if op == "none":
                continue
            if kind == "reduce" and j < 2:
                by_hand += cost[op] * c * h * 3.0
            else:
                by_hand += cost[op] * c * (h // 2 if kind == "reduce" else h)
    assert t.predict(g) == pytest.approx(by_hand, rel=1e-12)


def test_correction_is_applied_per_kind():
    t = synthetic()
    g = random_genotype(random.Random(3))
    parts = t.breakdown(g)
    assert set(parts) <= {"conv", "pool", "skip", "fixed"}
    t.meta["calibration"] = {"correction": {"fit": "per-kind", "scale": {"conv": 2.0, "pool": 0.5}, "default_scale": 1.0,
                                            "intercept": 0.25}}
    expected = 2.0 * parts.get("conv", 0) + 0.5 * parts.get("pool", 0) + parts.get("skip", 0) + parts["fixed"] + 0.25
    assert t.predict(g) == pytest.approx(expected)
    assert t.predict(g, corrected=False) == pytest.approx(sum(parts.values()))


def test_edge_costs_shape_order_and_none():
    t = synthetic()
    T = t.edge_costs()
    assert T.shape == (3, 14, len(PRIMITIVES))
    assert torch.all(T[:, :, PRIMITIVES.index("none")] == 0)
    cells = dk.cell_positions(TINY)
    # cell 1 reduces: edge 0 reads state 0 (stride 2), edge 2 reads state 0 of node 1, edge 4 reads node 2 (stride 1)
    sep = PRIMITIVES.index("sep_conv_3x3")
    assert T[1, 0, sep] == pytest.approx(t.lookup(dk.edge_key(TINY, cells[1], "sep_conv_3x3", 0)))
    assert dk.edge_key(TINY, cells[1], "sep_conv_3x3", 0).stride == 2
    assert T[1, 4, sep] == pytest.approx(t.lookup(dk.edge_key(TINY, cells[1], "sep_conv_3x3", 2)))
    # a genotype's op sum equals Σ over its (edge, op) entries of T
    g = DARTS_V2
    offsets = [0, 2, 5, 9]
    total = sum(T[c.index, offsets[k // 2] + j, PRIMITIVES.index(op)].item()
                for c in cells for k, (op, j) in enumerate(g.reduce if c.reduction else g.normal))
    assert total == pytest.approx(t.breakdown(g)["conv"] + t.breakdown(g).get("pool", 0) + t.breakdown(g)["skip"],
                                  rel=1e-5)


def test_edge_costs_pay_the_cost_per_weight_of_a_linear_params_correction():
    t = synthetic()
    t.meta["calibration"] = {"correction": {"fit": "linear+params", "scale": {}, "default_scale": 1.5,
                                            "per_param_m": 2.0, "intercept": 0.1}}
    raw, T = t.edge_costs(), t.edge_costs(corrected=True)
    cells = dk.cell_positions(TINY)
    for op in ("sep_conv_3x3", "max_pool_3x3", "skip_connect"):
        key = dk.edge_key(TINY, cells[0], op, 0)
        o = PRIMITIVES.index(op)
        assert T[0, 0, o] == pytest.approx(1.5 * raw[0, 0, o].item() + 2.0 * t.key_params(key) / 1e6, rel=1e-5)
    assert t.key_params(dk.edge_key(TINY, cells[0], "sep_conv_3x3", 0)) > 0
    assert t.key_params(dk.edge_key(TINY, cells[0], "max_pool_3x3", 0)) == 0
    # a genotype's prediction: its features are its keys' weights, added at the correction's rate
    g = DARTS_V2
    parts = t.breakdown(g)
    assert t.predict(g) == pytest.approx(1.5 * sum(parts.values()) + 2.0 * t.features(g)["params_m"] + 0.1)


def test_missing_key_names_key_and_command(tmp_path):
    t = synthetic()
    t.frame = t.frame[t.frame["op"] != "sep_conv_5x5"]
    t.save(tmp_path / "t.csv")
    t = LatencyTable.load(tmp_path / "t.csv")
    g = Genotype.from_dict({**DARTS_V2.to_dict(), "normal": [["sep_conv_5x5", 0], *DARTS_V2.to_dict()["normal"][1:]]})
    with pytest.raises(HwnasError) as e:
        t.predict(g)
    msg = str(e.value)
    assert "sep_conv_5x5(c_in=4" in msg and "hwnas profile --device cpu" in msg and "--channels 4 --layers 3" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("content, match", [
    ("", "not a readable CSV"),
    ("op,c_in\nsep_conv_3x3,4\n", "missing column"),
    ("op,c_in,c_out,h,w,stride,batch,dtype,p50_ms,p10_ms,p90_ms,n\nadd,4,4,8,8,1,2,float32,fast,1,1,3\n", "not a number"),
    ("op,c_in,c_out,h,w,stride,batch,dtype,p50_ms,p10_ms,p90_ms,n\nadd,4,4,8,8,1,2,float32,1,1,1,3\n"
     "add,4,4,8,8,1,2,float32,2,1,1,3\n", "more than once"),
])
def test_malformed_tables_are_clear_errors(tmp_path, content, match):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    sidecar_path(path).write_text(json.dumps(synthetic().meta))
    with pytest.raises(HwnasError, match=match):
        LatencyTable.load(path)


def test_missing_or_bad_sidecar(tmp_path):
    path = tmp_path / "t.csv"
    synthetic().save(path)
    sidecar_path(path).write_text("{not json")
    with pytest.raises(HwnasError, match="not valid JSON"):
        LatencyTable.load(path)
    sidecar_path(path).write_text(json.dumps({"device": "x"}))
    with pytest.raises(HwnasError, match="sidecar lacks backend"):
        LatencyTable.load(path)
    sidecar_path(path).unlink()
    with pytest.raises(HwnasError, match="no sidecar"):
        LatencyTable.load(path)
    with pytest.raises(HwnasError, match="no latency table"):
        LatencyTable.load(tmp_path / "nothing.csv")


def test_device_mixing_is_refused_unless_allowed():
    a = synthetic(device="cpu-A")
    b = synthetic(SpaceConfig(channels=6, layers=3, batch=2), device="cpu-B")
    with pytest.raises(HwnasError, match="refusing to mix"):
        a.combine(b)
    with pytest.raises(HwnasError, match="refusing to mix"):
        a.combine(synthetic(SpaceConfig(channels=6, layers=3, batch=2), backend="ort-cpu"))
    mixed = a.combine(b, allow_mixed_devices=True)
    assert mixed.meta["mixed_devices"] and len(mixed) == len(a) + len(b) - 0
    same = a.combine(synthetic(SpaceConfig(channels=6, layers=3, batch=2)))
    assert "mixed_devices" not in same.meta and len(same) > len(a)


def test_resnet_predict_from_fractions():
    space = SpaceConfig(space="resnet18", input_h=32, input_w=32, in_channels=3, batch=1)
    t = synthetic(space, latency=lambda k: {"resnet_branch_1.00": 4.0, "resnet_branch_0.50": 2.0}.get(k.op, 0.5))
    whole = t.predict({})
    # stem + 8 branches (4 ms) + 3 shortcuts + 8 add-relu + head, all others 0.5 ms
    assert whole == pytest.approx(0.5 + 8 * 4.0 + 3 * 0.5 + 8 * 0.5 + 0.5)
    # halving one block saves 2 ms; removing an identity block saves its branch and its add-relu
    assert t.predict({"layer3.1": 0.5}) == pytest.approx(whole - 2.0)
    assert t.predict({"layer3.1": 0}) == pytest.approx(whole - 4.5)
    assert t.predict({"layer3.0": 0}) == pytest.approx(whole - 4.0)  # projection block keeps shortcut + relu
    with pytest.raises(HwnasError, match="needs a darts table"):
        t.predict(DARTS_V2)
