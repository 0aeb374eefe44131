"""The `hwnas prune` run: pretrained network, Λ, phase 1 check, phase 2 epochs (resumable), pareto.csv, plots;
and the run's sub-network at any λ for `hwnas export`.

Files (beside config.json, metrics.csv, checkpoint.pt of the design notes): pretrained.pt (the
network pruned, inner channels in importance order) with pretrained.json (where it came from,
its accuracies, the λ = 0 check), lambda_max.json (Theorem 1 and empirical Λ), pareto.csv
(one row per λ: gates, fractions per block, shortcuts, predicted latency, params, FLOPs,
validation and test accuracy), plots/lambda_max.png and plots/pareto_*.png.
"""
from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hwnas.errors import HwnasError
from hwnas.evaluation import evaluate
from hwnas.prune.adapt import needs_calibration, pruned_network
from hwnas.prune.gate_cost import GateCost
from hwnas.prune.gate_hypernet import GateHypernet, hypernet_input, lambda_from_input
from hwnas.prune.prune import PruneConfig, PruneData, Pruner, gates_at
from hwnas.prune.prune_lambda import empirical_lambda_max, lambda_grid, theorem_lambda_max
from hwnas.prune.start import check_start, pretrained_model
from hwnas.runs import CONFIG, RunDir, atomic_write
from hwnas.runtime import resolve_device
from hwnas.spaces.gated_resnet import BLOCKS, PROJECTIONS, GatedResNet18, GateSet
from hwnas.spaces.network import count_flops, count_parameters


@contextlib.contextmanager
def _quiet(label: str, total: int, done: int = 0):
    yield None, None


_STATE = ("epoch", "hypernet", "lambda_max")  # what a prune checkpoint must hold


@dataclass
class PruneResult:
    run: RunDir
    pareto: pd.DataFrame
    lambda_max: dict
    pretrained: dict


def run_prune(cfg: PruneConfig, out: str | Path, resume: bool = False, progress: Callable = _quiet,
              say: Callable[[str], None] = lambda s: None) -> PruneResult:
    """Algorithm 1 into the run directory `out`; `progress(label, total, done)` is a context manager
    yielding (on_step, on_epoch_end) callbacks (or Nones), `say` prints a line."""
    from hwnas.latency.table import LatencyTable
    from hwnas.train import resnet18_space

    if resume:
        run = RunDir.create(out, {}, resume=True)
        cfg = load_config(run)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    # Inputs are checked before the run directory is made: a typo must not leave a half-made run behind.
    cost = GateCost.from_table(LatencyTable.load(cfg.table), resnet18_space(cfg.dataset, cfg.data_dir))
    data = PruneData(cfg, device)
    loaded = None
    if not resume and cfg.weights not in ("train", "imagenet"):   # a given network is judged before any file is made
        loaded = pretrained_model(cfg, data)
        loaded[1]["val_loss"], loaded[1]["val_acc"] = evaluate(loaded[0].to(device), data.eval)
        check_start(loaded[1]["val_acc"], data.eval.y, data.info.num_classes, f"--weights {cfg.weights}")
    if not resume:
        run = RunDir.create(out, cfg.to_dict())
    try:
        model, pre = _pretrained(run, cfg, data, device, progress, say, loaded)
    except HwnasError as e:
        if run.file("pretrained.pt").is_file() or resume:
            raise
        raise HwnasError(f"{e}; {run.path} holds no usable run: remove it or choose another --out") from None
    lam_rec = _lambda_max(run, cfg, model, cost, data, pre, progress, say)
    pruner = Pruner(cfg, model, cost, lam_rec["lambda_max"][0], data, device)
    state = run.load_checkpoint(map_location=device, keys=_STATE)
    if state is not None:
        pruner.load_state_dict(state)
    elif "gated_lambda0_val_acc" not in pre:
        _phase1_check(run, pruner, pre, say)
    if pruner.epoch < cfg.epochs:
        say(f"phase 2: λ ∈ [0, {pruner.lambda_max:.4g}] ({cfg.sampling}), {pruner.steps_per_epoch()} steps of "
            f"{cfg.batch_size} per epoch, {cfg.hypernet} hypernet (Adam lr {pruner.lr:.3g}), weights "
            f"{'fine-tuned' if cfg.finetune else 'frozen'}")
    with progress("prune", cfg.epochs, pruner.epoch) as (on_step, on_epoch_end):
        while pruner.epoch < cfg.epochs:
            row = pruner.train_epoch(on_step)
            run.write_metrics(pruner.metrics)
            run.save_checkpoint(pruner.state_dict())
            if on_epoch_end is not None:
                on_epoch_end(row)
    frame = pareto_table(pruner, cost, data)
    run.write_text("pareto.csv", frame.to_csv(index=False))
    from hwnas.plots import plot_lambda_range, plot_prune_pareto

    plot_lambda_range(lam_rec, frame, run.file("plots") / "lambda_max.png")
    plot_prune_pareto(frame, run.file("plots"))
    return PruneResult(run, frame, lam_rec, pre)


