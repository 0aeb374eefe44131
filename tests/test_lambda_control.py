"""Behaviour tests of the λ-control as a user sees it: one hypernet search must give a family of
networks along λ, from the accurate to the cheap, each usable. (The first-wave code passed every
formula test and returned one genotype at every λ; these tests fail on it.)"""
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from hwnas.search.control import ControlConfig
from hwnas.search.inherit import InheritConfig
from hwnas.search.loop import quick_config, run_search
from hwnas.latency.table import LatencyTable
from hwnas.search.pareto import distinct_architectures, genotype_cost, lambda_grid, load_search, write_pareto
from hwnas.spaces.genotype import Genotype

PROFILES = Path(__file__).resolve().parents[1] / "profiles"
MOBILE_8X8 = PROFILES / "darts-mobile-8x8.csv"


def _search(out: Path, control: ControlConfig, epochs: int = 6, **kw):
    run_search(quick_config(epochs=epochs, control=control, **kw), out)
    return json.loads((out / "lambda_max.json").read_text())


def _latency(frame: pd.DataFrame) -> pd.Series:
    return frame[[c for c in frame.columns if c.startswith("predicted_latency_ms[")][0]]


@pytest.mark.slow
def test_one_hypernet_search_gives_a_family_of_networks_along_lambda(tmp_path):
    """Defaults (softmax, first order, `none` excluded, Λ from the cheapest-optimal rule, automatic α
    learning rate; a short run): several distinct genotypes, predicted latency falling with λ, λ = Λ clearly cheaper
    than λ = 0, and every network far above chance with its inherited weights."""
    # 2 epochs (3 until 2026-12-07, 6 before) and Λ from 32 sampled networks (64 by default; the rule is the same):
    # the suite's slowest test, kept under two minutes
    rec = _search(tmp_path / "run", ControlConfig(tables=(str(MOBILE_8X8),), hypernet="linear", samples=32), epochs=2)
    assert rec["none_excluded"] and "cheapest architecture becomes optimal" in rec["lambda_max_source"]
    assert rec["lambda_max"][0] > 0 and rec["lambda_max_theorem"] is not None
    # Λ is estimated when the λ = 0 quarter ends, on weights a plain search has trained, not after the warm-up
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert rec["estimated_after_steps"] == round(0.25 * metrics["steps"].sum())
    # pareto's defaults but a 20-step front fine-tune (400 by default: that serves the ranking's fidelity, which
    # benchmarks/pareto_rank.py measures; "far above chance" needs far less, and 2,400 steps took 3.5 minutes here)
    frame = write_pareto(tmp_path / "run", 6, InheritConfig(front_steps=20))
    lat = _latency(frame)
    assert distinct_architectures(frame["genotype"]) >= 3
    assert (lat.diff().dropna() <= 1e-9).all(), lat.tolist()          # non-increasing in λ
    assert lat.iloc[-1] <= 0.75 * lat.iloc[0], lat.tolist()            # λ = Λ is clearly cheaper
    assert (frame["val_acc"] > 0.5).all(), frame["val_acc"].tolist()  # chance is 0.1
    assert frame["argmax_valid"].all() and (frame["argmax_none_edges"] == 0).all()
    # pareto's λ are spaced by cost: its networks cover [cost(Λ), cost(0)] with smaller gaps, and no fewer
    # distinct ones, than an even grid in λ of the same length
    search, table = load_search(tmp_path / "run"), LatencyTable.load(MOBILE_8X8)
    even = [search.genotype(torch.tensor([f * rec["lambda_max"][0]])) for (f,) in lambda_grid(6, 1)]
    even_lat = pd.Series([table.predict(g) for g in even])
    assert frame["lambda"].is_monotonic_increasing and frame["lambda"].iloc[-1] == pytest.approx(rec["lambda_max"][0])
    assert distinct_architectures(frame["genotype"]) >= distinct_architectures(even)
    assert -lat.diff().min() <= -even_lat.diff().min() + 1e-9, (lat.tolist(), even_lat.tolist())
    # lambda_max.json's cheapest derivable network (where λ = Λ heads, issue #10.4) is cheaper than every
    # network along λ, priced the search's way and by the table
    cheapest = Genotype.parse(rec["cheapest"]["genotype"][0])
    assert rec["cheapest"]["genotype_cost"][0] == pytest.approx(genotype_cost(search, cheapest))
    assert all(genotype_cost(search, Genotype.parse(g)) >= rec["cheapest"]["genotype_cost"][0] - 1e-12
               for g in frame["genotype"])
    assert table.predict(cheapest) <= lat.min() + 1e-9


