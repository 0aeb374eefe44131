"""One λ-hypernet search against K separate fixed-λ searches (issue #4's claim).

Same data, supernet, warm-up, epochs, steps and seed for every search. The hypernet run
estimates Λ (hwnas's default rule, recorded) after the warm-up; the separate runs then
search at λ_k = f_k·Λ for the same fractions f_k at which the hypernet is read off. All use
hwnas's defaults otherwise (softmax, first order, `none` excluded, automatic α learning rate).
Each found genotype is scored the same way:

  - predicted latency from the run's table (calibrated), params;
  - accuracy with the weights inherited from its own search's supernet, as `hwnas pareto` reports it;
  - `--train-epochs N`: test accuracy after training the discrete network from scratch.

It reports, per λ and averaged over seeds, the accuracy gap (points) and the latency ratio of the
hypernet's network to the separate search's, and the time of one hypernet search against the K
separate ones.

    python benchmarks/hypernet_vs_separate.py --dataset digits --table profiles/darts-mobile-8x8.csv
    python benchmarks/hypernet_vs_separate.py --epochs 2 --max-steps 5 --fractions 0 1 --seeds 0   # smoke
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


def score(search, genotype, table, train_epochs: int, seed: int) -> dict:
    from hwnas.search.inherit import inherited_accuracy
    from hwnas.search.pareto import network_size

    _, val_acc = inherited_accuracy(search, genotype)  # what `hwnas pareto` reports as val_acc
    params, _ = network_size(search, genotype)
    row = {"genotype": str(genotype), "predicted_latency_ms": table.predict(genotype), "params": params,
           "inherited_val_acc": val_acc}
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


def reused_separate(args, seed: int, lmax: float) -> dict | None:
    """The fixed-λ rows and total time of `seed` in --separate-from's result, if it searched at this Λ
    with the same settings (fractions, epochs, training); else None."""
    if not args.separate_from:
        return None
    old = json.loads(Path(args.separate_from).read_text())
    same = ("dataset", "table", "fractions", "epochs", "warmup_epochs", "max_steps", "channels", "layers", "relax",
            "a_lr", "train_epochs")
    if any(old["args"].get(k) != getattr(args, k) for k in same):
        return None
    runs = [r for r in old["runs"] if r["seed"] == seed and abs(r["lambda_max"]["lambda_max"][0] - lmax) <= 1e-6 * lmax]
    if not runs:
        return None
    rows = [r for r in old["rows"] if r["seed"] == seed and r["method"] == "separate"]
    return {"rows": rows, "seconds": runs[0]["separate_seconds"]} if len(rows) == len(args.fractions) else None


def one_seed(args, seed: int, table) -> tuple[list[dict], dict]:
    from hwnas.search.control import ControlConfig
    from hwnas.search.loop import Search, SearchConfig
    from hwnas.search.relax import RelaxConfig

    torch.manual_seed(seed)
    relax = RelaxConfig(kind="gumbel", hard=True) if args.relax == "gumbel-hard" else RelaxConfig(kind="softmax")
    base = SearchConfig(dataset=args.dataset, layers=args.layers, channels=args.channels, epochs=args.epochs,
                        seed=seed, relax=relax, max_steps_per_epoch=args.max_steps, a_lr=args.a_lr)
    control = ControlConfig(tables=(args.table,), hypernet=args.hypernet, warmup_epochs=args.warmup_epochs,
                            sampling=args.lambda_sampling)
    if args.lambda_zero_share is not None:  # the fixed-λ searches do not read it
        control = replace(control, zero_share=args.lambda_zero_share)
    # One hypernet search.
    t0 = time.perf_counter()
    hyper = Search(replace(base, control=control))
    hyper.warmup_and_estimate_lambda_max()   # Λ is estimated when the λ = 0 phase ends, inside the epochs
    run_epochs(hyper, f"seed {seed} hypernet")
    hyper_seconds = time.perf_counter() - t0
    record = hyper.lambda_record
    lmax = float(record["lambda_max"][0])
    print(f"# seed {seed}: Λ = {lmax:.4g} ({record['lambda_max_source'][:50]}…), hypernet search {hyper_seconds:.0f} s",
          flush=True)
    rows = []
    for f in args.fractions:
        g = hyper.genotype(torch.tensor([f * lmax]))
        rows.append({"seed": seed, "method": "hypernet", "fraction": f, "lambda": f * lmax,
                     **score(hyper, g, table, args.train_epochs, seed)})
    # K separate fixed-λ searches at the hypernet's Λ, each with its own warm-up of the same length.
    # They do not depend on the hypernet: --separate-from reuses a previous run's when its Λ is this one's.
    old = reused_separate(args, seed, lmax)
    if old is not None:
        print(f"# seed {seed}: the {len(old['rows'])} separate searches reused from {args.separate_from} (same Λ)")
        return rows + old["rows"], {"seed": seed, "zero_share": control.zero_share, "lambda_max": record,
                                    "hypernet_seconds": hyper_seconds, "separate_seconds": old["seconds"],
                                    "separate_reused_from": args.separate_from}
    separate_seconds = []
    for f in args.fractions:
        t0 = time.perf_counter()
        s = Search(replace(base, control=replace(control, hypernet="none", lam=f * lmax)))
        s.warmup(args.warmup_epochs)
        run_epochs(s, f"seed {seed} λ={f:g}·Λ")
        separate_seconds.append(time.perf_counter() - t0)
        rows.append({"seed": seed, "method": "separate", "fraction": f, "lambda": f * lmax,
                     "search_seconds": separate_seconds[-1], **score(s, s.genotype(), table, args.train_epochs, seed)})
    return rows, {"seed": seed, "zero_share": control.zero_share, "lambda_max": record,
                  "hypernet_seconds": hyper_seconds, "separate_seconds": sum(separate_seconds)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default=f"idx:{MNIST}")
    ap.add_argument("--table", default=str(ROOT / "profiles" / "darts-mobile-28x28.csv"))
    ap.add_argument("--hypernet", default="linear", choices=("linear", "mlp"))
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--warmup-epochs", type=int, default=5)
    ap.add_argument("--max-steps", type=int, default=None, help="cap on steps per epoch")
    ap.add_argument("--channels", type=int, default=8)
    ap.add_argument("--layers", type=int, default=5)
    ap.add_argument("--relax", default="softmax", choices=("softmax", "gumbel-hard"))
    ap.add_argument("--a-lr", type=float, default=None, help="α learning rate (default: hwnas's automatic one)")
    ap.add_argument("--train-epochs", type=int, default=10, help="train each found network from scratch (0: skip)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--lambda-sampling", default="uniform", choices=("uniform", "log-uniform"))
    ap.add_argument("--lambda-zero-share", type=float, default=None,
                    help="the hypernet search's first share of steps at λ = 0 (default: hwnas's)")
    ap.add_argument("--name", default="hypernet_vs_separate")
    ap.add_argument("--separate-from", default=None, metavar="JSON",
                    help="reuse the fixed-λ searches of a previous result where a seed's Λ and the settings match")
    ap.add_argument("--combine", nargs="+", default=None, metavar="JSON",
                    help="no search: report the seeds of several results of this script (e.g. one per process) as one")
    args = ap.parse_args()
    if args.combine:
        return combine(args)

    from hwnas.latency.table import LatencyTable

    env = header()
    table = LatencyTable.load(args.table)
    print(f"# {args.dataset}: supernet C={args.channels} L={args.layers}, {args.relax}, {args.warmup_epochs} warm-up + "
          f"{args.epochs} epochs, fractions {args.fractions}, seeds {args.seeds}")
    rows, runs = [], []
    for seed in args.seeds:
        r, info = one_seed(args, seed, table)
        rows += r
        runs.append(info)

    report(args, env, rows, runs)


def summarise(rows: list[dict], fractions: list[float], acc: str) -> list[dict]:
    """Per fraction, over seeds: means, the accuracy gap (points) with its seed-to-seed sd, the latency ratio."""
    out = []
    for f in fractions:
        h = sorted((r for r in rows if r["method"] == "hypernet" and r["fraction"] == f), key=lambda r: r["seed"])
        p = sorted((r for r in rows if r["method"] == "separate" and r["fraction"] == f), key=lambda r: r["seed"])
        gaps = [100 * (a[acc] - b[acc]) for a, b in zip(h, p)]
        ratios = [a["predicted_latency_ms"] / b["predicted_latency_ms"] for a, b in zip(h, p)]
        out.append({
            "fraction": f,
            "hypernet_acc_mean": float(np.mean([r[acc] for r in h])), "separate_acc_mean": float(np.mean([r[acc] for r in p])),
            "acc_gap_points": float(np.mean(gaps)), "acc_gap_sd_points": float(np.std(gaps, ddof=1)) if len(gaps) > 1 else None,
            "hypernet_latency_ms_mean": float(np.mean([r["predicted_latency_ms"] for r in h])),
            "separate_latency_ms_mean": float(np.mean([r["predicted_latency_ms"] for r in p])),
            "latency_ratio_mean": float(np.mean(ratios)), "latency_ratios": ratios,
        })
    return out


def combine(args) -> None:
    """One report from per-seed results run in parallel processes (same settings, distinct seeds)."""
    parts = [json.loads(Path(p).read_text()) for p in args.combine]
    first = parts[0]["args"]
    for p, part in zip(args.combine, parts):
        per_part = ("seeds", "name", "separate_from")
        differ = [k for k, v in first.items() if k not in per_part and part["args"].get(k) != v]
        if differ:
            raise SystemExit(f"{p}: settings differ from {args.combine[0]}'s ({', '.join(differ)})")
    merged = argparse.Namespace(**{**first, "seeds": [s for part in parts for s in part["args"]["seeds"]],
                                   "name": args.name, "combined_from": args.combine,
                                   "separate_from": [part["args"].get("separate_from") for part in parts]})
    report(merged, parts[0]["env"], [r for part in parts for r in part["rows"]], [r for part in parts for r in part["runs"]])


def report(args, env: dict, rows: list[dict], runs: list[dict]) -> None:
    acc = "trained_test_acc" if args.train_epochs > 0 else "inherited_val_acc"
    per_fraction = summarise(rows, args.fractions, acc)
    time_ratio = sum(r["hypernet_seconds"] for r in runs) / sum(r["separate_seconds"] for r in runs)
    print(f"\n{'λ/Λ':>5} {'hyper acc':>9} {'sep acc':>8} {'gap pts':>8} {'hyper ms':>9} {'sep ms':>8} {'ratio':>6}  ({acc}, mean of {len(runs)} seeds)")
    for q in per_fraction:
        print(f"{q['fraction']:5.2f} {q['hypernet_acc_mean']:9.4f} {q['separate_acc_mean']:8.4f} {q['acc_gap_points']:8.2f} "
              f"{q['hypernet_latency_ms_mean']:9.4f} {q['separate_latency_ms_mean']:8.4f} {q['latency_ratio_mean']:6.2f}")
    print(f"# time: hypernet / separate searches = {time_ratio:.3f}")
    save(args.name, {"env": env, "args": vars(args), "accuracy": acc, "per_fraction": per_fraction,
                     "time_ratio": time_ratio, "runs": runs, "rows": rows})


if __name__ == "__main__":
    main()
