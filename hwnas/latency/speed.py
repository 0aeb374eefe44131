"""How fast the machine runs now against when a table was made: the table's own ops, re-timed.

A shared machine does not keep one speed. The 2-core VM this was built on runs minutes-long stretches at two levels
about 1.8× apart, with the process getting all of its CPU in both (README, issue #11): a table and a measurement
made in different stretches differ by that much, whatever either's timing rule. So wherever a whole network is
compared with a table — `calibrate`'s rounds, `export`'s re-measurement, `hwnas measure --table` — the table's own
costliest ops (`reference_keys`) are re-timed beside it, in the same interleaved rounds; their median ratio to the
table's figures is the machine's speed in that round (`round_speeds`). `calibrate` brings its rounds to their median
speed before fitting, and records that speed: a corrected prediction is a prediction *at the calibration's speed*.
`export` and `measure` report the measured latency as it is and, beside it, brought to that speed
(`timed_beside_reference`): a user reads whether a miss is the table or the machine's level that minute.
"""
from __future__ import annotations

import numpy as np

from hwnas.latency.space import OpKey
from hwnas.latency.stats import (
    UNSETTLED_SHARE,
    TimingStats,
    combine_rounds,
    interleaved_rounds,
    scaled,
    unsettled_share,
)

REFERENCE_OPS = 6   # the table's own keys re-timed beside whole networks: the machine's speed, round by round
SPEED_TOLERANCE = 0.10   # a measurement made more than this far from the calibration's speed is flagged


def reference_keys(table, n: int = REFERENCE_OPS) -> list[OpKey]:
    """The costliest key of each of the table's `n` costliest ops (distinct op names): the keys that say how fast the
    machine runs now against when it was profiled. The costliest, because a key near the call overhead times the
    session call rather than the machine's work."""
    best: dict[str, OpKey] = {}
    keys = table.keys()   # a list (LatencyTable is not a dict)
    for key in keys:
        if key.op not in best or table.measured_ms(key) > table.measured_ms(best[key.op]):
            best[key.op] = key
    return sorted(best.values(), key=lambda k: -table.measured_ms(k))[:max(0, n)]


def round_speeds(table, keys: list[OpKey], rounds: list[list[TimingStats]]) -> list[float]:
    """Per round r: the median over `keys` of (key's median in round r) / (its median in the table). 1.10 = the
    machine ran the table's own ops 10 % slower than when it profiled them."""
    return [float(np.median([rounds[j][r].p50_ms / table.measured_ms(k) for j, k in enumerate(keys)]))
            for r in range(len(rounds[0]))]


def to_median_round(speeds: list[float]) -> tuple[float, list[float]]:
    """(the rounds' median speed, each round's factor: its speed / that median): dividing a round's timings by its
    factor brings it to the median round's speed."""
    typical = float(np.median(speeds))
    return typical, [v / typical for v in speeds]


def machine_speed(table, backend, n: int = REFERENCE_OPS) -> dict:
    """The machine's speed now against the table's (its `n` reference keys re-timed as the profiler times them, in
    the table's interleaved rounds): {"keys", "per_round", "median"}."""
    keys = reference_keys(table, n)
    rounds = interleaved_rounds([backend.prepare_key(k, table.space) for k in keys], backend.cfg.timing)
    speeds = round_speeds(table, keys, rounds)
    return {"keys": [k._asdict() for k in keys], "per_round": speeds, "median": float(np.median(speeds))}


def calibration_speed(table) -> float:
    """The machine's speed (against the table's) that the table's calibrated predictions hold at: the median of its
    calibration's rounds, to which `calibrate` brought every round before fitting; 1.0 for an uncalibrated table or
    one calibrated before speeds were recorded (the table's own speed)."""
    record = (table.meta.get("calibration") or {}).get("machine_speed") or {}
    return float(record.get("median") or 1.0)


def timed_beside_reference(table, backend, network, n: int = REFERENCE_OPS) -> tuple[TimingStats, dict]:
    """A whole network (`network`: a callable timing one round of it) timed in the table's interleaved rounds with
    the table's `n` reference keys, half before it and half after in each round (another round while the network's
    rounds, brought to one speed, still disagree: `stats.interleaved_rounds`). Returns the network's figures as
    measured, and a record of the machine's speed: per round and median against the table, the calibration's
    speed, their ratio (`relative`: 1.8 = the machine ran 1.8× slower than when the table was calibrated), and the
    network's latency with each round brought to the calibration's speed (`p50_at_calibration_speed_ms`)."""
    timing = backend.cfg.timing
    keys = reference_keys(table, n)
    key_thunks = [backend.prepare_key(k, table.space) for k in keys]
    mid = len(key_thunks) // 2
    items = key_thunks[:mid] + [network] + key_thunks[mid:]

    def unsettled(per):   # the network's rounds, each brought to the rounds' median speed, still disagree
        factors = to_median_round(round_speeds(table, keys, per[:mid] + per[mid + 1:]))[1]
        return unsettled_share([per[mid]], timing.precision, factors) > UNSETTLED_SHARE

    per = interleaved_rounds(items, timing, unsettled=unsettled if keys else None)
    rounds = per.pop(mid)
    measured = combine_rounds(rounds, timing.precision)
    speeds = round_speeds(table, keys, per)
    reference = calibration_speed(table)
    at_reference = combine_rounds([scaled(s, v / reference) for s, v in zip(rounds, speeds)], timing.precision)
    median = to_median_round(speeds)[0]
    return measured, {
        "per_round": speeds, "median": median, "calibration": reference, "relative": median / reference,
        "p50_at_calibration_speed_ms": at_reference.p50_ms, "keys": len(keys),
        "what": "the table's costliest ops re-timed beside the network in each round, their time now / in the table; "
                "relative = median / the calibration's speed, at which the table's predictions hold; "
                "p50_at_calibration_speed_ms: each round's time multiplied by calibration / that round's speed"}


def speed_note(record: dict | None) -> str:
    """One clause for the console when a measurement met another machine speed than the table's calibration
    (empty otherwise)."""
    if not record or abs(record["relative"] - 1.0) <= SPEED_TOLERANCE:
        return ""
    return (f"; the machine ran the table's own ops at {record['relative']:.2f}× their calibrated time meanwhile: "
            f"{record['p50_at_calibration_speed_ms']:.3f} ms at the calibration's speed")
