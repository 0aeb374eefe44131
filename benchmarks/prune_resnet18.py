"""ResNet18 gate pruning on MNIST (issue #5): measured ONNX Runtime CPU speed-up at ≤ 1 point of accuracy loss,
for every λ from one fit.

Pipeline (the library calls behind `hwnas prune` and `hwnas export`): a ResNet18 (small stem, 28×28×1)
is trained here (`--weights train`; or given with `--weights PATH`) on the weights half of the train split of the real MNIST test
set (`idx:../shared/data/mnist-t10k`, 8,333 train / 1,667 test images; the other half of the
train split is the validation set of the fit); an ort-cpu resnet18 lookup table (batch 1,
1 thread; `profiles/resnet18-ort-cpu-28x28.csv`, built if missing); Λ from Theorem 1 and the
empirical fixed-λ fits; one λ-hypernet fit; then for each λ of the grid the materialised
sub-network is exported (dynamo, opset 18), checked against PyTorch at batch 1 and 5, and timed
in ONNX Runtime **interleaved** with the unpruned network (the CPU is shared: rounds alternate
between all models, each round's median per model, then the median over rounds).

    python benchmarks/prune_resnet18.py                 # the figure (about 20–25 minutes on 2 busy cores)
    python benchmarks/prune_resnet18.py --quick         # a smoke test of the script (small everything)
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import header, save

ROOT = Path(__file__).resolve().parent.parent
DATA = "idx:" + str((ROOT.parent / "shared" / "data" / "mnist-t10k").resolve())
TABLE = ROOT / "profiles" / "resnet18-ort-cpu-28x28.csv"


def ensure_table(path: Path) -> None:
    if path.is_file():
        return
    from hwnas.latency.backends import BackendConfig
    from hwnas.latency.profiler import ProfileConfig, profile
    from hwnas.latency.space import SpaceConfig

    space = SpaceConfig(space="resnet18", input_h=28, input_w=28, in_channels=1, batch=1)
    profile(ProfileConfig(space, BackendConfig("ort-cpu", 1)), path)


def interleaved_latency(paths: dict[str, Path], shape: tuple, threads: int, rounds: int, runs: int) -> dict:
    """Median over rounds of each model's per-round median ORT latency (ms); rounds rotate the model order."""
    import numpy as np
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    sessions = {k: ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"]) for k, p in paths.items()}
    x = np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)
    per_round: dict[str, list[float]] = {k: [] for k in paths}
    names = list(paths)
    for s in sessions.values():   # warm-up
        for _ in range(5):
            s.run(None, {"x": x})
    for r in range(rounds):
        for k in names[r % len(names):] + names[: r % len(names)]:
            times = []
            for _ in range(runs):
                t0 = time.perf_counter()
                sessions[k].run(None, {"x": x})
                times.append((time.perf_counter() - t0) * 1000)
            per_round[k].append(statistics.median(times))
    return {k: {"p50_ms": statistics.median(v), "round_medians_ms": v} for k, v in per_round.items()}


def _trained_by(weights: str) -> dict | None:
    """For --weights PATH: the pretrained.json beside it (how an earlier run of this script trained it)."""
    import json

    side = Path(weights).with_suffix(".json")
    return json.loads(side.read_text()) if weights != "train" and side.is_file() else None


