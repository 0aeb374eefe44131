"""keep_freed_memory: freed activations are reused, not page-faulted in again at every step."""
import os
import subprocess
import sys

import pytest

PROBE = """
import resource, torch
from hwnas.runtime import resolve_device
resolve_device("cpu")
x = torch.empty(16 * 2**20); x.fill_(1.0); del x          # 64 MiB, touched, freed
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
x = torch.empty(16 * 2**20); x.fill_(1.0); del x          # the same again
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0)
"""


def faults(env_value: str) -> int:
    env = {**os.environ, "HWNAS_KEEP_FREED_MEMORY": env_value}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_second_large_allocation_reuses_pages():
    kept, default = faults("1"), faults("0")
    assert default > 10_000          # 64 MiB of 4 KiB pages, mapped afresh: ~16,000 faults
    assert kept < default / 20       # kept: the pages of the first allocation are reused
