"""`hwnas profile` (build a lookup table; `bundle`/`import` for devices without PyTorch) and
`hwnas calibrate` (check the table against whole networks). `register(app)` adds them."""
from __future__ import annotations

import contextlib
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from .common import console, user_errors

profile_app = typer.Typer(add_completion=False, invoke_without_command=True, no_args_is_help=False,
                          rich_markup_mode=None,  # plain help, as the main app's
                          help="Measure every op the space can place on a device into a lookup table (CSV + sidecar).")

DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda, ort-cpu, ort-cuda, tensorrt, mobile (1-thread "
                                                         "batch-1 ORT proxy), mobile-int8")]
SpaceOpt = Annotated[str, typer.Option(help="darts or resnet18")]
ThreadsOpt = Annotated[int | None, typer.Option(help="intra-op threads (default: all cores; mobile: 1)")]
BatchOpt = Annotated[int | None, typer.Option(help="batch size (default 64; mobile: 1)")]
InputOpt = Annotated[str, typer.Option(help="input HxW (8x8 digits, 28x28 MNIST, 32x32 CIFAR, 224x224 ImageNet)")]
InChOpt = Annotated[int | None, typer.Option(help="image channels (default: 1 for 8x8 and 28x28, else 3)")]
ChannelsOpt = Annotated[int, typer.Option(help="darts: channels of the first cells")]
LayersOpt = Annotated[int, typer.Option(help="darts: cells")]
ClassesOpt = Annotated[int, typer.Option(help="classes of the head")]
DtypeOpt = Annotated[str, typer.Option(help="float32, or float16 on GPU backends")]
GraphOpt = Annotated[str, typer.Option(help="ONNX Runtime graph optimisation: disable, basic, extended, all")]
BudgetOpt = Annotated[float, typer.Option(help="seconds of timed runs per key (adaptive repeat count)")]
RoundsOpt = Annotated[int, typer.Option(help="interleaved timing rounds per key, each a fresh session sharing "
                                             "--budget; a key's median is the median of its rounds'; while more "
                                             "than a quarter of a chunk's keys disagree across rounds, up to 3 more")]
ExporterOpt = Annotated[str, typer.Option(help="ONNX exporter for ort-*/mobile*/tensorrt: dynamo (default, the "
                                               "supported one) or torchscript (deprecated, ~10x faster per op)")]


@contextmanager
def _bar(label: str):
    """A live bar on a terminal; in a log, a line at every tenth of the work (and at the end)."""
    if not console.is_terminal:
        state = {"shown": -1}

        def line(done: int, total: int, text: str | None = None) -> None:
            tenth = 10 * done // max(total, 1)
            if tenth > state["shown"] or done == total:
                state["shown"] = tenth
                console.print(f"{label}: {done}/{total}" + (f" ({text})" if text else ""), highlight=False)

        yield line
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=console, transient=False) as progress:
        task = progress.add_task(label, total=None)

        def update(done: int, total: int, text: str | None = None) -> None:
            progress.update(task, completed=done, total=total, description=text or label)

        yield update


@profile_app.callback()
@user_errors
def profile(
    ctx: typer.Context,
    device: DeviceOpt = "cpu",
    space: SpaceOpt = "darts",
    threads: ThreadsOpt = None,
    batch: BatchOpt = None,
    input_size: InputOpt = "8x8",
    in_channels: InChOpt = None,
    channels: ChannelsOpt = 8,
    layers: LayersOpt = 5,
    classes: ClassesOpt = 10,
    dtype: DtypeOpt = "float32",
    graph_opt: GraphOpt = "all",
    budget: BudgetOpt = 0.25,
    rounds: RoundsOpt = 3,
    exporter: ExporterOpt = "dynamo",
    cuda_graphs: Annotated[bool, typer.Option("--cuda-graphs/--no-cuda-graphs",
                                              help="cuda: time each op as one CUDA-graph replay (default), or as "
                                                   "eager kernel launches (recorded in the sidecar)")] = True,
    out: Annotated[Path | None, typer.Option(help="table CSV (default profiles/<space>-<device>-<HxW>.csv); "
                                                  "an existing table with the same settings is resumed")] = None,
) -> None:
    """Measure every (op, channels, resolution, stride) the space can place; resumes a partial table."""
    if ctx.invoked_subcommand is not None:
        return
    from hwnas.api import profile as run_profile

    counts = {"measured": 0, "skipped": 0}
    with contextlib.ExitStack() as stack:
        bar = []  # opened at the first key: bad options and an unusable backend fail before any output

        def on_progress(done, total, key, measured):
            if not bar:
                bar.append(stack.enter_context(_bar(f"profile {device}")))
            counts["measured" if measured else "skipped"] += 1
            bar[0](done, total, f"{device} {key.op} {key.c_in}->{key.c_out} {key.h}x{key.w}")

        table = run_profile(device, space, out=out, threads=threads, batch=batch, input_size=input_size,
                            in_channels=in_channels, channels=channels, layers=layers, classes=classes, dtype=dtype,
                            graph_opt=graph_opt, budget=budget, exporter=exporter, cuda_graphs=cuda_graphs,
                            rounds=rounds, on_progress=on_progress)
    out = table.path
    console.print(f"{len(table)} keys in {out} ({counts['measured']} measured now, {counts['skipped']} already there)"
                  f"; device: {table.meta['device']}; one session call costs {table.call_overhead_ms * 1e3:.1f} µs "
                  f"(taken off each key, paid once per network)", highlight=False)
    if "noisy" in table.frame.columns:  # tables made before the timing rule recorded it have no flags
        noisy = table.frame["noisy"].astype(str).str.lower().isin(("true", "1"))
        _warn_noisy(list(zip(noisy, table.frame["spread"])), str(out))
    warn_steal(table.meta.get("steal_pct"), table.meta.get("threads"))


