"""hwnas from Python, beyond runs: lookup tables (`profile`, `calibrate`; `profile_bundle` and `import_bundle`
for a device without PyTorch), timing (`measure`), training (`train`), ONNX export (`export` →
`ExportReport`) and the environment (`info`).

Thin wrappers over the library (`hwnas.latency.*`, `hwnas.train`, `hwnas.export`): each builds the
component config from plain keyword options with the defaults the CLI shows, checks it before anything
heavy is loaded, and calls one library function. Errors are `HwnasError` with a one-line message;
progress goes to optional callbacks, nothing is printed. Searches and prunes live in
`hwnas.search_run` and `hwnas.prune_api`; everything is importable from `hwnas` itself.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwnas.errors import HwnasError

if TYPE_CHECKING:  # the torch-heavy types, for annotations only
    from torch import nn

    from hwnas.config import TrainConfig
    from hwnas.latency.calibrate import Calibration
    from hwnas.latency.table import LatencyTable
    from hwnas.spaces.genotype import Genotype
    from hwnas.train import TrainResult

PathLike = str | Path


def info() -> dict:
    """Versions, CPU/GPU, and `backends`: latency backend → 'usable' or why not (what `hwnas info` shows)."""
    from hwnas.info import backends, environment

    env = environment()
    return {**env, "backends": backends(env)}


# ---- lookup tables --------------------------------------------------------------------------------

def profile_setup(device: str = "cpu", space: str = "darts", threads: int | None = None, batch: int | None = None,
                  input_size: str | tuple[int, int] = "8x8", in_channels: int | None = None, channels: int = 8,
                  layers: int = 5, classes: int = 10, dtype: str = "float32", graph_opt: str = "all",
                  budget: float = 0.25, exporter: str = "dynamo", cuda_graphs: bool = True, rounds: int = 3):
    """(SpaceConfig, BackendConfig) of a table: what `profile` measures (also `hwnas profile bundle`)."""
    from hwnas.latency.backends import GRAPH_OPT, BackendConfig, resolve
    from hwnas.latency.onnx_io import EXPORTERS
    from hwnas.latency.space import SpaceConfig, parse_input_size
    from hwnas.latency.stats import TimingConfig

    h, w = parse_input_size(input_size if isinstance(input_size, str) else "x".join(map(str, input_size)))
    threads, batch = resolve(device, threads, batch, dtype)
    if graph_opt not in GRAPH_OPT:
        raise HwnasError(f"--graph-opt {graph_opt!r}: choose one of {', '.join(GRAPH_OPT)}")
    if exporter not in EXPORTERS:
        raise HwnasError(f"--exporter {exporter!r}: choose one of {', '.join(EXPORTERS)}")
    if budget <= 0:
        raise HwnasError("--budget must be positive")
    if rounds < 1:
        raise HwnasError("--rounds must be at least 1")
    if not cuda_graphs and device != "cuda":
        raise HwnasError(f"--no-cuda-graphs applies to --device cuda only, not {device}")
    if in_channels is None:
        in_channels = 1 if (h, w) in ((8, 8), (28, 28)) else 3
    sp = SpaceConfig(space=space, input_h=h, input_w=w, in_channels=in_channels, channels=channels, layers=layers,
                     batch=batch, num_classes=classes, dtype=dtype)
    return sp, BackendConfig(device, threads, graph_opt=graph_opt, exporter=exporter, cuda_graphs=cuda_graphs,
                             timing=TimingConfig(budget_s=budget, rounds=rounds))


def profile(device: str = "cpu", space: str = "darts", *, out: PathLike | None = None, threads: int | None = None,
            batch: int | None = None, input_size: str | tuple[int, int] = "8x8", in_channels: int | None = None,
            channels: int = 8, layers: int = 5, classes: int = 10, dtype: str = "float32", graph_opt: str = "all",
            budget: float = 0.25, exporter: str = "dynamo", cuda_graphs: bool = True, rounds: int = 3,
            on_progress: Callable[[int, int, Any, bool], None] | None = None) -> LatencyTable:
    """Measure every (op, channels, resolution, stride) the space can place on `device` into a lookup table.

    `device`: cpu, cuda, ort-cpu, ort-cuda, tensorrt, mobile (1-thread batch-1 ORT proxy), mobile-int8;
    `space`: darts or resnet18. `out` defaults to profiles/<space>-<device>-<HxW>.csv; an existing table with
    the same settings is resumed (only missing keys are measured). `cuda_graphs` (cuda only): time each op as
    one CUDA-graph replay (default) or, False, as eager kernel launches (default out
    profiles/<space>-cuda-eager-<HxW>.csv). `on_progress(done, total, key, measured)` is called after each key
    (`measured` False: it was already in the table). `rounds`: each key is timed in this many interleaved rounds
    (a fresh session each, `budget` shared between them) and its median is the median of theirs. Returns the
    loaded table."""
    from hwnas.latency.backends import make_backend
    from hwnas.latency.profiler import ProfileConfig
    from hwnas.latency.profiler import profile as run_profile

    sp, bcfg = profile_setup(device, space, threads, batch, input_size, in_channels, channels, layers, classes,
                             dtype, graph_opt, budget, exporter, cuda_graphs, rounds)
    backend = make_backend(bcfg)  # an unusable backend fails here, before any progress
    tag = device if cuda_graphs else f"{device}-eager"
    out = Path(out) if out is not None else Path("profiles") / f"{space}-{tag}-{sp.input_h}x{sp.input_w}.csv"
    return run_profile(ProfileConfig(sp, bcfg), out, backend=backend, on_progress=on_progress)


def profile_bundle(device: str = "mobile", space: str = "darts", *, out: PathLike, threads: int | None = None,
                   batch: int | None = None, input_size: str | tuple[int, int] = "8x8", in_channels: int | None = None,
                   channels: int = 8, layers: int = 5, classes: int = 10, graph_opt: str = "all", budget: float = 0.25,
                   exporter: str = "dynamo", rounds: int = 3, on_progress: Callable[[int, int], None] | None = None) -> Path:
    """Profile a device that cannot run PyTorch: write a bundle folder `out` (new or empty) holding every key's
    op as an ONNX model, keys.csv, bundle.json and run.py, which needs only onnxruntime and numpy.

    Copy the folder to the device, run `python run.py` there (it resumes if interrupted), bring the folder back
    and turn it into a table with `import_bundle(out)`. `device`: ort-cpu, mobile (1-thread batch-1 ORT
    proxy) or mobile-int8; the other options are `profile`'s (float32 only). `on_progress(done, total)` after
    each exported op. Returns the bundle folder (`hwnas profile bundle`)."""
    from hwnas.latency.bundle import write_bundle

    sp, bcfg = profile_setup(device, space, threads, batch, input_size, in_channels, channels, layers, classes,
                             "float32", graph_opt, budget, exporter, rounds=rounds)
    return write_bundle(sp, bcfg, out, on_progress=on_progress)


def import_bundle(bundle: PathLike, out: PathLike | None = None) -> LatencyTable:
    """The lookup table of a bundle (`profile_bundle`) that run.py has been run in on the device: its
    results.csv and device.json joined with the bundle's keys, saved at `out` (default
    profiles/<bundle folder name>.csv) and returned (`hwnas profile import`)."""
    from hwnas.latency.bundle import import_bundle as read_bundle

    bundle = Path(bundle)
    out = Path(out) if out is not None else Path("profiles") / f"{bundle.resolve().name}.csv"
    return read_bundle(bundle, out)


def load_table(table: LatencyTable | PathLike) -> LatencyTable:
    from hwnas.latency.table import LatencyTable

    return table if isinstance(table, LatencyTable) else LatencyTable.load(table)


def calibrate(table: LatencyTable | PathLike, *, samples: int = 50, seed: int = 0, folds: int = 5,
              report: PathLike | None = None, save: bool = True,
              on_progress: Callable[[int, int], None] | None = None, reference_ops: int | None = None,
              extremes: bool = True) -> Calibration:
    """Time `samples` random whole networks (and, with `extremes`, the space's cheapest and costliest by the
    table: `hwnas.latency.calibrate.extreme_architectures`) on the table's own backend, compare them with the table's
    predictions, fit corrections (K-fold held-out figures) and store the chosen one in the table's sidecar.
    With `save`, the figures go to `report` (default <table>.calibration.json) and a plot beside it; their
    paths are on the result (`report`, `plot`). Each round of the networks re-times the table's `reference_ops`
    costliest ops (default `hwnas.latency.calibrate.REFERENCE_OPS`; 0: off): the machine's speed in that round, by
    which the round's timings are brought to the median round's (`machine_speed` on the result); while more than a
    quarter of the networks' rounds still disagree, up to `extra_rounds` of the table's timing rule more are timed."""
    from hwnas.latency.backends import make_backend
    from hwnas.latency.calibrate import REFERENCE_OPS, check_device, plot, save_report, table_backend_config
    from hwnas.latency.calibrate import calibrate as run_calibrate

    lut = load_table(table)
    backend = make_backend(table_backend_config(lut))
    check_device(lut, backend)
    cal = run_calibrate(lut, samples=samples, seed=seed, folds=folds, backend=backend, on_progress=on_progress,
                        reference_ops=REFERENCE_OPS if reference_ops is None else reference_ops, extremes=extremes)
    if save and lut.path is not None:
        cal.report = save_report(cal, lut, report or lut.path.with_name(lut.path.name + ".calibration.json"))
        cal.plot = plot(cal, lut.path.with_name(lut.path.name + ".calibration.png"),
                        title=f"{lut.path.name} ({lut.meta['device']})")
    return cal


def measure(onnx_or_module: PathLike | nn.Module, device: str | None = None, *,
            table: LatencyTable | PathLike | None = None, threads: int | None = None, batch: int | None = None,
            input_shape: Sequence[int] | None = None) -> dict:
    """Time an ONNX file (or a PyTorch module) the way hwnas's tables time ops: with `table`, exactly as its
    ops were timed (backend, threads, batch, timing rule); else on `device` (default ort-cpu) with the defaults
    `profile` uses, at `batch` (default 1). A module needs `input_shape` (C, H, W) unless it came from
    `run.network`. Returns the report: p50_ms, p10_ms, p90_ms, backend, threads, batch, device, …; with a table of
    the same backend also `machine_speed` (the network timed beside the table's costliest ops: the machine's speed
    against the table's calibration, and the latency at that speed; `hwnas.latency.speed`)."""
    from hwnas.latency.measure import measure_module, measure_onnx_file, measurement

    lut = load_table(table) if table is not None else None
    cfg, b = measurement(lut, device, threads, batch if lut is not None else batch or 1)
    if isinstance(onnx_or_module, (str, Path)):
        report = measure_onnx_file(onnx_or_module, cfg, b, table=lut)
    else:
        report = measure_module(onnx_or_module, _input_shape(onnx_or_module, input_shape), cfg, b, table=lut)
    report["graph_optimization"] = cfg.graph_opt
    return report


def _input_shape(module, given: Sequence[int] | None) -> tuple[int, int, int]:
    shape = given if given is not None else getattr(module, "hwnas_input_shape", None)
    if shape is None or len(shape) != 3:
        raise HwnasError(f"input_shape=(C, H, W) is needed for a {type(module).__name__} (a network from "
                         f"run.network(λ) knows its own)")
    return tuple(int(s) for s in shape)


# ---- training -------------------------------------------------------------------------------------

def train_setup(genotype: Genotype | str | None = None, config: TrainConfig | None = None, *,
                out: PathLike | None = None, resume: bool = False, **options) -> tuple[Genotype | None, TrainConfig]:
    """(genotype, TrainConfig) of a training run, checked before anything heavy loads: `config` (default: hwnas's
    defaults, as `hwnas train` shows them) with `options` (TrainConfig's fields: model, dataset, data_dir,
    download, epochs, layers, channels, batch_size, lr, auxiliary, cutout, drop_path_prob, seed, device, …);
    with `resume`, the genotype and config of the run in `out`."""
    from dataclasses import fields, replace

    from hwnas.config import TrainConfig
    from hwnas.runs import RunDir

    if resume:
        if out is None:
            raise HwnasError("--resume continues the run in --out: pass --out DIR")
        from hwnas.train import resume_config

        return resume_config(out)
    unknown = sorted(set(options) - {f.name for f in fields(TrainConfig)})
    if unknown:
        raise HwnasError(f"unknown training option(s) {', '.join(unknown)}; see help(hwnas.train)")
    if options.get("data_dir") is not None:
        options["data_dir"] = str(options["data_dir"])
    cfg = replace(config, **options) if config is not None else TrainConfig(**options)
    if (genotype is None) == (cfg.model == "darts"):
        raise HwnasError("give --genotype G for a darts network, or --model resnet18 without --genotype")
    if out is not None and cfg.epochs == 0:
        raise HwnasError(f"--epochs 0 only builds the network and reports its size, so --out {out} would stay "
                         f"empty: drop --out, or train with --epochs N ≥ 1")
    if out is not None:
        RunDir.check_new(out)
    from hwnas.spaces.genotype import Genotype, load_genotype

    g = genotype if isinstance(genotype, Genotype) or genotype is None else load_genotype(genotype)
    return g, cfg


def train(genotype: Genotype | str | None = None, config: TrainConfig | None = None, *,
          out: PathLike | None = None, resume: bool = False, on_start: Callable[[int], None] | None = None,
          on_step: Callable[[int, int], None] | None = None, on_epoch_end: Callable[[dict], None] | None = None,
          **options) -> TrainResult:
    """Train the discrete network of `genotype` (a Genotype, a DARTS string, a genotype JSON or a run directory),
    or torchvision's ResNet18 (`model="resnet18"`), from scratch, and evaluate it on the test split.

    The recipe is `config` with `options` (`train_setup`; e.g. ``train(g, dataset="digits", epochs=5,
    layers=5, channels=8)``). With `out`, a run directory (config.json, metrics.csv, a checkpoint per epoch,
    result.json, model.pt — the `weights=` of `export` and `run.network`); `resume` continues it. `epochs=0`
    builds and counts only. Callbacks: `on_start(params)`, `on_step(i, n)`, `on_epoch_end(row)`. Returns
    params, test_loss, test_acc, metrics and the trained `model`. Under torchrun (several processes) training is
    data-parallel; only rank 0 writes and gets the callbacks."""
    from hwnas.distributed import is_main
    from hwnas.train import train_network

    if not is_main():
        on_start = on_step = on_epoch_end = None

    g, cfg = train_setup(genotype, config, out=out, resume=resume, **options)
    return train_network(g, cfg, out, on_start=on_start, on_step=on_step, on_epoch_end=on_epoch_end, resume=resume)


# ---- export ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ExportReport:
    """What `export` wrote: the ONNX file and its report (`<onnx>.json`, all of it in `data`)."""

    onnx: Path
    params: int
    flops_per_sample: float
    max_abs_diff: float                 # ONNX Runtime against PyTorch, batches 1 and 5
    top1_identical: bool
    measured: dict                      # p50_ms, backend, threads, batch, … (timed as the first table's device;
                                        # empty when exported with measure=False)
    predicted_latency_ms: dict = field(default_factory=dict)   # table path → ms
    data: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, d: dict) -> ExportReport:
        return cls(Path(d["onnx"]), d["params"], d["flops_per_sample"], d["max_abs_diff"], d["top1_identical"],
                   d.get("measured", {}), d.get("predicted_latency_ms", {}), d)

    @classmethod
    def load(cls, path: PathLike) -> ExportReport:
        """The report of an exported ONNX file (`model.onnx` or `model.onnx.json`)."""
        path = Path(path)
        side = path if path.suffix == ".json" else path.with_name(path.name + ".json")
        try:
            return cls.from_dict(json.loads(side.read_text()))
        except (OSError, ValueError, KeyError) as e:
            raise HwnasError(f"cannot read an export report from {side}: {e}") from None


