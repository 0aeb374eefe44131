"""Time ONNX files with a plain ONNX Runtime loop, independent of hwnas's own measurement (issue #12.1).

Every model gets its own session (1 intra-op, 1 inter-op thread, CPU provider, batch 1, random input). After 10
warm-up runs per session, a round times `--runs` (200) consecutive runs of each model and takes their median;
models are interleaved within a round and the order rotates between rounds; `--repeats` (3) rounds. A model's
figure is the median of its round medians. The noise floor: the first model is loaded a second time as its own
session ("<name>#2") and timed in the same rounds; the gap between the two is what timing alone moves a figure by
on this machine at this load. The load average is printed and stored before and after.

    python benchmarks/time_onnx.py intact.onnx a.onnx b.onnx [--name NAME]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import header, save


def time_rounds(paths: dict[str, Path], runs: int = 200, warmup: int = 10, repeats: int = 3,
                batch: int = 1) -> dict[str, list[float]]:
    """Each model's median over `runs` consecutive runs, per round: one session per model (1 intra-op, 1 inter-op
    thread), `warmup` runs each first, models interleaved within a round and the order rotated between rounds;
    a dynamic dimension of the input is `batch`."""
    import numpy as np
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    sessions = {k: ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"]) for k, p in paths.items()}
    feeds = {}
    for k, s in sessions.items():
        inp = s.get_inputs()[0]
        shape = [batch if not isinstance(d, int) else d for d in inp.shape]
        feeds[k] = {inp.name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
        for _ in range(warmup):
            s.run(None, feeds[k])
    names = list(paths)
    rounds: dict[str, list[float]] = {k: [] for k in names}
    for r in range(repeats):
        for k in names[r % len(names):] + names[: r % len(names)]:
            times = []
            for _ in range(runs):
                t0 = time.perf_counter()
                sessions[k].run(None, feeds[k])
                times.append((time.perf_counter() - t0) * 1000)
            rounds[k].append(statistics.median(times))
    return rounds


def time_models(paths: dict[str, Path], runs: int = 200, warmup: int = 10, repeats: int = 3) -> dict:
    rounds = time_rounds(paths, runs, warmup, repeats)
    return {k: {"median_ms": statistics.median(v), "round_medians_ms": v} for k, v in rounds.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", type=Path, help="ONNX files; the first is the reference (e.g. the intact one)")
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--name", default="time_onnx")
    args = ap.parse_args()
    env = header()
    load_before = os.getloadavg()
    paths = {p.stem: p for p in args.models}
    first = args.models[0].stem
    paths[f"{first}#2"] = args.models[0]
    res = time_models(paths, args.runs, args.warmup, args.repeats)
    load_after = os.getloadavg()
    ref = res[first]["median_ms"]
    noise = abs(res[f"{first}#2"]["median_ms"] - ref) / ref
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}; noise floor "
          f"(the first model twice) {100 * noise:.1f} %")
    print(f"{'model':<28} {'median ms':>10} {'× first':>8}  round medians")
    for k, v in res.items():
        print(f"{k:<28} {v['median_ms']:10.3f} {v['median_ms'] / ref:8.3f}  "
              f"{' '.join(f'{m:.3f}' for m in v['round_medians_ms'])}")
    save(args.name, {"machine": env, "models": {k: str(p) for k, p in paths.items()}, "runs": args.runs,
                     "warmup": args.warmup, "repeats": args.repeats, "threads": {"intra_op": 1, "inter_op": 1},
                     "load_average_before": load_before, "load_average_after": load_after,
                     "noise_floor": noise, "results": res})


if __name__ == "__main__":
    main()
