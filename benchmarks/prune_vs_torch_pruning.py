"""hwnas prune against Torch-Pruning at equal measured latency (issue #12.4).

From one trained ResNet18 and one finished `hwnas prune` run on it:

- hwnas: the distinct gate sets of the run's pareto.csv (≥ 3 points along λ, intact excluded), as `hwnas export`
  writes them (`pruned_at`: BN statistics re-estimated);
- Torch-Pruning (`pip install -e ".[bench]"`): global channel pruning with group-norm (magnitude) importance of
  the same network, the pruning ratio searched (bisection on measured ORT latency relative to the unpruned
  network timed interleaved with it) until each Torch-Pruning network is as fast as the hwnas network it is
  compared with;
- the unpruned network, the reference.

Every network, the reference included, is then fine-tuned with the same number of SGD steps on the weights
half of the train split (what the ResNet18 was trained on) and tested on the test split. Latency is measured
in ONNX Runtime (batch 1, 1 thread), all networks interleaved (`prune_resnet18.interleaved_latency`). One plot:
test accuracy against measured latency. Repeat with --seeds for the fine-tuning seeds.

    python benchmarks/prune_vs_torch_pruning.py --run RUN --weights W.pt [--steps 100 --seeds 0 1 2]
    python benchmarks/prune_vs_torch_pruning.py --run RUN --weights W.pt --quick     # smoke test
    python benchmarks/prune_vs_torch_pruning.py --run RUN --lambdas 0.056 0.184 Λ --name NAME   # chosen points

--points N takes N distinct gate sets of pareto.csv evenly along its rows; --lambdas takes the run's gate set at
each λ given (any λ in [0, Λ], `max` for Λ), e.g. the cheapest set and one near a measured speed-up. Results are
saved after every fine-tuned network (`complete`: false until the end).
"""
from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import header, save
from prune_resnet18 import interleaved_latency

SHAPE = (1, 28, 28)


def relative_latency(net, reference: Path, tmp: Path, name: str, rounds: int, runs: int) -> float:
    """Measured latency of `net` as a fraction of the reference ONNX file's, the two timed interleaved: on a
    machine shared with other jobs the load moves both alike, so the ratio stays while the milliseconds do not
    (measured here: the same network at 5.1 ms and at 16.9 ms minutes apart)."""
    from hwnas.export import export_onnx_dynamic

    path = tmp / f"{name}.onnx"
    export_onnx_dynamic(net.eval(), SHAPE, path)
    t = interleaved_latency({name: path, "reference": reference}, SHAPE, threads=1, rounds=rounds, runs=runs)
    return t[name]["p50_ms"] / t["reference"]["p50_ms"]


def tp_prune(model, ratio: float):
    """Torch-Pruning: global channel pruning, group magnitude (L2, 'group norm') importance, classifier kept."""
    import torch
    import torch_pruning as tp

    net = copy.deepcopy(model).eval()
    ex = torch.randn(1, *SHAPE)
    pruner = tp.pruner.MetaPruner(net, ex, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                  pruning_ratio=ratio, global_pruning=True, ignored_layers=[net.fc])
    pruner.step()
    return net


def tp_matching(model, target: float, reference: Path, tmp: Path, rounds: int, runs: int, iters: int) -> tuple:
    """Bisection on the pruning ratio until the Torch-Pruning network's measured latency, relative to the
    unpruned network's in the same interleaved timing, is the target's."""
    lo, hi, best = 0.0, 0.95, None
    for i in range(iters):
        mid = (lo + hi) / 2
        net = tp_prune(model, mid)
        rel = relative_latency(net, reference, tmp, f"tp_search{i}", rounds, runs)
        if best is None or abs(rel - target) < abs(best[2] - target):
            best = (net, mid, rel)
        lo, hi = (mid, hi) if rel > target else (lo, mid)
    return best


