"""The Typer app: options → config → one library call. Run as `hwnas` (console script)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from .common import console, epoch_progress, user_errors
from hwnas.errors import HwnasError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
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
    from hwnas.info import backends, environment

    env = environment()
    table = Table(title="hwnas environment", show_header=False)
    for key, value in env.items():
        table.add_row(key, ", ".join(value) if isinstance(value, list) else str(value))
    console.print(table)
    table = Table(title="latency backends")
    table.add_column("backend")
    table.add_column("status")
    for name, status in backends(env).items():
        table.add_row(name, f"[green]{status}[/]" if status == "usable" else f"[yellow]{escape(status)}[/]")
    console.print(table)


@app.command()
@user_errors
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
    arch_grad: Annotated[str, typer.Option(help="first, second (unrolled, finite-difference Hessian), one-level")] = "first",
    epochs: Annotated[int, typer.Option(help="search epochs")] = 10,
    layers: Annotated[int, typer.Option(help="cells in the supernet")] = 5,
    channels: Annotated[int, typer.Option(help="channels of the first cells")] = 8,
    batch_size: Annotated[int, typer.Option(help="batch size")] = 64,
    augment: Annotated[bool, typer.Option(help="random crop (and flip for CIFAR) during the search")] = False,
    max_steps: Annotated[int | None, typer.Option(help="cap on steps per epoch (quick runs)")] = None,
    seed: Seed = 0,
    device: Device = "auto",
    resume: Annotated[bool, typer.Option(help="continue the run in --out with its saved config")] = False,
) -> None:
    """DARTS cell search; writes the run directory and the derived genotype."""
    from hwnas.search.loop import SearchConfig
    from hwnas.search.relax import RelaxConfig

    if space != "darts":
        raise HwnasError(f"--space {space!r}: searching is implemented for the darts space")
    try:
        relax_cfg = RelaxConfig(kind=relax, hard=hard, tau_start=tau_start, tau_end=tau_end)
    except ValueError as e:
        raise HwnasError(f"--relax: {e}") from None
    cfg = SearchConfig(dataset=dataset, data_dir=str(data_dir) if data_dir else None, download=download,
                       layers=layers, channels=channels, batch_size=batch_size, epochs=epochs, seed=seed,
                       relax=relax_cfg, arch_grad=arch_grad, augment=augment, device=device,
                       max_steps_per_epoch=max_steps)
    _run_search(cfg, out, resume)


def _run_search(cfg, out: Path, resume: bool):
    from hwnas.search.loop import SearchConfig, run_search

    total = SearchConfig.from_dict(_read_config(out)).epochs if resume else cfg.epochs
    with epoch_progress(total, label="search") as (on_step, on_epoch_end):
        result = run_search(cfg, out, resume=resume, on_step=on_step, on_epoch_end=on_epoch_end)
    console.print(f"[bold]genotype[/] {result.genotype}", highlight=False, soft_wrap=True)
    console.print(f"run written to {out}/ (genotype.json, metrics.csv, plots/alphas.png)")
    return result


def _read_config(out: Path) -> dict:
    from hwnas.runs import RunDir

    run = RunDir(out)
    if not run.file("config.json").is_file():
        raise HwnasError(f"--resume: {out} holds no config.json; start a new run with --out {out}")
    return run.read_json("config.json")


@app.command()
@user_errors
def train(
    genotype: Annotated[str, typer.Option(help="a DARTS Genotype(...) string, a genotype JSON file, or a run directory")],
    dataset: Dataset = "digits",
    data_dir: DataDir = None,
    download: Download = False,
    epochs: Annotated[int, typer.Option(help="training epochs; 0 builds the network and reports its size only")] = 20,
    layers: Annotated[int, typer.Option(help="cells")] = 8,
    channels: Annotated[int, typer.Option(help="channels of the first cells")] = 16,
    batch_size: Annotated[int, typer.Option(help="batch size")] = 96,
    lr: Annotated[float, typer.Option(help="initial learning rate (cosine schedule)")] = 0.025,
    auxiliary: Annotated[bool, typer.Option(help="auxiliary head at 2/3 depth, weight 0.4")] = False,
    cutout: Annotated[bool, typer.Option(help="cutout augmentation (half the image side)")] = False,
    drop_path_prob: Annotated[float, typer.Option(help="final drop-path probability (ramped linearly)")] = 0.2,
    seed: Seed = 0,
    device: Device = "auto",
    out: Annotated[Path | None, typer.Option(help="run directory for metrics, result.json and model.pt")] = None,
) -> None:
    """Train the discrete network of a genotype from scratch and report its test accuracy."""
    from hwnas.spaces.genotype import load_genotype
    from hwnas.train import TrainConfig

    g = load_genotype(genotype)
    cfg = TrainConfig(dataset=dataset, data_dir=str(data_dir) if data_dir else None, download=download,
                      epochs=epochs, layers=layers, channels=channels, batch_size=batch_size, lr=lr,
                      auxiliary=auxiliary, cutout=cutout, drop_path_prob=drop_path_prob, seed=seed, device=device)
    _run_train(g, cfg, out)


def _run_train(g, cfg, out: Path | None):
    from hwnas.train import train_network

    def on_start(params: int) -> None:
        console.print(f"network: {cfg.layers} cells, {cfg.channels} channels, "
                      f"[bold]{params:,}[/] parameters ({params / 1e6:.6f} M, auxiliary head excluded)")

    if cfg.epochs == 0:
        return train_network(g, cfg, out, on_start=on_start)
    with epoch_progress(cfg.epochs, label="train") as (on_step, on_epoch_end):
        result = train_network(g, cfg, out, on_start=on_start, on_step=on_step, on_epoch_end=on_epoch_end)
    if not math.isnan(result.test_acc):
        console.print(f"[bold]test accuracy {result.test_acc:.4f}[/] (loss {result.test_loss:.4f})")
    return result


@app.command()
@user_errors
def quickstart(
    out: Annotated[Path, typer.Option(help="where the search run goes (a fresh name if taken)")] = Path("runs/quickstart"),
    epochs: Annotated[int, typer.Option(help="search epochs")] = 10,
    train_epochs: Annotated[int, typer.Option(help="epochs to train the found network")] = 10,
    device: Device = "auto",
) -> None:
    """The whole pipeline on the embedded default (digits): search, then train the found cell."""
    from hwnas.search.loop import quick_config
    from hwnas.train import TrainConfig

    out = _fresh(out)
    console.print(f"[bold]1/2 search[/] DARTS (first order, softmax) on digits → {out}")
    result = _run_search(quick_config(epochs=epochs, device=device), out, resume=False)
    console.print("[bold]2/2 train[/] the found cell from scratch on digits")
    _run_train(result.genotype, TrainConfig(epochs=train_epochs, layers=5, channels=8, device=device),
               out / "train")


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

register_profile(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
