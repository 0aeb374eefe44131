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
    "profile_bundle": "hwnas.api",
    "import_bundle": "hwnas.api",
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
# hwnas.search_run.search(...), and hwnas.search.loop stays what it is. What users see of it as a function
# (tests/test_api.py pins each): inspect.signature, help() and __doc__ (the function's signature and
# docstring first, then the module's), pickling and copying (by reference, as a function pickles), and
# for type checkers the function itself (the TYPE_CHECKING imports at the end; they then flag
# `hwnas.search.loop.X` as an attribute chain, while `from hwnas.search.loop import X` is fine).
_CALLABLE_MODULES = {"search": "hwnas.search_run", "prune": "hwnas.prune_api", "export": "hwnas.api",
                     "train": "hwnas.api", "info": "hwnas.api"}

__all__ = ["__version__", "HwnasError", "LatencyTable", "Genotype", "SearchConfig", "PruneConfig",  # noqa: RUF022
           "profile", "profile_bundle", "import_bundle", "calibrate", "measure", "search", "search_config",
           "SearchRun", "load_run", "prune", "prune_config", "PruneRun", "train", "export", "ExportReport",
           "info"]  # in pipeline order


class _CallableModule(types.ModuleType):
    # A module of hwnas that is also the API function of the same name (`_CALLABLE_MODULES`). No class
    # docstring: `__doc__` is the property below.

    def _function(self):
        name = self.__name__.rpartition(".")[2]
        return getattr(importlib.import_module(_CALLABLE_MODULES[name]), name)

    def __call__(self, *args, **kwargs):
        return self._function()(*args, **kwargs)

    @property
    def __signature__(self):
        import inspect

        return inspect.signature(self._function())

    @property
    def __doc__(self) -> str | None:
        own = self.__dict__.get("__doc__")
        try:
            import inspect

            fn = self._function()
            call = f"hwnas.{fn.__name__}{inspect.signature(fn)}\n\n{inspect.getdoc(fn) or ''}"
        except (ImportError, AttributeError, TypeError, ValueError):  # help must never fail a lookup
            return own
        return f"{call}\n\n---- {self.__name__} is also the module:\n\n{inspect.cleandoc(own or '')}"

    @__doc__.setter
    def __doc__(self, value) -> None:
        self.__dict__["__doc__"] = value

    def __reduce__(self):  # by reference, as a function pickles: unpickled, hwnas.<name> itself
        return importlib.import_module, (self.__name__,)

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self


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
    from hwnas.api import ExportReport, calibrate, export, import_bundle, info, measure, profile, profile_bundle, train
    from hwnas.config import PruneConfig, SearchConfig
    from hwnas.errors import HwnasError
    from hwnas.latency.table import LatencyTable
    from hwnas.prune_api import PruneRun, prune, prune_config
    from hwnas.search_run import SearchRun, load_run, search, search_config
    from hwnas.spaces.genotype import Genotype
