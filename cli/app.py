"""The Typer app: options → config → one library call. Run as `hwnas` (console script)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from .common import console, epoch_progress, readable_help, user_errors
from hwnas.config import FRONT_STEPS, ControlConfig
from hwnas.errors import HwnasError

# rich_markup_mode=None: Click's plain help. Typer's rich boxes put the option help at column 56 of 80 and
# wrapped it into one-word lines (issue #14.5); the plain help gives it at least half the terminal.
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="hwnas: hardware-aware neural architecture search. Which network should I ship on this "
                       "device, at this latency budget?")

Dataset = Annotated[str, typer.Option(help="digits (embedded, offline), idx:DIR (MNIST-format IDX files), mnist, "
                                           "fashion-mnist, cifar10, cifar100")]
DataDir = Annotated[Path | None, typer.Option(help="where torchvision datasets live (default ./data)")]
Download = Annotated[bool, typer.Option(help="download a torchvision dataset that is not in --data-dir")]
Device = Annotated[str, typer.Option(help="auto (CUDA if available), cpu, cuda, cuda:N")]
Seed = Annotated[int, typer.Option(help="random seed (data split, initialisation, sampling)")]


@app.command()
@user_errors
def info() -> None:
    """Versions, CPU/GPU, and which latency backends are usable here."""
    from hwnas.api import info as environment

    env = environment()
    usable = env.pop("backends")
    table = Table(title="hwnas environment", show_header=False)
    for key, value in env.items():
        table.add_row(key, ", ".join(value) if isinstance(value, list) else str(value))
    console.print(table)
    table = Table(title="latency backends")
    table.add_column("backend")
    table.add_column("status")
    for name, status in usable.items():
        table.add_row(name, f"[green]{status}[/]" if status == "usable" else f"[yellow]{escape(status)}[/]")
    console.print(table)


@app.command(short_help="DARTS cell search; with a cost, for every λ ∈ [0, Λ] in one run.")
@user_errors(interrupted=lambda o: f"continue the run with: hwnas search --out {o['out']} --resume")
def search(
    out: Annotated[Path, typer.Option(help="run directory (config.json, metrics.csv, checkpoint.pt, genotype.json, plots/)")],
    dataset: Dataset = "digits",
    data_dir: DataDir = None,
    download: Download = False,
    space: Annotated[str, typer.Option(help="search space (darts)")] = "darts",
    relax: Annotated[str, typer.Option(help="softmax (DARTS), gumbel (annealed Gumbel-softmax), sigmoid (FairDARTS)")] = "softmax",
    hard: Annotated[bool, typer.Option(help="gumbel only: one-hot samples with straight-through gradients; "
                                            "evaluates one op per edge (much cheaper)")] = False,
    tau_start: Annotated[float, typer.Option(help="Gumbel temperature at the start")] = 5.0,
    tau_end: Annotated[float, typer.Option(help="Gumbel temperature at the end (exponential annealing)")] = 0.5,
    arch_grad: Annotated[str, typer.Option(help="first, second (unrolled, exact Hessian-vector product), one-level, "
                                                "hyper-linear / hyper-mlp (HyperDARTS: a learnt best-response "
                                                "hypernetwork w_φ(α), exact gradient through it)")] = "first",
    epochs: Annotated[int, typer.Option(help="search epochs")] = 10,
    layers: Annotated[int, typer.Option(help="cells in the supernet")] = 5,
    channels: Annotated[int, typer.Option(help="channels of the first cells")] = 8,
    batch_size: Annotated[int, typer.Option(help="batch size")] = 64,
    augment: Annotated[bool, typer.Option(help="random crop (and flip for CIFAR) during the search")] = False,
    max_steps: Annotated[int | None, typer.Option(help="cap on steps per epoch (quick runs)")] = None,
    partial_channels: Annotated[int, typer.Option(help="PC-DARTS: only channels/K of each edge's input go through "
                                                       "its candidate ops (the rest bypass them), with edge "
                                                       "normalisation; K must divide --channels; 1: off")] = 1,
    arch_lr: Annotated[float | None, typer.Option(help="Adam learning rate of α (or of the λ-hypernet). Adam moves "
                                                       "each logit by at most about this per step; default: 6 / (α "
                                                       "steps of the run) within [3e-4, 3e-2] (DARTS's 3e-4 over its "
                                                       "~20k steps is the same move)", show_default=False)] = None,
    seed: Seed = 0,
    device: Device = "auto",
    resume: Annotated[bool, typer.Option(help="continue the run in --out with its saved config")] = False,
    table: Annotated[list[Path] | None, typer.Option(help="latency lookup table (hwnas profile); repeat for several "
                                                          "devices: λ gets one entry per table")] = None,
    cost: Annotated[str, typer.Option(help="what λ·Tᵀγ penalises: none, latency (with --table), params, flops")] = "none",
    hypernet: Annotated[str, typer.Option(help="none (one fixed --lambda), linear or mlp (one run, every λ in [0, Λ]; mlp's networks match "
                                                "separate fixed-λ searches (the quickstart's choice); linear's move in "
                                                "proportion to λ)")] = "none",
    lam: Annotated[float, typer.Option("--lambda", help="the fixed λ of a search without hypernet")] = 0.0,
    lambda_max: Annotated[str, typer.Option(help="Λ: 'auto' (estimated on the supernet: --lambda-margin × the λ at "
                                                 "which the cheapest architecture becomes optimal, or Theorem 1's "
                                                 "bound; lambda_max.json says which) or a number")] = "auto",
    lambda_sampling: Annotated[str, typer.Option(help="λ per step: uniform or log-uniform over [0, Λ]")] = "uniform",
    lambda_warmup_epochs: Annotated[int, typer.Option(help="supernet training through sampled sub-networks before Λ is estimated")] = 5,
    lambda_samples: Annotated[int, typer.Option(help="sampled architectures Λ (auto) is estimated on, and Theorem 1's "
                                                     "S; Λ is a maximum over them, so fewer give a smaller Λ (8: "
                                                     "0.02–0.3 where 64 gave 0.27–0.45 on digits)")] = 64,
    lambda_margin: Annotated[float, typer.Option(help="Λ = this × the λ at which the cheapest architecture becomes "
                                                      "optimal (with `none` excluded), estimated when the λ = 0 phase "
                                                      "ends; 3 so that the λ = Λ end reaches the space's cheapest "
                                                      "network")] = ControlConfig.lambda_margin,
    lambda_zero_share: Annotated[float, typer.Option(help="with --hypernet: this share of the search's steps comes "
                                                          "first, at λ = 0 only (a plain DARTS search, so that the "
                                                          "λ = 0 end is the unpenalised architecture); then λ over "
                                                          "[0, Λ]. A quarter: more, and the weights learn the "
                                                          "convolutions that the cheap end should "
                                                          "drop")] = ControlConfig.zero_share,
    none_op: Annotated[bool | None, typer.Option("--with-none/--without-none",
                                                 help="keep the `none` op among the candidates (default: without "
                                                      "when there is a cost, since a soft penalty is paid off "
                                                      "through `none` without changing the derived network)",
                                                 show_default=False)] = None,
) -> None:
    """DARTS cell search; writes the run directory and the derived genotype. With a cost (--table or
    --cost) it minimises L_val+λ·Tᵀγ; with --hypernet, for every λ ∈ [0, Λ] in one run."""
    from hwnas.search_run import search_config  # torch-free: options are checked at once

    cfg = search_config(dataset=dataset, data_dir=data_dir, download=download, space=space, relax=relax, hard=hard,
                        tau_start=tau_start, tau_end=tau_end, arch_grad=arch_grad, epochs=epochs, layers=layers,
                        channels=channels, batch_size=batch_size, augment=augment, max_steps=max_steps,
                        partial_channels=partial_channels, arch_lr=arch_lr, seed=seed, device=device,
                        table=table or (), cost=cost, hypernet=hypernet, lam=lam, lambda_max=lambda_max,
                        lambda_sampling=lambda_sampling, lambda_warmup_epochs=lambda_warmup_epochs,
                        lambda_samples=lambda_samples, lambda_margin=lambda_margin,
                        lambda_zero_share=lambda_zero_share, with_none=none_op)
    _run_search(cfg, out, resume)


def _run_search(cfg, out: Path, resume: bool):
    from hwnas.config import SearchConfig
    from hwnas.search_run import search as run_search

    if not resume:
        from hwnas.runs import RunDir

        RunDir.check_new(out)  # before the progress bar: a taken --out is a one-line error
    total = SearchConfig.from_dict(_read_config(out)).epochs if resume else cfg.epochs
    with epoch_progress(total, label="search") as (on_step, on_epoch_end):
        run = run_search(cfg, out=out, resume=resume, on_step=on_step, on_epoch_end=on_epoch_end)
    rec = run.record
    if rec is not None:
        parts = (f" (L̄ {rec['label_entropy']:.4f}, S {rec['worst_valid_loss']:.4f}, Tᵀ1 {rec['cost_bound']}, "
                 f"{rec['samples']} valid samples)") if "label_entropy" in rec else ""
        console.print(f"[bold]Λ[/] {rec['lambda_max']}{parts}", highlight=False)
        if "lambda_max_source" in rec:
            console.print(f"  Λ from {escape(rec['lambda_max_source'])}", highlight=False)
    console.print(f"[bold]genotype[/] {run.genotype()}", highlight=False, soft_wrap=True)
    console.print(f"run written to {out}/ (genotype.json, metrics.csv, plots/alphas.png)")
    return run


def _read_config(out: Path) -> dict:
    from hwnas.runs import RunDir

    run = RunDir(out)
    if not run.file("config.json").is_file():
        raise HwnasError(f"--resume: {out} holds no config.json; start a new run with --out {out}")
    return run.read_json("config.json")


def _train_interrupted(o: dict) -> str:
    if o.get("out") is None:
        return "nothing was saved (no --out)"
    return f"continue from the last finished epoch with: hwnas train --out {o['out']} --resume"


@app.command(short_help="Train a genotype's network (or a ResNet18) and test it.")
@user_errors(interrupted=_train_interrupted)
def train(
    genotype: Annotated[str | None, typer.Option(help="a DARTS Genotype(...) string, a genotype JSON file, or a run "
                                                      "directory")] = None,
    model: Annotated[str, typer.Option(help="darts (the network of --genotype) or resnet18 (torchvision's, the "
                                            "network hwnas prune starts from; small stem for inputs ≤ 64 px)")] = "darts",
    dataset: Dataset = "digits",
    data_dir: DataDir = None,
    download: Download = False,
    epochs: Annotated[int, typer.Option(help="training epochs; 0 builds the network and reports its size only "
                                             "(without --out)")] = 20,
    layers: Annotated[int, typer.Option(help="cells")] = 8,
    channels: Annotated[int, typer.Option(help="channels of the first cells")] = 16,
    batch_size: Annotated[int, typer.Option(help="batch size")] = 96,
    lr: Annotated[float, typer.Option(help="initial learning rate (cosine schedule)")] = 0.025,
    auxiliary: Annotated[bool, typer.Option(help="auxiliary head at 2/3 depth, weight 0.4")] = False,
    cutout: Annotated[bool, typer.Option(help="cutout augmentation (half the image side)")] = False,
    drop_path_prob: Annotated[float, typer.Option(help="final drop-path probability (ramped linearly)")] = 0.2,
    seed: Seed = 0,
    device: Device = "auto",
    out: Annotated[Path | None, typer.Option(help="run directory for metrics, checkpoint.pt (each epoch), "
                                                  "result.json and model.pt")] = None,
    resume: Annotated[bool, typer.Option(help="continue the run in --out from its last finished epoch, with its "
                                              "saved genotype and config")] = False,
) -> None:
    """Train the discrete network of a genotype (or a ResNet18) from scratch and report its test accuracy."""
    from hwnas.api import train_setup  # torch-free until the genotype is read: options are checked at once

    g, cfg = train_setup(genotype, out=out, resume=resume, model=model, dataset=dataset, data_dir=data_dir,
                         download=download, epochs=epochs, layers=layers, channels=channels, batch_size=batch_size,
                         lr=lr, auxiliary=auxiliary, cutout=cutout, drop_path_prob=drop_path_prob, seed=seed,
                         device=device)
    _run_train(g, cfg, out, resume=resume)


def _run_train(g, cfg, out: Path | None, resume: bool = False):
    from hwnas.api import train as train_network

    def on_start(params: int) -> None:
        if cfg.model != "darts":
            console.print(f"network: {cfg.model}, [bold]{params:,}[/] parameters")
            return
        console.print(f"network: {cfg.layers} cells, {cfg.channels} channels, "
                      f"[bold]{params:,}[/] parameters ({params / 1e6:.6f} M, auxiliary head excluded)")

    if cfg.epochs == 0:
        return train_network(g, cfg, out=out, on_start=on_start)
    with epoch_progress(cfg.epochs, label="train") as (on_step, on_epoch_end):
        result = train_network(g, cfg, out=out, on_start=on_start, on_step=on_step, on_epoch_end=on_epoch_end,
                               resume=resume)
    if not math.isnan(result.test_acc):
        console.print(f"[bold]test accuracy {result.test_acc:.4f}[/] (loss {result.test_loss:.4f})")
    return result


@app.command(short_help="The whole chain on digits: profile, search, export, train.")
@user_errors(interrupted=lambda o: "what it wrote is left as it is; `hwnas quickstart` starts again in a fresh folder")
def quickstart(
    out: Annotated[Path, typer.Option(help="where the run goes (a fresh name if taken)")] = Path("runs/quickstart"),
    epochs: Annotated[int, typer.Option(help="search epochs")] = 10,
    train_epochs: Annotated[int, typer.Option(help="epochs to train the chosen network (0: skip)")] = 10,
    device: Device = "auto",
) -> None:
    """The whole chain on the embedded default (digits): profile a phone-CPU proxy, one λ-hypernet
    search over λ ∈ [0, Λ], the architectures along λ, export of one of them, and its training."""
    from hwnas.config import TrainConfig
    from hwnas.runs import check_out
    from hwnas.search_run import search_config  # torch-free: options are checked at once

    check_out(out, folder=False)  # a taken --out is fine: quickstart picks a fresh name
    if train_epochs < 0:
        raise HwnasError(f"--train-epochs must be ≥ 0 (0 skips the training), got {train_epochs}")
    base = search_config(epochs=epochs, device=device)
    from hwnas.api import calibrate, profile
    from hwnas.search.pareto import distinct_architectures

    out = _fresh(out)
    table = out / "mobile-8x8.csv"
    console.print(f"[bold]1/5 profile[/] every op of the search space on the phone-CPU proxy (ONNX Runtime, "
                  f"1 thread, batch 1) → {table}, and calibrate it")
    # a quick table (0.05 s per key; `hwnas profile` defaults to 0.25 s) of the search's own space
    profile("mobile", "darts", out=table, input_size="8x8", channels=base.channels, layers=base.layers, budget=0.05)
    cal = calibrate(table, samples=12, folds=4)   # its figures beside the table: <table>.calibration.json
    best = ("the plain sum is kept" if cal.chosen == "sum" else
            f"the {cal.chosen} correction by {cal.figures[cal.chosen]['mape_pct']:.1f} % held out (stored with the table)")
    console.print(f"  calibrated on {len(cal.samples)} whole networks (12 random, the space's cheapest and costliest): "
                  f"the per-op sum (less one session call per op) is off by "
                  f"{cal.figures['sum']['mape_pct']:.0f} %; {best}", highlight=False)
    console.print("[bold]2/5 search[/] DARTS with an mlp λ-hypernet on L_val + λ·Tᵀγ over λ ∈ [0, Λ] (Λ: where the "
                  "cheapest architecture becomes optimal; Theorem 1 recorded)")
    run = _run_search(search_config(base, table=str(table), hypernet="mlp"), out / "search", resume=False)
    console.print("[bold]3/5 pareto[/] the architectures along λ ∈ [0, Λ], without retraining")
    frame = run.pareto(lambdas=8)
    cols = [c for c in frame.columns if c.startswith("predicted_latency_ms[")][:1]
    for _, row in frame.iterrows():
        console.print(f"  λ {row['lambda']:.4g}: val acc {row['val_acc']:.3f} (inherited weights, "
                      f"{row['front_steps']} shared fine-tune steps per network of the front, BN recalibrated), {row['params']:,} params"
                      + "".join(f", {row[c]:.3f} ms predicted" for c in cols), highlight=False)
    if cols:
        lat = frame[cols[0]]
        floor = _cheapest_predicted(run.path, table)
        console.print(f"  {distinct_architectures(frame['genotype'])} distinct architectures; predicted latency {lat.iloc[0]:.3f} ms "
                      f"at λ = 0 → {lat.iloc[-1]:.3f} ms at λ = Λ ({lat.iloc[-1] / lat.iloc[0]:.2f}×"
                      + (f"; the space's cheapest network: {floor:.3f} ms" if floor is not None else "")
                      + f"); plot: {run.path}/plots/pareto_lambda.png", highlight=False)
        if note := skipped_note(frame):
            console.print(note, highlight=False)
    pick = frame.iloc[len(frame) // 2]
    console.print(f"[bold]4/5 export[/] the network at λ = {pick['lambda']:.4g} → {out}/model.onnx")
    report = run.export(out / "model.onnx", lam=float(pick["lambda"]))
    from hwnas.latency.speed import speed_note
    console.print(f"  {report.params:,} params, max |ORT − PyTorch| {report.max_abs_diff:.1e}, "
                  f"{report.measured['p50_ms']:.3f} ms measured vs "
                  f"{next(iter(report.predicted_latency_ms.values())):.3f} ms predicted ({report.measured['backend']}"
                  f", batch {report.measured['batch']}, {report.measured['threads']} thread(s))"
                  + speed_note(report.measured.get("machine_speed")), highlight=False)
    if train_epochs > 0:
        console.print("[bold]5/5 train[/] the exported cell from scratch on digits")
        from hwnas.spaces.genotype import Genotype

        _run_train(Genotype.parse(pick["genotype"]),
                   TrainConfig(epochs=train_epochs, layers=base.layers, channels=base.channels, device=device),
                   out / "train")


def _cheapest_predicted(run_dir: Path, table: Path) -> float | None:
    """The table's prediction for the cheapest network the search could derive (lambda_max.json), if recorded."""
    import json

    from hwnas.latency.table import LatencyTable
    from hwnas.spaces.genotype import Genotype

    rec = json.loads((Path(run_dir) / "lambda_max.json").read_text())
    genotypes = rec.get("cheapest", {}).get("genotype")
    return LatencyTable.load(table).predict(Genotype.parse(genotypes[0])) if genotypes else None