def export(source, path: PathLike, *, lam: float | None = None, tables: Sequence[LatencyTable | PathLike] = (),
           threads: int | None = None, weights: PathLike | None = None, dataset: str | None = None,
           layers: int | None = None, channels: int | None = None,
           input_shape: Sequence[int] | None = None, measure: bool = True) -> ExportReport:
    """Export a discrete network to ONNX at `path` (never overwritten), check it against PyTorch under ONNX
    Runtime and re-measure it as the first table's device times its ops; the report also goes to `<path>.json`.

    `source`: a `SearchRun` or `PruneRun` or its directory (`lam` picks the trade-off of a λ-hypernet or prune
    run, 0 ≤ λ ≤ Λ); a `Genotype`, a `Genotype(...)` string, a genotype JSON file or a published name such as
    DARTS_V2 (built at `dataset`/`layers`/`channels`, default: a darts table's size, else digits, 8 cells, 16
    channels; trained `weights` from `train(out=...)`); or an `nn.Module` (with `input_shape` (C, H, W) unless
    it came from `run.network`). `tables` predict its latency; a run's own tables are added. The same network
    as `run.network(lam)` / `hwnas export`. `measure=False` skips the re-measurement (the report then has no
    measured latency), e.g. for a network bound for a device that is not this machine."""
    from hwnas.runs import check_out
    from hwnas.search_run import SearchRun, check_lambda, load_run

    check_out(path, "--out", folder=False)
    run_dir = (source.path if isinstance(source, SearchRun) or _is_prune_run(source) else Path(source)
               if isinstance(source, (str, Path)) and not _genotype_text(str(source)) else None)
    if run_dir is not None:
        if lam is not None:
            check_lambda(run_dir, lam)  # before anything loads: λ outside [0, Λ] is refused at once
        run = source if not isinstance(source, (str, Path)) else load_run(run_dir)
        return run.export(path, lam=lam, tables=tables, threads=threads, weights=weights, measure=measure)
    from torch import nn

    from hwnas.export import export_network

    tabs = [load_table(t) for t in tables]
    if isinstance(source, nn.Module):
        if lam is not None:
            raise HwnasError("lam picks a network of a run; a module is exported as it is")
        arch = getattr(source, "hwnas_arch", None) or getattr(source, "genotype", None)
        report = export_network(source, _input_shape(source, input_shape), path, arch=arch, tables=tabs,
                                threads=threads, measure=measure)
        return ExportReport.from_dict(report)
    from hwnas.spaces.genotype import Genotype, load_genotype

    if source is None or lam is not None:
        raise HwnasError("give either a RUN directory (with --lambda for a hypernet run) or --genotype")
    g = source if isinstance(source, Genotype) else load_genotype(source)
    return export_genotype(g, path, tabs, dataset, layers, channels, weights, threads, measure)


