"""Timing statistics: outlier rule, median and the 10th/90th percentiles, repeat counts.

Outliers are dropped on the slow side only, beyond Q3 + 3·IQR. Timing noise on a CPU is
one-sided — preemption, interrupts, page faults and frequency dips only ever make a run
slower — so a fast sample is real and a very slow one is the machine doing something else.
3·IQR (Tukey's "far out" fence) keeps genuine bimodality (e.g. a cache that sometimes
misses) while removing the rare multi-millisecond stall. The median is robust anyway; the
rule mostly keeps p90 honest.

A shared machine disturbs whole stretches of runs, not single ones, so the timed runs are taken
in blocks. A block whose process CPU time per wall second falls well below the best block's was
descheduled (another process had the core) and is dropped; the spread of the block medians
measures how stable the median is, and while it exceeds the requested precision more blocks
are timed, up to a cap. A measurement that ends above the precision is flagged `noisy`, and the
commands that time say so instead of staying silent.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

OUTLIER_IQR = 3.0
UNSETTLED_SHARE = 0.25   # more than this share of the items timed together disagreeing across rounds: another round


@dataclass(frozen=True)
class TimingStats:
    p50_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    n: int          # samples kept
    n_dropped: int  # slow outliers removed
    spread: float = 0.0        # interquartile range / median of the block medians: how stable the median is
    n_disturbed: int = 0       # blocks dropped because the process was descheduled during them
    noisy: bool = False        # the spread stayed above the requested precision

    def row(self) -> dict:
        return {"p50_ms": self.p50_ms, "p10_ms": self.p10_ms, "p90_ms": self.p90_ms, "n": self.n,
                "mean_ms": self.mean_ms, "n_outliers": self.n_dropped, "spread": self.spread,
                "noisy": self.noisy}


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
    budget_s: float = 0.25      # timed runs per key: about this long in total (first pass)
    min_runs: int = 10
    max_runs: int = 1000
    blocks: int = 5             # the timed runs come in this many blocks (disturbance check, spread)
    precision: float = 0.05     # wanted interquartile range / median of the block medians...
    max_passes: int = 3         # ...for which up to this many passes of `blocks` blocks are timed
    min_cpu_share: float = 0.8  # a block below this share of the best block's CPU time per wall second was descheduled
    rounds: int = 3             # a table's keys (a calibration's networks) are timed in this many interleaved rounds,
    #                             each with a fresh session and budget_s / rounds: the median of the rounds' medians
    extra_rounds: int = 3       # ...and up to this many more while over UNSETTLED_SHARE of them disagree

    def to_dict(self) -> dict:
        return {"warmup_runs": self.warmup_runs, "warmup_s": self.warmup_s, "budget_s": self.budget_s,
                "min_runs": self.min_runs, "max_runs": self.max_runs, "blocks": self.blocks,
                "precision": self.precision, "max_passes": self.max_passes, "min_cpu_share": self.min_cpu_share,
                "rounds": self.rounds, "extra_rounds": self.extra_rounds, "outliers": f"slow side dropped beyond Q3 + {OUTLIER_IQR:g}*IQR"}

    def per_round(self) -> TimingConfig:
        """The rule one round times with: the budget shared between the rounds."""
        from dataclasses import replace

        return replace(self, budget_s=self.budget_s / max(1, self.rounds), rounds=1)


def combine_rounds(rounds: list[TimingStats], precision: float) -> TimingStats:
    """One key's figures from its interleaved rounds: the median of the rounds' p50 (and p10, p90), all samples
    counted, and as spread the larger of the rounds' own and the interquartile range / median of their p50s —
    a key that times differently in another session or a minute later is as unstable as one noisy within a round."""
    if len(rounds) == 1:
        return rounds[0]
    p50 = np.array([r.p50_ms for r in rounds])
    q1, q2, q3 = np.percentile(p50, [25, 50, 75])
    spread = max(float((q3 - q1) / q2) if q2 > 0 else 0.0, float(np.median([r.spread for r in rounds])))
    return TimingStats(float(q2), float(np.median([r.p10_ms for r in rounds])),
                       float(np.median([r.p90_ms for r in rounds])), float(np.mean([r.mean_ms for r in rounds])),
                       sum(r.n for r in rounds), sum(r.n_dropped for r in rounds), spread=spread,
                       n_disturbed=sum(r.n_disturbed for r in rounds), noisy=spread > precision)


def interleaved_rounds(thunks: list, cfg: TimingConfig, on_round=None, unsettled=None) -> list[list[TimingStats]]:
    """Each thunk (a callable returning one round's TimingStats) timed in `cfg.rounds` interleaved rounds — all of
    them once, then all again: `out[i][r]` is thunk i's round r. `on_round(r, i)` after each item of each round.
    With `unsettled` (a predicate on the rounds so far), another round of every item while it holds, up to
    `cfg.extra_rounds` more: a disturbed stretch that took one round of three outvotes nothing in a round of six."""
    per: list[list[TimingStats]] = [[] for _ in thunks]
    r = 0
    while r < max(1, cfg.rounds) or (unsettled is not None and r < max(1, cfg.rounds) + cfg.extra_rounds
                                     and unsettled(per)):
        for i, thunk in enumerate(thunks):
            per[i].append(thunk())
            if on_round:
                on_round(r, i)
        r += 1
    return per


def unsettled_share(per: list[list[TimingStats]], precision: float, factors=None) -> float:
    """The share of items whose rounds so far (each round's times divided by `factors[r]`, when given) disagree
    beyond `precision` once combined (0 for no items)."""
    if not per:
        return 0.0
    factors = factors or [1.0] * len(per[0])
    return float(np.mean([combine_rounds([scaled(s, f) for s, f in zip(rs, factors)], precision).noisy
                          for rs in per]))


def interleaved(thunks: list, cfg: TimingConfig, on_round=None) -> list[TimingStats]:
    """`interleaved_rounds`, each item's rounds combined (`combine_rounds`). A machine state that drifts over minutes
    (another job, the clock, a neighbour on the host) then moves every item alike instead of the ones timed
    during it. While more than `UNSETTLED_SHARE` of the items' rounds disagree, up to `cfg.extra_rounds` more."""
    per = interleaved_rounds(thunks, cfg, on_round,
                             unsettled=lambda per: unsettled_share(per, cfg.precision) > UNSETTLED_SHARE)
    return [combine_rounds(p, cfg.precision) for p in per]


def scaled(stats: TimingStats, factor: float) -> TimingStats:
    """The same measurement with its times divided by `factor` (a machine `factor`× slower than the reference)."""
    from dataclasses import replace

    return replace(stats, p50_ms=stats.p50_ms / factor, p10_ms=stats.p10_ms / factor,
                   p90_ms=stats.p90_ms / factor, mean_ms=stats.mean_ms / factor)


def time_callable(fn, cfg: TimingConfig, clock=None) -> TimingStats:
    """Warm up `fn`, then time it in blocks with `clock` (default: perf_counter_ns wall time, in ms).

    `clock` lets a GPU backend time with CUDA events: it takes `fn` and returns one run's ms (the
    CPU-share check is then skipped: the host waits on the device by design).
    """
    import time

    def wall(f) -> float:
        t0 = time.perf_counter_ns()
        f()
        return (time.perf_counter_ns() - t0) / 1e6

    check_cpu = clock is None
    clock = clock or wall
    warm, start = [], time.perf_counter()
    while len(warm) < cfg.warmup_runs or time.perf_counter() - start < cfg.warmup_s:
        warm.append(clock(fn))
    n = repeat_count(float(np.median(warm)) / 1e3, cfg.budget_s, cfg.min_runs, cfg.max_runs)
    per_block = max(1, -(-n // max(1, cfg.blocks)))
    blocks: list[tuple[list[float], float]] = []   # (samples, CPU seconds per wall second)
    for _ in range(max(1, cfg.max_passes)):
        for _ in range(max(1, cfg.blocks)):
            c0, w0 = time.process_time(), time.perf_counter()
            samples = [clock(fn) for _ in range(per_block)]
            blocks.append((samples, (time.process_time() - c0) / max(time.perf_counter() - w0, 1e-9)))
        kept, spread = _steady_blocks(blocks, cfg.min_cpu_share if check_cpu else 0.0)
        if spread <= cfg.precision:
            break
    stats = summarise([t for samples, _ in kept for t in samples])
    return TimingStats(stats.p50_ms, stats.p10_ms, stats.p90_ms, stats.mean_ms, stats.n, stats.n_dropped,
                       spread=spread, n_disturbed=len(blocks) - len(kept), noisy=spread > cfg.precision)


def _steady_blocks(blocks: list[tuple[list[float], float]], min_cpu_share: float):
    """The blocks that were not descheduled (at least half of them are kept, the busiest ones),
    and the spread of their medians (interquartile range / median: one disturbed pass among
    several steady ones is outvoted rather than making the measurement look noisy forever)."""
    best = max(share for _, share in blocks)
    kept = [b for b in blocks if b[1] >= min_cpu_share * best]
    if len(kept) < (len(blocks) + 1) // 2:
        kept = sorted(blocks, key=lambda b: -b[1])[:(len(blocks) + 1) // 2]
    medians = np.array([np.median(samples) for samples, _ in kept])
    q1, q2, q3 = np.percentile(medians, [25, 50, 75])
    spread = float((q3 - q1) / q2) if len(medians) > 1 and q2 > 0 else 0.0
    return kept, spread