@app.command(short_help="Architectures along λ from a hypernet run, without retraining.")
@user_errors
def pareto(
    run: Annotated[Path, typer.Argument(help="a λ-hypernet search run directory")],
    lambdas: Annotated[int, typer.Option(help="how many λ values along [0, Λ] (per target: a grid over the "
                                              "simplex Σ λ_d/Λ_d ≤ 1 with several tables)")] = 11,
    front_steps: Annotated[int, typer.Option(help="SGD steps per network on a copy of the supernet, trained on "
                                                  "the front's distinct networks in turn before each is evaluated "
                                                  "(the supernet trained mostly at cheap cells; this evens it out; "
                                                  "fewer steps rank the networks less like training from scratch)")] = FRONT_STEPS,
    finetune_steps: Annotated[int, typer.Option(help="then SGD steps on each architecture alone (the same for every "
                                                     "λ), before its BN statistics are recalibrated and it is "
                                                     "evaluated")] = 0,
    spacing: Annotated[str, typer.Option(help="cost: the λ whose networks' predicted costs are evenly spread "
                                              "between the λ = 0 and the λ = Λ network's (one table); lambda: an "
                                              "even grid in λ")] = "cost",
) -> None:
    """Architectures along λ from a trained hypernet, without retraining the search: pareto.csv and plots."""
    from hwnas.search_run import SearchRun

    frame = SearchRun.load(run).pareto(lambdas=lambdas, finetune_steps=finetune_steps, front_steps=front_steps,
                                       spacing=spacing)
    table = Table(title=f"{run}: architectures along λ")
    cols = ["lambda", "val_acc", "params"] + [c for c in frame.columns if c.startswith("predicted_latency_ms[")]
    for c in cols + ["pareto"]:
        table.add_column(c.replace("predicted_latency_ms", "ms"), justify="right")
    for _, row in frame.iterrows():
        table.add_row(*(f"{row[c]:.4g}" if isinstance(row[c], float) else str(row[c]) for c in cols),
                      "●" if row["pareto_optimal"] else "")
    console.print(table)
    if note := skipped_note(frame):
        console.print(note, highlight=False)
    console.print(f"written {run}/pareto.csv and {run}/plots/pareto_*.png")