def _genotype_text(text: str) -> bool:
    """Whether a `source` string is a genotype rather than a run directory: a Genotype(...) string, a published
    name, or a file (a genotype JSON: a run is a directory)."""
    from hwnas.spaces.genotype import PUBLISHED

    return text.strip().startswith("Genotype(") or text.strip() in PUBLISHED or Path(text).is_file()


def _is_prune_run(source) -> bool:
    from hwnas.prune_api import PruneRun

    return isinstance(source, PruneRun)


def export_genotype(g: Genotype, path: PathLike, tables: list, dataset: str | None, layers: int | None,
                    channels: int | None, weights: PathLike | None, threads: int | None,
                    measure: bool = True) -> ExportReport:
    from hwnas.export import export_genotype as write
    from hwnas.spaces.network import NetworkConfig

    in_ch, h, w, classes, layers, channels = genotype_network(tables, dataset, layers, channels)
    cfg = NetworkConfig(channels=channels, layers=layers, num_classes=classes, in_channels=in_ch)
    return ExportReport.from_dict(write(g, cfg, (h, w), path, weights=weights, tables=tables, threads=threads,
                                        measure=measure))


def genotype_network(tables, dataset: str | None, layers: int | None, channels: int | None):
    """(in_channels, H, W, classes, layers, channels) of a genotype's network: a darts table's space (what its
    prediction is for), or the options; a contradiction between the two is an error, since the prediction
    would price another network than the one exported."""
    from hwnas.data import dataset_shape

    darts = [t for t in tables if t.space.space == "darts"]
    if not darts:
        return (*dataset_shape(dataset or "digits"), layers or 8, channels or 16)
    sp = darts[0].space
    for name, given in (("layers", layers), ("channels", channels)):
        if given is not None and given != getattr(sp, name):
            raise HwnasError(f"--{name} {given}: {darts[0].path} predicts networks with {name} {getattr(sp, name)}; "
                             f"drop --{name} (or use a table of that size)")
    if dataset is not None and dataset_shape(dataset)[:3] != (sp.in_channels, sp.input_h, sp.input_w):
        raise HwnasError(f"--dataset {dataset} is {'x'.join(map(str, dataset_shape(dataset)[:3]))}; {darts[0].path} "
                         f"predicts {sp.in_channels}x{sp.input_h}x{sp.input_w} inputs; drop --dataset or use a table "
                         f"of that input size")
    return sp.in_channels, sp.input_h, sp.input_w, sp.num_classes, sp.layers, sp.channels


def parse_lambda_max(value: float | str | None, allowed: tuple[str, ...] = ("auto",)) -> float | str | None:
    """Λ as given: 'auto' or None (None: estimated), another allowed word (returned as it is), or a finite
    positive number (nan and inf are refused: they would train over no usable range)."""
    if value is None or value == "auto":
        return None
    if isinstance(value, str) and value in allowed:
        return value
    expected = f"expected {' or '.join(repr(a) for a in allowed)} or a finite number > 0"
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise HwnasError(f"--lambda-max {value!r}: {expected}") from None
    if not (math.isfinite(number) and number > 0):
        raise HwnasError(f"--lambda-max {value!r}: {expected}")
    return number
