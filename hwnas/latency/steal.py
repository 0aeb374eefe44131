"""Hypervisor steal: the share of a virtual machine's CPU time its host gave to other guests while hwnas timed.

On a cloud VM the vCPUs are threads of the host, and an oversubscribed host deschedules them; Linux counts that
time as `steal` in /proc/stat. A one-thread timing barely notices (its vCPU is stolen less often, and the
block-level CPU-share check drops a descheduled block). A multi-thread ONNX Runtime or PyTorch session needs
all its vCPUs at once: every op waits at its barrier for the one that was taken, while the waiting thread spins
and so still looks busy to a CPU-time check. Measured on the 2-vCPU VM these notes come from (2026-12-07): a
2-thread session of a 28×28 DARTS network, 60 blocks of 30 runs, lost 5–24 % of the machine's CPU time to steal
in half of its blocks, and a 1-thread session of the same network 0 % in all 30; the 2-thread tables made there
missed their held-out networks (28×28: 50 % within ±10 %, the same network timed twice 11 % apart at the median).

So `profile`, `calibrate`, `measure` and `export` record the machine's steal over their timing (`steal_pct`: in the
table's sidecar, its calibration, the report) and, for a multi-thread timing, say so when it passes `STEAL_WARN`.
Where /proc/stat is missing (not Linux) nothing is recorded.
"""
from __future__ import annotations

from pathlib import Path

PROC_STAT = Path("/proc/stat")
STEAL_WARN = 0.01   # a share of the machine's CPU time above which timings are flagged


def cpu_times(path: Path = PROC_STAT) -> tuple[int, int] | None:
    """(steal, total) jiffies over all CPUs since boot, from the aggregate `cpu` line (user nice system idle iowait
    irq softirq steal; guest time is already inside user and nice); None where the file or the field is missing."""
    try:
        with open(path) as f:
            fields = f.readline().split()
    except OSError:
        return None
    if len(fields) < 9 or fields[0] != "cpu":
        return None
    values = [int(v) for v in fields[1:9]]
    return values[7], sum(values)


class StealMeter:
    """The share of all CPUs' time stolen between construction and `share()` (None where not measurable)."""

    def __init__(self, path: Path = PROC_STAT):
        self.path = path
        self.start = cpu_times(path)

    def share(self) -> float | None:
        end = cpu_times(self.path)
        if self.start is None or end is None or end[1] <= self.start[1]:
            return None
        return (end[0] - self.start[0]) / (end[1] - self.start[1])

    def pct(self) -> float | None:
        """`share()` in percent, rounded to 0.01 (what the sidecars and reports record)."""
        share = self.share()
        return None if share is None else round(100 * share, 2)


def steal_warning(pct: float | None, threads: int | None) -> str | None:
    """One line for the console when a multi-thread timing ran while the hypervisor took more than `STEAL_WARN` of
    the machine. A 1-thread timing only records it: its own vCPU's losses show in the CPU-share check
    (stats.time_callable), and steal on the other vCPUs does not slow it."""
    if pct is None or pct <= 100 * STEAL_WARN or not threads or threads <= 1:
        return None
    return (f"the hypervisor took {pct:.1f} % of this VM's CPU time while timing (steal in /proc/stat): a "
            f"{threads}-thread session stalls whenever one of its vCPUs is taken, so these timings can be off by tens "
            f"of percent; time with --threads 1 or on a machine with dedicated cores")
