"""ResNet18 gate pruning from Python: `prune(...) -> PruneRun`, `PruneRun.load(run_dir)`, and what a run gives —
the gate set and the physically pruned network at any λ, the table along λ (`pareto`), its export.

A thin layer over `hwnas.prune.prune_run`: the run directory is the one `hwnas prune` writes and reads, so a
run started here is resumed and exported by the CLI, and the other way.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

from hwnas.config import PruneConfig
from hwnas.errors import HwnasError

if TYPE_CHECKING:
    import pandas as pd
    from torch import nn

    from hwnas.api import ExportReport
    from hwnas.latency.table import LatencyTable
    from hwnas.spaces.gated_resnet import GateSet

PathLike = str | Path
_RENAMED = {"max_steps": "steps_per_epoch", "lambda_sampling": "sampling"}


def is_prune_run(run: PathLike) -> bool:
    """Whether `run` holds a run of `hwnas prune` (its config.json has kind 'prune')."""
    try:
        return json.loads((Path(run) / "config.json").read_text()).get("kind") == "prune"
    except (OSError, ValueError, AttributeError):
        return False


def prune_config(config: PruneConfig | None = None, **options) -> PruneConfig:
    """A checked `PruneConfig` from `config` (default: hwnas's defaults, as `hwnas prune` shows them) with
    `options` applied by the CLI's names: table, model, weights, dataset, data_dir, download, lambda_max ('auto',
    'empirical' or a number), lambda_margin, phase1_steps, hypernet, lambda_sampling, epochs, max_steps,
    batch_size, lr, finetune, pretrain_epochs, lambda_samples, eval_samples, lambda_images, empirical_points,
    empirical_steps, pareto_points, channel_multiple, seed, device; or any other PruneConfig field."""
    from hwnas.api import parse_lambda_max

    top = {_RENAMED.get(k, k): v for k, v in options.items()}
    if "lambda_max" in top:
        lmax = parse_lambda_max(top["lambda_max"], ("auto", "empirical"))
        top["lambda_max_from"] = "empirical" if lmax == "empirical" else "theorem"
        top["lambda_max"] = None if lmax == "empirical" else lmax
    for name in ("table", "data_dir", "weights"):
        if top.get(name) is not None:
            top[name] = str(top[name])
    unknown = sorted(set(top) - {f.name for f in fields(PruneConfig)})
    if unknown:
        raise HwnasError(f"unknown prune option(s) {', '.join(unknown)}; see help(hwnas.prune_config)")
    if config is None:
        return PruneConfig(**top)
    return replace(config, **top)


def prune(config: PruneConfig | None = None, /, *, out: PathLike, resume: bool = False,
          progress: Callable | None = None, say: Callable[[str], None] | None = None, **options) -> PruneRun:
    """Prune a pretrained ResNet18 with gates for every λ ∈ [0, Λ] in one fit (Algorithm 1 of the
    performance-control paper) into the run directory `out`; returns it as a `PruneRun`.

    The fit is `config` with `options` applied (`prune_config`: the CLI's names and defaults; `table=` a resnet18
    table is required, `weights=` a state dict PATH, 'imagenet' or 'train'). `resume=True` continues the run in
    `out` with its own config. `progress(label, total, done)` is a context manager yielding (on_step,
    on_epoch_end) callbacks (or Nones) for each stage; `say(line)` gets what the fit reports along the way.
    Not data-parallel yet: under torchrun with several processes it stops at once (HwnasError)."""
    from hwnas.distributed import refuse
    from hwnas.runs import RunDir

    refuse("prune")  # N copies would fit the same gates N times and race on one run directory
    cfg = prune_config(config, **options) if not resume else None
    if not resume and cfg.weights not in ("train", "imagenet") and not Path(cfg.weights).is_file():
        raise HwnasError(f"--weights {cfg.weights!r}: no such file; pass a state dict PATH, 'imagenet' or 'train'")
    if not resume:
        RunDir.check_new(out)
    from hwnas.prune.prune_run import run_prune

    kw = {"progress": progress} if progress is not None else {}
    result = run_prune(cfg, out, resume=resume, say=say or (lambda s: None), **kw)
    run = PruneRun(out)
    run._pareto = result.pareto
    return run


class PruneRun:
    """A prune run directory (made by `prune` or `hwnas prune`)."""

    def __init__(self, path: PathLike):
        self.path = Path(path)
        self._pareto: pd.DataFrame | None = None

    @classmethod
    def load(cls, run_dir: PathLike) -> PruneRun:
        if not is_prune_run(run_dir):
            raise HwnasError(f"{run_dir} is not a prune run (its config.json has no kind 'prune')")
        return cls(run_dir)

    def __repr__(self) -> str:
        return f"PruneRun({str(self.path)!r})"

    @property
    def config(self) -> PruneConfig:
        from hwnas.prune.prune_run import load_config
        from hwnas.runs import RunDir

        return load_config(RunDir(self.path))

    @property
    def lambda_max(self) -> list[float]:
        """[Λ] the hypernet was trained over (lambda_max.json)."""
        return [float(v) for v in json.loads((self.path / "lambda_max.json").read_text())["lambda_max"]]

    @property
    def record(self) -> dict:
        """lambda_max.json as a whole: Λ, how it was set, Theorem 1's parts, the empirical fits."""
        return json.loads((self.path / "lambda_max.json").read_text())

    @property
    def metrics(self) -> pd.DataFrame:
        import pandas as pd

        return pd.read_csv(self.path / "metrics.csv")

    def gates(self, lam: float) -> GateSet:
        """The deterministic gate set at λ (0 ≤ λ ≤ Λ): always a valid one."""
        from hwnas.prune.prune_run import load_pruned

        return load_pruned(self.path, lam)[2]

    def pareto(self, lambdas: int | None = None) -> pd.DataFrame:
        """One row per λ: gates, predicted latency, params, FLOPs, validation and test accuracy of the materialised
        network, pareto_optimal. The run's pareto.csv; with `lambdas` other than its own count, recomputed on
        that grid (and written to pareto.csv)."""
        import pandas as pd

        cfg = self.config
        if lambdas is None or lambdas == cfg.pareto_points:
            if self._pareto is None:
                if not (self.path / "pareto.csv").is_file():
                    raise HwnasError(f"{self.path} has no pareto.csv yet; run or resume hwnas prune first")
                self._pareto = pd.read_csv(self.path / "pareto.csv")
            return self._pareto
        if lambdas < 2:
            raise HwnasError("--lambdas must be at least 2")
        self._pareto = _recompute_pareto(self.path, replace(cfg, pareto_points=lambdas))
        return self._pareto

    def network(self, lam: float) -> nn.Module:
        """The pruned ResNet18 at λ (0 ≤ λ ≤ Λ): the run's network (its trained weights) with removed branches gone
        and kept ones physically sliced, BN statistics as the run evaluates it, eval mode, CPU — the network
        `hwnas export RUN --lambda λ` writes."""
        from hwnas.prune.prune_run import pruned_at
        from hwnas.train import resnet18_space

        cfg, net, gates, _, _ = pruned_at(self.path, lam)
        sp = resnet18_space(cfg.dataset, cfg.data_dir)
        net.hwnas_arch, net.hwnas_input_shape = gates.arch(), (sp.in_channels, sp.input_h, sp.input_w)
        return net

    def export(self, path: PathLike, lam: float | None = None, *, tables: Sequence[LatencyTable | PathLike] = (),
               threads: int | None = None, weights: PathLike | None = None, measure: bool = True) -> ExportReport:
        """`network(lam)` to ONNX at `path`, checked and re-measured next to the unpruned network."""
        from hwnas.api import ExportReport, load_table
        from hwnas.prune.prune_run import export_pruned

        if lam is None:
            raise HwnasError(f"{self.path} is a prune run: pass --lambda X (0 ≤ X ≤ Λ, see its pareto.csv)")
        if weights is not None:
            raise HwnasError("a prune run exports its own weights; --weights is for a genotype")
        report = export_pruned(self.path, lam, path, tables=[load_table(t) for t in tables], threads=threads,
                               measure=measure)
        return ExportReport.from_dict(report)


def _recompute_pareto(run_dir: Path, cfg: PruneConfig) -> pd.DataFrame:
    """pareto.csv and its plot on another λ grid, from the run's checkpoint (the fit is not touched)."""
    from hwnas.latency.table import LatencyTable
    from hwnas.plots import plot_prune_pareto
    from hwnas.prune.gate_cost import GateCost
    from hwnas.prune.prune import PruneData, Pruner
    from hwnas.prune.prune_run import _STATE, load_pruned, pareto_table
    from hwnas.runs import RunDir
    from hwnas.runtime import resolve_device
    from hwnas.train import resnet18_space

    run = RunDir(run_dir)
    _, model, _, lmax = load_pruned(run_dir, 0.0)
    device = resolve_device(cfg.device)
    cost = GateCost.from_table(LatencyTable.load(cfg.table), resnet18_space(cfg.dataset, cfg.data_dir))
    data = PruneData(cfg, device)
    pruner = Pruner(cfg, model, cost, lmax, data, device)
    pruner.load_state_dict(run.load_checkpoint(map_location=device, keys=_STATE))
    frame = pareto_table(pruner, cost, data)
    run.write_text("pareto.csv", frame.to_csv(index=False))
    plot_prune_pareto(frame, run.file("plots"))
    return frame
