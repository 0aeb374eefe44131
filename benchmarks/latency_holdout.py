"""Does a fresh table predict what an independent timing loop measures? (issue #11, item 1–2)

As a user would: `hwnas profile` a fresh table, `hwnas calibrate` it, then `hwnas export` N held-out
random networks of the table's space (seeds the calibration never saw) and time each exported ONNX
file with a plain ONNX Runtime loop written here — not the table's code: one session per network
with the device's threads (1 intra-op, 1 inter-op for mobile), sequential execution, all graph
optimisations, batch of the table, 10 warm-up and 50 timed runs, median. The networks are timed
in R interleaved rounds (network 1, 2, …, N, then again), and the measured latency is the median
of the round medians. The noise floor is measured in the same run: the same network's median over
the even rounds against the odd rounds.

For `--device cpu` the independent loop times the PyTorch module in eager mode instead (the
table's backend): rebuilt from the genotype, or the exported pruned ResNet18 itself.

`--space resnet18` (the pruning space): `hwnas profile --space resnet18` (default 28x28, MNIST-like: 1
channel, 10 classes, the small 3×3 stem; batch 1 on every device, the batch `hwnas prune` needs), `hwnas
calibrate`, then N random *valid* gate sets (`GateSet.sample`, broken ones redrawn: a width fraction per
block, 0 removing the branch, and the three projection shortcuts kept or removed). Each is the real,
smaller network (`hwnas.spaces.gated_resnet.materialise` of torchvision's resnet18, freshly initialised
with seed 0: what a prune run exports), exported with `hwnas.export(module, ...)` — the public API;
`hwnas export` on the command line exports a gate set only from a prune run — which calls the same
`export_network` as the prune export; the prediction is the calibrated table's for the gate set's arch.

    python benchmarks/latency_holdout.py --device mobile --input-size 8x8
    python benchmarks/latency_holdout.py --device ort-cpu --threads 2 --input-size 28x28
    python benchmarks/latency_holdout.py --device mobile --table t.csv   # an existing (calibrated) table
    python benchmarks/latency_holdout.py --space resnet18 --device mobile
    python benchmarks/latency_holdout.py --space resnet18 --device ort-cpu --threads 1
    python benchmarks/latency_holdout.py --device mobile --name b --against results/a.json   # two tables agree?

Prints and saves: share within ±10 % and Spearman ρ of the prediction (calibrated, and the raw
sum), the noise floor, and each network's figures.
"""
from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import header, save  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# Per timed block of the independent loop, the median over its runs of CPU time / (wall time × threads). A block
# well below its network's own best block (over the rounds) was descheduled (another job on the cores) and its
# median measures the load too. Relative, not absolute: a 2-thread session on a small network leaves its second
# thread mostly idle, so on a quiet machine its share sits near 0.5 in every round (76 of 80 blocks were flagged
# by an absolute 0.8 on a quiet machine).
CPU_SHARE: list[float] = []
DISTURBED = 0.8


def relative_share(share: np.ndarray) -> np.ndarray:
    """(rounds, networks) CPU shares relative to each network's best round (one round: to the run's 90th
    percentile, the quiet machine's level)."""
    ref = share.max(axis=0, keepdims=True) if share.shape[0] > 1 else np.quantile(share, 0.9)
    return share / np.maximum(ref, 1e-9)


def hwnas(*args: str) -> None:
    print("$ hwnas " + " ".join(args), flush=True)
    subprocess.run(["hwnas", *args], check=True, stdout=subprocess.DEVNULL)


def timed_runs(call, runs: int, threads: int) -> float:
    """The median wall time (ms) of `runs` calls; the median CPU share of those calls goes to CPU_SHARE."""
    t, cpu = [], []
    for _ in range(runs):
        c0 = time.process_time()
        t0 = time.perf_counter()
        call()
        t.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    CPU_SHARE.append(float(np.median(np.array(cpu) / np.array(t))) / threads)
    return 1e3 * float(np.median(t))


