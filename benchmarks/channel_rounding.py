"""What rounding kept channels to a multiple of N changes on ort-cpu (issue #12.5): pruned ResNet18s at 28×28
(1 channel, 10 classes, MNIST-like; torchvision's network with the small stem, random weights: time does not
depend on the values), exported as `hwnas export` writes them and timed with a plain ONNX Runtime loop.

Two families of networks:

- free: per-block inner widths drawn uniformly from [W/8, W] (what a per-channel pruner such as Torch-Pruning
  gives: 45, 117, ...), each also rounded to the nearest multiple of 8 and of 16 (at least N);
- hwnas: gate sets of `hwnas prune` (quarter widths, already multiples of 16: N = 8 and 16 give the same network,
  checked here), each also with `--channel-multiple 32` and `64` (`round_gates`).

Timing: one ORT session per model (1 intra-op, 1 inter-op thread, CPU provider, default graph optimisation),
random input, batch 1 and batch 64 in turn. After warm-up, a round times `runs` consecutive runs of each model and
takes their median; models are interleaved and the order rotates between rounds; `repeats` rounds. A comparison
(rounded / unrounded) is the median over rounds of the ratio of the two round medians; the noise floor is the
same comparison between the first model and a second session of the same file ("#2"). FLOPs and parameters of
each network are stored beside its times.

    OMP_NUM_THREADS=1 python benchmarks/channel_rounding.py [--repeats 5] [--runs1 100] [--runs64 4]
"""
from __future__ import annotations

import argparse
import copy
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import header, save
from time_onnx import time_rounds

SHAPE = (1, 28, 28)
HWNAS_GATES = {   # from results/prune_defaults_mnist.json's pareto (the MNIST run), and one with quarter widths
    "mnist-a": "1 0.5 0.5 0.75 1 0.5 0 0 | 1 1 1",
    "mnist-b": "0.5 0 1 0 0.5 0.5 0.5 0.5 | 1 1 1",
    "quarters": "0.25 0.75 0.25 0.75 0.25 0.75 0.25 0.75 | 1 1 1",
}


def parse_gates(text: str):
    from hwnas.spaces.gated_resnet import GateSet

    fr, sc = text.split("|")
    return GateSet(tuple(float(f) for f in fr.split()), tuple(bool(int(s)) for s in sc.split()))


def round_width(k: int, n: int, width: int) -> int:
    from hwnas.spaces.gated_resnet import round_channels

    return min(width, round_channels(k, n))


def slice_inner(model, widths: list[int]):
    """A copy of `model` with each block's inner channels (conv1 out, bn1, conv2 in) cut to `widths` (> 0)."""
    import torch
    from torch import nn

    from hwnas.spaces.gated_resnet import BLOCKS

    net = copy.deepcopy(model).eval()
    with torch.no_grad():
        for name, k in zip(BLOCKS, widths):
            blk = net.get_submodule(name)
            c1, b1, c2 = blk.conv1, blk.bn1, blk.conv2
            n1 = nn.Conv2d(c1.in_channels, k, 3, c1.stride, 1, bias=False)
            n1.weight.copy_(c1.weight[:k])
            nb = nn.BatchNorm2d(k)
            for a in ("weight", "bias", "running_mean", "running_var"):
                getattr(nb, a).copy_(getattr(b1, a)[:k])
            n2 = nn.Conv2d(k, c2.out_channels, 3, 1, 1, bias=False)
            n2.weight.copy_(c2.weight[:, :k])
            blk.conv1, blk.bn1, blk.conv2 = n1, nb, n2
    return net.eval()