def main() -> None:
    from hwnas.export import check_onnx, export_onnx_dynamic
    from hwnas.latency.table import LatencyTable
    from hwnas.prune.prune import PruneConfig
    from hwnas.prune.prune_run import load_pruned, run_prune
    from hwnas.spaces.gated_resnet import GateSet, materialise

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default=DATA)
    ap.add_argument("--table", default=str(TABLE))
    ap.add_argument("--out", default=None, help="run directory (default: runs/bench-prune-resnet18-<time>)")
    ap.add_argument("--weights", default="train", help="train (default), or a state dict PATH (e.g. a previous "
                                                          "run's pretrained.pt) to skip pretraining")
    ap.add_argument("--lr", type=float, default=None, help="hypernet learning rate (default: hwnas prune's)")
    ap.add_argument("--init-logit", type=float, default=None, help="phase-1 start margin (default: hwnas prune's)")
    ap.add_argument("--lambda-max", type=float, default=None, help="Λ (default: hwnas prune's auto rule)")
    ap.add_argument("--empirical-points", type=int, default=0, help="fixed-λ fits recorded beside Λ (default none)")
    ap.add_argument("--name", default="prune_resnet18", help="results file name (benchmarks/results/NAME.json)")
    ap.add_argument("--epochs", type=int, default=3, help="phase-2 epochs")
    ap.add_argument("--steps", type=int, default=50, help="phase-2 steps per epoch")
    ap.add_argument("--eval-samples", type=int, default=512, help="validation images per evaluation")
    ap.add_argument("--finetune", action="store_true", help="also train the weights during phase 2")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    env = header()
    ensure_table(Path(args.table))
    q = args.quick
    # hwnas prune's defaults for everything that decides what is pruned (Λ rule, hypernet, λ sampling, learning
    # rate, phase 1); only the amount of work is cut to fit 2 shared cores (a ResNet18 step of 32 images at 28×28
    # takes 1–3 s here): phase-2 steps, evaluation samples.
    given = {k: v for k, v in (("lr", args.lr), ("init_logit", args.init_logit)) if v is not None}
    cfg = PruneConfig(dataset=args.dataset, table=args.table, weights=args.weights, pretrain_epochs=1,
                      pretrain_batch_size=64, pretrain_lr=0.05, lambda_max=args.lambda_max,
                      epochs=1 if q else args.epochs, steps_per_epoch=3 if q else args.steps, finetune=args.finetune,
                      lambda_samples=3 if q else 32, eval_samples=128 if q else args.eval_samples,
                      empirical_points=2 if q else args.empirical_points, empirical_steps=2 if q else 15,
                      phase1_steps=5 if q else PruneConfig.phase1_steps, pareto_points=4 if q else 9, device="cpu",
                      seed=0, **given)
    print(f"# settings: pretrain {cfg.pretrain_epochs} epoch(s) of batch {cfg.pretrain_batch_size}; phase 2 "
          f"{cfg.epochs}×{cfg.steps_per_epoch} steps of batch {cfg.batch_size} ({cfg.hypernet} hypernet, "
          f"{cfg.sampling} λ, weights {'fine-tuned' if cfg.finetune else 'frozen'}); Λ: {cfg.lambda_samples} valid gate sets, {cfg.empirical_points} fixed-λ fits of "
          f"{cfg.empirical_steps} steps; evaluations on {cfg.eval_samples} validation images and the test split")
    out = Path(args.out or ROOT / "runs" / f"bench-prune-resnet18-{time.strftime('%Y%m%d-%H%M%S')}")
    t0 = time.perf_counter()
    res = run_prune(cfg, out, say=lambda s: print(f"[{time.perf_counter() - t0:6.0f} s] {s}", flush=True))
    fit_seconds = time.perf_counter() - t0
    frame, rec, pre = res.pareto, res.lambda_max, res.pretrained

    t1 = time.perf_counter()
    shape = (1, 28, 28)
    rows, paths = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        _, model, _, _ = load_pruned(out, 0.0)
        paths["unpruned"] = Path(tmp) / "unpruned.onnx"
        export_onnx_dynamic(model, shape, paths["unpruned"])
        seen = {}
        for _, row in frame.iterrows():
            _, _, gates, _ = load_pruned(out, float(row["lambda"]))
            assert gates.describe() == row["gates"]
            if gates == GateSet():
                continue
            if gates not in seen:
                key = f"g{len(seen)}"
                seen[gates] = key
                net = materialise(model, gates)
                paths[key] = Path(tmp) / f"{key}.onnx"
                export_onnx_dynamic(net, shape, paths[key])
                check = check_onnx(net, paths[key], shape, batches=(1, 5))
                assert check["top1_identical"] and check["max_abs_diff"] < 1e-3, check
        print(f"[{time.perf_counter() - t0:6.0f} s] exported and checked {len(seen)} distinct sub-networks; timing "
              f"them interleaved with the unpruned network", flush=True)
        timing = interleaved_latency(paths, shape, threads=1, rounds=3 if q else 9, runs=10 if q else 30)
    export_seconds = time.perf_counter() - t1

    base_ms = timing["unpruned"]["p50_ms"]
    # The reference is the network the user started from: the pretrained one, intact. (Without --finetune
    # λ = 0 reproduces it exactly; with it, the weights move and λ = 0 may already prune.)
    base_acc = float(pre["test_acc"])
    base_pred = LatencyTable.load(args.table).predict({})
    for _, row in frame.iterrows():
        key = next((k for gs, k in seen.items() if gs.describe() == row["gates"]), None)
        intact = row["gates"] == GateSet().describe()
        ms = base_ms if intact else (timing[key]["p50_ms"] if key else float("nan"))
        rows.append({"lambda": float(row["lambda"]), "gates": row["gates"],
                     "val_acc": float(row["val_acc"]), "test_acc": float(row["test_acc"]),
                     "predicted_ms": float(row["predicted_latency_ms"]), "measured_ort_ms": ms,
                     "speedup_measured": base_ms / ms, "speedup_predicted": base_pred / float(row["predicted_latency_ms"]),
                     "params": float(row["params"]), "flops": float(row["flops"])})
    ok = [r for r in rows if r["test_acc"] >= base_acc - 0.01]
    best = max(ok, key=lambda r: r["speedup_measured"])
    print(f"\n{'λ':>9} {'gates':<34} {'val':>6} {'test':>6} {'pred ms':>8} {'ORT ms':>8} {'speed-up':>8}")
    for r in rows:
        print(f"{r['lambda']:9.4g} {r['gates']:<34} {r['val_acc']:6.3f} {r['test_acc']:6.3f} {r['predicted_ms']:8.3f} "
              f"{r['measured_ort_ms']:8.3f} {r['speedup_measured']:7.2f}×")
    emp = rec.get("empirical", {})
    print(f"\nunpruned (pretrained): test accuracy {base_acc:.4f}, ORT {base_ms:.3f} ms (batch 1, 1 thread), "
          f"predicted {base_pred:.3f} ms")
    print(f"best measured speed-up at ≤ 1 point test-accuracy loss: {best['speedup_measured']:.2f}× "
          f"(λ {best['lambda']:.4g}, test {best['test_acc']:.4f}, {best['measured_ort_ms']:.3f} ms; "
          f"predicted {best['speedup_predicted']:.2f}×)")
    print(f"Λ: Theorem 1 {rec['theorem_lambda_max']:.4g} (L̄ {rec['label_entropy']:.4f}, S {rec['worst_valid_loss']:.4f}, "
          f"Tᵀ1 {rec['cost_bound'][0]:.4g} ms) → used {rec['lambda_max'][0]:.4g} [{rec['lambda_max_source'][:40]}…]; "
          f"empirical: plateau end {emp.get('plateau_end')}, fall to chance {emp.get('lambda_max')}")
    save(args.name + ("-quick" if q else ""), {
        "machine": env, "dataset": args.dataset, "table": args.table, "config": cfg.to_dict(), "run": str(out),
        "pretrained": pre, "weights": args.weights, "weights_trained_by": _trained_by(args.weights), "lambda_max": rec, "rows": rows, "best_at_1pt": best,
        "unpruned": {"test_acc": base_acc, "measured_ort_ms": base_ms, "predicted_ms": base_pred,
                     "round_medians_ms": timing["unpruned"]["round_medians_ms"]},
        "timing": {k: v["round_medians_ms"] for k, v in timing.items()},
        "seconds": {"fit": fit_seconds, "export_and_timing": export_seconds},
    })


if __name__ == "__main__":
    main()
