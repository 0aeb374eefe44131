"""Theorem 1 checked empirically: fixed-λ searches from below Λ to far beyond it.

For each λ on a grid of multiples of the bound B = L̄/Tᵀ1 (Theorem 1 with S = 0, the
largest Λ can be) a plain fixed-λ search runs after the same single-path warm-up, and the
found architecture is recorded three ways:

  - the relaxed architecture's validation accuracy (what the search optimised);
  - the network the relaxed weights point at with `none` allowed (argmax per edge): how many
    edges are `none`, whether a cell is broken (Theorem 1's invalid set), and its accuracy
    as a sub-network of the supernet (a broken one is a constant predictor: chance);
  - the DARTS-derived genotype (never `none`) and its predicted latency.

Λ from Theorem 1 (with S sampled on the warmed-up supernet) is marked on the plot next to B;
λ < Λ must give valid networks, and beyond B breaking pays whatever the validation loss.

    python benchmarks/lambda_sweep.py                 # digits, the recorded configuration
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import header, save  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--table", default=str(ROOT / "profiles" / "darts-mobile-8x8.csv"))
    ap.add_argument("--multiples", type=float, nargs="+", default=[0, 0.25, 1, 4, 16])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--warmup-epochs", type=int, default=3)
    ap.add_argument("--relax", default="softmax", choices=("softmax", "gumbel-hard"))
    ap.add_argument("--a-lr", type=float, default=1e-2, help="α learning rate (10 short epochs need more than 3e-4)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="lambda_sweep")
    args = ap.parse_args()

    from hwnas.evaluation import batch_statistics, evaluate
    from hwnas.latency.table import LatencyTable
    from hwnas.plots import plot_lambda_sweep
    from hwnas.search.control import ControlConfig
    from hwnas.search.lambda_max import NONE, argmax_ops, is_valid, one_hot
    from hwnas.search.loop import Search, SearchConfig
    from hwnas.search.objective import RelaxedArch
    from hwnas.search.relax import RelaxConfig

    env = header()
    relax = RelaxConfig(kind="gumbel", hard=True) if args.relax == "gumbel-hard" else RelaxConfig(kind="softmax")
    base = SearchConfig(dataset=args.dataset, epochs=args.epochs, seed=args.seed, relax=relax, a_lr=args.a_lr)
    table = LatencyTable.load(args.table)
    # `none` stays a candidate: this sweep is about where λ breaks a cell (Theorem 1), which needs `none`.
    control = ControlConfig(tables=(args.table,), warmup_epochs=args.warmup_epochs, exclude_none=False)
    print(f"# {args.dataset}, {args.relax}, a_lr={base.a_lr}, {args.warmup_epochs} warm-up + {args.epochs} epochs")

    # Λ's parts from the warmed-up supernet (the same warm-up every search below starts from).
    probe = Search(replace(base, control=replace(control, hypernet="linear")))
    probe.warmup(args.warmup_epochs)
    record = probe.estimate_lambda_max()   # on the warmed-up supernet itself, no λ = 0 phase
    bound = record["label_entropy"] / record["cost_bound"][0]
    theorem = record["lambda_max_theorem"][0]
    print(f"# L̄ = {record['label_entropy']:.4f}, S = {record['worst_valid_loss']:.4f}, Tᵀ1 = "
          f"{record['cost_bound'][0]:.4f} → Λ (theorem) = {theorem:.4g}, bound L̄/Tᵀ1 = {bound:.4g}")

    rows = []
    for m in args.multiples:
        t0 = time.perf_counter()
        s = Search(replace(base, control=replace(control, lam=m * bound)))
        s.warmup(args.warmup_epochs)
        while s.epoch < s.cfg.epochs:
            s.metrics.append(s.run_epoch(None))
        ra = s.obj.expected()
        ops_n, ops_r = argmax_ops(ra.w_normal), argmax_ops(ra.w_reduce)
        n_ops = s.net.cfg.n_ops
        argmax = RelaxedArch(one_hot(ops_n, n_ops, s.device), one_hot(ops_r, n_ops, s.device), ops_n, ops_r)
        s.net.eval()
        with torch.no_grad():
            _, relaxed_acc = evaluate(lambda x, s=s, ra=ra: s.obj.logits(x, ra), s.eval_loader)
            with batch_statistics(s.net):
                _, argmax_acc = evaluate(lambda x, s=s, a=argmax: s.obj.logits(x, a), s.eval_loader)
        g = s.genotype()
        rows.append({"multiple_of_bound": m, "lambda": m * bound, "lambda_over_theorem": m * bound / theorem
                     if theorem > 0 else None, "relaxed_val_acc": relaxed_acc, "argmax_val_acc": argmax_acc,
                     "argmax_none_edges": ops_n.count(NONE) + ops_r.count(NONE), "argmax_valid":
                     is_valid(ops_n, ops_r), "expected_cost": float(s.cost.expected(ra.w_normal, ra.w_reduce)[0]),
                     "genotype": str(g), "predicted_latency_ms": table.predict(g),
                     "seconds": time.perf_counter() - t0})
        r = rows[-1]
        print(f"λ = {m:6.2f}·B  relaxed acc {relaxed_acc:.3f}  argmax: {r['argmax_none_edges']:2d}/"
              f"{2 * len(ops_n)} none, valid {r['argmax_valid']!s:5}, acc {argmax_acc:.3f}  "
              f"E[cost] {r['expected_cost']:.4f}  ({r['seconds']:.0f} s)")

    chance = 1.0 / probe.info.num_classes
    plot = plot_lambda_sweep(rows, bound, theorem, chance, ROOT / "benchmarks" / "results" / f"{args.name}.png")
    print(f"# plot {plot.relative_to(ROOT)}")
    save(args.name, {"env": env, "args": vars(args), "lambda_max": record, "bound": bound, "rows": rows})


if __name__ == "__main__":
    main()