def plain_session(path: Path, threads: int, spinning: bool = True):
    """An ONNX Runtime CPU session set up here, not by the table's code: `threads` intra-op threads, 1 inter-op,
    sequential, all graph optimisations (`spinning` False: pool threads sleep between calls)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not spinning:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ort_timer(path: Path, shape: tuple[int, ...], threads: int, warmup: int, runs: int):
    """A plain ONNX Runtime loop: returns a function that times `runs` calls and gives their median (ms)."""
    sess = plain_session(path, threads)
    feed = {sess.get_inputs()[0].name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}

    def timed() -> float:
        for _ in range(warmup):
            sess.run(None, feed)
        return timed_runs(lambda: sess.run(None, feed), runs, threads)

    return timed


def torch_timer(model, space, threads: int, warmup: int, runs: int):
    """The same loop for the PyTorch module `model` in eager mode (`--device cpu`)."""
    import torch

    model = model.eval()
    x = torch.randn(space.batch, space.in_channels, space.input_h, space.input_w)

    def timed() -> float:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            with torch.inference_mode():
                for _ in range(warmup):
                    model(x)
                return timed_runs(lambda: model(x), runs, threads)
        finally:
            torch.set_num_threads(before)

    return timed


def resnet18_gate_sets(n: int, seed: int) -> list:
    """`n` distinct random valid gate sets (every gate uniform over its choices; broken sets redrawn)."""
    import torch

    from hwnas.spaces.gated_resnet import GateSet

    gen, out = torch.Generator().manual_seed(seed), []
    while len(out) < n:
        g = GateSet.sample(gen)
        if g.is_valid() and g not in out:
            out.append(g)
    return out


def export_gate_set(gates, space, table_path: Path, onnx: Path):
    """The real pruned network of `gates` (torchvision resnet18 at `space`, seed-0 weights, materialised as a prune
    run exports it), exported, checked and re-measured through `hwnas.export`; returns (report, network)."""
    import torch

    import hwnas
    from hwnas.latency.resnet_keys import torchvision_resnet18
    from hwnas.spaces.gated_resnet import materialise

    print(f"$ hwnas.export(materialise(resnet18, GateSet({gates.describe()})), {onnx.name!r}, tables=[table])",
          flush=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = torchvision_resnet18(space).eval()
    net = materialise(model, gates)
    net.hwnas_arch, net.hwnas_input_shape = gates.arch(), (space.in_channels, space.input_h, space.input_w)
    return hwnas.export(net, onnx, tables=[table_path]).data, net


def figures(pred, meas) -> dict:
    from scipy.stats import spearmanr

    p, m = np.asarray(pred), np.asarray(meas)
    rel = np.abs(p - m) / m
    return {"within_10pct": float((rel <= 0.10).mean()), "mape_pct": float(100 * rel.mean()),
            "spearman": float(spearmanr(p, m).statistic)}


def agreement(old: dict, new: dict) -> dict:
    """Per held-out network, |a − b| / mean(a, b) between two runs' calibrated predictions, plain sums and
    independent timings: what a second table made the same way on the same machine changes (issue #11.2)."""
    key = "genotype" if "genotype" in new["networks"][0] else "gates"
    if [n[key] for n in old["networks"]] != [n[key] for n in new["networks"]]:
        sys.exit("--against: the two runs did not hold out the same networks (same --seed and space needed)")
    out = {}
    for field in ("predicted_ms", "raw_sum_ms", "measured_ms"):
        a = np.array([n[field] for n in old["networks"]])
        b = np.array([n[field] for n in new["networks"]])
        d = np.abs(a - b) / ((a + b) / 2)
        out[field] = {"median_pct": float(100 * np.median(d)), "max_pct": float(100 * d.max()),
                      "within_5pct": float((d <= 0.05).mean())}
    print("against " + "; ".join(f"{k}: median {v['median_pct']:.1f} %, max {v['max_pct']:.1f} %, "
                                 f"{100 * v['within_5pct']:.0f} % within 5 %" for k, v in out.items()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="mobile")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--space", default="darts", choices=["darts", "resnet18"])
    ap.add_argument("--input-size", default=None, help="default: 8x8 for darts, 28x28 for resnet18")
    ap.add_argument("--batch", type=int, default=None,
                    help="profile's --batch (default: darts: the device's default; resnet18: 1, as prune needs)")
    ap.add_argument("--channels", type=int, default=None, help="darts: profile's --channels (default: its own)")
    ap.add_argument("--layers", type=int, default=None, help="darts: profile's --layers (default: its own)")
    ap.add_argument("--table", type=Path, default=None, help="use this table instead of profiling a fresh one")
    ap.add_argument("--calibrate-samples", type=int, default=30)
    ap.add_argument("--networks", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=4, help="interleaved timing rounds (even/odd give the noise floor)")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--seed", type=int, default=1000, help="held-out networks' seed (calibrate uses 0)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/latency_holdout"))
    ap.add_argument("--name", default=None)
    ap.add_argument("--against", type=Path, default=None,
                    help="a result JSON of an earlier run of the same held-out networks (same --seed, device, space): "
                         "how far the two tables' predictions, plain sums and independent timings differ (#11.2)")
    args = ap.parse_args()
    if args.input_size is None:
        args.input_size = "28x28" if args.space == "resnet18" else "8x8"
    if args.batch is None and args.space == "resnet18":
        args.batch = 1
    env = header()
    from scipy.stats import spearmanr

    from hwnas.latency.calibrate import build_network, random_architecture
    from hwnas.latency.table import LatencyTable

    tag = f"{args.device}{'-t' + str(args.threads) if args.threads else ''}-{args.input_size}"
    if args.space != "darts":
        tag = f"{args.space}-{tag}"
    if args.channels or args.layers:
        tag += f"-c{args.channels or 'd'}l{args.layers or 'd'}"
    if args.table is not None:  # named after the table checked, not after options that did not make it
        tag = f"table-{args.table.stem}"
    work = args.work / tag
    work.mkdir(parents=True, exist_ok=True)
    times = {}
    table_path = args.table
    if table_path is None:
        table_path = work / f"{'darts-' if args.space == 'darts' else ''}{tag}-{time.strftime('%H%M%S')}.csv"
        t0 = time.perf_counter()
        hwnas("profile", "--device", args.device, "--space", args.space, "--input-size", args.input_size,
              *(["--threads", str(args.threads)] if args.threads else []),
              *(["--batch", str(args.batch)] if args.batch else []),
              *(["--channels", str(args.channels)] if args.channels else []),
              *(["--layers", str(args.layers)] if args.layers else []), "--out", str(table_path))
        times["profile_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        hwnas("calibrate", "--table", str(table_path), "--samples", str(args.calibrate_samples))
        times["calibrate_s"] = time.perf_counter() - t0
    table = LatencyTable.load(table_path)
    space, threads = table.space, int(table.meta["threads"])
    if space.space != args.space:
        sys.exit(f"{table_path} is a {space.space} table, not --space {args.space}")
    if space.space == "resnet18":
        nets = resnet18_gate_sets(args.networks, args.seed)
    else:
        rng = random.Random(args.seed)
        nets = [random_architecture(space, rng) for _ in range(args.networks)]
    timers, predicted, raw, reported = [], [], [], []
    t0 = time.perf_counter()
    for i, g in enumerate(nets):
        onnx = work / f"net{i}-{time.strftime('%H%M%S')}.onnx"
        if space.space == "resnet18":
            rep, model = export_gate_set(g, space, table_path, onnx)
            arch = g.arch()
        else:
            dataset = {(8, 8): "digits", (28, 28): "mnist"}.get((space.input_h, space.input_w), "cifar10")
            hwnas("export", "--genotype", str(g), "--table", str(table_path), "--out", str(onnx),
                  "--layers", str(space.layers), "--channels", str(space.channels), "--dataset", dataset)
            rep = json.loads(Path(str(onnx) + ".json").read_text())
            arch = g
            model = build_network(space, g) if table.backend == "cpu" else None
        predicted.append(next(iter(rep["predicted_latency_ms"].values())))
        raw.append(table.predict(arch, corrected=False))
        reported.append(rep.get("measured", {}).get("p50_ms"))
        shape = (space.batch, space.in_channels, space.input_h, space.input_w)
        timers.append(torch_timer(model, space, threads, args.warmup, args.runs) if table.backend == "cpu"
                      else ort_timer(onnx, shape, threads, args.warmup, args.runs))
    times["export_s"] = time.perf_counter() - t0
    # the machine's speed against the table's (its costliest ops re-timed by the table's own backend), just before
    # and just after the independent timing: a diagnostic only, the independent figures are not scaled by it
    from hwnas.latency.backends import make_backend
    from hwnas.latency.calibrate import machine_speed
    from hwnas.latency.measure import table_backend_config

    table_backend = make_backend(table_backend_config(table))
    speed_before = machine_speed(table, table_backend)
    CPU_SHARE.clear()
    from hwnas.latency.steal import StealMeter

    meter = StealMeter()   # the hypervisor's steal over the independent timing (% of the machine; Linux)
    rounds = np.array([[timer() for timer in timers] for _ in range(args.rounds)])  # (rounds, networks)
    stolen = meter.pct()
    speed_after = machine_speed(table, table_backend)
    share = np.array(CPU_SHARE).reshape(args.rounds, len(timers))
    rel = relative_share(share)
    measured = np.median(rounds, axis=0)
    even, odd = np.median(rounds[0::2], axis=0), np.median(rounds[1::2], axis=0)
    noise = np.abs(even - odd) / ((even + odd) / 2)
    result = {
        "env": env, "args": {k: str(v) for k, v in vars(args).items()}, "table": str(table_path),
        "table_meta": {k: table.meta.get(k) for k in ("device", "backend", "threads", "space", "settings")},
        "calibration": (table.meta.get("calibration") or {}).get("figures"),
        "chosen_correction": (table.meta.get("calibration") or {}).get("chosen"),
        "corrected": figures(predicted, measured), "raw_sum": figures(raw, measured),
        "export_report_vs_independent": figures(reported, measured) if all(reported) else None,
        "noise_floor": {"median_pct": float(100 * np.median(noise)), "p90_pct": float(100 * np.quantile(noise, 0.9)),
                        "within_10pct": float((noise <= 0.10).mean()),
                        # how well the measurement ranks the networks against itself: no prediction can be judged
                        # on a finer ranking than this (Spearman of the even rounds' medians against the odd rounds')
                        "spearman_even_odd": float(spearmanr(even, odd).statistic)},
        "cpu_share": {"median": float(np.median(share)), "min": float(share.min()),
                      "disturbed_blocks": int((rel < DISTURBED).sum()), "blocks": int(share.size),
                      "what": "median over a network's timed runs in one round of CPU time / (wall time x threads); below "
                              f"{DISTURBED} x the network's best round a typical run was descheduled and the timing "
                              "measures the machine's load"},
        "networks": [{**({"genotype": str(g)} if space.space == "darts" else {"gates": g.describe(), "arch": g.arch()}),
                      "predicted_ms": p, "raw_sum_ms": r, "export_report_ms": e,
                      "measured_ms": float(m), "round_ms": rounds[:, i].tolist(), "cpu_share": share[:, i].tolist()}
                     for i, (g, p, r, e, m) in enumerate(zip(nets, predicted, raw, reported, measured))],
        "steal_pct": {"independent_timing": stolen, "profile": table.meta.get("steal_pct"),
                      "calibration": (table.meta.get("calibration") or {}).get("steal_pct"),
                      "what": "share of the machine's CPU time the hypervisor gave elsewhere (/proc/stat steal)"},
        "machine_speed": {"calibration": ((table.meta.get("calibration") or {}).get("machine_speed") or {}).get("per_round"),
                          "before_timing": speed_before["per_round"], "after_timing": speed_after["per_round"],
                          "what": "per round, the table's costliest ops re-timed by its backend / their table figure"},
        "times_s": times,
    }
    if args.against is not None:
        result["against"] = agreement(json.loads(args.against.read_text()), result)
        result["against"]["file"] = str(args.against)
    c, r, n = result["corrected"], result["raw_sum"], result["noise_floor"]
    print(f"{tag}: calibrated ±10 % {100 * c['within_10pct']:.0f} %, ρ {c['spearman']:.3f}, MAPE {c['mape_pct']:.1f} % | "
          f"raw sum ±10 % {100 * r['within_10pct']:.0f} %, ρ {r['spearman']:.3f} | noise floor median "
          f"{n['median_pct']:.1f} %, p90 {n['p90_pct']:.1f} %, same net within 10 %: {100 * n['within_10pct']:.0f} %, "
          f"ρ even vs odd rounds {n['spearman_even_odd']:.3f}")
    ms = result["machine_speed"]
    print("machine speed against the table's (its costliest ops re-timed): "
          + "; ".join(f"{k} {', '.join(f'{v:.2f}' for v in ms[k])}" for k in ("calibration", "before_timing", "after_timing")
                      if ms[k]))
    st = result["steal_pct"]
    print("hypervisor steal (% of the machine): " + ", ".join(f"{k} {v:.1f}" for k, v in st.items()
                                                               if isinstance(v, float)))
    cs = result["cpu_share"]
    if cs["disturbed_blocks"]:
        print(f"WARNING: {cs['disturbed_blocks']} of {cs['blocks']} timed blocks ran with under {DISTURBED:.0%} of their "
              f"network's best round's CPU share (median share {cs['median']:.2f}): the machine was busy; these figures measure its load too")
    save(args.name or f"latency_holdout-{tag}", result)


if __name__ == "__main__":
    main()