def load_config(run: RunDir) -> PruneConfig:
    d = run.read_json(CONFIG)
    if d.get("kind") != "prune":
        raise HwnasError(f"{run.path} is not a prune run (its config.json has no kind 'prune')")
    return PruneConfig.from_dict(d)


def _pretrained(run: RunDir, cfg: PruneConfig, data: PruneData, device, progress, say, loaded=None) -> tuple:
    if run.file("pretrained.pt").is_file() and run.file("pretrained.json").is_file():
        from hwnas.latency.resnet_keys import torchvision_resnet18
        from hwnas.train import resnet18_space

        model = torchvision_resnet18(resnet18_space(cfg.dataset, cfg.data_dir))
        model.load_state_dict(torch.load(run.file("pretrained.pt"), map_location="cpu", weights_only=True))
        return model.eval(), run.read_json("pretrained.json")
    if cfg.weights in ("train", "imagenet"):
        say(f"pretraining ResNet18 on the weights half ({len(data.x_w)} images) for {cfg.pretrain_epochs} epoch(s)")
    if loaded is not None:
        model, pre = loaded
    else:
        with progress("pretrain", cfg.pretrain_epochs) as (step, end):
            model, pre = pretrained_model(cfg, data, on_step=step, on_epoch_end=end)
    model = model.to(device).eval()
    if "val_acc" not in pre:
        pre["val_loss"], pre["val_acc"] = evaluate(model, data.eval)
        check_start(pre["val_acc"], data.eval.y, data.info.num_classes,
                    f"the network pretrained here ({cfg.pretrain_epochs} epoch(s), --weights {cfg.weights})")
    pre["test_loss"], pre["test_acc"] = evaluate(model, data.test)
    pre.update(params=count_parameters(model), eval_samples=len(data.eval.x))
    say(f"pretrained: validation accuracy {pre['val_acc']:.4f}, test {pre['test_acc']:.4f}")
    model = model.cpu()
    atomic_write(run.file("pretrained.pt"), lambda f: torch.save(model.state_dict(), f))
    run.write_json("pretrained.json", pre)
    return model, pre


def _phase1_check(run: RunDir, pruner: Pruner, pre: dict, say) -> None:
    """Phase 1: from the intact start, fit λ = 0 until sampled gate sets reproduce the pretrained accuracy; then
    the deterministic gates at λ = 0 are checked: the intact network with exactly the pretrained accuracy, or
    (when the fit found a gate it can lose for free) a pruned one within the tolerance."""
    cfg = pruner.cfg
    fit = pruner.phase1(cfg.phase1_steps, cfg.phase1_tolerance) if cfg.phase1_steps else {"phase1_steps": 0}
    gates = pruner.gates(0.0)
    loss, acc = evaluate(pruner.network(gates), pruner.data.eval)
    if (gates == GateSet() and acc != pre["val_acc"]) or acc < pre["val_acc"] - cfg.phase1_tolerance:
        raise RuntimeError(f"phase 1 failed: gates at λ=0 {gates.describe()} give accuracy {acc}, "
                           f"the pretrained network {pre['val_acc']}")
    if fit["phase1_steps"]:
        say(f"phase 1: {fit['phase1_steps']} steps at λ = 0; sampled gate sets at {fit['phase1_sampled_acc']:.4f} "
            f"against the pretrained {fit['phase1_pretrained_acc_same_batches']:.4f} on the same batches"
            + ("" if fit["phase1_reached"] else f" (not within {cfg.phase1_tolerance:g} after the last step)"))
    pre.update(gated_lambda0_val_acc=acc, gated_lambda0_val_loss=loss, gated_lambda0_gates=gates.describe(), **fit)
    run.write_json("pretrained.json", pre)


