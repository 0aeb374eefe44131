"""Standalone runner of an hwnas profiling bundle: needs only onnxruntime and numpy.

Copied into a bundle as run.py by `hwnas profile bundle`. On the target device:

    python run.py                 # threads from bundle.json
    python run.py --threads 4

It times every ONNX op model in models/ (warm-up, then adaptive repeats, median/p10/p90 after
dropping slow outliers beyond Q3 + 3·IQR: the same rule as hwnas.latency.stats; chunks of models
timed in interleaved rounds, each a fresh session, as hwnas's profiler does) and appends one row
per model to results.csv after each chunk, so an interrupted run resumes. device.json records the
machine. Bring results.csv and device.json back and run `hwnas profile import DIR`.

This file must not import hwnas or torch: the target may have neither.
"""
import argparse
import csv
import json
import os
import platform
import time

import numpy as np
import onnxruntime as ort

HERE = os.path.dirname(os.path.abspath(__file__))
CHUNK = 64  # keys whose rounds are interleaved together (hwnas.latency.profiler.CHUNK)
RESULT_FIELDS = ["file", "p50_ms", "p10_ms", "p90_ms", "n", "mean_ms", "n_outliers"]


def summarise(samples):
    raw = np.asarray(samples, dtype=np.float64)
    kept = raw
    if raw.size >= 4:
        q1, q3 = np.percentile(raw, [25, 75])
        kept = raw[raw <= q3 + 3.0 * (q3 - q1)]
    p10, p50, p90 = np.percentile(kept, [10, 50, 90])
    return {"p50_ms": p50, "p10_ms": p10, "p90_ms": p90, "n": kept.size, "mean_ms": kept.mean(),
            "n_outliers": raw.size - kept.size}


def time_session(sess, feeds, timing):
    """Inputs and outputs bound once (IO binding), as hwnas's ORT backends time: a run is the session
    call and the kernels, not a copy of the output into a new numpy array."""
    binding = sess.io_binding()
    for name, x in feeds.items():
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(x, "cpu", 0))
    for out in sess.get_outputs():
        binding.bind_output(out.name, "cpu")

    def once():
        t0 = time.perf_counter_ns()
        sess.run_with_iobinding(binding)
        return (time.perf_counter_ns() - t0) / 1e6

    warm, start = [], time.perf_counter()
    while len(warm) < timing["warmup_runs"] or time.perf_counter() - start < timing["warmup_s"]:
        warm.append(once())
    per_run = float(np.median(warm)) / 1e3
    n = int(min(timing["max_runs"], max(timing["min_runs"], timing["budget_s"] / max(per_run, 1e-9))))
    return summarise([once() for _ in range(n)])


def combine_rounds(rounds):
    """One key from its rounds: the median of their p50 (p10, p90), all samples counted (hwnas.latency.stats)."""
    if len(rounds) == 1:
        return rounds[0]
    return {"p50_ms": float(np.median([r["p50_ms"] for r in rounds])),
            "p10_ms": float(np.median([r["p10_ms"] for r in rounds])),
            "p90_ms": float(np.median([r["p90_ms"] for r in rounds])), "n": sum(r["n"] for r in rounds),
            "mean_ms": float(np.mean([r["mean_ms"] for r in rounds])), "n_outliers": sum(r["n_outliers"] for r in rounds)}


