import random

import numpy as np
import pytest
from scipy import stats as sps

from hwnas.latency.calibrate import (choose, cross_validated, fit_linear, fit_linear_params, fit_per_kind, metrics,
                                     random_architecture)
from hwnas.latency.space import SpaceConfig
from hwnas.latency.stats import TimingConfig, drop_slow_outliers, repeat_count, summarise, time_callable
from hwnas.latency.table import apply_correction
from hwnas.spaces.genotype import Genotype


def test_summary_median_percentiles_and_slow_outliers():
    samples = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 1000.0]
    s = summarise(samples)
    # Q1 = 3.5, Q3 = 8.5 on the raw 11 samples → fence 8.5 + 3·5 = 23.5: only 1000 goes
    assert s.n == 10 and s.n_dropped == 1
    assert s.p50_ms == pytest.approx(5.5)
    assert s.p10_ms == pytest.approx(np.percentile(np.arange(1, 11), 10))  # 1.9
    assert s.p90_ms == pytest.approx(9.1)
    assert s.mean_ms == pytest.approx(5.5)


def test_outlier_rule_is_one_sided_and_needs_four_samples():
    fast = [0.001, 5.0, 5.1, 5.2, 5.3, 5.4]  # a fast sample is real, never dropped
    assert len(drop_slow_outliers(fast)) == 6
    assert len(drop_slow_outliers([1.0, 100.0, 1.0])) == 3
    bimodal = [1.0] * 10 + [2.0] * 10  # genuine two-mode timings stay
    assert len(drop_slow_outliers(bimodal)) == 20


def test_repeat_count_is_clamped():
    assert repeat_count(0.001, 0.25) == 250
    assert repeat_count(1.0, 0.25) == 10
    assert repeat_count(1e-7, 0.25) == 1000


def test_time_callable_warms_up_then_counts_runs():
    calls = []
    ticks = iter(range(10_000))
    stats = time_callable(lambda: calls.append(1), TimingConfig(warmup_runs=3, warmup_s=0.0, budget_s=1.0, min_runs=5,
                                                                max_runs=7, blocks=1, max_passes=1),
                          clock=lambda fn: (fn(), float(next(ticks) % 3 + 1))[1])
    assert len(calls) == 3 + 7 and stats.n + stats.n_dropped == 7


def _script_clock(values):
    """A clock that calls fn and returns the next scripted duration."""
    it = iter(values)
    return lambda fn: (fn(), next(it))[1]


def test_time_callable_times_more_blocks_while_the_median_is_unstable():
    cfg = TimingConfig(warmup_runs=2, warmup_s=0.0, budget_s=1.0, min_runs=10, max_runs=10, blocks=5,
                       precision=0.05, max_passes=3)
    # warm-up 2 runs, then pass 1: blocks of 2 at 1, 2, 1, 2, 1 ms (block medians' IQR/median = 100 %),
    # pass 2: all 1 ms → medians [1, 2, 1, 2, 1, 1, 1, 1, 1, 1], IQR 0: settled after two passes.
    first = [1.0, 1.0, 2.0, 2.0] * 2 + [1.0, 1.0]
    calls = []
    stats = time_callable(lambda: calls.append(1), cfg, clock=_script_clock([1.0, 1.0] + first + [1.0] * 10))
    assert len(calls) == 2 + 20 and stats.n + stats.n_dropped == 20
    assert stats.spread == 0.0 and not stats.noisy and stats.p50_ms == 1.0
    steady = time_callable(lambda: None, cfg, clock=_script_clock([1.0] * 100))
    assert steady.spread == 0.0 and not steady.noisy and steady.n == 10  # one pass suffices


def test_time_callable_flags_a_measurement_that_never_settles():
    cfg = TimingConfig(warmup_runs=1, warmup_s=0.0, budget_s=1.0, min_runs=4, max_runs=4, blocks=2, precision=0.05,
                       max_passes=3)
    calls = []
    # blocks alternate 1 ms and 3 ms forever: three passes, then a noisy result
    stats = time_callable(lambda: calls.append(1), cfg, clock=_script_clock([1.0] + [1.0, 1.0, 3.0, 3.0] * 3))
    medians = [1.0, 3.0] * 3
    q1, q2, q3 = np.percentile(medians, [25, 50, 75])
    assert len(calls) == 1 + 12 and stats.noisy and stats.spread == pytest.approx((q3 - q1) / q2)


def test_time_callable_drops_a_descheduled_block():
    import time

    state = {"i": 0}

    def fn():  # busy for ~0.3 ms, except during the third block, where the process sleeps instead
        state["i"] += 1
        if 2 * 20 < state["i"] - 3 <= 3 * 20:
            time.sleep(0.0003)
        else:
            t = time.perf_counter()
            while time.perf_counter() - t < 0.0003:
                pass

    cfg = TimingConfig(warmup_runs=3, warmup_s=0.0, budget_s=1.0, min_runs=100, max_runs=100, blocks=5,
                       precision=10.0, max_passes=1)
    stats = time_callable(fn, cfg)
    assert stats.n_disturbed >= 1 and stats.n + stats.n_dropped <= 80


