"""One hypernet search as a user runs it, checked from outside (issue #10, items 1–2).

Runs `hwnas search … --hypernet H --out RUN --epochs E` and `hwnas pareto RUN --lambdas 8` as
subprocesses with only the options a user must give, then judges `pareto.csv` independently:

  - distinct genotypes, whether predicted latency (or params) is non-increasing in λ, and the ratio
    of the λ = Λ network's to the λ = 0 network's;
  - each distinct genotype trained from scratch at the search's size (`--train-epochs`), its test
    accuracy on the held-out split, and Kendall τ between pareto's inherited-weight accuracy and it;
  - with 3 or more seeds, leave-one-out: each seed's τ and the inherited accuracy's τ against the mean of
    the other seeds (how well one more scratch run ranks the front is the yardstick for one estimate).

    python benchmarks/pareto_rank.py --epochs 3                                  # MNIST, linear, mobile 28×28
    python benchmarks/pareto_rank.py --epochs 3 --hypernet mlp
    python benchmarks/pareto_rank.py --epochs 3 --cost params
    python benchmarks/pareto_rank.py --dataset digits --table profiles/darts-mobile-8x8.csv --epochs 10
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import header, save  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT.parent / "shared" / "data" / "mnist-t10k"


def hwnas(*args: str) -> float:
    t0 = time.perf_counter()
    print("$ hwnas " + " ".join(args), flush=True)
    subprocess.run(["hwnas", *args], check=True)
    return time.perf_counter() - t0


def finetune_sweep(run: Path, distinct: pd.DataFrame, scratch: list[float], steps: list[int]) -> list[dict]:
    """The inherited accuracy of each distinct network after k fine-tune steps (then BN recalibration),
    for each k, and its Kendall τ against the from-scratch accuracies."""
    import torch
    from scipy.stats import kendalltau

    from hwnas.search.inherit import InheritConfig, inherited_accuracy
    from hwnas.search.pareto import load_search
    from hwnas.spaces.genotype import Genotype

    search = load_search(run)
    out = []
    for k in steps:
        accs = []
        for lam, g in zip(distinct["lambda"], distinct["genotype"]):
            search._set_eval_lambda(torch.tensor([lam] * search.lam.n_targets))
            accs.append(inherited_accuracy(search, Genotype.parse(g), InheritConfig(steps=k))[1])
        tau = kendalltau(accs, scratch).statistic if len(accs) > 1 else float("nan")
        print(f"fine-tune {k} steps: {[round(a, 4) for a in accs]}  Kendall τ {tau:.3f}", flush=True)
        out.append({"steps": k, "val_acc": accs, "kendall_tau": tau})
    return out


def leave_one_out(seeds: np.ndarray, estimate: np.ndarray) -> list[dict]:
    """For each scratch seed s: Kendall τ of seed s, and of the estimate, against the mean of the *other* seeds.

    The matched comparison for item 2: a network's inherited accuracy is an estimate of its from-scratch accuracy,
    and so is one more training run from scratch. Against the same reference (the mean of the other seeds), how
    well one scratch run ranks the front is what any single, equally noisy estimate can be expected to reach."""
    from scipy.stats import kendalltau

    out = []
    for s in range(len(seeds)):
        rest = np.delete(seeds, s, axis=0).mean(axis=0)
        out.append({"seed_index": s, "seed_tau": float(kendalltau(seeds[s], rest).statistic),
                    "estimate_tau": float(kendalltau(estimate, rest).statistic)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default=f"idx:{MNIST}")
    ap.add_argument("--table", default=str(ROOT / "profiles" / "darts-mobile-28x28.csv"))
    ap.add_argument("--cost", default="latency", choices=["latency", "params", "flops"])
    ap.add_argument("--hypernet", default="linear", choices=["linear", "mlp"])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lambdas", type=int, default=8)
    ap.add_argument("--train-epochs", type=int, default=4, help="from-scratch training of each distinct genotype")
    ap.add_argument("--train-seeds", type=int, default=3,
                    help="seeds per from-scratch training; τ is taken against their mean, and the τ between two "
                         "seeds is reported as the reference's own noise ceiling")
    ap.add_argument("--reuse", action="store_true", help="reuse RUN/pareto.csv when it exists (rescoring only)")
    ap.add_argument("--scratch-from", type=Path, action="append", default=[],
                    help="a previous result JSON of this benchmark (repeatable): its from-scratch accuracies are "
                         "reused for the networks it trained (same genotype, seeds and epochs); only the others are "
                         "trained")
    ap.add_argument("--first-seed", type=int, default=0,
                    help="train scratch seeds FIRST … FIRST + train-seeds − 1 (to split the seeds between processes, "
                         "then combine them with --scratch-from)")
    ap.add_argument("--finetune-sweep", default="0,20,60,150",
                    help="fine-tune step counts at which to recompute the inherited accuracy and Kendall τ")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "bench")
    ap.add_argument("--name", default=None)
    ap.add_argument("--run", type=Path, default=None, help="the run directory (default RUNS/NAME)")
    args = ap.parse_args()
    env = header()
    name = args.name or f"pareto_rank-{'mnist' if 'mnist' in args.dataset else 'digits'}-{args.hypernet}-{args.cost}"
    run = args.run or args.runs / name
    cost = ["--table", args.table] if args.cost == "latency" else ["--cost", args.cost]
    times = {}
    if not (run / "checkpoint.pt").is_file():
        times["search_s"] = hwnas("search", "--dataset", args.dataset, *cost, "--hypernet", args.hypernet,
                                  "--out", str(run), "--epochs", str(args.epochs))
    if not (args.reuse and (run / "pareto.csv").is_file()):
        times["pareto_s"] = hwnas("pareto", str(run), "--lambdas", str(args.lambdas))
    frame = pd.read_csv(run / "pareto.csv")
    col = next((c for c in frame.columns if c.startswith("predicted_latency_ms[")), "params")
    cost_values = frame[col].to_numpy()
    from hwnas.spaces.genotype import Genotype, edge_ops

    # one row per different network (the same ops on the same edges listed in another order is one network)
    frame["network"] = [str(edge_ops(Genotype.parse(g))) for g in frame["genotype"]]
    distinct = frame.drop_duplicates("network")
    print(frame[["lambda", "val_acc", "params", col]].to_string())

    from scipy.stats import kendalltau

    from hwnas.train import TrainConfig, train_network

    cfg = json.loads((run / "config.json").read_text())
    per_seed = []                       # per_seed[s][i]: test accuracy of distinct network i trained with seed s
    known = {}                          # (network, seed) -> accuracy, from --scratch-from
    for path in args.scratch_from:
        old = json.loads(path.read_text())
        if int(old["scratch_epochs"]) != args.train_epochs:
            sys.exit(f"--scratch-from {path} trained {old['scratch_epochs']} epochs, not {args.train_epochs}")
        old_seeds = old.get("scratch_seeds", range(len(old["scratch_test_acc_per_seed"])))
        for seed, accs in zip(old_seeds, old["scratch_test_acc_per_seed"]):
            for g, a in zip(old["scratch_test_acc"], accs):
                known[(str(edge_ops(Genotype.parse(g))), seed)] = a
    t0 = time.perf_counter()
    seed_list = list(range(args.first_seed, args.first_seed + args.train_seeds))
    for seed in seed_list:
        accs = []
        for g in distinct["genotype"]:
            if (str(edge_ops(Genotype.parse(g))), seed) in known:
                accs.append(known[(str(edge_ops(Genotype.parse(g))), seed)])
                print(f"scratch seed {seed}: {accs[-1]:.4f} (from --scratch-from)", flush=True)
                continue
            res = train_network(Genotype.parse(g), TrainConfig(dataset=cfg["dataset"], epochs=args.train_epochs,
                                                               layers=cfg["layers"], channels=cfg["channels"],
                                                               batch_size=cfg["batch_size"], seed=seed))
            accs.append(res.test_acc)
            print(f"scratch seed {seed}: {res.test_acc:.4f}", flush=True)
        per_seed.append(accs)
    times["scratch_s"] = time.perf_counter() - t0
    seeds = np.asarray(per_seed).reshape(len(per_seed), len(distinct))
    scratch = seeds.mean(axis=0).tolist() if len(seeds) else []
    # the reference's own reproducibility: τ between the rankings two seeds give (the ceiling any estimate can reach)
    seed_taus = [kendalltau(seeds[a], seeds[b]).statistic
                 for a in range(len(seeds)) for b in range(a + 1, len(seeds))] if len(scratch) > 1 else []
    tau = kendalltau(distinct["val_acc"].to_numpy(), scratch).statistic if len(scratch) > 1 else float("nan")
    loo = leave_one_out(seeds, distinct["val_acc"].to_numpy()) if len(seeds) > 2 else []
    sweep = finetune_sweep(run, distinct, scratch, [int(k) for k in args.finetune_sweep.split(",") if k]) \
        if scratch else []
    result = {
        "env": env, "args": {k: str(v) for k, v in vars(args).items()}, "cost_column": col,
        "distinct_genotypes": int(len(distinct)), "all_valid": bool(frame["argmax_valid"].all()),
        "cost_non_increasing": bool((pd.Series(cost_values).diff().dropna() <= 1e-9).all()),
        "cost_ratio_end_to_start": float(cost_values[-1] / cost_values[0]),
        "lambda_max": json.loads((run / "lambda_max.json").read_text())["lambda_max"],
        "lambda_max_source": json.loads((run / "lambda_max.json").read_text())["lambda_max_source"],
        "rows": frame[["lambda", "val_acc", "relaxed_val_acc", "params", col, "genotype"]].to_dict("records"),
        "scratch_test_acc": dict(zip(distinct["genotype"], scratch)),
        "scratch_test_acc_per_seed": per_seed, "scratch_seeds": seed_list, "scratch_seed_std": seeds.std(axis=0, ddof=1).tolist() if len(seeds) > 1 else None,
        "scratch_epochs": args.train_epochs, "scratch_seed_pair_kendall_tau": seed_taus, "kendall_tau": tau,
        "leave_one_out": loo, "finetune_sweep": sweep, "times_s": times,
    }
    print(f"distinct {result['distinct_genotypes']}, non-increasing {result['cost_non_increasing']}, "
          f"end/start {result['cost_ratio_end_to_start']:.3f}, Kendall τ {tau:.3f} "
          f"(seed against seed: {', '.join(f'{t:.2f}' for t in seed_taus)})")
    for r in loo:
        print(f"against the mean of the seeds but #{r['seed_index']}: that seed τ {r['seed_tau']:.2f}, "
              f"inherited τ {r['estimate_tau']:.2f}")
    save(name, result)


if __name__ == "__main__":
    main()
