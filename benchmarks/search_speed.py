"""Milliseconds per DARTS search step and peak memory, per relaxation and gradient strategy.

Fixed config (issue #2): MNIST-sized input (28×28×1), 8 channels, 5 cells, batch 64.
Two implementations of the same algorithm are compared:
  reference  per-edge mixed ops, NCHW (the straightforward implementation)
  optimised  fused per-source cell execution, channels_last (hwnas's default)
Each configuration runs in its own process so that its peak resident memory is its own.

    python benchmarks/search_speed.py                      # CPU, and CUDA where available
    python benchmarks/search_speed.py --steps 3 --quick    # fewer configurations
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import header, save, summary  # noqa: E402

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist-t10k"
RELAXES = {"softmax": dict(kind="softmax"), "gumbel": dict(kind="gumbel"),
           "gumbel-hard": dict(kind="gumbel", hard=True), "sigmoid": dict(kind="sigmoid")}
GRADS = ("first", "second", "one-level")


def measure_one(spec: dict) -> dict:
    """Time `steps` search steps (after warm-up) of one configuration in this process."""
    from hwnas.search.loop import Search, SearchConfig
    from hwnas.search.relax import RelaxConfig

    optimised = spec["impl"] == "optimised"
    cfg = SearchConfig(dataset=spec["dataset"], layers=5, channels=8, batch_size=64, epochs=1,
                       relax=RelaxConfig(**RELAXES[spec["relax"]]), arch_grad=spec["grad"], device=spec["device"],
                       channels_last=optimised, fused=optimised)
    search = Search(cfg)
    device = search.device
    train, arch = iter(search.train_loader), iter(search.arch_loader) if search.arch_loader else None
    from hwnas.evaluation import RunningStats

    stats = RunningStats()
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for i in range(spec["warmup"] + spec["steps"]):
        xt, yt = next(train)
        xv, yv = next(arch) if arch is not None else (None, None)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        search.step(xt, yt, xv, yv, stats)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= spec["warmup"]:
            times.append(time.perf_counter() - t0)
    row = {**spec, **summary(times), "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        row["peak_cuda_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default=f"idx:{MNIST}")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--devices", default="cpu,cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="reference only for softmax/first order")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one JSON spec, print its row
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure_one(json.loads(args.one))))
        return

    env = header()
    specs = []
    for device in args.devices.split(","):
        for grad in GRADS:
            for relax in RELAXES:
                specs.append(dict(impl="optimised", relax=relax, grad=grad))
                if relax == "softmax" and (grad == "first" or not args.quick):
                    specs.append(dict(impl="reference", relax=relax, grad=grad))
        for s in specs:
            s.setdefault("device", device)
    rows = []
    print(f"{'device':6} {'grad':9} {'relax':11} {'impl':9} {'median ms':>10} {'p10':>8} {'p90':>8} {'peak MiB':>9}")
    for spec in specs:
        spec.update(dataset=args.dataset, steps=args.steps, warmup=args.warmup)
        out = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], capture_output=True, text=True)
        if out.returncode != 0:
            print(f"# {spec} failed: {out.stderr.strip().splitlines()[-1:]}")
            continue
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        mem = row.get("peak_cuda_mib", row["peak_rss_mib"])
        print(f"{row['device']:6} {row['grad']:9} {row['relax']:11} {row['impl']:9} {row['median_ms']:10.1f} "
              f"{row['p10_ms']:8.1f} {row['p90_ms']:8.1f} {mem:9.0f}", flush=True)
    for device in args.devices.split(","):
        for grad in GRADS:
            ref = [r for r in rows if (r["device"], r["grad"], r["relax"], r["impl"]) == (device, grad, "softmax", "reference")]
            opt = [r for r in rows if (r["device"], r["grad"], r["relax"], r["impl"]) == (device, grad, "softmax", "optimised")]
            if ref and opt:
                print(f"# {device} {grad}: optimised is {ref[0]['median_ms'] / opt[0]['median_ms']:.1f}x faster than reference")
    save(f"search_speed-{'-'.join(args.devices.split(','))}", {"environment": env, "config": {
        "input": "28x28x1", "channels": 8, "layers": 5, "batch": 64}, "rows": rows})


if __name__ == "__main__":
    main()
