"""A DARTS search from Python: `search(...) -> SearchRun`, `SearchRun.load(run_dir)`, and what a run gives —
the genotype at any λ, the architectures along λ (`pareto`), the discrete network (`network`), its export.

A thin layer over `hwnas.search.loop.run_search` and `hwnas.search.pareto`: the run directory is the one
`hwnas search` writes and reads (config.json, metrics.csv, checkpoint.pt, genotype.json, lambda_max.json,
pareto.csv, plots/), so a run started here is resumed, paretoed and exported by the CLI, and the other way.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

from hwnas.config import FRONT_STEPS, SearchConfig
from hwnas.errors import HwnasError

if TYPE_CHECKING:
    import pandas as pd
    from torch import nn

    from hwnas.api import ExportReport
    from hwnas.latency.table import LatencyTable
    from hwnas.search.loop import Search
    from hwnas.spaces.genotype import Genotype

PathLike = str | Path

# search()'s flat options (the CLI's names) → (component, field). Any other SearchConfig field is taken as it is.
_RELAX = {"relax": "kind", "hard": "hard", "tau_start": "tau_start", "tau_end": "tau_end"}
_CONTROL = {"cost": "cost", "table": "tables", "tables": "tables", "hypernet": "hypernet", "lam": "lam",
            "lambda_max": "lambda_max", "lambda_sampling": "sampling", "lambda_warmup_epochs": "warmup_epochs",
            "lambda_samples": "samples", "lambda_margin": "lambda_margin", "lambda_zero_share": "zero_share"}
_RENAMED = {"max_steps": "max_steps_per_epoch", "arch_lr": "a_lr"}


def search_config(config: SearchConfig | None = None, **options) -> SearchConfig:
    """A checked `SearchConfig` from `config` (default: hwnas's defaults, as `hwnas search` shows them) with
    `options` applied, by the CLI's names: dataset, data_dir, download, space (darts), relax, hard, tau_start,
    tau_end, arch_grad, epochs, layers, channels, batch_size, augment, max_steps, arch_lr, seed, device, table
    (one path or several), cost, hypernet, lam, lambda_max ('auto' or a number), lambda_sampling,
    lambda_warmup_epochs, lambda_samples, lambda_margin, lambda_zero_share, with_none; or any other SearchConfig
    field."""
    cfg = config or SearchConfig()
    space = options.pop("space", "darts")
    if space != "darts":
        raise HwnasError(f"--space {space!r}: searching is implemented for the darts space")
    relax = {_RELAX[k]: options.pop(k) for k in list(options) if k in _RELAX}
    control = {_CONTROL[k]: options.pop(k) for k in list(options) if k in _CONTROL}
    if "with_none" in options:
        with_none = options.pop("with_none")
        control["exclude_none"] = None if with_none is None else not with_none
    if "tables" in control:
        tables = control["tables"]
        control["tables"] = (tables,) if isinstance(tables, (str, Path)) else tuple(tables or ())
    if "lambda_max" in control:
        from hwnas.api import parse_lambda_max

        control["lambda_max"] = parse_lambda_max(control["lambda_max"])
    top = {_RENAMED.get(k, k): v for k, v in options.items()}
    unknown = sorted(set(top) - {f.name for f in fields(SearchConfig)} - {"relax", "control"})
    if unknown:
        raise HwnasError(f"unknown search option(s) {', '.join(unknown)}; see help(hwnas.search_config)")
    if "data_dir" in top and top["data_dir"] is not None:
        top["data_dir"] = str(top["data_dir"])
    try:
        relax_cfg = replace(cfg.relax, **relax)
    except ValueError as e:
        raise HwnasError(f"--relax: {e}") from None
    return replace(cfg, relax=relax_cfg, control=replace(cfg.control, **control), **top)


def search(config: SearchConfig | None = None, /, *, out: PathLike, resume: bool = False,
           on_step: Callable[[int, int], None] | None = None,
           on_epoch_end: Callable[[dict], None] | None = None, **options) -> SearchRun:
    """Run a DARTS cell search into the run directory `out` and return it as a `SearchRun`.

    The search is `config` with `options` applied (`search_config`: the CLI's option names and defaults,
    e.g. ``search(out="runs/a", table="t.csv", hypernet="linear", epochs=2)``). With a cost (`table=` or
    `cost="params"|"flops"`) it minimises L_val + λ·Tᵀγ; with `hypernet="linear"|"mlp"`, for every λ ∈ [0, Λ]
    in one run. `resume=True` continues the run saved in `out` with its own config (options are ignored).
    `on_step(i, n)` after each step, `on_epoch_end(row)` after each epoch (warm-up rows carry `phase`).
    Under torchrun (several processes) the search is data-parallel; only rank 0 writes and gets the callbacks."""
    from hwnas.distributed import is_main
    from hwnas.runs import RunDir

    if not is_main():
        on_step = on_epoch_end = None

    cfg = search_config(config, **options)  # checked before torch is imported
    if not resume:
        RunDir.check_new(out)
    from hwnas.search.loop import run_search

    run_search(cfg, out, resume=resume, on_step=on_step, on_epoch_end=on_epoch_end)
    return SearchRun(out)


def check_lambda(run: PathLike, lam: float) -> list[float] | None:
    """λ of a λ-hypernet or prune run: within [0, Λ] for every target (Λ from the run's lambda_max.json, with a
    float tolerance), since the hypernet was trained only there. Returns Λ (None: the run has none)."""
    path = Path(run) / "lambda_max.json"
    if not path.is_file():
        return None
    try:
        lmax = json.loads(path.read_text())["lambda_max"]
        lmax = [float(v) for v in (lmax if isinstance(lmax, list) else [lmax])]
    except (OSError, ValueError, KeyError, TypeError):
        raise HwnasError(f"cannot read Λ from {path}; is {run} a finished search or prune run?") from None
    if not (math.isfinite(lam) and lam >= 0 and all(lam <= m * (1 + 1e-6) for m in lmax)):
        shown = ", ".join(f"{m:.6g}" for m in lmax)
        raise HwnasError(f"--lambda {lam} is outside the trained range [0, Λ = {shown}] of {run}: the hypernet "
                         f"was trained only there; choose 0 ≤ λ ≤ {min(lmax):.6g}")
    return lmax


def load_run(run_dir: PathLike):
    """The run in `run_dir`: a `SearchRun`, or a `PruneRun` when `hwnas prune` made it."""
    from hwnas.prune_api import PruneRun, is_prune_run

    return PruneRun.load(run_dir) if is_prune_run(run_dir) else SearchRun.load(run_dir)


class SearchRun:
    """A search run directory. Cheap to make: the supernet and data are loaded on first need (`genotype(λ)`,
    `pareto`), from config.json and the latest checkpoint."""

    def __init__(self, path: PathLike):
        self.path = Path(path)
        self._search: Search | None = None

    @classmethod
    def load(cls, run_dir: PathLike) -> SearchRun:
        """The search run in `run_dir` (made by `search` or `hwnas search`)."""
        from hwnas.prune_api import is_prune_run

        if not (Path(run_dir) / "config.json").is_file():
            raise HwnasError(f"{run_dir} is not a search run (no config.json)")
        if is_prune_run(run_dir):
            raise HwnasError(f"{run_dir} is a prune run; load it with hwnas.PruneRun.load")
        return cls(run_dir)

    def __repr__(self) -> str:
        return f"SearchRun({str(self.path)!r})"

    @property
    def config(self) -> SearchConfig:
        """The resolved config the run was made with (config.json)."""
        from hwnas.runs import RunDir

        return SearchConfig.from_dict(RunDir(self.path).read_json("config.json"))

    @property
    def lambda_max(self) -> list[float] | None:
        """Λ per cost target (lambda_max.json), None for a search without λ-hypernet."""
        rec = self.record
        if rec is None:
            return None
        value = rec["lambda_max"]
        return [float(v) for v in (value if isinstance(value, list) else [value])]

    @property
    def record(self) -> dict | None:
        """lambda_max.json as a whole (Λ, which rule set it, Theorem 1's parts), None without λ-hypernet."""
        path = self.path / "lambda_max.json"
        return json.loads(path.read_text()) if path.is_file() else None

    @property
    def metrics(self) -> pd.DataFrame:
        """One row per search epoch (metrics.csv)."""
        import pandas as pd

        return pd.read_csv(self.path / "metrics.csv")

    @property
    def search(self) -> Search:
        """The rebuilt search (supernet, α or λ-hypernet, data) at its latest checkpoint; loaded once."""
        if self._search is None:
            from hwnas.search.pareto import load_search

            self._search = load_search(self.path)
        return self._search

    def genotype(self, lam: float | Sequence[float] | None = None) -> Genotype:
        """The derived genotype: of a λ-hypernet run at `lam` (one value for every target, or one per target;
        0 ≤ λ ≤ Λ), else the run's own. Without `lam`, genotype.json (λ = 0 for a hypernet run)."""
        import torch

        from hwnas.spaces.genotype import load_genotype

        hyper = self.config.control.needs_lambda_max
        if lam is None:
            return load_genotype(self.path) if (self.path / "genotype.json").is_file() else self.search.genotype()
        if not hyper:
            raise HwnasError(f"{self.path} searched at one fixed λ; --lambda needs a --hypernet run")
        values = [float(v) for v in (lam if isinstance(lam, Sequence) else [lam])]
        for v in values:
            check_lambda(self.path, v)
        n = self.search.lam.n_targets
        if len(values) not in (1, n):
            raise HwnasError(f"{self.path} has {n} cost targets; give one λ or {n}")
        return self.search.genotype(torch.tensor(values * n if len(values) == 1 else values))

    def pareto(self, lambdas: int = 11, finetune_steps: int = 0, front_steps: int = FRONT_STEPS,
               spacing: str = "cost") -> pd.DataFrame:
        """The architectures along λ from the trained hypernet, without another search (`hwnas pareto`): one row
        per λ (genotype, predicted latency per table, params, FLOPs, val_acc with the supernet's weights after
        `front_steps` SGD steps per network on the front's networks in turn, `finetune_steps` on each alone,
        and BN recalibration; pareto_optimal). `spacing`: "cost" picks the λ whose networks' predicted costs are
        evenly spread between the λ = 0 and the λ = Λ network's (one table), "lambda" an even grid in λ. Writes
        pareto.csv and plots/pareto_*.png into the run."""
        from hwnas.search.inherit import InheritConfig
        from hwnas.search.pareto import SPACINGS, pareto_table, save_pareto

        if finetune_steps < 0 or front_steps < 0:
            raise HwnasError(f"--finetune-steps and --front-steps must be non-negative, got {finetune_steps}, "
                             f"{front_steps}")
        if spacing not in SPACINGS:  # before the search is loaded
            raise HwnasError(f"--spacing must be one of {', '.join(SPACINGS)}, got {spacing!r}")
        frame = pareto_table(self.search, lambdas, InheritConfig(steps=finetune_steps, front_steps=front_steps),
                             spacing=spacing)
        return save_pareto(self.path, frame)

    def network_config(self):
        """(NetworkConfig, (H, W)) of the run's discrete networks: the search's cells and channels, its data."""
        from hwnas.data import dataset_shape
        from hwnas.spaces.network import NetworkConfig

        cfg = self.config
        in_ch, h, w, classes = dataset_shape(cfg.dataset, cfg.data_dir)
        return NetworkConfig(channels=cfg.channels, layers=cfg.layers, num_classes=classes, in_channels=in_ch), (h, w)

    def network(self, lam: float | Sequence[float] | None = None, weights: PathLike | None = None) -> nn.Module:
        """The discrete network of `genotype(lam)` at the search's size, in eval mode on the CPU: the very network
        `hwnas export RUN --lambda λ` writes. A search holds supernet weights, not the discrete network's, so its
        weights are the seeded initialisation of an export unless `weights` (model.pt of `hwnas.train(out=...)`)
        are given. `hwnas_arch` and `hwnas_input_shape` on it let `table.predict`, `measure` and `export` take it."""
        from hwnas.export import build_network

        net_cfg, (h, w) = self.network_config()
        g = self.genotype(lam)
        net = build_network(g, net_cfg, weights)
        net.hwnas_arch, net.hwnas_input_shape = g, (net_cfg.in_channels, h, w)
        return net

    def export(self, path: PathLike, lam: float | None = None, *, tables: Sequence[LatencyTable | PathLike] = (),
               threads: int | None = None, weights: PathLike | None = None, measure: bool = True) -> ExportReport:
        """`network(lam)` to ONNX at `path`, checked and re-measured (`hwnas.export`); the run's tables predict."""
        from hwnas.api import ExportReport, load_table
        from hwnas.export import export_genotype

        hyper = self.config.control.needs_lambda_max
        if hyper and lam is None:
            raise HwnasError(f"{self.path} is a λ-hypernet run: pass --lambda X (0 ≤ X ≤ Λ = {self.lambda_max})")
        lmax = check_lambda(self.path, lam) if lam is not None else None
        g = self.genotype(lam)
        tabs = [load_table(t) for t in tables] + [load_table(t) for t in self.config.control.tables]
        net_cfg, hw = self.network_config()
        extra = {} if lam is None else {"lambda": lam, "lambda_max": lmax, "run": str(self.path)}
        return ExportReport.from_dict(export_genotype(g, net_cfg, hw, path, weights=weights, tables=tabs,
                                                      threads=threads, extra=extra, measure=measure))
