"""Is it the hypernet's α(λ) or the supernet's weights that keep a λ's network above a fixed-λ search's? (#10.3)

One λ-hypernet search as `hypernet_vs_separate.py` runs it (same settings and seed), then, for each fraction f,
an α-only fixed-λ search at λ = f·Λ on the hypernet's *frozen* weights: a fresh α, the same number of α steps
and learning rate as a fixed-λ search of the same length, first order, BN statistics untouched. If these
searches stop where the hypernet's α(f·Λ) does, the weights decide the network; if they reach what fixed-λ
searches with their own weights reach, the hypernet's α(λ) is what lags.

    python benchmarks/frozen_weights_probe.py --lambda-zero-share 0.5 --seed 0
"""
from __future__ import annotations

import argparse
import itertools
import sys
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
    ap.add_argument("--hypernet", default="mlp", choices=("linear", "mlp"))
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--warmup-epochs", type=int, default=5)
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5])
    ap.add_argument("--lambda-zero-share", type=float, default=None, help="default: hwnas's")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default=None)
    args = ap.parse_args()
    from hwnas.latency.table import LatencyTable
    from hwnas.search.arch_grad import bn_stats_kept, first_order
    from hwnas.search.control import ControlConfig
    from hwnas.search.loop import Search, SearchConfig

    env = header()
    table = LatencyTable.load(args.table)
    base = SearchConfig(dataset=args.dataset, layers=5, channels=8, epochs=args.epochs, seed=args.seed)
    control = ControlConfig(tables=(args.table,), hypernet=args.hypernet, warmup_epochs=args.warmup_epochs)
    if args.lambda_zero_share is not None:
        control = replace(control, zero_share=args.lambda_zero_share)
    torch.manual_seed(args.seed)
    hyper = Search(replace(base, control=control))
    hyper.warmup_and_estimate_lambda_max()   # Λ is estimated when the λ = 0 phase ends, inside the epochs
    while hyper.epoch < hyper.cfg.epochs:
        hyper.metrics.append(hyper.run_epoch(None))
    lmax = float(hyper.lambda_record["lambda_max"][0])
    weights = {k: v.clone() for k, v in hyper.net.state_dict().items()}
    rows = []
    for f in args.fractions:
        g_h = hyper.genotype(torch.tensor([f * lmax]))
        probe = Search(replace(base, control=replace(control, hypernet="none", lam=f * lmax)))
        probe.net.load_state_dict(weights)
        probe.net.train()
        batches = itertools.cycle(list(probe.arch_loader))
        for _ in range(probe.cfg.epochs * probe.steps_per_epoch()):
            xv, yv = next(batches)
            probe.lam.apply(probe.obj)
            probe.a_opt.zero_grad(set_to_none=True)
            with bn_stats_kept(probe.net):
                first_order(probe.obj, xv, yv)
            probe.a_opt.step()
        g_p = probe.genotype()
        rows.append({"fraction": f, "lambda": f * lmax, "hypernet_ms": table.predict(g_h),
                     "frozen_weights_fixed_ms": table.predict(g_p), "hypernet_genotype": str(g_h),
                     "frozen_weights_fixed_genotype": str(g_p)})
        print(f"λ = {f:g}·Λ: hypernet {rows[-1]['hypernet_ms']:.4f} ms, α-only fixed-λ search on its weights "
              f"{rows[-1]['frozen_weights_fixed_ms']:.4f} ms", flush=True)
    name = args.name or f"frozen_weights_probe-zs{control.zero_share:g}-s{args.seed}"
    save(name, {"env": env, "args": vars(args), "zero_share": control.zero_share, "lambda_max": lmax, "rows": rows})


if __name__ == "__main__":
    main()
