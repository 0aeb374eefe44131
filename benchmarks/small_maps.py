"""Depthwise convs on small maps: hwnas.spaces.depthwise (taps that read only padding cut) against plain F.conv2d.

On the 8×8 `digits` the last DARTS cells run 5×5 kernels (dilation up to 2) on 2×2 and 4×4 maps. Rows, each timed
with hwnas's `depthwise` and with a plain `F.conv2d` of the same arguments swapped in (the "plain" column: what torch
does by itself), interleaved, `--repeats` times, medians, one thread:

  fused step     a first-order softmax supernet step's forward + backward (5 cells, 8 channels, batch 64)
  probe forward  a single-path sub-network's no-grad forward at batch 256 (Λ's probes, evaluation, pareto)
  train step     a discrete network's training step (16 channels × 8 cells, batch 64): DARTS_V2, and a genotype
                 of 5×5 and dilated convs

    OMP_NUM_THREADS=1 python benchmarks/small_maps.py [--size 8] [--repeats 5]
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import header, save, summary

import hwnas.spaces.depthwise as dw
from hwnas.search.lambda_max import one_hot
from hwnas.spaces.genotype import DARTS_V2, Genotype
from hwnas.spaces.network import DiscreteNetwork, NetworkConfig
from hwnas.spaces.supernet import Supernet, SupernetConfig

HEAVY = Genotype.parse(
    "Genotype(normal=[('sep_conv_5x5', 0), ('dil_conv_5x5', 1), ('dil_conv_3x3', 0), ('sep_conv_3x3', 2), "
    "('sep_conv_5x5', 1), ('skip_connect', 0), ('dil_conv_5x5', 3), ('max_pool_3x3', 2)], normal_concat=[2, 3, 4, 5], "
    "reduce=[('dil_conv_5x5', 0), ('sep_conv_5x5', 1), ('dil_conv_3x3', 2), ('avg_pool_3x3', 0), ('sep_conv_5x5', 2), "
    "('dil_conv_5x5', 1), ('skip_connect', 3), ('sep_conv_3x3', 4)], reduce_concat=[2, 3, 4, 5])")
CL = torch.channels_last


def plain(x, weight, stride, padding, dilation):
    return F.conv2d(x, weight, None, stride, padding, dilation, groups=weight.shape[0])


def rows(size: int) -> dict:
    """name → a callable running the row's work once."""
    torch.manual_seed(0)
    sup = Supernet(SupernetConfig(channels=8, layers=5, in_channels=1)).to(memory_format=CL)
    wn, wr = (torch.randn(14, 8).softmax(-1).requires_grad_() for _ in range(2))
    x64 = torch.randn(64, 1, size, size).contiguous(memory_format=CL)
    y64 = torch.randint(0, 10, (64,))

    def fused_step():
        sup.train().zero_grad()
        F.cross_entropy(sup(x64, wn, wr), y64).backward()

    rng = random.Random(0)
    archs = []
    for _ in range(4):
        on, orr = ([rng.randrange(1, 8) for _ in range(14)] for _ in range(2))
        archs.append((one_hot(on, 8), one_hot(orr, 8), on, orr))
    x256 = torch.randn(256, 1, size, size).contiguous(memory_format=CL)

    def probe():
        sup.train()
        with torch.no_grad():
            for a in archs:
                sup(x256, *a)

    def train_step(genotype):
        net = DiscreteNetwork(genotype, NetworkConfig(channels=16, layers=8, in_channels=1)).to(memory_format=CL)

        def step():
            net.train().zero_grad()
            F.cross_entropy(net(x64), y64).backward()
        return step

    return {"fused step": fused_step, "probe forward (4 networks)": probe,
            "train step DARTS_V2": train_step(DARTS_V2), "train step 5x5/dilated": train_step(HEAVY)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=8, help="input H = W (8: digits)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--runs", type=int, default=3, help="timed runs per row and variant in each repetition")
    ap.add_argument("--name", default="small_maps")
    args = ap.parse_args()
    env = header()
    torch.set_num_threads(1)
    work = rows(args.size)
    hwnas_conv = dw.depthwise
    samples = {(r, v): [] for r in work for v in ("hwnas", "plain")}
    for rep in range(args.repeats):
        for r, fn in work.items():
            for variant, conv in (("hwnas", hwnas_conv), ("plain", plain)) if rep % 2 == 0 else \
                    (("plain", plain), ("hwnas", hwnas_conv)):
                dw.depthwise = conv
                fn()  # warm-up
                t = time.perf_counter()
                for _ in range(args.runs):
                    fn()
                samples[(r, variant)].append((time.perf_counter() - t) / args.runs)
    dw.depthwise = hwnas_conv
    out = {"env": env, "size": args.size, "repeats": args.repeats, "rows": {}}
    print(f"{'row':32} {'plain ms':>10} {'hwnas ms':>10} {'speed-up':>9}")
    for r in work:
        p, h = summary(samples[(r, "plain")]), summary(samples[(r, "hwnas")])
        ratios = sorted(a / b for a, b in zip(samples[(r, "plain")], samples[(r, "hwnas")]))
        paired = ratios[len(ratios) // 2]
        out["rows"][r] = {"plain": p, "hwnas": h, "speedup_paired_median": paired}
        print(f"{r:32} {p['median_ms']:10.1f} {h['median_ms']:10.1f} {paired:8.2f}×")
    save(args.name, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
