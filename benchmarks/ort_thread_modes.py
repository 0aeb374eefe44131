"""Is a multi-thread ONNX Runtime timing on this machine one number or several? (issue #11, ort-cpu 2 threads)

Times the given ONNX files (e.g. the held-out networks `latency_holdout.py` exported, kept in its work folder) in
R interleaved rounds, each round with a fresh session per file and per way of timing:

  - `run`:          a plain loop, `sess.run(None, feed)`, 10 warm-up and 50 timed calls, median;
  - `run, spin 0`:  the same with `session.intra_op.allow_spinning` = 0 (pool threads sleep between calls);
  - `binding`:      IO binding (inputs and outputs bound once), as the table's code runs;
  - `binding, spin 0`;
  - `hwnas measure`: `hwnas.latency.measure.measure_onnx_file` with the table's own rule (`--table`).

A machine whose timings are one number gives round medians within the noise floor of each other; one that
switches between modes (a 2-vCPU VM whose second thread is sometimes descheduled) gives rounds clustered at two
levels, in every way of timing alike. Prints per file and way: the median and the range over rounds, and the
ratio max/min; saves everything to results/NAME.json.

    python benchmarks/ort_thread_modes.py --table T.csv W/net0-*.onnx W/net1-*.onnx --threads 2 --rounds 3
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import header, save
from latency_holdout import plain_session


def plain(path: Path, threads: int, batch: int, spinning: bool, binding: bool, warmup: int = 10,
          runs: int = 50) -> float:
    import onnxruntime as ort

    sess = plain_session(path, threads, spinning)
    inp = sess.get_inputs()[0]
    x = np.random.default_rng(0).standard_normal([d if isinstance(d, int) else batch for d in inp.shape])
    x = x.astype(np.float32)
    if binding:
        bound = sess.io_binding()
        bound.bind_ortvalue_input(inp.name, ort.OrtValue.ortvalue_from_numpy(x, "cpu", 0))
        for out in sess.get_outputs():
            bound.bind_output(out.name, "cpu")

        def call():
            sess.run_with_iobinding(bound)
            bound.synchronize_outputs()
    else:
        def call():
            sess.run(None, {inp.name: x})
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("onnx", type=Path, nargs="+")
    ap.add_argument("--table", type=Path, required=True, help="the table whose timing rule `hwnas measure` uses")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--name", default="ort_thread_modes")
    args = ap.parse_args()
    env = header()
    from hwnas.latency.measure import measure_onnx_file, measurement
    from hwnas.latency.table import LatencyTable

    cfg, batch = measurement(LatencyTable.load(args.table), None, None, None)
    ways = {
        "run": lambda p: plain(p, args.threads, batch, True, False),
        "run, spin 0": lambda p: plain(p, args.threads, batch, False, False),
        "binding": lambda p: plain(p, args.threads, batch, True, True),
        "binding, spin 0": lambda p: plain(p, args.threads, batch, False, True),
        "hwnas measure": lambda p: measure_onnx_file(p, cfg, batch)["p50_ms"],
    }
    rounds = {w: [[] for _ in args.onnx] for w in ways}
    for r in range(args.rounds):
        for w, timed in ways.items():
            for i, path in enumerate(args.onnx):
                rounds[w][i].append(timed(path))
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    print(f"threads {args.threads}, batch {batch}; per file: median [min–max] over {args.rounds} rounds, ms")
    for w, per_file in rounds.items():
        print(f"{w:16s}" + "  ".join(f"{np.median(v):.3f} [{min(v):.3f}–{max(v):.3f}]" for v in per_file))
    extra = [1e3 * float(np.median(np.subtract(a, b))) for a, b in zip(rounds["run"], rounds["binding"])]
    print("run − binding, median over rounds (µs): " + ", ".join(f"{e:.1f}" for e in extra))
    spread = {w: [max(v) / min(v) for v in per_file] for w, per_file in rounds.items()}
    print("max/min over rounds: " + ", ".join(f"{w} {np.median(s):.2f}" for w, s in spread.items()))
    save(args.name, {"env": env, "args": {k: str(v) for k, v in vars(args).items()}, "batch": batch,
                     "threads": args.threads, "rounds_ms": rounds, "max_over_min": spread,
                     "run_minus_binding_us": extra})


if __name__ == "__main__":
    main()