def _lambda_max(run: RunDir, cfg: PruneConfig, model, cost: GateCost, data: PruneData, pre: dict, progress,
                say) -> dict:
    if run.file("lambda_max.json").is_file():
        return run.read_json("lambda_max.json")
    device = data.eval.device
    model = model.to(device)
    lam_eval = data.lambda_eval   # the first --lambda-images of the evaluation images
    say(f"Λ: Theorem 1 from {cfg.lambda_samples} valid gate sets on {len(lam_eval.x)} validation images")
    network = partial(pruned_network, model, calibration=data.calibration, bn=cfg.bn)
    rec = theorem_lambda_max(network, cost, lambda: iter(lam_eval), data.info.num_classes,
                             cfg.lambda_samples, cfg.seed, cfg.lambda_margin, cfg.channel_multiple)
    rec.update(lambda_images=len(lam_eval.x), eval_images=len(data.eval.x), empirical_points=cfg.empirical_fits)
    if cfg.lambda_max is not None:
        rec.update(lambda_max=[cfg.lambda_max], lambda_max_source="given (--lambda-max)")
    if cfg.empirical_fits > 0:
        gated = GatedResNet18(model, batch_stats=cfg.bn == "adapt").to(device)
        counts = torch.bincount(lam_eval.y, minlength=data.info.num_classes)
        chance = float(counts.max()) / float(counts.sum())
        acc0 = pre["val_acc"] if lam_eval is data.eval else evaluate(model, lam_eval)[1]
        grid = lambda_grid(rec["lambda_max"][0], cfg.empirical_min, cfg.empirical_max, cfg.empirical_fits)
        say(f"Λ, empirically: {len(grid)} fixed-λ fits of {cfg.empirical_steps} steps over λ ∈ "
            f"[{grid[0]:.3g}, {grid[-1]:.3g}]")
        with progress("fixed-λ", len(grid)) as (on_step, _):
            rec["empirical"] = empirical_lambda_max(
                gated, cost, cfg.relax, lambda: iter(data.val), lambda g: evaluate(network(g), lam_eval)[1],
                grid, acc0, chance, cfg.empirical_steps, cfg.empirical_lr, cfg.init_logit, cfg.seed,
                on_point=on_step, channel_multiple=cfg.channel_multiple)
        rec["agreement"] = _agreement(rec)
        if cfg.lambda_max_from == "empirical" and cfg.lambda_max is None:
            emp = rec["empirical"]
            fallen = emp["lambda_max"] is not None
            rec.update(lambda_max=[emp["lambda_max"] if fallen else grid[-1]],
                       lambda_max_source="empirical: the first fixed-λ fit whose accuracy fell to chance" if fallen
                       else "empirical: accuracy never fell to chance on the grid; its largest λ")
    model.cpu()
    run.write_json("lambda_max.json", rec)
    return rec


def _agreement(rec: dict) -> str:
    """Where the empirical range and Theorem 1's Λ (or its fallback; `rec` before any empirical override) agree."""
    emp, plateau, ref = rec["empirical"]["lambda_max"], rec["empirical"]["plateau_end"], rec["lambda_max"][0]
    where = "Theorem 1's Λ" if rec["theorem_lambda_max"] > 0 else "the fallback L̄/Tᵀ1 (Theorem 1 gave no positive Λ)"
    plateau_text = f"plateau ends at {plateau:.4g}" if plateau is not None else "no plateau at the smallest λ"
    if emp is None:
        return f"{plateau_text}; accuracy never fell to chance on the grid (up to " \
               f"{rec['empirical']['fits'][-1]['lambda']:.4g}); {where} is {ref:.4g}"
    return f"{plateau_text}, accuracy at chance from {emp:.4g}: {emp / ref:.3g}× {where}, {ref:.4g}"