def warn_steal(pct: float | None, threads: int | None) -> None:
    """Say so when the hypervisor took the machine's CPUs during timing (hwnas.latency.steal)."""
    from hwnas.latency.steal import steal_warning

    line = steal_warning(pct, threads)
    if line:
        console.print(f"[yellow]warning:[/] {line}", highlight=False)


def _warn_noisy(timings: list[tuple[bool, float]], where: str) -> None:
    """Say so when timings (noisy flag, spread) did not settle: a prediction cannot be better than the
    timings it sums."""
    spreads = [spread for noisy, spread in timings if noisy]
    if spreads:
        console.print(f"[yellow]warning:[/] {len(spreads)} of {len(timings)} timings in {where} did not settle "
                      f"(block medians spread up to {100 * max(spreads):.0f} %): the machine is busy; rerun on a "
                      f"quiet machine or raise --budget", highlight=False)


@profile_app.command("bundle", short_help="Profile a device without PyTorch: ONNX op models and run.py.")
@user_errors
def bundle(
    out: Annotated[Path, typer.Option(help="folder to write the bundle into (must be new or empty)")],
    device: Annotated[str, typer.Option("--device", help="ort-cpu, mobile or mobile-int8")] = "mobile",
    space: SpaceOpt = "darts",
    threads: ThreadsOpt = None,
    batch: BatchOpt = None,
    input_size: InputOpt = "8x8",
    in_channels: InChOpt = None,
    channels: ChannelsOpt = 8,
    layers: LayersOpt = 5,
    classes: ClassesOpt = 10,
    graph_opt: GraphOpt = "all",
    budget: BudgetOpt = 0.25,
    rounds: RoundsOpt = 3,
    exporter: ExporterOpt = "dynamo",
) -> None:
    """Write ONNX op models + run.py (onnxruntime and numpy only) to profile a device without PyTorch."""
    from hwnas.api import profile_bundle

    with contextlib.ExitStack() as stack:
        bar = []  # opened at the first op: bad options fail before any output

        def on_progress(done: int, total: int) -> None:
            if not bar:
                bar.append(stack.enter_context(_bar("export")))
            bar[0](done, total)

        profile_bundle(device, space, out=out, threads=threads, batch=batch, input_size=input_size,
                       in_channels=in_channels, channels=channels, layers=layers, classes=classes, graph_opt=graph_opt,
                       budget=budget, exporter=exporter, rounds=rounds, on_progress=on_progress)
    console.print(f"bundle in {out}/: copy it to the device, run `python run.py` there, bring the folder back and "
                  f"run `hwnas profile import {out}`", highlight=False)


@profile_app.command("import")
@user_errors
def import_(
    bundle_dir: Annotated[Path, typer.Argument(help="a bundle folder holding results.csv from run.py")],
    out: Annotated[Path | None, typer.Option(help="table CSV (default profiles/<bundle name>.csv)")] = None,
) -> None:
    """Turn a run bundle's results into a lookup table."""
    from hwnas.api import import_bundle

    table = import_bundle(bundle_dir, out)
    console.print(f"{len(table)} keys from {table.meta['device']} written to {table.path}", highlight=False)


