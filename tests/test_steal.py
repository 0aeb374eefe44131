"""Hypervisor steal during timing (hwnas.latency.steal): read from /proc/stat, recorded, warned about."""
import sys
from pathlib import Path

import pytest
from hwnas_cli.app import app
from typer.testing import CliRunner

from hwnas.latency import steal
from hwnas.latency.backends import BackendConfig
from hwnas.latency.measure import measure_onnx_file
from hwnas.latency.stats import TimingConfig
from tests.cli_helpers import ok
from tests.test_latency_measure import _tiny_onnx

runner = CliRunner()


def _stat(path: Path, user: int, idle: int, steal_jiffies: int, guest: int = 0) -> None:
    # cpu user nice system idle iowait irq softirq steal guest guest_nice, then per-CPU lines
    path.write_text(f"cpu  {user} 0 10 {idle} 5 0 3 {steal_jiffies} {guest} 0\ncpu0 1 0 1 1 0 0 0 0 0 0\nintr 1 2\n")


def test_cpu_times_reads_the_aggregate_line_and_leaves_guest_time_out(tmp_path):
    f = tmp_path / "stat"
    _stat(f, user=100, idle=800, steal_jiffies=40, guest=70)   # guest time is already inside user: not added again
    assert steal.cpu_times(f) == (40, 100 + 10 + 800 + 5 + 3 + 40)
    assert steal.cpu_times(tmp_path / "missing") is None
    (tmp_path / "odd").write_text("intr 1 2\n")
    assert steal.cpu_times(tmp_path / "odd") is None


def test_the_meter_gives_the_share_stolen_between_its_two_readings(tmp_path):
    f = tmp_path / "stat"
    _stat(f, user=1000, idle=8000, steal_jiffies=100)
    meter = steal.StealMeter(f)
    _stat(f, user=1600, idle=8300, steal_jiffies=200)   # +600 user, +300 idle, +100 steal: 100 of 1000 stolen
    assert meter.share() == pytest.approx(0.1)
    assert meter.pct() == pytest.approx(10.0)
    assert steal.StealMeter(tmp_path / "missing").share() is None
    same = steal.StealMeter(f)
    assert same.share() is None                          # no time passed: no share to give


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/stat is Linux's")
def test_the_real_proc_stat_gives_a_share_and_a_measurement_records_it(tmp_path):
    meter = steal.StealMeter()
    sum(i * i for i in range(2_000_000))   # let the jiffies move
    share = meter.share()
    assert share is not None and 0.0 <= share <= 1.0
    report = measure_onnx_file(_tiny_onnx(tmp_path), BackendConfig("mobile", 1, timing=TimingConfig(budget_s=0.05)), 1)
    assert report["steal_pct"] is not None and 0.0 <= report["steal_pct"] <= 100.0


def test_only_multi_thread_timings_under_real_steal_are_warned_about():
    assert steal.steal_warning(None, 2) is None
    assert steal.steal_warning(0.5, 2) is None            # under 1 %
    assert steal.steal_warning(12.0, 1) is None           # one thread: recorded, not warned about
    line = steal.steal_warning(12.0, 2)
    assert "12.0 %" in line and "2-thread" in line and "--threads 1" in line


def test_hwnas_measure_warns_when_the_hypervisor_steals_from_a_two_thread_timing(tmp_path, monkeypatch):
    """The CLI path: a scripted /proc/stat (steal rising by a fifth of the machine at every reading)."""
    readings = iter(range(10_000))

    def stolen(path=steal.PROC_STAT):
        k = next(readings)
        return 20 * k, 100 * k
    monkeypatch.setattr(steal, "cpu_times", stolen)
    path = _tiny_onnx(tmp_path)
    text = " ".join(ok(runner.invoke(app, ["measure", str(path), "--device", "ort-cpu", "--threads", "2"])).split())
    assert "hypervisor took 20.0 %" in text and "2-thread session stalls" in text
    text = " ".join(ok(runner.invoke(app, ["measure", str(path), "--device", "mobile"])).split())
    assert "hypervisor" not in text                       # 1 thread: recorded only
