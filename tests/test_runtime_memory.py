"""keep_freed_memory: glibc keeps freed memory for reuse in CPU processes, unless turned off.

What it buys is measured in benchmarks/search_speed.py (each row records the process's minor page faults): a
search step at the #13 configuration faults 108,525 times with glibc's defaults and once with it. A fault count of
a synthetic allocation pattern was tried as a test here and dropped: glibc's dynamic mmap threshold makes the
default's count vary between 0 and 32,000 from run to run.
"""
import os
import subprocess
import sys

import pytest

PROBE = "from hwnas.runtime import resolve_device, keep_freed_memory; resolve_device('cpu'); print(keep_freed_memory())"


def kept(env_value: str) -> str:
    env = {**os.environ, "HWNAS_KEEP_FREED_MEMORY": env_value}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return out.stdout.split()[-1]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_cpu_entry_points_keep_freed_memory_unless_turned_off():
    assert kept("1") == "True"     # glibc accepted both thresholds
    assert kept("0") == "False"
