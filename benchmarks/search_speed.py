"""Milliseconds and peak memory per DARTS search step, per relaxation, gradient strategy and execution option.

Default config (issue #2): MNIST-sized input (28×28×1), 8 channels, 5 cells, batch 64.
Two implementations of the same algorithm are compared:
  reference  per-edge mixed ops, NCHW, float32 (the pt.darts-style execution)
  optimised  fused per-source cell execution; channels-last and bf16 autocast (AMP) as the device's
             defaults (hwnas.runtime: channels-last everywhere, AMP on CUDA only), or each
             combination that --amp and --channels-last list (one row each)
Each configuration runs in its own process, so that its peak resident memory (RSS) is its own; the
RSS just before the first step is recorded too (the step's share is the difference). On CUDA the
peak is `torch.cuda.max_memory_allocated` over the warm-up and timed steps, after
`reset_peak_memory_stats` at the end of set-up.

`--dataset synthetic:CxHxW` makes random images of that shape (10 classes), sized so that the
search split holds exactly warm-up + timed steps batches: the steps are then one search epoch
(`epoch_s`, without the epoch-end evaluation, as `epoch_seconds` in a run's metrics.csv).

    python benchmarks/search_speed.py                      # CPU, and CUDA where available
    python benchmarks/search_speed.py --steps 3 --quick    # fewer configurations
    # issue #13's GPU configuration (what benchmarks/gpu_check.sh runs): CIFAR-10-shaped synthetic
    # data, 8 cells, 16 channels, batch 64, AMP and channels-last on and off, beside the reference
    python benchmarks/search_speed.py --devices cuda --dataset synthetic:3x32x32 --layers 8 --channels 16 \\
        --grads first --relaxes softmax --amp on,off --channels-last on,off --steps 20 --warmup 3
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
from _machine import RESULTS, header, summary

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist-t10k"
RELAXES = {"softmax": {"kind": "softmax"}, "gumbel": {"kind": "gumbel"},
           "gumbel-hard": {"kind": "gumbel", "hard": True}, "sigmoid": {"kind": "sigmoid"}}
GRADS = ("first", "second", "one-level")
SWITCH = {"auto": None, "on": True, "off": False}  # --amp / --channels-last values → SearchConfig's field
SYNTHETIC_CLASSES = 10


def synthetic_shape(dataset: str) -> tuple[int, int, int] | None:
    """(C, H, W) of `synthetic:CxHxW`, None for any other dataset name."""
    if not dataset.startswith("synthetic:"):
        return None
    try:
        c, h, w = (int(v) for v in dataset.split(":", 1)[1].lower().split("x"))
    except ValueError:
        raise SystemExit(f"--dataset {dataset!r}: write synthetic:CxHxW, e.g. synthetic:3x32x32") from None
    return c, h, w


def synthetic_splits(shape: tuple[int, int, int], n_train: int, n_test: int = 256, seed: int = 0):
    """Random uint8 images and labels in hwnas.data's `Splits` form (no files, no download)."""
    from hwnas.data import DatasetInfo, Splits

    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n_train + n_test, *shape), generator=g, dtype=torch.uint8)
    y = torch.randint(0, SYNTHETIC_CLASSES, (n_train + n_test,), generator=g)
    c = shape[0]
    info = DatasetInfo(f"synthetic-{'x'.join(map(str, shape))}", *shape, SYNTHETIC_CLASSES, (0.5,) * c, (0.29,) * c)
    return Splits(info, x[:n_train], y[:n_train], x[n_train:], y[n_train:])


