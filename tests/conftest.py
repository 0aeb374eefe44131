"""Shared test set-up. Under pytest-xdist (the README's `pytest -q -n 2`) each worker gets one intra-op
thread: two workers with the default one-thread-per-core each would oversubscribe a 2-core machine."""
import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """Slow work first. pytest-xdist's `worksteal` hands each worker a contiguous share of the collection and
    balances by stealing queued tests, which cannot help when a minutes-long test starts near the end: the
    λ-control tests sat in the middle alphabetically and ran last while the other worker idled (12 min 25 s on
    a 2-core VM). Modules with more `slow` tests go first, and a module's `slow` tests first within it; the sort
    is stable, so a module's tests stay together: sorting every `slow` test to the front split the modules and
    built test_prune_cli's module-scoped run three times (27 s each)."""
    module_order: dict[str, int] = {}
    weight: dict[str, int] = {}
    for item in items:
        name = item.module.__name__
        module_order.setdefault(name, len(module_order))
        weight[name] = weight.get(name, 0) + (item.get_closest_marker("slow") is not None)
    items.sort(key=lambda it: (-weight[it.module.__name__], module_order[it.module.__name__],
                               it.get_closest_marker("slow") is None))   # stable: collection order otherwise