@pytest.mark.slow
def test_mlp_hypernet_on_params_trades_parameters_for_accuracy(tmp_path):
    _search(tmp_path / "run", ControlConfig(cost="params", hypernet="mlp", warmup_epochs=2, samples=16), epochs=2,
            layers=3)  # N, R, R cells; 2 epochs: 5 distinct networks, 18,290 → 7,170 parameters, 92–97 %
    frame = write_pareto(tmp_path / "run", 5, InheritConfig(front_steps=10))
    assert distinct_architectures(frame["genotype"]) >= 2
    assert frame["params"].iloc[-1] < frame["params"].iloc[0]
    assert (frame["val_acc"] > 0.3).all()


def _synthetic_table(dst: Path, price: dict[str, float], layers: int = 3) -> Path:
    """A table of the quickstart's 8×8 space with `layers` cells where each candidate op costs `price[op]` ms
    wherever it sits and everything else 0.01 ms (no calibration)."""
    from hwnas.latency.space import SpaceConfig
    from tests.test_latency_table import synthetic

    space = SpaceConfig(input_h=8, input_w=8, in_channels=1, channels=8, layers=layers, batch=1)
    synthetic(space, latency=lambda k: price.get(k.op, 0.01)).save(dst)
    return dst


def _count(g: Genotype, ops: tuple[str, ...]) -> int:
    return sum(op in ops for op, _ in (*g.normal, *g.reduce))


@pytest.mark.slow
def test_two_devices_each_lambda_moves_toward_what_is_cheap_there(tmp_path):
    """Device A makes convolutions cheap and pooling dear, device B the reverse: growing λ_A must move
    the architecture toward convolutions, growing λ_B toward pooling/skip."""
    convs = ("sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")
    free = ("max_pool_3x3", "avg_pool_3x3", "skip_connect")
    a = _synthetic_table(tmp_path / "a.csv", {**{o: 0.001 for o in convs}, **{o: 0.05 for o in free}})
    b = _synthetic_table(tmp_path / "b.csv", {**{o: 0.05 for o in convs}, **{o: 0.001 for o in free}})
    # a short Λ estimate (2 warm-up epochs, 16 samples; 5 and 64 by default): the direction is the point here
    rec = _search(tmp_path / "run", ControlConfig(tables=(str(a), str(b)), hypernet="linear", warmup_epochs=2,
                                                  samples=16), epochs=2, layers=3)   # N, R, R cells
    assert len(rec["lambda_max"]) == 2
    frame = write_pareto(tmp_path / "run", 3, InheritConfig(front_steps=0))
    # the simplex grid: (0, 0), (0, ½), (½, 0), (0, 1), (½, ½), (1, 0)
    assert len(frame) == 6
    fa = frame[[c for c in frame.columns if c.startswith("lambda[")]].to_numpy() / rec["lambda_max"]
    assert (fa.sum(1) <= 1 + 1e-6).all()
    at_a = Genotype.parse(frame["genotype"].iloc[[i for i, f in enumerate(fa) if abs(f[0] - 1) < 1e-6][0]])
    at_b = Genotype.parse(frame["genotype"].iloc[[i for i, f in enumerate(fa) if abs(f[1] - 1) < 1e-6][0]])
    assert _count(at_a, convs) > _count(at_b, convs)
    assert _count(at_b, free) > _count(at_a, free)
    pa, pb = [c for c in frame.columns if c.startswith("predicted_latency_ms[")]
    row_a = frame.iloc[[i for i, f in enumerate(fa) if abs(f[0] - 1) < 1e-6][0]]
    row_b = frame.iloc[[i for i, f in enumerate(fa) if abs(f[1] - 1) < 1e-6][0]]
    assert row_a[pa] < row_b[pa] and row_b[pb] < row_a[pb]
    shutil.rmtree(tmp_path / "run")