def skipped_note(frame) -> str:
    """One line when pareto left networks off the λ-axis because its table priced them above one at a smaller λ."""
    k = frame.attrs.get("skipped_networks", 0)
    return (f"  {k} network(s) along λ left out: the table (with its kernel count) prices each above a network at a "
            f"smaller λ" if k else "")


@app.command(short_help="A network to ONNX, checked against PyTorch and re-measured.")
@user_errors
def export(
    out: Annotated[Path, typer.Option(help="the ONNX file to write (never overwritten); the report goes to <out>.json")],
    run: Annotated[Path | None, typer.Argument(help="a search or prune run directory (with --lambda for a hypernet "
                                                    "or prune run)")] = None,
    lam: Annotated[float | None, typer.Option("--lambda", help="the trade-off to export from a hypernet run")] = None,
    genotype: Annotated[str | None, typer.Option(help="a genotype instead of a run (string, JSON file or run dir)")] = None,
    dataset: Annotated[str | None, typer.Option(help="the input the network is built for, with --genotype (default: "
                                                     "a darts --table's input size, else digits)")] = None,
    layers: Annotated[int | None, typer.Option(help="cells, with --genotype (default: the darts --table's, else 8)")] = None,
    channels: Annotated[int | None, typer.Option(help="channels of the first cells, with --genotype (default: the "
                                                      "darts --table's, else 16)")] = None,
    weights: Annotated[Path | None, typer.Option(help="trained weights (model.pt from hwnas train --out)")] = None,
    table: Annotated[list[Path] | None, typer.Option(help="lookup table(s) to predict the latency with")] = None,
    threads: Annotated[int | None, typer.Option(help="threads for the re-measurement (default: the table's)")] = None,
    measure: Annotated[bool, typer.Option(help="re-measure the exported network on this machine (--no-measure: "
                                               "export and check only, e.g. for another device)")] = True,
) -> None:
    """Export a discrete network to ONNX, check it against PyTorch, and re-measure it as the first table's device
    times its ops (same backend, threads, batch and timing rule; recorded in the report)."""
    if (run is None) == (genotype is None):
        raise HwnasError("give either a RUN directory (with --lambda for a hypernet run) or --genotype")
    from hwnas.api import export as export_network

    if run is None:
        from hwnas.runs import check_out

        check_out(out, "--out", folder=False)  # before torch is imported
        from hwnas.spaces.genotype import load_genotype

        source = load_genotype(genotype)
    else:
        source = run
    report = export_network(source, out, lam=lam, tables=table or (), threads=threads, weights=weights,
                            dataset=dataset, layers=layers, channels=channels, measure=measure)
    if "unpruned" in report.data:
        from .prune import print_prune_export

        return print_prune_export(report)
    from hwnas.latency.speed import speed_note

    m = report.measured
    timed = (f"{m['backend']} {m['p50_ms']:.3f} ms (batch {m['batch']}, {m['threads']} thread(s))" if m
             else "not measured (--no-measure)")
    console.print(f"[bold]{out}[/]: {report.params:,} params, {report.flops_per_sample / 1e6:.2f} MFLOPs, {timed}, "
                  f"max |ORT − PyTorch| {report.max_abs_diff:.2e}, top-1 identical: {report.top1_identical}",
                  highlight=False)
    for path, ms in report.predicted_latency_ms.items():
        console.print(f"  predicted by {path}: {ms:.3f} ms", highlight=False)
    if note := speed_note(m.get("machine_speed")):
        console.print(f"  note: {note.removeprefix('; ')}", highlight=False)
    if m:
        from .profile import warn_steal

        warn_steal(m.get("steal_pct"), m.get("threads"))


def _fresh(path: Path) -> Path:
    """`path`, or `path-2`, `path-3`, … if it is taken: quickstart never overwrites a run."""
    if not path.exists():
        return path
    k = 2
    while path.with_name(f"{path.name}-{k}").exists():
        k += 1
    return path.with_name(f"{path.name}-{k}")


# Registered after the commands above so that `hwnas --help` lists them in pipeline order.
from .profile import register as register_profile  # noqa: E402
from .prune import register as register_prune  # noqa: E402

register_profile(app)
register_prune(app)
readable_help(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
