"""HyperDARTS against DARTS at equal search budget: search time, genotypes, test accuracy from scratch.

For each seed and each architecture-gradient strategy (first, second, hyper-linear, hyper-mlp):
the same supernet, data split, relaxation and number of search steps; then the derived
genotype is trained from scratch with one recipe (hwnas.train.train_network) and tested on
the held-out test split. Issue #6's claim: HyperDARTS finds better architectures than DARTS.

Sized for a shared 2-core CPU (the defaults took 42 minutes there, one torch thread, other jobs
running): a small supernet, hard Gumbel-softmax (one op per edge per step), 30 search steps
and one training epoch; every choice is printed and saved with the results. That budget is
far too small to rank the strategies (the supernets reach ~20 % validation accuracy, the
1-epoch test accuracies scatter by ±0.1–0.25): it shows the four run end to end at equal
budget and what they cost per step, not which finds better cells. With a GPU, raise --search-epochs,
--steps, --train-epochs (and pass --dataset cifar10 where the data is available).

    python benchmarks/hyperdarts.py                       # MNIST t10k, 3 seeds, 4 strategies
    python benchmarks/hyperdarts.py --seeds 0 --steps 4 --train-epochs 1   # a smoke run
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import header, save

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist-t10k"
METHODS = ("first", "second", "hyper-linear", "hyper-mlp")


def one(method: str, seed: int, args, out: Path) -> dict:
    """Search with `method`, then train its genotype from scratch; one result row."""
    from hwnas.search.loop import SearchConfig, run_search
    from hwnas.search.relax import RelaxConfig
    from hwnas.train import TrainConfig, train_network

    cfg = SearchConfig(dataset=args.dataset, layers=args.layers, channels=args.channels, batch_size=args.batch_size,
                       epochs=args.search_epochs, seed=seed, arch_grad=method, a_lr=args.a_lr,
                       relax=RelaxConfig("gumbel", hard=True), max_steps_per_epoch=args.steps, device="cpu")
    t0 = time.perf_counter()
    res = run_search(cfg, out / f"{method}-s{seed}")
    search_wall = time.perf_counter() - t0
    hyper = torch.load(res.run.file("checkpoint.pt"), weights_only=True)["hyper"]
    phi = sum(t.numel() for t in hyper["phi"].values()) if hyper is not None else 0
    tcfg = TrainConfig(dataset=args.dataset, epochs=args.train_epochs, layers=args.layers, channels=args.channels,
                       batch_size=96, seed=seed, device="cpu")
    t0 = time.perf_counter()
    trained = train_network(res.genotype, tcfg)
    return {"method": method, "seed": seed, "genotype": str(res.genotype),
            "search_step_seconds": sum(m["epoch_seconds"] for m in res.metrics),
            "search_wall_seconds": search_wall, "search_steps": sum(m["steps"] for m in res.metrics),
            "supernet_val_acc": res.metrics[-1]["val_acc"], "phi_params": phi,
            "params": trained.params, "test_acc": trained.test_acc, "test_loss": trained.test_loss,
            "train_seconds": time.perf_counter() - t0}


def _mean_sd(xs: list[float]) -> str:
    return f"{statistics.mean(xs):.4f} ± {statistics.stdev(xs) if len(xs) > 1 else 0.0:.4f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default=f"idx:{MNIST}")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--layers", type=int, default=5)
    ap.add_argument("--channels", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--search-epochs", type=int, default=2)
    ap.add_argument("--steps", type=int, default=15, help="search steps per epoch (max_steps_per_epoch)")
    ap.add_argument("--a-lr", type=float, default=3e-3, help="Adam lr for α (DARTS: 3e-4; raised for a short search)")
    ap.add_argument("--train-epochs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: no OpenMP spinning on a shared CPU)")
    ap.add_argument("--name", default="hyperdarts-mnist-cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    env = header()
    config = {k: v for k, v in vars(args).items()}
    config.update(relax="gumbel-hard", device="cpu", train_layers=args.layers, train_channels=args.channels,
                  train_batch=96, train_recipe="hwnas.train.TrainConfig defaults otherwise (SGD 0.025 cosine, "
                                               "drop-path 0.2, no aux/cutout)")
    print("# " + ", ".join(f"{k}={v}" for k, v in config.items()))
    rows = []
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = args.methods.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            for method in methods:
                row = one(method, seed, args, Path(tmp))
                rows.append(row)
                print(f"{method:13} seed {seed}  search {row['search_step_seconds']:7.1f} s  "
                      f"test acc {row['test_acc']:.4f}  params {row['params']:,}  {row['genotype']}", flush=True)
                save(args.name, {"environment": env, "config": config, "rows": rows, "complete": False})
    table = []
    print(f"\n{'method':13} {'search s (mean)':>16} {'test acc mean ± sd':>20}")
    for method in methods:
        rs = [r for r in rows if r["method"] == method]
        summary = {"method": method, "search_seconds_mean": statistics.mean(r["search_step_seconds"] for r in rs),
                   "test_acc": _mean_sd([r["test_acc"] for r in rs]),
                   "test_acc_mean": statistics.mean(r["test_acc"] for r in rs),
                   "phi_params": rs[0]["phi_params"]}
        table.append(summary)
        print(f"{method:13} {summary['search_seconds_mean']:16.1f} {summary['test_acc']:>20}")
    best = max(table, key=lambda s: s["test_acc_mean"])
    print(f"# highest mean test accuracy: {best['method']}")
    save(args.name, {"environment": env, "config": config, "rows": rows, "summary": table, "complete": True})


if __name__ == "__main__":
    main()
