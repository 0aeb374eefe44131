"""hwnas: hardware-aware neural architecture search on PyTorch.

The public API — what notebooks and scripts may rely on (the `hwnas` command is a thin layer over it)::

    import hwnas

    table = hwnas.profile("mobile", "darts", out="t.csv")           # -> LatencyTable (or LatencyTable.load)
    run = hwnas.search(out="runs/a", table="t.csv", hypernet="linear", epochs=2)   # -> SearchRun
    front = run.pareto(lambdas=5)                                     # -> pandas.DataFrame, one row per λ
    net = run.network(front["lambda"][2])                             # -> torch.nn.Module
    table.predict(net)                                                # ms
    report = hwnas.export(run, "m.onnx", lam=front["lambda"][2])     # -> ExportReport
    hwnas.measure("m.onnx", table=table)                              # -> dict (p50_ms, …)

Likewise `prune(...) -> PruneRun` (ResNet18 gates, same `pareto` / `network` / `export`), `train`,
`calibrate`, `info`. Errors are `HwnasError` with a one-line message; progress goes to optional callbacks.
Names load lazily: `import hwnas` does not import torch.
"""
from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_HOMES = {
    "HwnasError": "hwnas.errors",
    "LatencyTable": "hwnas.latency.table",
    "Genotype": "hwnas.spaces.genotype",
    "SearchConfig": "hwnas.config",
    "PruneConfig": "hwnas.config",
    "profile": "hwnas.api",
    "calibrate": "hwnas.api",
    "measure": "hwnas.api",
    "ExportReport": "hwnas.api",
    "search_config": "hwnas.search_run",
    "SearchRun": "hwnas.search_run",
    "load_run": "hwnas.search_run",
    "prune_config": "hwnas.prune_api",
    "PruneRun": "hwnas.prune_api",
}
# Five API functions share their name with a module of the package: search and prune (the stages'
# subpackages), export, train and info (modules). Importing a submodule sets the package attribute to it, so
# a plain function of that name would be replaced the moment anything imported, say, hwnas.search.loop.
# Instead each such module becomes callable as it is bound to the package: hwnas.search(...) is
# hwnas.search_run.search(...) (signature included), and hwnas.search.loop stays what it is.
_CALLABLE_MODULES = {"search": "hwnas.search_run", "prune": "hwnas.prune_api", "export": "hwnas.api",
                     "train": "hwnas.api", "info": "hwnas.api"}

__all__ = ["__version__", "HwnasError", "LatencyTable", "Genotype", "SearchConfig", "PruneConfig",  # noqa: RUF022
           "profile", "calibrate", "measure", "search", "search_config", "SearchRun", "load_run", "prune",
           "prune_config", "PruneRun", "train", "export", "ExportReport", "info"]  # in pipeline order


class _CallableModule(types.ModuleType):
    """A module of hwnas that is also the API function of the same name (`_CALLABLE_MODULES`)."""

    def _function(self):
        name = self.__name__.rpartition(".")[2]
        return getattr(importlib.import_module(_CALLABLE_MODULES[name]), name)

    def __call__(self, *args, **kwargs):
        return self._function()(*args, **kwargs)

    @property
    def __signature__(self):
        import inspect

        return inspect.signature(self._function())


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value) -> None:
        if name in _CALLABLE_MODULES and type(value) is types.ModuleType:
            value.__class__ = _CallableModule
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str):
    if name in _CALLABLE_MODULES:  # importing binds the (now callable) module to the package
        return importlib.import_module(f"{__name__}.{name}")
    if name in _HOMES:
        value = getattr(importlib.import_module(_HOMES[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hwnas' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
    from hwnas.api import ExportReport, calibrate, export, info, measure, profile, train
    from hwnas.config import PruneConfig, SearchConfig
    from hwnas.errors import HwnasError
    from hwnas.latency.table import LatencyTable
    from hwnas.prune_api import PruneRun, prune_config
    from hwnas.search_run import SearchRun, load_run, search_config
    from hwnas.spaces.genotype import Genotype
