"""`calibrate` on a machine whose speed drifts: the table's own ops, re-timed in every round of the networks, say how
fast the machine runs in that round; each round's network timings are brought to the median round's speed before the
median over rounds and the fit."""
from __future__ import annotations

import numpy as np
import pytest

from hwnas.latency.backends import Backend, BackendConfig
from hwnas.latency.calibrate import calibrate, machine_speed, reference_keys
from hwnas.latency.stats import TimingConfig, TimingStats
from hwnas.spaces.network import DiscreteNetwork
from tests.test_latency_table import TINY, synthetic

SCALE, INTERCEPT = 1.2, 0.5
SPEEDS = (1.0, 1.6, 1.3)   # the machine in rounds 0, 1, 2: as profiled, 60 % slower, 30 % slower


class Drifting(Backend):
    """Times a whole network as SPEED[round] · (SCALE · its table sum + INTERCEPT) and a table key as
    SPEED[round] · its table median, the round being how many times that item has been timed before. With
    `hiccup`, network number i is also HICCUP× slower in round i mod 3 (of the first three): noise on top of the
    drift. Rounds beyond `speeds` cycle through it."""

    def __init__(self, table, speeds=SPEEDS, hiccup=1.0, rounds=3, extra_rounds=3):
        super().__init__(BackendConfig("cpu", 1, timing=TimingConfig(rounds=rounds, extra_rounds=extra_rounds)))
        self.table, self.speeds, self.hiccup, self.networks = table, speeds, hiccup, 0

    def describe(self):
        return {"device": self.table.meta["device"], "backend_version": "0"}

    def _thunk(self, ms: float, slow_round: int | None = None):
        calls = []

        def one_round() -> TimingStats:
            r = len(calls)
            t = self.speeds[r % len(self.speeds)] * ms * (self.hiccup if r == slow_round else 1.0)
            calls.append(t)
            return TimingStats(t, t, t, t, 10, 0)

        return one_round

    def prepare(self, module, shapes, dtype="float32"):
        assert isinstance(module, DiscreteNetwork)
        self.networks += 1
        return self._thunk(SCALE * self.table.predict(module.genotype, corrected=False) + INTERCEPT,
                           slow_round=(self.networks - 1) % len(self.speeds))

    def prepare_key(self, key, space):
        return self._thunk(self.table.measured_ms(key))


def test_reference_keys_are_the_costliest_key_of_the_costliest_ops():
    table = synthetic(TINY, device="fake-cpu")
    keys = reference_keys(table, 4)
    assert len(keys) == 4 and len({k.op for k in keys}) == 4
    ms = [table.measured_ms(k) for k in keys]
    assert ms == sorted(ms, reverse=True)
    every = table.keys()   # a list
    for k in keys:   # the costliest of its op, and no op left out is costlier than the last one kept
        assert table.measured_ms(k) == max(table.measured_ms(o) for o in every if o.op == k.op)
    assert all(table.measured_ms(o) <= ms[-1] for o in every if o.op not in {k.op for k in keys})
    assert reference_keys(table, 0) == []


def test_a_drifting_machine_is_measured_and_each_round_brought_to_the_median_rounds_speed():
    table = synthetic(TINY, device="fake-cpu")
    cal = calibrate(table, samples=10, folds=5, backend=Drifting(table))
    assert cal.machine_speed == pytest.approx(list(SPEEDS)) and cal.extra_rounds == 0   # aligned, they agree
    # the relation at the median round's speed (1.3) is recovered exactly
    assert cal.chosen == "linear" and cal.figures["linear"]["mape_pct"] < 1e-6
    assert table.correction["default_scale"] == pytest.approx(1.3 * SCALE)
    assert table.correction["intercept"] == pytest.approx(1.3 * INTERCEPT)
    for r in cal.samples:
        assert r["unscaled_round_ms"] == pytest.approx([s / 1.3 * r["measured_ms"] for s in SPEEDS])
    stored = table.meta["calibration"]["machine_speed"]
    assert stored["per_round"] == pytest.approx(list(SPEEDS)) and stored["median"] == pytest.approx(1.3)
    assert len(stored["keys"]) == 6


