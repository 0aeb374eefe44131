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

`--partial-channels 2,4` adds optimised rows with PC-DARTS's partial channels (K = 1 is the plain fused row).

`--epoch N` measures the step as a user sees it instead (issue #13.3): the real `run_search` for one epoch of
20 steps on N MNIST digits from the idx dataset (default 2,560: a search split of 1,280 digits for w, i.e.
20 steps of 64, and 1,280 for α and the epoch's evaluation; written as a train/t10k IDX pair in a temporary
folder), timed from the start of the epoch to its `on_epoch_end` (training steps, evaluation, checkpoint,
metrics.csv, genotype.json) and divided by the steps; metrics.csv's own `epoch_seconds` (training steps only)
is recorded beside it. Rows: the per-edge reference, the fused default and fused + each --partial-channels
K (`--fused-eval-row`: also the fused default with the evaluation fused as well, as before it ran per edge),
each repetition a fresh process per row, rows interleaved, `--repeats` times; medians per row.

    python benchmarks/search_speed.py                      # CPU, and CUDA where available
    python benchmarks/search_speed.py --steps 3 --quick    # fewer configurations
    # issue #13's GPU configuration (what benchmarks/gpu_check.sh runs): CIFAR-10-shaped synthetic
    # data, 8 cells, 16 channels, batch 64, AMP and channels-last on and off, beside the reference
    python benchmarks/search_speed.py --devices cuda --dataset synthetic:3x32x32 --layers 8 --channels 16 \\
        --grads first --relaxes softmax --amp on,off --channels-last on,off --steps 20 --warmup 3
    # issue #13.3: user-seen step (one real epoch, evaluation and checkpoint included), PC-DARTS K = 2, 4
    OMP_NUM_THREADS=1 python benchmarks/search_speed.py --epoch 2560 --partial-channels 2,4 --repeats 3 --fused-eval-row
    # peak memory of one step with partial channels
    python benchmarks/search_speed.py --grads first --relaxes softmax --partial-channels 2,4 --steps 1 --warmup 1
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
PT_DARTS_STEP_S = 9.9  # issue #13.3: pt.darts's user-seen step at the --epoch configuration on the issue's machine
# ... where the per-edge reference's bare step measured 4.05 s: on another machine pt.darts is estimated as this
# multiple of the reference's bare step (metrics.csv's train time per step) measured in the same run
PT_DARTS_PER_REFERENCE_STEP = PT_DARTS_STEP_S / 4.05


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
                       arch_grad=spec["grad"], device=spec["device"], channels_last=cl, fused=optimised, amp=amp,
                       partial_channels=spec.get("partial", 1))
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
                        for k in _partials(args.partial_channels):
                            specs.append(dict(impl="optimised", relax=relax, grad=grad, device=device,
                                              amp_option=amp, cl_option=cl, amp=SWITCH[amp],
                                              channels_last=SWITCH[cl], partial=k, **common))
                if not args.no_reference and relax == "softmax" and (grad == "first" or not args.quick):
                    specs.append(dict(impl="reference", relax=relax, grad=grad, device=device, **common))
    return specs


def _partials(text: str) -> list[int]:
    """1 (the plain fused row) and every K of --partial-channels."""
    try:
        ks = [int(v) for v in text.split(",") if v.strip()] if text else []
    except ValueError:
        raise SystemExit(f"--partial-channels {text!r}: a comma-separated list of integers") from None
    return sorted({1, *ks})


def write_idx(path: Path, data: torch.Tensor) -> None:
    """An uncompressed IDX file (uint8): magic 0x08 (unsigned byte) and the rank, then big-endian sizes."""
    header = bytes([0, 0, 0x08, data.dim()]) + b"".join(int(n).to_bytes(4, "big") for n in data.shape)
    path.write_bytes(header + data.to(torch.uint8).contiguous().numpy().tobytes())


