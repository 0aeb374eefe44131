"""Timing statistics: outlier rule, median and the 10th/90th percentiles, repeat counts.

Outliers are dropped on the slow side only, beyond Q3 + 3·IQR. Timing noise on a CPU is
one-sided — preemption, interrupts, page faults and frequency dips only ever make a run
slower — so a fast sample is real and a very slow one is the machine doing something else.
3·IQR (Tukey's "far out" fence) keeps genuine bimodality (e.g. a cache that sometimes
misses) while removing the rare multi-millisecond stall. The median is robust anyway; the
rule mostly keeps p90 honest.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

OUTLIER_IQR = 3.0


@dataclass(frozen=True)
class TimingStats:
    p50_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    n: int          # samples kept
    n_dropped: int  # slow outliers removed

    def row(self) -> dict:
        return {"p50_ms": self.p50_ms, "p10_ms": self.p10_ms, "p90_ms": self.p90_ms, "n": self.n,
                "mean_ms": self.mean_ms, "n_outliers": self.n_dropped}


def drop_slow_outliers(samples: np.ndarray, k: float = OUTLIER_IQR) -> np.ndarray:
    """Samples at or below Q3 + k·IQR (fewer than 4 samples: all of them)."""
    samples = np.asarray(samples, dtype=np.float64)
    if samples.size < 4:
        return samples
    q1, q3 = np.percentile(samples, [25, 75])
    return samples[samples <= q3 + k * (q3 - q1)]


def summarise(samples_ms) -> TimingStats:
    """Median, p10, p90 (linear interpolation) and mean of the samples after the outlier rule."""
    raw = np.asarray(samples_ms, dtype=np.float64)
    if raw.size == 0:
        raise ValueError("no timing samples")
    kept = drop_slow_outliers(raw)
    p10, p50, p90 = np.percentile(kept, [10, 50, 90])
    return TimingStats(float(p50), float(p10), float(p90), float(kept.mean()), int(kept.size),
                       int(raw.size - kept.size))


def repeat_count(per_run_s: float, budget_s: float, min_runs: int = 10, max_runs: int = 1000) -> int:
    """How many timed runs fit the per-key budget, at least `min_runs` (honest percentiles)
    and at most `max_runs` (µs-scale ops stop adding information long before the budget)."""
    if per_run_s <= 0:
        return max_runs
    return int(min(max_runs, max(min_runs, budget_s / per_run_s)))


@dataclass(frozen=True)
class TimingConfig:
    """How every backend times one key: warm-up, then an adaptive number of timed runs."""

    warmup_runs: int = 3        # at least this many untimed runs...
    warmup_s: float = 0.05      # ...and at least this long (caches, allocator, lazy init, CPU clocks)
    budget_s: float = 0.25      # timed runs per key: about this long in total
    min_runs: int = 10
    max_runs: int = 1000

    def to_dict(self) -> dict:
        return {"warmup_runs": self.warmup_runs, "warmup_s": self.warmup_s, "budget_s": self.budget_s,
                "min_runs": self.min_runs, "max_runs": self.max_runs,
                "outliers": f"slow side dropped beyond Q3 + {OUTLIER_IQR:g}*IQR"}


def time_callable(fn, cfg: TimingConfig, clock=None) -> TimingStats:
    """Warm up `fn`, then time it repeatedly with `clock` (default: perf_counter_ns wall time, in ms).

    `clock` lets a GPU backend time with CUDA events: it takes `fn` and returns one run's ms.
    """
    import time

    def wall(f) -> float:
        t0 = time.perf_counter_ns()
        f()
        return (time.perf_counter_ns() - t0) / 1e6

    clock = clock or wall
    warm, start = [], time.perf_counter()
    while len(warm) < cfg.warmup_runs or time.perf_counter() - start < cfg.warmup_s:
        warm.append(clock(fn))
    n = repeat_count(float(np.median(warm)) / 1e3, cfg.budget_s, cfg.min_runs, cfg.max_runs)
    return summarise([clock(fn) for _ in range(n)])