def test_rounds_at_different_speeds_and_noisy_are_aligned_before_the_median():
    """A 20 % hiccup in a different round for each network: divided by the round's speed, each network's median
    over rounds skips its hiccup and the relation comes out exact; undivided, the median picks a round of another
    speed for each network (1.3× or 1.56× here) and no correction fits them all."""
    table = synthetic(TINY, device="fake-cpu")
    cal = calibrate(table, samples=12, folds=4, backend=Drifting(table, hiccup=1.2))
    assert cal.figures["linear"]["mape_pct"] < 1e-6
    assert table.correction["default_scale"] == pytest.approx(1.3 * SCALE)
    plain = synthetic(TINY, device="fake-cpu")
    undivided = calibrate(plain, samples=12, folds=4, backend=Drifting(plain, hiccup=1.2, extra_rounds=0),
                          reference_ops=0)
    assert undivided.machine_speed is None and plain.meta["calibration"]["machine_speed"] is None
    assert min(f["mape_pct"] for f in undivided.figures.values()) > 2.0


def test_machine_speed_retimes_the_reference_keys_alone():
    table = synthetic(TINY, device="fake-cpu")
    speed = machine_speed(table, Drifting(table, speeds=(1.1, 0.9, 1.05)), n=3)
    assert speed["per_round"] == pytest.approx([1.1, 0.9, 1.05]) and speed["median"] == pytest.approx(1.05)
    assert [tuple(k.values()) for k in speed["keys"]] == [tuple(k) for k in reference_keys(table, 3)]
    assert np.isfinite(speed["median"])


@pytest.mark.parametrize("extra", [3, 0])
def test_networks_whose_rounds_disagree_get_more_rounds(extra):
    """Two disturbed rounds (2× slow) of three, on a machine the reference keys cannot follow (none here): the median
    of three rounds is the disturbed level; three more rounds, timed because the rounds disagree, outvote it."""
    table = synthetic(TINY, device="fake-cpu")
    cal = calibrate(table, samples=8, folds=4, backend=Drifting(table, speeds=(2.0, 2.0, 1.0, 1.0, 1.0, 1.0),
                                                                  extra_rounds=extra), reference_ops=0)
    assert cal.extra_rounds == extra and table.meta["calibration"]["rounds"] == 3 + extra
    assert all(len(r["unscaled_round_ms"]) == 3 + extra for r in cal.samples)
    assert table.correction["default_scale"] == pytest.approx((1.0 if extra else 2.0) * SCALE)


def test_a_quiet_machine_gets_no_extra_rounds():
    table = synthetic(TINY, device="fake-cpu")
    cal = calibrate(table, samples=8, folds=4, backend=Drifting(table, speeds=(1.0,)))
    assert cal.extra_rounds == 0 and cal.machine_speed == pytest.approx([1.0, 1.0, 1.0])


def test_a_network_timed_beside_the_table_is_brought_to_the_calibrations_speed():
    """`export` and `hwnas measure --table` time a network beside the table's reference keys: the report keeps the
    measured latency as it is and adds it at the machine speed the calibrated predictions hold at."""
    from hwnas.latency.speed import speed_note, timed_beside_reference

    table = synthetic(TINY, device="fake-cpu")
    backend = Drifting(table)   # rounds at 1.0, 1.6, 1.3 × the table's speed
    measured, speed = timed_beside_reference(table, backend, backend._thunk(2.0))
    assert measured.p50_ms == pytest.approx(2.6)   # the median round: 1.3 × 2.0
    assert speed["per_round"] == pytest.approx(list(SPEEDS)) and speed["keys"] == 6
    # an uncalibrated table's predictions hold at its own speed (1.0): the machine ran 1.3× slower meanwhile
    assert speed["calibration"] == 1.0 and speed["relative"] == pytest.approx(1.3)
    assert speed["p50_at_calibration_speed_ms"] == pytest.approx(2.0)
    assert "1.30× their calibrated time" in speed_note(speed) and "2.000 ms" in speed_note(speed)
    # calibrated at 1.6 × the table's speed: this measurement met a faster machine than the calibration's
    table.meta["calibration"] = {"machine_speed": {"median": 1.6}}
    measured, speed = timed_beside_reference(table, Drifting(table), Drifting(table)._thunk(2.0))
    assert measured.p50_ms == pytest.approx(2.6) and speed["relative"] == pytest.approx(1.3 / 1.6)
    assert speed["p50_at_calibration_speed_ms"] == pytest.approx(3.2)
    # at the calibration's speed, the console says nothing more
    table.meta["calibration"] = {"machine_speed": {"median": 1.3}}
    assert speed_note(timed_beside_reference(table, Drifting(table), Drifting(table)._thunk(2.0))[1]) == ""
