"""`hwnas prune`: a pretrained ResNet18 cut down for every latency budget in one fit. `register(app)` adds it."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from .common import console, epoch_progress, user_errors


@contextlib.contextmanager
def _progress(label: str, total: int, done: int = 0):
    if total == 0:
        yield None, None
        return
    with epoch_progress(total, done=done, label=label) as callbacks:
        yield callbacks


@user_errors(interrupted=lambda o: f"continue the run with: hwnas prune --out {o['out']} --table {o['table']} --resume")
def prune(
    out: Annotated[Path, typer.Option(help="run directory (config.json, pretrained.pt, lambda_max.json, metrics.csv, "
                                           "checkpoint.pt, pareto.csv, plots/)")],
    table: Annotated[Path, typer.Option(help="resnet18 latency table of the target device (hwnas profile --space "
                                             "resnet18 --input-size HxW of the dataset)")],
    model: Annotated[str, typer.Option(help="network to prune (resnet18)")] = "resnet18",
    weights: Annotated[str, typer.Option(help="PATH (a state dict of torchvision's resnet18 for this dataset), "
                                              "'imagenet' (torchvision's weights, fine-tuned here) or 'train'")] = "train",
    dataset: Annotated[str, typer.Option(help="digits, idx:DIR, mnist, fashion-mnist, cifar10, cifar100")] = "digits",
    data_dir: Annotated[Path | None, typer.Option(help="where torchvision datasets live")] = None,
    download: Annotated[bool, typer.Option(help="download a torchvision dataset")] = False,
    lambda_max: Annotated[str, typer.Option(help="Λ: 'auto' (--lambda-margin × the λ at which the cheapest valid gate "
                                                 "set becomes optimal; Theorem 1 recorded), 'empirical' (where the "
                                                 "fixed-λ fits fall to chance) or a number")] = "auto",
    lambda_margin: Annotated[float, typer.Option(help="Λ (auto) = this × the λ at which the cheapest valid gate set "
                                                      "becomes optimal")] = 2.0,
    phase1_steps: Annotated[int, typer.Option(help="phase 1: most steps at λ = 0 to fit the gates until sampled gate "
                                                   "sets reproduce the pretrained accuracy (0: start from the init)")] = 200,
    hypernet: Annotated[str, typer.Option(help="λ-hypernet: linear or mlp")] = "linear",
    lambda_sampling: Annotated[str, typer.Option(help="λ per step: uniform or log-uniform over [0, Λ]")] = "log-uniform",
    epochs: Annotated[int, typer.Option(help="phase-2 epochs (passes over the validation half)")] = 5,
    max_steps: Annotated[int | None, typer.Option(help="cap on phase-2 steps per epoch")] = None,
    batch_size: Annotated[int, typer.Option(help="phase-2 batch size")] = 32,
    lr: Annotated[float | None, typer.Option(help="hypernet learning rate (Adam; default: 20 / phase-2 steps, "
                                                  "within [0.01, 0.3])")] = None,
    finetune: Annotated[bool, typer.Option(help="also fine-tune the network's weights (default: frozen)")] = False,
    pretrain_epochs: Annotated[int, typer.Option(help="epochs of training for --weights train|imagenet")] = 3,
    lambda_samples: Annotated[int, typer.Option(help="valid gate sets evaluated for S (Theorem 1)")] = 32,
    eval_samples: Annotated[int | None, typer.Option(help="validation images per evaluation (default: all)")] = None,
    lambda_images: Annotated[int, typer.Option(help="Λ's evaluations (Theorem 1's gate sets, fixed-λ fits) on the "
                                                    "first N validation images (0: as every evaluation)")] = 1024,
    empirical_points: Annotated[int | None, typer.Option(help="fixed-λ fits for the empirical Λ (default: 6 with "
                                                              "--lambda-max empirical, else none: with Λ auto they "
                                                              "are only recorded)")] = None,
    empirical_steps: Annotated[int, typer.Option(help="steps per fixed-λ fit")] = 30,
    pareto_points: Annotated[int, typer.Option(help="λ values in pareto.csv (first those where the gate set "
                                                    "changes, then an even grid)")] = 9,
    channel_multiple: Annotated[int, typer.Option(help="keep inner channel counts that are multiples of N (1, 2, 4, 8, "
                                                       "16, 32, 64); the quarter widths are multiples of 16 already, "
                                                       "so only 32 and 64 change the choices")] = 1,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N")] = "auto",
    resume: Annotated[bool, typer.Option(help="continue the run in --out with its saved config")] = False,
) -> None:
    """Prune a pretrained ResNet18 with gates (branch width per block, projection shortcuts) for every λ ∈ [0, Λ]
    in one fit (Algorithm 1 of the performance-control paper); then `hwnas export OUT --lambda X`."""
    from hwnas.prune_api import prune as run_prune
    from hwnas.prune_api import prune_config  # torch-free: options are checked at once

    cfg = prune_config(model=model, weights=weights, dataset=dataset, data_dir=data_dir, download=download,
                       table=table, lambda_max=lambda_max, hypernet=hypernet, lambda_sampling=lambda_sampling,
                       epochs=epochs, max_steps=max_steps, batch_size=batch_size, lr=lr, finetune=finetune,
                       pretrain_epochs=pretrain_epochs, lambda_samples=lambda_samples, eval_samples=eval_samples,
                       lambda_images=lambda_images, empirical_points=empirical_points, empirical_steps=empirical_steps,
                       pareto_points=pareto_points, seed=seed, device=device, lambda_margin=lambda_margin,
                       phase1_steps=phase1_steps, channel_multiple=channel_multiple)
    run = run_prune(cfg, out=out, resume=resume, progress=_progress,
                    say=lambda s: console.print(escape(s), highlight=False))
    rec, frame = run.record, run.pareto()
    console.print(f"[bold]Λ[/] {rec['lambda_max'][0]:.4g} — {escape(rec['lambda_max_source'])} (L̄ "
                  f"{rec['label_entropy']:.4f}, S {rec['worst_valid_loss']:.4f}, Tᵀ1 {rec['cost_bound'][0]:.4g} ms)",
                  highlight=False)
    if "agreement" in rec:
        console.print(f"  empirical: {escape(rec['agreement'])}", highlight=False)
    view = Table(title=f"{out}: pruned ResNet18 along λ")
    cols = ["lambda", "gates", "predicted_latency_ms", "params", "val_acc", "test_acc"]
    for c in cols + ["pareto"]:
        view.add_column(c.replace("predicted_latency_ms", "ms"), justify="right")
    for _, row in frame.iterrows():
        view.add_row(*(f"{row[c]:.4g}" if isinstance(row[c], float) else str(row[c]) for c in cols),
                     "●" if row["pareto_optimal"] else "")
    console.print(view)
    console.print(f"run written to {out}/ (pareto.csv, lambda_max.json, plots/); export one with: hwnas export {out} "
                  f"--lambda X --out model.onnx", highlight=False)


def print_prune_export(r) -> None:
    """What `hwnas export RUN --lambda X` says of a prune run's export (an ExportReport)."""
    m, u, d = r.measured, r.data["unpruned"], r.data
    console.print(f"[bold]{r.onnx}[/]: gates {d['gates']}, {r.params:,} params (unpruned {u['params']:,}), "
                  f"max |ORT − PyTorch| {r.max_abs_diff:.2e}, top-1 identical: {r.top1_identical}",
                  highlight=False)
    if m:
        console.print(f"  {m['backend']} {m['p50_ms']:.3f} ms vs unpruned {u['measured']['p50_ms']:.3f} ms (batch "
                      f"{m['batch']}, {m['threads']} thread(s)): {d['speedup_measured']:.2f}× measured, "
                      f"{d['speedup_predicted']:.2f}× predicted", highlight=False)
    else:
        console.print(f"  not measured (--no-measure): {d['speedup_predicted']:.2f}× predicted", highlight=False)
    for path, ms in r.predicted_latency_ms.items():
        console.print(f"  predicted by {path}: {ms:.3f} ms (unpruned {u['predicted_latency_ms'][path]:.3f})",
                      highlight=False)


def register(app: typer.Typer) -> None:
    app.command("prune", short_help="Prune a ResNet18 with gates for every λ ∈ [0, Λ] in one fit.")(prune)
