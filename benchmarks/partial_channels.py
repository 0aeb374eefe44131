"""Found-architecture quality of PC-DARTS's partial channels at an equal search budget (issue #13.3).

For each seed and each K of --ks (interleaved: seed-major, K alternating), runs the search as a user does,

    hwnas search --dataset idx:MNIST --epochs E --max-steps S --partial-channels K --seed SEED --out RUN

(first-order softmax, 5 cells, 8 channels, batch 64: the configuration of the speed figures, on 28×28 MNIST),
then trains each found genotype from scratch the same way (`hwnas.train.train_network`, as
benchmarks/pareto_rank.py does: the search's cells and channels, --train-epochs, seed 0) and reports its test
accuracy, the search's wall time (subprocess), its training-step time (Σ metrics.csv epoch_seconds) and the
supernet's last validation accuracy.

    python benchmarks/partial_channels.py                         # K = 1 vs 4, seed 0
    python benchmarks/partial_channels.py --seeds 0,1 --ks 1,2,4
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import header, save  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT.parent / "shared" / "data" / "mnist-t10k"


def search(k: int, seed: int, args, out: Path) -> dict:
    cmd = ["hwnas", "search", "--dataset", args.dataset, "--epochs", str(args.epochs), "--max-steps",
           str(args.max_steps), "--layers", str(args.layers), "--channels", str(args.channels), "--batch-size",
           str(args.batch), "--partial-channels", str(k), "--seed", str(seed), "--out", str(out)]
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    m = pd.read_csv(out / "metrics.csv")
    from hwnas.spaces.genotype import load_genotype

    return {"k": k, "seed": seed, "search_wall_s": wall, "search_train_s": float(m["epoch_seconds"].sum()),
            "steps": int(m["steps"].sum()), "supernet_val_acc": float(m["val_acc"].iloc[-1]),
            "genotype": str(load_genotype(out))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default=f"idx:{MNIST}")
    ap.add_argument("--ks", default="1,4", help="comma-separated K (1: plain DARTS)")
    ap.add_argument("--seeds", default="0", help="comma-separated search seeds")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--max-steps", type=int, default=20, help="search steps per epoch")
    ap.add_argument("--layers", type=int, default=5)
    ap.add_argument("--channels", type=int, default=8)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--train-epochs", type=int, default=2, help="from-scratch training of each found genotype")
    ap.add_argument("--name", default="partial_channels-mnist")
    args = ap.parse_args()
    env = header()
    from hwnas.config import TrainConfig
    from hwnas.spaces.genotype import Genotype
    from hwnas.train import train_network

    ks = [int(v) for v in args.ks.split(",")]
    seeds = [int(v) for v in args.seeds.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            for k in ks:
                row = search(k, seed, args, Path(tmp) / f"k{k}-s{seed}")
                row["load_average"] = os.getloadavg()[0]
                t0 = time.perf_counter()
                res = train_network(Genotype.parse(row["genotype"]),
                                    TrainConfig(dataset=args.dataset, epochs=args.train_epochs, layers=args.layers,
                                                channels=args.channels, batch_size=args.batch, seed=0))
                row.update(test_acc=res.test_acc, train_s=time.perf_counter() - t0)
                rows.append(row)
                print(f"K={k} seed {seed}: search {row['search_wall_s']:.0f} s (steps {row['search_train_s']:.0f} s), "
                      f"supernet val {row['supernet_val_acc']:.4f}, from scratch test {row['test_acc']:.4f}\n"
                      f"  {row['genotype']}", flush=True)
    summary = {}
    for k in ks:
        mine = [r for r in rows if r["k"] == k]
        summary[str(k)] = {key: statistics.mean(r[key] for r in mine)
                           for key in ("test_acc", "search_wall_s", "search_train_s", "supernet_val_acc")}
        print(f"# K={k}: mean test {summary[str(k)]['test_acc']:.4f} over {len(mine)} seed(s), search "
              f"{summary[str(k)]['search_wall_s']:.0f} s")
    save(args.name, {"environment": env, "config": vars(args), "rows": rows, "summary": summary})


if __name__ == "__main__":
    main()