def finetune(net, data, steps: int, lr: float, seed: int):
    """`steps` SGD steps (momentum 0.9, cosine) on the weights half, BN in training mode; eval mode after."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    net = copy.deepcopy(net).train()
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=3e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1))
    data.weights.generator.manual_seed(seed)
    it, done = iter(data.weights), 0
    while done < steps:
        xy = next(it, None)
        if xy is None:
            it = iter(data.weights)
            continue
        x, y = xy
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()
        sched.step()
        done += 1
    return net.eval()


def main() -> None:
    import torch

    from hwnas.evaluation import evaluate
    from hwnas.prune.prune import PruneData
    from hwnas.prune.prune_run import load_pruned, pruned_at
    from hwnas.spaces.gated_resnet import GateSet
    from hwnas.spaces.network import count_parameters

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a finished hwnas prune run (pareto.csv)")
    ap.add_argument("--steps", type=int, default=100, help="fine-tuning steps for every network")
    ap.add_argument("--lr", type=float, default=0.01, help="fine-tuning learning rate")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--points", type=int, default=3, help="hwnas networks compared (distinct gate sets)")
    ap.add_argument("--lambdas", nargs="+", default=None,
                    help="λ values of the run whose gate sets are compared (`max` = Λ); overrides --points")
    ap.add_argument("--name", default="prune_vs_torch_pruning")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    env = header()
    q = args.quick
    rounds, runs, iters = (2, 5, 3) if q else (7, 20, 7)
    steps = 2 if q else args.steps
    import pandas as pd

    frame = pd.read_csv(Path(args.run) / "pareto.csv")
    cfg, model, _, lmax = load_pruned(args.run, 0.0)
    if args.lambdas:
        lams = [lmax if v == "max" else float(v) for v in args.lambdas]
    else:
        distinct = [g for g in dict.fromkeys(frame["gates"]) if g != GateSet().describe()]
        pick = [distinct[round(i * (len(distinct) - 1) / max(args.points - 1, 1))] for i in range(args.points)] \
            if len(distinct) > args.points else distinct
        lams = [float(frame.loc[frame["gates"] == g, "lambda"].iloc[0]) for g in pick]
    data = PruneData(cfg, torch.device("cpu"))
    nets, gates_of, lam_of = {"unpruned": model}, {}, {}
    for i, lam in enumerate(lams):
        _, net, gates, _, _ = pruned_at(args.run, lam)   # as `hwnas export` writes it (BN re-estimated)
        nets[f"hwnas{i}"], gates_of[f"hwnas{i}"], lam_of[f"hwnas{i}"] = net, gates.describe(), lam
        print(f"# hwnas{i}: λ = {lam:.4g} (λ/Λ = {lam / lmax:.3f}) gates {gates.describe()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        from hwnas.export import export_onnx_dynamic

        reference = tmp / "reference.onnx"
        export_onnx_dynamic(model.eval(), SHAPE, reference)
        target = {k: relative_latency(n, reference, tmp, k, rounds, runs) for k, n in nets.items() if k != "unpruned"}
        matched = {}
        for i, k in enumerate(list(target)):
            net, ratio, rel = tp_matching(model, target[k], reference, tmp, rounds, runs, iters)
            nets[f"tp{i}"], matched[f"tp{i}"] = net, {"ratio": ratio, "search_relative": rel, "matches": k}
            print(f"# {k}: {target[k]:.3f} × unpruned; Torch-Pruning ratio {ratio:.3f} → {rel:.3f} ×", flush=True)
        paths = {}
        for k, n in nets.items():
            paths[k] = tmp / f"final_{k}.onnx"
            export_onnx_dynamic(n.eval(), SHAPE, paths[k])
        timing = interleaved_latency(paths, SHAPE, threads=1, rounds=rounds + 2, runs=runs)
    name = args.name + ("-quick" if q else "")
    meta = {"machine": env, "run": args.run, "steps": steps, "lr": args.lr, "seeds": args.seeds,
            "lambda_max": lmax, "lambdas": lam_of, "gates": gates_of, "matched": matched,
            "timing": {k: v["round_medians_ms"] for k, v in timing.items()}}
    print("# measured: " + "  ".join(f"{k} {v['p50_ms']:.3f} ms" for k, v in timing.items()), flush=True)
    rows, before = [], {}
    for seed in args.seeds:
        for k, n in nets.items():
            if k not in before:
                before[k] = evaluate(n.eval(), data.test)[1]
            tuned = finetune(n, data, steps, args.lr, seed)
            acc = evaluate(tuned, data.test)[1]
            rows.append({"seed": seed, "net": k, "method": k.rstrip("0123456789"), "test_acc": acc,
                         "test_acc_before_finetune": before[k],
                         "measured_ms": timing[k]["p50_ms"], "params": count_parameters(n),
                         "gates": gates_of.get(k), "lambda": lam_of.get(k), **matched.get(k, {})})
            print(f"seed {seed} {k:9s} {timing[k]['p50_ms']:7.3f} ms  test {acc:.4f} "
                  f"(before fine-tuning {rows[-1]['test_acc_before_finetune']:.4f})", flush=True)
            save(name, {**meta, "complete": False, "rows": rows})
    res = pd.DataFrame(rows)
    mean = res.groupby("net").agg(test_acc=("test_acc", "mean"), test_acc_sd=("test_acc", "std"),
                                  measured_ms=("measured_ms", "first")).reset_index()
    base = mean.loc[mean["net"] == "unpruned"].iloc[0]
    mean["speedup"] = base["measured_ms"] / mean["measured_ms"]
    mean["acc_loss_points"] = 100 * (base["test_acc"] - mean["test_acc"])
    print(mean.to_string(index=False))
    _plot(res, Path(__file__).resolve().parent / "results" / f"{name}.png")
    save(name, {**meta, "complete": True, "rows": rows, "mean": mean.to_dict("records")})


def _plot(res, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method, marker in (("hwnas", "o"), ("tp", "s"), ("unpruned", "*")):
        sub = res[res["method"] == method]
        agg = sub.groupby("net").agg(ms=("measured_ms", "first"), acc=("test_acc", "mean"), sd=("test_acc", "std"))
        ax.errorbar(agg["ms"], 100 * agg["acc"], yerr=100 * agg["sd"].fillna(0), fmt=marker, capsize=3,
                    label={"tp": "Torch-Pruning (group norm)", "hwnas": "hwnas prune"}.get(method, method))
    ax.set_xlabel("measured ONNX Runtime latency (ms, batch 1, 1 thread)")
    ax.set_ylabel("test accuracy after equal fine-tuning (%)")
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