def networks(seeds: int) -> tuple[dict, list[tuple[str, str, str]]]:
    """{name: (network, kept inner channels)} and the comparisons (rounded, baseline, label)."""
    import torch

    from hwnas.latency.resnet_keys import torchvision_resnet18
    from hwnas.latency.space import SpaceConfig
    from hwnas.spaces.gated_resnet import BLOCK_WIDTHS, materialise, round_gates

    torch.manual_seed(0)
    base = torchvision_resnet18(SpaceConfig(space="resnet18", input_h=28, input_w=28, in_channels=1)).eval()
    nets, pairs = {}, []
    for s in range(seeds):
        rng = random.Random(s)
        raw = [rng.randint(w // 8, w) for w in BLOCK_WIDTHS]
        nets[f"free{s}"] = (slice_inner(base, raw), raw)
        for n in (8, 16):
            w = [round_width(k, n, width) for k, width in zip(raw, BLOCK_WIDTHS)]
            nets[f"free{s}-r{n}"] = (slice_inner(base, w), w)
            pairs.append((f"free{s}-r{n}", f"free{s}", f"free widths rounded to {n}"))
    for key, text in HWNAS_GATES.items():
        g = parse_gates(text)
        assert round_gates(g, 8) == g and round_gates(g, 16) == g   # the quarter widths: nothing to round
        nets[f"{key}"] = (materialise(base, g), list(g.channels()))
        for n in (32, 64):
            r = round_gates(g, n)
            if r != g:
                nets[f"{key}-m{n}"] = (materialise(base, r), list(r.channels()))
                pairs.append((f"{key}-m{n}", key, f"hwnas gates, --channel-multiple {n}"))
    return nets, pairs


def compare(rounds: dict[str, list[float]], a: str, b: str) -> dict:
    ratios = [x / y for x, y in zip(rounds[a], rounds[b])]
    return {"ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "round_ratios": ratios}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3, help="free-width networks")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved rounds per batch size")
    ap.add_argument("--runs1", type=int, default=100, help="runs per model and round at batch 1")
    ap.add_argument("--runs64", type=int, default=4, help="runs per model and round at batch 64")
    ap.add_argument("--name", default="channel_rounding")
    args = ap.parse_args()
    env = header()
    import torch

    from hwnas.export import export_onnx_dynamic
    from hwnas.spaces.network import count_flops, count_parameters

    torch.set_num_threads(1)
    t_start, load0 = time.time(), os.getloadavg()
    print(f"# load average {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}")
    nets, pairs = networks(args.seeds)
    info, paths = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for k, (net, widths) in nets.items():
            paths[k] = Path(tmp) / f"{k}.onnx"
            export_onnx_dynamic(net, SHAPE, paths[k])
            info[k] = {"channels": widths, "flops": count_flops(net, SHAPE), "params": count_parameters(net)}
        first = next(iter(paths))
        paths[f"{first}#2"] = paths[first]   # the noise floor: the same file in a second session
        info[f"{first}#2"] = info[first]
        pairs.append((f"{first}#2", first, "noise floor: the same model timed twice"))
        results = {}
        for batch, runs in ((1, args.runs1), (64, args.runs64)):
            rounds = time_rounds(paths, runs, 3, args.repeats, batch=batch)
            results[f"batch{batch}"] = {
                "runs_per_round": runs,
                "models": {k: {"median_ms": statistics.median(v), "round_medians_ms": v} for k, v in rounds.items()},
                "comparisons": [{"model": a, "baseline": b, "what": what,
                                 "flops_ratio": info[a]["flops"] / info[b]["flops"], **compare(rounds, a, b)}
                                for a, b, what in pairs]}
    load1 = os.getloadavg()
    print(f"\n{'model':>14} {'channels (inner, per block)':>42} {'MFLOPs':>8} {'b1 ms':>7} {'b64 ms':>8}")
    for k in paths:
        print(f"{k:>14} {' '.join(map(str, info[k]['channels'])):>42} {info[k]['flops'] / 1e6:8.1f} "
              f"{results['batch1']['models'][k]['median_ms']:7.3f} {results['batch64']['models'][k]['median_ms']:8.2f}")
    print(f"\n{'rounded':>14} {'vs':>10} {'FLOPs':>7} {'b1 time':>8} {'(min-max)':>14} {'b64 time':>9} {'(min-max)':>14}")
    for i, (a, b, what) in enumerate(pairs):
        c1, c64 = results["batch1"]["comparisons"][i], results["batch64"]["comparisons"][i]
        print(f"{a:>14} {b:>10} {c1['flops_ratio']:7.3f} {c1['ratio_median']:8.3f} "
              f"({c1['ratio_min']:.3f}-{c1['ratio_max']:.3f}) {c64['ratio_median']:9.3f} "
              f"({c64['ratio_min']:.3f}-{c64['ratio_max']:.3f})  {what}")
    print(f"# load average {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}; {time.time() - t_start:.0f} s")
    save(args.name, {"machine": env, "command": "python benchmarks/" + " ".join([Path(__file__).name, *sys.argv[1:]]),
                     "args": vars(args), "input_shape": list(SHAPE), "threads": 1,
                     "load_before": load0, "load_after": load1, "wall_s": time.time() - t_start,
                     "networks": info, "hwnas_gates": HWNAS_GATES, **results})


if __name__ == "__main__":
    main()
