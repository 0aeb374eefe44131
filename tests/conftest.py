"""Shared test set-up. Under pytest-xdist (the README's `pytest -q -n 2`) each worker gets one intra-op
thread: two workers with the default one-thread-per-core each would oversubscribe a 2-core machine."""
import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
