"""Seconds to build a full DARTS-space lookup table, per backend (issue #3: minutes, not hours, on 2 cores).

Default space: the search default (digits 8×8, 8 channels, 5 cells, batch 64; mobile
backends use batch 1 by definition). Each table is built from scratch in a temporary
folder, with the default timing (0.25 s of timed runs per key) and the default exporter
(dynamo), exactly as `hwnas profile` builds it.

    python benchmarks/profile_cost.py                                  # cpu, ort-cpu, mobile, mobile-int8
    python benchmarks/profile_cost.py --input-size 32x32 --channels 16 --layers 8 --in-channels 3
    python benchmarks/profile_cost.py --quick                          # tiny space, smoke test only
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import header, save  # noqa: E402


def main() -> None:
    from hwnas.latency.backends import BackendConfig, resolve
    from hwnas.latency.profiler import ProfileConfig, profile
    from hwnas.latency.space import SpaceConfig, parse_input_size
    from hwnas.latency.stats import TimingConfig

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", default="cpu,ort-cpu,mobile,mobile-int8")
    ap.add_argument("--input-size", default="8x8")
    ap.add_argument("--in-channels", type=int, default=1)
    ap.add_argument("--channels", type=int, default=8)
    ap.add_argument("--layers", type=int, default=5)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None, help="default: all cores (mobile: 1)")
    ap.add_argument("--exporter", default="dynamo")
    ap.add_argument("--budget", type=float, default=0.25)
    ap.add_argument("--quick", action="store_true", help="tiny space (4 channels, 3 cells, batch 2, budget 0.01 s)")
    args = ap.parse_args()
    env = header()
    if args.quick:
        args.channels, args.layers, args.batch, args.budget = 4, 3, 2, 0.01
    h, w = parse_input_size(args.input_size)
    results = []
    for name in args.backends.split(","):
        mobile = name.startswith("mobile")
        threads, batch = resolve(name, 1 if mobile else args.threads, 1 if mobile else args.batch)
        space = SpaceConfig(input_h=h, input_w=w, in_channels=args.in_channels, channels=args.channels,
                            layers=args.layers, batch=batch)
        cfg = ProfileConfig(space, BackendConfig(name, threads, exporter=args.exporter,
                                                 timing=TimingConfig(budget_s=args.budget)))
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            table = profile(cfg, Path(tmp) / "t.csv")
            seconds = time.perf_counter() - t0
        row = {"backend": name, "threads": threads, "batch": batch, "keys": len(table), "seconds": seconds,
               "seconds_per_key": seconds / len(table)}
        results.append(row)
        print(f"{name:12s} threads {threads} batch {batch:3d}: {len(table)} keys in {seconds:7.1f} s "
              f"({row['seconds_per_key']:.2f} s/key)", flush=True)
    save("profile_cost" + ("_quick" if args.quick else f"_{h}x{w}"),
         {"env": env, "args": vars(args), "results": results})


if __name__ == "__main__":
    main()