def subset_dataset(dataset: str, n: int, folder: Path) -> str:
    """The first `n` images of `dataset`'s training split as an `idx:` train pair (the rest, up to 512, as the
    t10k pair, which a search does not read): a search split of n/2 + n/2 digits."""
    from hwnas.data import load_dataset

    splits = load_dataset(dataset)
    x, y = torch.cat([splits.x_train, splits.x_test]), torch.cat([splits.y_train, splits.y_test])
    if len(x) < n + 1:
        raise SystemExit(f"--epoch {n}: {dataset} holds only {len(x)} images")
    folder.mkdir(parents=True, exist_ok=True)
    rest = slice(n, min(len(x), n + 512))
    for prefix, part in (("train", slice(0, n)), ("t10k", rest)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte", x[part, 0])
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", y[part])
    return f"idx:{folder}"


def measure_epoch(spec: dict) -> dict:
    """One search epoch through `run_search` (as `hwnas search` runs it), timed as its user sees it."""
    import tempfile

    import pandas as pd

    from hwnas import runtime
    from hwnas.search import loop
    from hwnas.search.loop import Search, SearchConfig, run_search
    from hwnas.search.relax import RelaxConfig
    from hwnas.spaces import supernet

    optimised = spec["impl"] == "optimised"
    supernet.FUSED_WITHOUT_GRAD = bool(spec.get("fused_eval"))  # the evaluation as it ran before (fused)
    amp, cl = (spec.get("amp"), spec.get("channels_last")) if optimised else (False, False)
    cfg = SearchConfig(dataset=spec["dataset"], layers=spec["layers"], channels=spec["channels"],
                       batch_size=spec["batch"], epochs=1, relax=RelaxConfig(**RELAXES[spec["relax"]]),
                       arch_grad=spec["grad"], device=spec["device"], channels_last=cl, fused=optimised, amp=amp,
                       partial_channels=spec.get("partial", 1), max_steps_per_epoch=spec["steps"])
    marks: dict[str, float] = {}
    run_epoch = Search.run_epoch

    def timed_epoch(self, on_step):
        marks["rss_before_epoch_mib"] = rss_now_mib()
        marks["start"] = time.perf_counter()
        return run_epoch(self, on_step)

    loop.Search.run_epoch = timed_epoch
    with tempfile.TemporaryDirectory() as tmp:
        run_search(cfg, Path(tmp) / "run", on_epoch_end=lambda row: marks.setdefault("end", time.perf_counter()))
        metrics = pd.read_csv(Path(tmp) / "run" / "metrics.csv")
    steps = int(metrics["steps"].iloc[0])
    wall = marks["end"] - marks["start"]
    train = float(metrics["epoch_seconds"].iloc[0])
    return {**spec, "steps_per_epoch": steps, "epoch_wall_s": wall, "user_step_s": wall / steps,
            "metrics_epoch_seconds": train, "metrics_step_s": train / steps, "eval_checkpoint_s": wall - train,
            "val_acc": float(metrics["val_acc"].iloc[0]), "torch_threads": torch.get_num_threads(),
            "rss_before_epoch_mib": marks["rss_before_epoch_mib"], "keep_freed_memory": runtime._kept,
            "minor_page_faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def epoch_specs(args, dataset: str) -> list[dict]:
    """The user-seen rows: per-edge reference, fused default, fused + each K of --partial-channels (softmax, first)."""
    common = {"dataset": dataset, "steps": 20, "layers": args.layers, "channels": args.channels,
              "batch": args.batch, "relax": "softmax", "grad": "first", "device": args.devices.split(",")[0],
              "mode": "epoch"}
    specs = [] if args.no_reference else [dict(impl="reference", partial=1, **common)]
    specs += [dict(impl="optimised", amp=None, channels_last=None, partial=k, **common)
              for k in _partials(args.partial_channels)]
    if args.fused_eval_row:  # before/after: the default with its evaluation fused too (as before it ran per edge)
        specs.insert(len(specs) - len(_partials(args.partial_channels)) + 1,
                     dict(impl="optimised", amp=None, channels_last=None, partial=1, fused_eval=True, **common))
    return specs


def epoch_name(row: dict) -> str:
    if row["impl"] == "reference":
        return "reference"
    if row.get("fused_eval"):
        return "fused, fused eval"
    return "fused" if row.get("partial", 1) == 1 else f"fused K={row['partial']}"


def paired_ratios(rows: list[dict]) -> dict[str, float]:
    """Per row, the median over repetitions of (the reference's user-seen step / the row's) within the same
    repetition: on a machine whose load drifts, steadier than the ratio of the medians."""
    import statistics

    by_rep: dict[int, dict[str, float]] = {}
    for r in rows:
        if "error" not in r:
            by_rep.setdefault(r["repeat"], {})[epoch_name(r)] = r["user_step_s"]
    names = {n for rep in by_rep.values() for n in rep}
    return {n: statistics.median(rep["reference"] / rep[n] for rep in by_rep.values() if n in rep and "reference" in rep)
            for n in names if any(n in rep and "reference" in rep for rep in by_rep.values())}


def epoch_main(args, env: dict) -> int:
    """--epoch N: interleaved repetitions of the user-seen rows, medians, ratios to pt.darts and the reference."""
    import os
    import statistics
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        dataset = subset_dataset(args.dataset, args.epoch, Path(tmp) / "data")
        specs = epoch_specs(args, dataset)
        print(f"# {args.epoch} digits of {args.dataset} ({args.epoch // 2} for w: 20 steps of {args.batch}), "
              f"{args.layers} cells, {args.channels} channels; one real epoch per process, {args.repeats} "
              f"interleaved repetitions; load average {os.getloadavg()[0]:.2f}")
        print(f"{'rep':>3} {'row':17} {'user s/step':>11} {'train s/step':>12} {'eval+ckpt s':>11} {'RSS MiB':>8}")
        rows = []
        for rep in range(args.repeats):
            for spec in specs:
                row = run_spec({**spec, "repeat": rep}, args.timeout)
                rows.append(row)
                if "error" in row:
                    print(f"{rep:3d} {epoch_name(spec):17} FAILED: {row['error']}", flush=True)
                    continue
                print(f"{rep:3d} {epoch_name(row):17} {row['user_step_s']:11.2f} {row['metrics_step_s']:12.2f} "
                      f"{row['eval_checkpoint_s']:11.1f} {row['peak_rss_mib']:8.0f}", flush=True)
        load_end = os.getloadavg()[0]
    med = {}
    for spec in specs:
        ok = [r for r in rows if "error" not in r and epoch_name(r) == epoch_name(spec)]
        if ok:
            med[epoch_name(spec)] = {k: statistics.median(r[k] for r in ok) for k in
                                     ("user_step_s", "metrics_step_s", "eval_checkpoint_s", "peak_rss_mib",
                                      "val_acc")} | {"n": len(ok)}
    for name, r in paired_ratios(rows).items():
        if name in med:
            med[name]["vs_reference_paired"] = r
    ref = med.get("reference", {}).get("user_step_s")
    ref_bare = med.get("reference", {}).get("metrics_step_s")
    pt_darts = PT_DARTS_PER_REFERENCE_STEP * ref_bare if ref_bare else PT_DARTS_STEP_S
    print(f"# medians (load average at the end {load_end:.2f}); issue #13.3 target: ≤ {pt_darts / 3:.2f} s per "
          f"user-seen step, 3x pt.darts's " + (f"{pt_darts:.1f} s estimated here ({PT_DARTS_PER_REFERENCE_STEP:.2f} x "
                                               f"the reference's bare {ref_bare:.2f} s step, the ratio on the issue's "
                                               f"machine)" if ref_bare else f"{PT_DARTS_STEP_S} s (the issue's machine)"))
    for name, m in med.items():
        m["vs_pt_darts"] = pt_darts / m["user_step_s"]
        m["vs_reference"] = ref / m["user_step_s"] if ref else None
        m["meets_target"] = m["user_step_s"] <= pt_darts / 3
        print(f"#   {name:17} {m['user_step_s']:.2f} s/step (train {m['metrics_step_s']:.2f}, eval+checkpoint "
              f"{m['eval_checkpoint_s']:.1f} s/epoch), {m['vs_pt_darts']:.2f}x pt.darts, "
              + (f"{m['vs_reference']:.2f}x the reference (paired per repetition {m['vs_reference_paired']:.2f}x), "
                 if ref else "")
              + f"peak RSS {m['peak_rss_mib']:.0f} MiB, target {'met' if m['meets_target'] else 'MISSED'}")
    out = args.out or RESULTS / "search_speed-cpu-epoch.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    config = {"dataset": args.dataset, "digits": args.epoch, "steps": 20, "layers": args.layers,
              "channels": args.channels, "batch": args.batch, "repeats": args.repeats,
              "pt_darts_step_s": pt_darts, "pt_darts_estimated_from_reference": bool(ref_bare),
              "load_average_end": load_end}
    out.write_text(json.dumps({"environment": env, "config": config, "rows": rows, "medians": med}, indent=2) + "\n")
    print(f"# saved {out}")
    return 1 if any("error" in r for r in rows) else 0


def run_spec(spec: dict, timeout: float | None) -> dict:
    """One configuration in a fresh process; a failure or a timeout is a row with an `error`."""
    import os

    # the reference stands for pt.darts, which runs with glibc's default allocator: hwnas's CPU entry points keep
    # freed memory for reuse instead (hwnas.runtime.keep_freed_memory), so the reference's process turns that off
    env = {**os.environ, **({"HWNAS_KEEP_FREED_MEMORY": "0"} if spec["impl"] == "reference" else {})}
    try:
        out = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], capture_output=True, text=True,
                             timeout=timeout, check=False, env=env)
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
    impl = row["impl"] if row.get("partial", 1) == 1 else f"K={row['partial']}"
    print(f"{row['device']:6} {row['grad']:9} {row['relax']:11} {impl:9} {'bf16' if row['amp'] else 'fp32':4} "
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
                pc = "" if r.get("partial", 1) == 1 else f", partial channels K={r['partial']}"
                lines.append(f"# {r['device']} {r['grad']} {r['relax']}: optimised ({'bf16' if r['amp'] else 'fp32'}, "
                             f"{'channels-last' if r['channels_last'] else 'NCHW'}{pc}) is "
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
    ap.add_argument("--partial-channels", default="", help="comma-separated K: also fused rows with PC-DARTS's "
                                                            "partial channels (--partial-channels K)")
    ap.add_argument("--epoch", type=int, default=0, metavar="N",
                    help="user-seen step: one real search epoch (20 steps) on N digits of --dataset; see above")
    ap.add_argument("--repeats", type=int, default=3, help="--epoch: interleaved repetitions (medians)")
    ap.add_argument("--fused-eval-row", action="store_true",
                    help="--epoch: also the fused default with its evaluation fused (as before: on the CPU it now "
                         "runs per edge without gradients)")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one JSON spec, print its row
    args = ap.parse_args(argv)
    if args.one:
        spec = json.loads(args.one)
        print(json.dumps(measure_epoch(spec) if spec.get("mode") == "epoch" else measure_one(spec)))
        return 0

    env = header()
    if args.epoch:
        return epoch_main(args, env)
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
