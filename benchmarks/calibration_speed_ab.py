"""Does dividing out the machine's speed help `calibrate`? An A/B inside one hold-out run (issue #11).

`hwnas calibrate` re-times the table's costliest ops in every round of its networks and divides each round's
network timings by the machine's speed in that round (`hwnas.latency.calibrate`). Its report keeps each network's
undivided round medians (`unscaled_round_ms`) and the speeds, so the same calibration can be refitted each way — each round brought to the
median round's speed (what calibrate does), undivided (before), each round brought to the table's speed (the first
try) — with the same choice rule, and the stored predictions compared on the same held-out networks, timed
independently by `benchmarks/latency_holdout.py`. No new timing: every arm sees the same machine.

    python benchmarks/calibration_speed_ab.py benchmarks/results/latency_holdout-cpu-t1-32x32-speed.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import header, save  # noqa: E402


def common_mode(rounds: np.ndarray) -> np.ndarray:
    """Per round, the median over networks of (the network's time in that round / its median over rounds)."""
    return np.median(rounds / np.median(rounds, axis=1, keepdims=True), axis=0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("result", type=Path, help="a benchmarks/results/latency_holdout-*.json made since 2026-12-06")
    ap.add_argument("--name", default=None)
    args = ap.parse_args()
    env = header()
    from hwnas.latency.calibrate import fit_and_choose, metrics
    from hwnas.latency.table import LatencyTable, apply_correction
    from hwnas.spaces.genotype import Genotype

    result = json.loads(args.result.read_text())
    table = LatencyTable.load(result["table"])
    report = json.loads(Path(result["table"] + ".calibration.json").read_text())
    rows, cal = report["samples"], table.meta["calibration"]
    if "unscaled_round_ms" not in rows[0]:
        sys.exit(f"{args.result}: its calibration predates the machine-speed division (no unscaled_round_ms)")
    measured = np.array([n["measured_ms"] for n in result["networks"]])
    archs = [Genotype.parse(n["genotype"]) if "genotype" in n else n["arch"] for n in result["networks"]]
    out = {"env": env, "result": str(args.result), "machine_speed": (cal.get("machine_speed") or {}).get("per_round")}
    k = np.asarray(cal["machine_speed"]["per_round"])
    rounds = np.array([r["unscaled_round_ms"] for r in rows])          # (networks, rounds), undivided
    arms = {"each round at the median round's speed (calibrate now)": np.median(rounds / k, axis=1) * np.median(k),
            "undivided (before)": np.median(rounds, axis=1),
            "each round at the table's speed (first try)": np.median(rounds / k, axis=1),
            "each round at the networks' common speed": np.median(rounds / common_mode(rounds), axis=1),
            "undivided, the fastest round": np.min(rounds, axis=1),
            "each round at the median round's speed, the fastest round": np.min(rounds / k, axis=1) * np.median(k)}
    for label, y in arms.items():
        figs, _, chosen, corr = fit_and_choose([r["parts"] for r in rows], y, [r["features"] for r in rows],
                                            [r["sum_ms"] for r in rows], cal["folds"], cal["seed"])
        pred = [apply_correction(table.breakdown(a), corr, table.features(a)) if corr else table.predict(a, corrected=False)
                for a in archs]
        m = metrics(pred, measured)
        out[label] = {"chosen": chosen, "correction": corr, "held_out": m, "cv_mape_pct": figs[chosen]["mape_pct"]}
        print(f"{label}: {chosen} (CV {figs[chosen]['mape_pct']:.1f} %) → held out {100 * m['within_10pct']:.0f} % "
              f"within ±10 %, MAPE {m['mape_pct']:.1f} %, ρ {m['spearman']:.3f}")
    save(args.name or f"calibration_speed_ab-{args.result.stem.removeprefix('latency_holdout-')}", out)


if __name__ == "__main__":
    main()