def test_metrics_against_hand_values_and_scipy():
    m = np.array([10.0, 20.0, 30.0, 40.0, 50.0])
    p = np.array([11.0, 18.0, 33.0, 39.0, 60.0])
    f = metrics(p, m)
    rel = [0.1, 0.1, 0.1, 0.025, 0.2]
    assert f["mape_pct"] == pytest.approx(100 * np.mean(rel))
    assert f["within_10pct"] == pytest.approx(4 / 5)
    assert f["spearman"] == pytest.approx(sps.spearmanr(p, m).statistic) == pytest.approx(1.0)
    swapped = np.array([20.0, 10.0, 30.0, 40.0, 50.0])
    g = metrics(swapped, m)
    assert g["spearman"] == pytest.approx(1 - 6 * 2 / (5 * 24))  # one adjacent swap: 1 − 6Σd²/(n(n²−1))
    assert g["kendall"] == pytest.approx((9 - 1) / 10)           # 9 concordant, 1 discordant pair


def test_linear_fit_recovers_a_and_b_and_cv_is_held_out():
    rng = np.random.default_rng(0)
    sums = rng.uniform(1, 10, 40)
    parts = [{"conv": s} for s in sums]
    y = 1.7 * sums + 0.3
    corr = fit_linear(parts, y)
    assert corr["default_scale"] == pytest.approx(1.7) and corr["intercept"] == pytest.approx(0.3)
    assert apply_correction({"conv": 2.0}, corr) == pytest.approx(3.7)
    held = cross_validated(parts, y, fit_linear, folds=5)
    assert np.allclose(held, y)  # noiseless: held-out predictions are exact too
    # A sample that contradicts the rest is predicted from the others only (it is held out)
    y_bad = y.copy()
    y_bad[0] += 100
    held = cross_validated(parts, y_bad, fit_linear, folds=40)  # leave-one-out
    assert abs(held[0] - y[0]) < abs(held[0] - y_bad[0])


def test_per_kind_fit_recovers_scales_and_keeps_constant_kinds():
    rng = np.random.default_rng(1)
    parts = [{"conv": rng.uniform(1, 5), "pool": rng.uniform(0, 1), "skip": rng.uniform(0, 0.5), "fixed": 2.0}
             for _ in range(30)]
    y = np.array([1.5 * p["conv"] + 0.5 * p["pool"] + 3.0 * p["skip"] + p["fixed"] - 0.4 for p in parts])
    corr = fit_per_kind(parts, y)
    assert corr["scale"]["conv"] == pytest.approx(1.5, abs=1e-6)
    assert corr["scale"]["pool"] == pytest.approx(0.5, abs=1e-6)
    assert corr["scale"]["skip"] == pytest.approx(3.0, abs=1e-6)
    assert corr["scale"]["fixed"] == 1.0 and corr["intercept"] == pytest.approx(-0.4, abs=1e-6)
    linear_err = metrics(cross_validated(parts, y, fit_linear), y)["mape_pct"]
    kind_err = metrics(cross_validated(parts, y, fit_per_kind), y)["mape_pct"]
    assert kind_err < 1e-6 < linear_err


def test_linear_params_fit_recovers_the_cost_per_weight_and_beats_linear_held_out():
    """Whole networks that pay for their weights (a · Σ + c · P + b): linear on the sum alone cannot
    express it, the linear+params fit recovers a, c, b exactly, and `choose` takes it when it ranks no worse."""
    rng = np.random.default_rng(2)
    parts = [{"conv": rng.uniform(1, 5), "fixed": 0.5} for _ in range(30)]
    feats = [{"params_m": rng.uniform(0, 10)} for _ in range(30)]
    y = np.array([1.2 * sum(p.values()) + 0.3 * f["params_m"] - 0.2 for p, f in zip(parts, feats)])
    corr = fit_linear_params(parts, y, feats)
    assert (corr["default_scale"], corr["per_param_m"], corr["intercept"]) == pytest.approx((1.2, 0.3, -0.2), abs=1e-6)
    assert apply_correction({"conv": 2.0, "fixed": 0.5}, corr, {"params_m": 4.0}) == pytest.approx(1.2 * 2.5 + 1.2 - 0.2)
    with pytest.raises(ValueError, match="features"):
        apply_correction({"conv": 2.0}, corr)   # a cost per weight cannot be applied without the network's weights
    figures = {"sum": metrics([sum(p.values()) for p in parts], y)}
    for name, fit in (("linear", fit_linear), ("per-kind", fit_per_kind), ("linear+params", fit_linear_params)):
        figures[name] = metrics(cross_validated(parts, y, fit, features=feats), y)
    assert figures["linear+params"]["mape_pct"] < 1e-6 < figures["linear"]["mape_pct"]
    assert choose(figures, linear_slope=fit_linear(parts, y)["default_scale"]) == "linear+params"
    # weights that cost nothing: the fit's c is held at 0 (a, c ≥ 0), never negative to absorb noise
    y0 = np.array([1.2 * sum(p.values()) - 0.2 for p in parts]) - 0.01 * np.array([f["params_m"] for f in feats])
    assert fit_linear_params(parts, y0, feats)["per_param_m"] == pytest.approx(0.0, abs=1e-9)


def test_random_architectures_are_valid_and_seeded():
    space = SpaceConfig(channels=4, layers=3)
    a = [random_architecture(space, random.Random(7)) for _ in range(2)]
    assert a[0] == a[1] and isinstance(a[0], Genotype)
    assert all(j1 != j2 for (_, j1), (_, j2) in zip(a[0].normal[::2], a[0].normal[1::2]))
    r = random_architecture(SpaceConfig(space="resnet18", input_h=32, input_w=32, in_channels=3), random.Random(0))
    blocks = {f"layer{s}.{b}" for s in range(1, 5) for b in range(2)}
    assert set(r) == blocks | {f"layer{s}.0.downsample" for s in range(2, 5)}   # widths and projection shortcuts
