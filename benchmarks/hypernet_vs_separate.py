"""One λ-hypernet search against K separate fixed-λ searches (issue #4's claim).

Same data, supernet, warm-up, epochs, steps and seed for every search. The hypernet run
estimates Λ (Theorem 1, or its stated fallback) after the warm-up; the separate runs then
search at λ_k = f_k·Λ for the same fractions f_k at which the hypernet is read off. Each
found genotype is scored the same way:

  - predicted latency from the run's table (calibrated), params;
  - accuracy as a sub-network of its own search's supernet (batch-statistics BN) on the
    validation split and on the held-out test split;
  - `--train-epochs N`: also test accuracy after training the discrete network from scratch.

It reports per-λ accuracy and latency, each front's hypervolume (latency ≤ the largest
latency seen, accuracy ≥ chance) and the total time of each approach.

    python benchmarks/hypernet_vs_separate.py                       # the recorded configuration
    python benchmarks/hypernet_vs_separate.py --epochs 2 --max-steps 5 --fractions 0 1   # smoke
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import header, save  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT.parent / "shared" / "data" / "mnist-t10k"


def score(search, genotype, table, test_loader, train_epochs: int, seed: int) -> dict:
    from hwnas.search.pareto import network_size, subnetwork_accuracy

    _, val_acc = subnetwork_accuracy(search, genotype)
    _, test_acc = subnetwork_accuracy(search, genotype, test_loader)
    params, _ = network_size(search, genotype)
    row = {"genotype": str(genotype), "predicted_latency_ms": table.predict(genotype), "params": params,
           "supernet_val_acc": val_acc, "supernet_test_acc": test_acc}
    if train_epochs > 0:
        from hwnas.train import TrainConfig, train_network

        cfg = search.cfg
        res = train_network(genotype, TrainConfig(dataset=cfg.dataset, epochs=train_epochs, layers=cfg.layers,
                                                  channels=cfg.channels, seed=seed, device=cfg.device))
        row["trained_test_acc"] = res.test_acc
    return row


def run_epochs(search, tag: str) -> float:
    t0 = time.perf_counter()
    while search.epoch < search.cfg.epochs:
        row = search.run_epoch(None)
        search.metrics.append(row)
        print(f"  {tag} epoch {row['epoch']}: train acc {row['train_acc']:.3f}, val acc {row['val_acc']:.3f} "
              f"({row['epoch_seconds']:.0f} s)", flush=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default=f"idx:{MNIST}")
    ap.add_argument("--table", default=str(ROOT / "profiles" / "darts-mobile-28x28.csv"))
    ap.add_argument("--hypernet", default="linear", choices=("linear", "mlp"))
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--warmup-epochs", type=int, default=2)
    ap.add_argument("--max-steps", type=int, default=25, help="steps per epoch")
    ap.add_argument("--channels", type=int, default=8)
    ap.add_argument("--layers", type=int, default=5)
    ap.add_argument("--relax", default="gumbel-hard", choices=("softmax", "gumbel-hard"))
    ap.add_argument("--a-lr", type=float, default=1e-2, help="α learning rate (a short search needs more than 3e-4)")
    ap.add_argument("--lambda-samples", type=int, default=32, help="valid architectures evaluated for S")
    ap.add_argument("--eval-batches", type=int, default=2, help="validation batches per evaluated architecture")
    ap.add_argument("--train-epochs", type=int, default=2, help="train each found network from scratch (0: skip)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lambda-sampling", default="uniform", choices=("uniform", "log-uniform"))
    ap.add_argument("--separate-from", default=None, help="reuse the separate searches of an earlier result JSON "
                    "(same data, sizes, epochs, seed and Λ; checked) and run only the hypernet")
    ap.add_argument("--name", default="hypernet_vs_separate")
    args = ap.parse_args()

    from hwnas.data import DeviceLoader, load_dataset
    from hwnas.latency.table import LatencyTable
    from hwnas.search.control import ControlConfig
    from hwnas.search.loop import Search, SearchConfig
    from hwnas.search.pareto import hypervolume
    from hwnas.search.relax import RelaxConfig

    env = header()
    torch.manual_seed(args.seed)
    relax = RelaxConfig(kind="gumbel", hard=True) if args.relax == "gumbel-hard" else RelaxConfig(kind="softmax")
    base = SearchConfig(dataset=args.dataset, layers=args.layers, channels=args.channels, epochs=args.epochs,
                        seed=args.seed, relax=relax, max_steps_per_epoch=args.max_steps, a_lr=args.a_lr)
    control = ControlConfig(tables=(args.table,), hypernet=args.hypernet, warmup_epochs=args.warmup_epochs,
                            samples=args.lambda_samples, eval_batches=args.eval_batches,
                            sampling=args.lambda_sampling)
    table = LatencyTable.load(args.table)
    splits = load_dataset(args.dataset)
    print(f"# {args.dataset}: supernet C={args.channels} L={args.layers}, {args.relax}, a_lr={base.a_lr}, "
          f"{args.warmup_epochs} warm-up + {args.epochs} epochs × ≤{args.max_steps} steps, fractions {args.fractions}")

    # One hypernet search.
    t0 = time.perf_counter()
    hyper = Search(replace(base, control=control))
    test_loader = DeviceLoader(splits.x_test, splits.y_test, splits.info, 256, shuffle=False, device=hyper.device,
                               channels_last=hyper.eval_loader.channels_last)
    record = hyper.warmup_and_estimate_lambda_max()
    warmup_and_lambda_seconds = time.perf_counter() - t0
    run_epochs(hyper, "hypernet")
    hyper_seconds = time.perf_counter() - t0
    lmax = float(record["lambda_max"][0])
    print(f"# Λ = {lmax:.4g} ({record['lambda_max_source'][:60]}…)  hypernet search {hyper_seconds:.0f} s",
          flush=True)
    rows = []
    for f in args.fractions:
        g = hyper.genotype(torch.tensor([f * lmax]))
        rows.append({"method": "hypernet", "fraction": f, "lambda": f * lmax,
                     **score(hyper, g, table, test_loader, args.train_epochs, args.seed)})

    # K separate fixed-λ searches with the same warm-up.
    separate_seconds = []
    if args.separate_from is not None:
        earlier = json.loads(Path(args.separate_from).read_text())
        same = ("dataset", "table", "fractions", "epochs", "warmup_epochs", "max_steps", "channels", "layers",
                "relax", "a_lr", "train_epochs", "seed")
        if any(earlier["args"][k] != vars(args)[k] for k in same) or earlier["lambda_max"]["lambda_max"][0] != lmax:
            raise SystemExit(f"{args.separate_from} was run with other settings or another Λ")
        rows += [r for r in earlier["rows"] if r["method"] == "separate"]
        separate_seconds = [r["search_seconds"] for r in rows if r["method"] == "separate"]
    for f in [] if args.separate_from is not None else args.fractions:
        t0 = time.perf_counter()
        s = Search(replace(base, control=replace(control, hypernet="none", lam=f * lmax)))
        s.warmup(args.warmup_epochs)
        warmup_seconds = time.perf_counter() - t0
        run_epochs(s, f"λ={f:g}·Λ")
        separate_seconds.append(time.perf_counter() - t0)
        rows.append({"method": "separate", "fraction": f, "lambda": f * lmax, "search_seconds": separate_seconds[-1],
                     "warmup_seconds": warmup_seconds,
                     **score(s, s.genotype(), table, test_loader, args.train_epochs, args.seed)})
        print(f"# separate λ = {f:.3g}·Λ: {separate_seconds[-1]:.0f} s", flush=True)

    chance = 1.0 / splits.info.num_classes
    ref_cost = 1.05 * max(r["predicted_latency_ms"] for r in rows)
    summary = {}
    for method in ("hypernet", "separate"):
        mine = [r for r in rows if r["method"] == method]
        cost = np.array([r["predicted_latency_ms"] for r in mine])
        out = {"total_seconds": hyper_seconds if method == "hypernet" else sum(separate_seconds)}
        if method == "hypernet":  # warm-up + Λ estimate (the separate runs reuse this Λ; they pay their own warm-up)
            out["warmup_and_lambda_seconds"] = warmup_and_lambda_seconds
        for acc_key in ("supernet_test_acc", "trained_test_acc"):
            if acc_key in mine[0]:
                acc = np.array([r[acc_key] for r in mine])
                out[f"hypervolume[{acc_key}]"] = hypervolume(cost, acc, ref_cost, chance)
        summary[method] = out

    print(f"\n{'method':9} {'λ/Λ':>5} {'latency ms':>10} {'params':>7} {'val acc':>7} {'test acc':>8}"
          + (" trained" if args.train_epochs else ""))
    for r in rows:
        print(f"{r['method']:9} {r['fraction']:5.2f} {r['predicted_latency_ms']:10.4f} {r['params']:7d} "
              f"{r['supernet_val_acc']:7.3f} {r['supernet_test_acc']:8.3f}"
              + (f" {r['trained_test_acc']:7.3f}" if "trained_test_acc" in r else ""))
    for method, out in summary.items():
        print(f"# {method}: " + ", ".join(f"{k} {v:.4g}" for k, v in out.items()))
    save(args.name, {"env": env, "args": vars(args), "lambda_max": record, "hypervolume_reference":
                     {"latency_ms": ref_cost, "accuracy": chance}, "summary": summary, "rows": rows})


if __name__ == "__main__":
    main()