def lambda_values(lambda_max: float, n: int, sampling: str) -> list[float]:
    """The even grid: linear over [0, Λ] (uniform sampling), or 0 and geometric from Λ/1000 (log-uniform)."""
    if sampling == "log-uniform":
        return [0.0] + lambda_grid(lambda_max, 1e-3, 1.0, n - 1)
    return [float(v) for v in np.linspace(0.0, lambda_max, n)]


PARETO_SCAN = 2001   # hypernet inputs scanned for the λ where the gate set changes (one forward each, no network)


def pareto_lambdas(gates_fn: Callable[[float], GateSet], lambda_max: float, n: int, sampling: str,
                   scan: int = PARETO_SCAN) -> list[float]:
    """The n λ of pareto.csv, chosen to show as many of the fit's distinct gate sets as n allows.

    The hypernet is scanned on `scan` evenly spaced inputs (its own scale: log λ with log-uniform sampling) for the
    first λ of every distinct gate set along λ. At most n of those (evenly by index, λ = 0 and the last set
    always) are rows; the remaining rows, if any, are the even grid's points (`lambda_values`) farthest (on the
    input scale) from the rows chosen so far. The even grid alone missed most of them: on the MNIST ResNet18 the
    gate set changes only at λ/Λ ≈ 0.01–0.09, between two of its points, and 9 points showed 4 of 9 sets."""
    firsts, prev = [], None
    for u in np.linspace(0.0, 1.0, scan):
        lam = lambda_from_input(float(u), sampling) * lambda_max
        g = gates_fn(lam)
        if g != prev:
            firsts.append(lam)
            prev = g
    if len(firsts) >= n:
        return [firsts[round(i)] for i in np.linspace(0, len(firsts) - 1, n)]
    chosen, grid = list(firsts), [v for v in lambda_values(lambda_max, n, sampling) if v not in firsts]
    place = lambda lam: hypernet_input(lam / lambda_max, sampling)
    while len(chosen) < n and grid:
        lam = max(grid, key=lambda v: min(abs(place(v) - place(c)) for c in chosen))
        chosen.append(lam)
        grid.remove(lam)
    return sorted(chosen)


def gate_columns(gates: GateSet) -> dict:
    """frac[b], channels[b] (kept inner channels, 0: removed), shortcut[p]."""
    cols = {f"frac[{b}]": f for b, f in zip(BLOCKS, gates.fractions)}
    cols.update({f"channels[{b}]": c for b, c in zip(BLOCKS, gates.channels())})
    cols.update({f"shortcut[{p}]": int(s) for p, s in zip(PROJECTIONS, gates.shortcuts)})
    return cols


@torch.no_grad()
def pareto_table(pruner: Pruner, cost: GateCost, data: PruneData) -> pd.DataFrame:
    """One row per λ (`pareto_lambdas`: where the gate set changes): gates, predicted latency, size, validation
    and test accuracy (of the materialised network, BN re-estimated with `bn` adapt: `Pruner.network`)."""
    from hwnas.latency.table import LatencyTable
    from hwnas.search.pareto import pareto_mask

    cfg = pruner.cfg
    table = LatencyTable.load(cfg.table)
    shape = data.input_shape
    rows, cache = [], {}
    for lam in pareto_lambdas(pruner.gates, pruner.lambda_max, cfg.pareto_points, cfg.sampling):
        g = pruner.gates(lam)
        if g not in cache:   # g is in Γ_valid by construction (gate_sampling.argmax_gates)
            net = pruner.network(g)
            val_loss, val_acc = evaluate(net, data.eval)
            cache[g] = {"predicted_latency_ms": table.predict(g.arch()),
                        "params": count_parameters(net), "flops": count_flops(net.cpu(), shape),
                        "val_loss": val_loss, "val_acc": val_acc, "test_acc": evaluate(net, data.test)[1]}
        rows.append({"lambda": lam, "lambda_fraction": lam / pruner.lambda_max, "gates": g.describe(),
                     **gate_columns(g), "expected_cost_ms": cost.of(g), **cache[g]})
    frame = pd.DataFrame(rows)
    frame["pareto_optimal"] = pareto_mask(frame["predicted_latency_ms"].to_numpy(), frame["val_acc"].to_numpy())
    return frame