def unsettled(timed, precision):
    """More than a quarter of the keys' round medians disagree beyond `precision` (interquartile range / median):
    another round of the chunk (hwnas.latency.stats.interleaved, UNSETTLED_SHARE)."""
    def spread(rounds):
        q1, q2, q3 = np.percentile([r["p50_ms"] for r in rounds], [25, 50, 75])
        return (q3 - q1) / q2 if len(rounds) > 1 and q2 > 0 else 0.0
    return np.mean([spread(rounds) > precision for rounds in timed]) > 0.25


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main():
    with open(os.path.join(HERE, "bundle.json")) as f:
        spec = json.load(f)
    ap = argparse.ArgumentParser(description="time the ONNX op models of an hwnas bundle")
    ap.add_argument("--threads", type=int, default=spec["threads"])
    args = ap.parse_args()
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, spec["graph_optimization_level"])
    so.log_severity_level = 3
    rng = np.random.default_rng(0)
    dev_path, out = os.path.join(HERE, "device.json"), os.path.join(HERE, "results.csv")
    done = set()
    if os.path.exists(out):
        with open(out) as f:
            done = {r["file"] for r in csv.DictReader(f)}
    # one session call that computes nothing: each op timed alone pays it, a network pays it once. Timed among each
    # chunk's models (as hwnas.latency.profiler does), its median over the chunks; a resumed run keeps the earlier ones
    overheads = []
    if done and os.path.exists(dev_path):
        with open(dev_path) as f:
            overheads = list(json.load(f).get("call_overhead_chunks_ms") or [])
    identity = (os.path.join("models", "identity.onnx"), {"x0": rng.standard_normal((1,)).astype(np.float32)})

    def write_device():
        with open(dev_path, "w") as f:
            json.dump({"device": cpu_name(), "platform": platform.platform(), "machine": platform.machine(),
                       "onnxruntime": ort.__version__, "threads": args.threads, "cpu_count": os.cpu_count(),
                       "call_overhead_ms": float(np.median(overheads)) if overheads else None,
                       "call_overhead_chunks_ms": overheads,
                       "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, f, indent=2)

    with open(os.path.join(HERE, "keys.csv")) as f:
        keys = list(csv.DictReader(f))
    new = not os.path.exists(out) or not done
    # as hwnas.latency.profiler: chunks of keys, each timed in interleaved rounds of a fresh session per key
    rounds = max(1, int(spec["timing"].get("rounds", 1)))
    per_round = dict(spec["timing"], budget_s=spec["timing"]["budget_s"] / rounds)
    extra, precision = int(spec["timing"].get("extra_rounds", 0)), float(spec["timing"].get("precision", 0.05))
    todo = [(i, key) for i, key in enumerate(keys, 1) if key["file"] not in done]
    if not todo and not overheads:  # nothing left to time it among: alone
        overheads.append(float(time_session(ort.InferenceSession(os.path.join(HERE, identity[0]), so,
                                                                 providers=["CPUExecutionProvider"]),
                                            identity[1], per_round)["p50_ms"]))
    write_device()
    with open(out, "a", newline="") as f:
        writer = csv.DictWriter(f, RESULT_FIELDS)
        if new:
            writer.writeheader()
        for start in range(0, len(todo), CHUNK):
            chunk = todo[start:start + CHUNK]
            items = []
            for _, key in chunk:
                shapes = [tuple(int(d) for d in s.split("x")) for s in key["input_shapes"].split(";")]
                items.append((key["file"], {f"x{j}": rng.standard_normal(s).astype(np.float32)
                                            for j, s in enumerate(shapes)}))
            mid = len(items) // 2
            items.insert(mid, identity)
            timed = [[] for _ in items]
            while len(timed[0]) < rounds or (len(timed[0]) < rounds + extra and unsettled(timed, precision)):
                for k, (file, feeds) in enumerate(items):
                    sess = ort.InferenceSession(os.path.join(HERE, file), so, providers=["CPUExecutionProvider"])
                    timed[k].append(time_session(sess, feeds, per_round))
            overheads.append(float(combine_rounds(timed.pop(mid))["p50_ms"]))
            write_device()
            for (i, key), per in zip(chunk, timed):
                row = combine_rounds(per)
                writer.writerow({"file": key["file"], **{k: f"{v:.6g}" for k, v in row.items()}})
                print(f"[{i}/{len(keys)}] {key['op']} {key['c_in']}->{key['c_out']} {key['h']}x{key['w']} "
                      f"s{key['stride']}: {row['p50_ms']:.4f} ms", flush=True)
            f.flush()


if __name__ == "__main__":
    main()
