"""Ship a table that `latency_holdout.py` profiled, calibrated and checked into `profiles/` (issue #11.7).

    python benchmarks/ship_profile.py benchmarks/results/latency_holdout-mobile-8x8.json profiles/darts-mobile-8x8.csv

Copies the holdout run's table with its sidecar and calibration files (plot, figures) to DEST, and writes into
DEST's sidecar what the held-out check measured: the share of held-out networks within ±10 %, Spearman and
MAPE of the calibrated prediction and of the plain sum, the noise floor of the same run, how many networks,
how they were timed, and the result file. An existing DEST is replaced only with --replace (the old table is
what the repository shipped: replacing it is a decision, not an accident).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

SUFFIXES = ("", ".json", ".calibration.json", ".calibration.png")


def holdout_record(result: dict, result_path: Path) -> dict:
    args = result["args"]
    return {
        "what": (f"{len(result['networks'])} random networks the calibration never saw, each exported by `hwnas export` "
                 f"and timed by a plain timing loop that is not the table's code ({args['warmup']} warm-up and "
                 f"{args['runs']} timed runs, median, {args['rounds']} interleaved rounds, median of rounds); the noise "
                 f"floor is the same network's median over even rounds against odd rounds, in the same run"),
        "networks": len(result["networks"]),
        "calibrated": result["corrected"],
        "plain_sum": result["raw_sum"],
        "chosen_correction": result["chosen_correction"],
        "noise_floor": result["noise_floor"],
        "export_report_vs_independent": result.get("export_report_vs_independent"),
        "result_file": str(result_path),
        "command": "python benchmarks/latency_holdout.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in args.items()
            if v not in ("None", None) and k in ("device", "threads", "space", "input_size", "batch", "channels",
                                                 "layers", "calibrate_samples", "networks")),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("result", type=Path, help="a benchmarks/results/latency_holdout-*.json")
    ap.add_argument("dest", type=Path, help="the table to write, e.g. profiles/darts-mobile-8x8.csv")
    ap.add_argument("--replace", action="store_true", help="replace an existing DEST and its sidecar files")
    args = ap.parse_args()
    result = json.loads(args.result.read_text())
    src = Path(result["table"])
    if not src.exists():
        sys.exit(f"the holdout run's table {src} is gone; run latency_holdout.py again")
    if args.dest.exists() and not args.replace:
        sys.exit(f"{args.dest} exists; give --replace to replace it")
    for suffix in SUFFIXES:
        s = Path(str(src) + suffix)
        if s.exists():
            shutil.copyfile(s, Path(str(args.dest) + suffix))
    sidecar = Path(str(args.dest) + ".json")
    meta = json.loads(sidecar.read_text())
    meta["holdout"] = holdout_record(result, args.result)
    sidecar.write_text(json.dumps(meta, indent=2) + "\n")
    c, n = result["corrected"], result["noise_floor"]
    print(f"{args.dest}: held out {100 * c['within_10pct']:.0f} % within ±10 %, ρ {c['spearman']:.3f}, MAPE "
          f"{c['mape_pct']:.1f} %; noise floor median {n['median_pct']:.1f} %")


if __name__ == "__main__":
    main()