def load_pruned(run_dir: str | Path, lam: float):
    """(config, pretrained model (CPU, eval), gate set at λ, Λ) of a finished (or checkpointed) prune run."""
    from hwnas.latency.resnet_keys import torchvision_resnet18
    from hwnas.train import resnet18_space

    run = RunDir(run_dir)
    cfg = load_config(run)
    state = run.load_checkpoint(map_location="cpu", keys=_STATE)
    if state is None or not run.file("pretrained.pt").is_file():
        raise HwnasError(f"{run_dir} has no checkpoint.pt yet; run or resume hwnas prune first")
    lmax = float(state["lambda_max"])
    if not 0.0 <= lam <= lmax * (1 + 1e-9):
        raise HwnasError(f"--lambda {lam} is outside the trained range [0, Λ = {lmax:.6g}] of {run_dir}")
    model = torchvision_resnet18(resnet18_space(cfg.dataset, cfg.data_dir))
    model.load_state_dict(state["model"] if "model" in state else
                          torch.load(run.file("pretrained.pt"), map_location="cpu", weights_only=True))
    hypernet = GateHypernet(cfg.hypernet, cfg.init_logit, channel_multiple=cfg.channel_multiple)
    hypernet.load_state_dict(state["hypernet"])
    return cfg, model.eval(), gates_at(hypernet, lam, lmax, cfg.sampling), lmax


def pruned_at(run_dir: str | Path, lam: float, device: str = "cpu"):
    """(config, pruned network at λ as pareto.csv evaluated it and export writes it (BN re-estimated with `bn`
    adapt), its gate set, Λ, the run's unpruned network)."""
    cfg, model, gates, lmax = load_pruned(run_dir, lam)
    calibration = PruneData(cfg, torch.device(device)).calibration if needs_calibration(gates, cfg.bn, cfg.finetune) \
        else None
    return cfg, pruned_network(model, gates, calibration, cfg.bn, cfg.finetune).cpu(), gates, lmax, model


def export_pruned(run_dir: str | Path, lam: float, out: str | Path, tables: list | None = None,
                  threads: int | None = None, measure: bool = True) -> dict:
    """The materialised sub-network of a prune run at λ, exported, checked and re-measured (`export_network`),
    with the unpruned network measured alike for comparison (neither timed without `measure`). Every λ ∈ [0, Λ]
    gives a valid gate set."""
    from hwnas.export import export_network, export_onnx_dynamic, measure_exported, table_exporter
    from hwnas.latency.table import LatencyTable
    from hwnas.train import resnet18_space

    cfg, net, gates, lmax, model = pruned_at(run_dir, lam)
    if Path(out).exists():
        raise HwnasError(f"{out} exists; choose another --out (exports are never overwritten)")
    tables = [LatencyTable.load(cfg.table)] + list(tables or [])
    space = resnet18_space(cfg.dataset, cfg.data_dir)
    shape = (space.in_channels, space.input_h, space.input_w)
    unpruned = {"params": count_parameters(model), "flops_per_sample": count_flops(model, shape),
                "predicted_latency_ms": {str(t.path): t.predict({}) for t in tables}}
    if measure:
        with tempfile.TemporaryDirectory() as tmp:
            full = Path(tmp) / "unpruned.onnx"
            export_onnx_dynamic(model, shape, full, table_exporter(tables))
            unpruned["measured"] = measure_exported(model, full, shape, tables[0], threads)
    extra = {"lambda": lam, "lambda_max": lmax, "gates": gates.describe(), **gate_columns(gates),
             "run": str(run_dir), "unpruned": unpruned}
    report = export_network(net, shape, out, arch=gates.arch(), tables=tables, threads=threads, measure=measure,
                            extra=extra)
    if measure:
        report["speedup_measured"] = unpruned["measured"]["p50_ms"] / report["measured"]["p50_ms"]
    first = str(tables[0].path)
    report["speedup_predicted"] = unpruned["predicted_latency_ms"][first] / report["predicted_latency_ms"][first]
    Path(str(out) + ".json").write_text(json.dumps(report, indent=2) + "\n")
    return report