def rss_now_mib() -> float:
    """Current resident memory (Linux /proc; elsewhere the peak so far)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_one(spec: dict) -> dict:
    """Time `steps` search steps (after `warmup` steps) of one configuration in this process."""
    from hwnas.evaluation import RunningStats
    from hwnas.runtime import autocast_dtype, memory_format
    from hwnas.search import loop
    from hwnas.search.loop import Search, SearchConfig
    from hwnas.search.relax import RelaxConfig

    optimised = spec["impl"] == "optimised"
    shape = synthetic_shape(spec["dataset"])
    if shape is not None:  # one epoch of the search split = warm-up + timed steps
        splits = synthetic_splits(shape, 2 * spec["batch"] * (spec["warmup"] + spec["steps"]))
        loop.load_dataset = lambda *args, **kwargs: splits
    # the reference is the pt.darts-style execution: per-edge, NCHW, float32 on every device
    amp, cl = (spec.get("amp"), spec.get("channels_last")) if optimised else (False, False)
    cfg = SearchConfig(dataset=spec["dataset"], layers=spec["layers"], channels=spec["channels"],
                       batch_size=spec["batch"], epochs=1, relax=RelaxConfig(**RELAXES[spec["relax"]]),
                       arch_grad=spec["grad"], device=spec["device"], channels_last=cl, fused=optimised, amp=amp)
    search = Search(cfg)
    device = search.device
    train, arch = iter(search.train_loader), iter(search.arch_loader) if search.arch_loader else None
    stats = RunningStats()
    times = []
    row = {**spec, "device": str(device), "amp": autocast_dtype(device, amp) is not None,
           "channels_last": memory_format(device, cl) == torch.channels_last, "torch_threads": torch.get_num_threads(),
           "steps_per_epoch": search.steps_per_epoch(), "rss_before_steps_mib": rss_now_mib()}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        row["cuda_before_steps_mib"] = torch.cuda.memory_allocated(device) / 2**20
        torch.cuda.reset_peak_memory_stats(device)
    t_all = time.perf_counter()
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
    all_steps_s = time.perf_counter() - t_all
    row.update(summary(times))
    row["epoch_s"] = all_steps_s if spec["warmup"] + spec["steps"] == row["steps_per_epoch"] else None
    row["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    if device.type == "cuda":
        row["peak_cuda_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        row["peak_cuda_reserved_mib"] = torch.cuda.max_memory_reserved(device) / 2**20
        row["gpu"] = torch.cuda.get_device_name(device)
    return row


def _switches(text: str, option: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in values if v not in SWITCH]
    if bad or not values:
        raise SystemExit(f"{option} {text!r}: a comma-separated list of auto, on, off")
    return values


def build_specs(args) -> list[dict]:
    """One spec per configuration: optimised rows for every relaxation × gradient × --amp × --channels-last,
    reference rows (softmax, or all relaxations without --quick) beside them."""
    grads = [g for g in args.grads.split(",") if g]
    relaxes = [r for r in args.relaxes.split(",") if r]
    for name, given, known in (("--grads", grads, GRADS), ("--relaxes", relaxes, RELAXES)):
        if not given or any(v not in known for v in given):
            raise SystemExit(f"{name}: choose from {', '.join(known)}")
    common = {"dataset": args.dataset, "steps": args.steps, "warmup": args.warmup, "layers": args.layers,
              "channels": args.channels, "batch": args.batch}
    specs = []
    for device in args.devices.split(","):
        for grad in grads:
            for relax in relaxes:
                for amp in _switches(args.amp, "--amp"):
                    for cl in _switches(args.channels_last, "--channels-last"):
                        specs.append(dict(impl="optimised", relax=relax, grad=grad, device=device,
                                          amp_option=amp, cl_option=cl, amp=SWITCH[amp], channels_last=SWITCH[cl],
                                          **common))
                if not args.no_reference and relax == "softmax" and (grad == "first" or not args.quick):
                    specs.append(dict(impl="reference", relax=relax, grad=grad, device=device, **common))
    return specs


def run_spec(spec: dict, timeout: float | None) -> dict:
    """One configuration in a fresh process; a failure or a timeout is a row with an `error`."""
    try:
        out = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], capture_output=True, text=True,
                             timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {**spec, "error": f"timed out after {timeout:g} s"}
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or [f"exit status {out.returncode}"])[-1]
        return {**spec, "error": last}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_row(row: dict) -> None:
    if "error" in row:
        print(f"{row['device']:6} {row['grad']:9} {row['relax']:11} {row['impl']:9} FAILED: {row['error']}", flush=True)
        return
    step_mib = row["peak_rss_mib"] - row["rss_before_steps_mib"]
    print(f"{row['device']:6} {row['grad']:9} {row['relax']:11} {row['impl']:9} {'bf16' if row['amp'] else 'fp32':4} "
          f"{'CL' if row['channels_last'] else 'NCHW':4} {row['median_ms']:10.1f} {row['p10_ms']:8.1f} "
          f"{row['p90_ms']:8.1f} {_fmt(row['epoch_s'], '8.2f')} {row['peak_rss_mib']:8.0f} {step_mib:+7.0f} "
          f"{_fmt(row.get('peak_cuda_mib'), '9.0f')}", flush=True)


def speedups(rows: list[dict]) -> list[str]:
    """'optimised is N× faster than reference' for every optimised row that has a reference beside it."""
    ok = [r for r in rows if "error" not in r]
    lines = []
    for ref in (r for r in ok if r["impl"] == "reference"):
        for r in ok:
            if r["impl"] == "optimised" and (r["device"], r["grad"], r["relax"]) == (ref["device"], ref["grad"],
                                                                                      ref["relax"]):
                lines.append(f"# {r['device']} {r['grad']} {r['relax']}: optimised ({'bf16' if r['amp'] else 'fp32'}, "
                             f"{'channels-last' if r['channels_last'] else 'NCHW'}) is "
                             f"{ref['median_ms'] / r['median_ms']:.2f}x the reference's speed")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default=f"idx:{MNIST}", help="a hwnas dataset name, or synthetic:CxHxW")
    ap.add_argument("--layers", type=int, default=5, help="cells")
    ap.add_argument("--channels", type=int, default=8)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5, help="timed steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--devices", default="cpu,cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--grads", default=",".join(GRADS), help="comma-separated: first, second, one-level")
    ap.add_argument("--relaxes", default=",".join(RELAXES), help="comma-separated: " + ", ".join(RELAXES))
    ap.add_argument("--amp", default="auto", help="optimised rows: comma-separated auto/on/off (bf16 autocast)")
    ap.add_argument("--channels-last", default="auto", help="optimised rows: comma-separated auto/on/off")
    ap.add_argument("--quick", action="store_true", help="reference only for softmax/first order")
    ap.add_argument("--no-reference", action="store_true", help="optimised rows only")
    ap.add_argument("--timeout", type=float, default=None, help="seconds per configuration (its process is killed)")
    ap.add_argument("--out", type=Path, help="JSON to write (default benchmarks/results/search_speed-<devices>.json)")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one JSON spec, print its row
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(measure_one(json.loads(args.one))))
        return 0

    env = header()
    specs = build_specs(args)
    shape = synthetic_shape(args.dataset)
    print(f"# {args.dataset}, {args.layers} cells, {args.channels} channels, batch {args.batch}; "
          f"{args.warmup} warm-up + median of {args.steps} steps"
          + (" (= one epoch of the synthetic set)" if shape else ""))
    print(f"{'device':6} {'grad':9} {'relax':11} {'impl':9} {'amp':4} {'mem':4} {'median ms':>10} {'p10':>8} "
          f"{'p90':>8} {'epoch s':>8} {'RSS MiB':>8} {'step':>7} {'CUDA MiB':>9}")
    out = args.out or RESULTS / f"search_speed-{'-'.join(args.devices.split(','))}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    config = {"dataset": args.dataset, "input": "x".join(map(str, shape)) if shape else None, "channels": args.channels,
              "layers": args.layers, "batch": args.batch, "steps": args.steps, "warmup": args.warmup,
              "amp": args.amp, "channels_last": args.channels_last}
    rows = []
    for spec in specs:
        rows.append(run_spec(spec, args.timeout))
        print_row(rows[-1])
        # after every row: a run killed from outside (gpu_check.sh's timeout) keeps what it measured
        out.write_text(json.dumps({"environment": env, "config": config, "rows": rows}, indent=2) + "\n")
    for line in speedups(rows):
        print(line)
    print("# RSS MiB: the process's peak resident memory; step: its rise over the RSS before the first step; "
          "CUDA MiB: max allocated over the steps")
    print(f"# saved {out}")
    failed = [r for r in rows if "error" in r]
    if failed:
        print(f"# {len(failed)} of {len(rows)} configurations failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