@user_errors
def calibrate(
    table: Annotated[Path, typer.Option(help="lookup table CSV (with its .json sidecar)")],
    samples: Annotated[int, typer.Option(help="random architectures to measure end-to-end")] = 50,
    seed: Annotated[int, typer.Option(help="seed of the architecture sampler")] = 0,
    folds: Annotated[int, typer.Option(help="K of the K-fold cross-validation of the fits")] = 5,
    report: Annotated[Path | None, typer.Option(help="JSON of the figures (default <table>.calibration.json)")] = None,
    reference_ops: Annotated[int | None, typer.Option(
        min=0, help="the table's costliest ops re-timed in every round of the networks: the machine's speed against "
                    "the table's, by which each round's timings are brought to the median round's (default 6; 0: off)")] = None,
    extremes: Annotated[bool, typer.Option(
        help="also time the space's cheapest and costliest networks by the table (the ends a search along λ "
             "reaches), so that the correction is fitted across the whole range")] = True,
) -> None:
    """Compare the table's predictions with whole networks measured on the same backend; fit and store a correction."""
    from hwnas.api import calibrate as run_calibrate

    with _bar("calibrate") as update:
        cal = run_calibrate(table, samples=samples, seed=seed, folds=folds, report=report, on_progress=update,
                            reference_ops=reference_ops, extremes=extremes)
    nets = f"{len(cal.samples)} networks" + (f" ({samples} random, the cheapest and the costliest)" if extremes else "")
    out = Table(title=f"{table.name}: predicted vs measured, {nets}, {folds}-fold held-out for fits")
    for col in ("prediction", "MAPE %", "within ±10 %", "Spearman", "Kendall"):
        out.add_column(col)
    for name, f in cal.figures.items():
        label = "per-op sum" if name == "sum" else name + (" (chosen)" if name == cal.chosen else "")
        out.add_row(label, f"{f['mape_pct']:.2f}", f"{100 * f['within_10pct']:.0f} %", f"{f['spearman']:.3f}",
                    f"{f['kendall']:.3f}")
    console.print(out)
    report, png = cal.report, cal.plot
    what = "no correction: the per-op sum predicts best" if cal.correction is None else f"correction ({cal.chosen})"
    console.print(f"{what} (lowest held-out MAPE that ranks no worse than the sum), stored in {table.name}.json; "
                  f"figures in {report}, plot {png}", highlight=False)
    if cal.extra_rounds:
        console.print(f"the networks' rounds disagreed (more than a quarter of them beyond the timing precision): "
                      f"{cal.extra_rounds} more round(s) timed", highlight=False)
    _warn_noisy([(r["noisy"], r["spread"]) for r in cal.samples], f"{len(cal.samples)} whole networks")
    warn_steal(cal.steal_pct, cal.threads)
    if cal.machine_speed:
        speeds = cal.machine_speed
        rounds = ", ".join(f"{v:.2f}" for v in speeds)
        console.print(f"machine speed: the table's costliest ops ran at {rounds}× their profiled time in the "
                      f"{len(speeds)} rounds; each round's network timings were brought to the median round's",
                      highlight=False)
        if max(speeds) / min(speeds) > 1.10:
            console.print(f"[yellow]warning:[/] the machine's speed changed by {max(speeds) / min(speeds):.2f}× during "
                          f"the calibration: other work on the machine, or a CPU with several speeds; "
                          f"predictions here will vary by as much", highlight=False)
        elif not 0.9 <= sorted(speeds)[len(speeds) // 2] <= 1.1:
            console.print("[yellow]warning:[/] the machine runs the table's own ops at another speed than when it was "
                          "profiled; the correction includes it, but predictions drift as the machine does",
                          highlight=False)


@user_errors
def measure(
    model: Annotated[Path, typer.Argument(help="an ONNX file (one input; a dynamic batch takes --batch)")],
    device: Annotated[str | None, typer.Option("--device", help="ort-cpu, mobile, mobile-int8 or ort-cuda, with the "
                                                                 "defaults hwnas profile uses")] = None,
    table: Annotated[Path | None, typer.Option(help="time exactly as this table's ops were timed (its backend, "
                                                    "threads, batch and timing rule)")] = None,
    threads: ThreadsOpt = None,
    batch: Annotated[int | None, typer.Option(help="batch for a dynamic batch dimension (default: the table's; "
                                                   "else 1)")] = None,
) -> None:
    """Time any ONNX file the way hwnas's tables time ops, so a prediction can be checked by hand."""
    from hwnas.api import measure as run_measure
    from hwnas.latency.speed import speed_note

    r = run_measure(model, device, table=table, threads=threads, batch=batch)
    console.print(f"{model}: {r['p50_ms']:.4f} ms median (p10 {r['p10_ms']:.4f}, p90 {r['p90_ms']:.4f}) on "
                  f"{r['backend']}, {r['threads']} thread(s), batch {r['batch']}, input {'x'.join(map(str, r['input_shape']))}"
                  f", graph optimisation {r['graph_optimization']}; {r['device']}" + speed_note(r.get("machine_speed")),
                  highlight=False)
    _warn_noisy([(r["noisy"], r["spread"])], str(model))
    warn_steal(r.get("steal_pct"), r["threads"])


def register(app: typer.Typer) -> None:
    app.add_typer(profile_app, name="profile", short_help="Measure every op of a search space on a device into a table.")
    app.command("calibrate", short_help="Check a table against whole networks; store a correction.")(calibrate)
    app.command("measure", short_help="Time an ONNX file the way hwnas's tables time ops.")(measure)
